"""Helpers to run ``ai4ec functions serve`` as a child process and speak raw HTTP to it.

Shared by the host tests (test_rt_host.py) and the upstream-client tests; kept out of
conftest.py for the reason given in rt_support.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rt_support import ROUTING, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Host:
    """A running ``ai4ec functions serve`` child process."""

    port: int
    proc: subprocess.Popen[str]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_cmd(port: int, redis_url: str, *extra: str, auth: bool = False) -> list[str]:
    """The CLI command; without ``--keys`` in ``extra`` key checking is off unless ``auth``."""
    if not auth and "--keys" not in extra and "--insecure-no-auth" not in extra:
        extra = (*extra, "--insecure-no-auth")
    return [
        sys.executable,
        "-m",
        "ai4ec",
        "functions",
        "serve",
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        *extra,
    ]


def host_env(tmp: Path, routing_doc: dict[str, Any] | None = None, **env: str) -> dict[str, str]:
    routing = tmp / "routing.json"
    routing.write_text(json.dumps(routing_doc or ROUTING), encoding="utf-8")
    return {
        **os.environ,
        "AI4EC_ROUTING_PATH": str(routing),
        "AI4EC_LOCAL_RETRY_BASE_SECONDS": "0.05",
        "AI4EC_LOCAL_RETRY_MAX_SECONDS": "0.2",
        **env,
    }


def start_host(
    tmp: Path,
    redis_url: str,
    *extra: str,
    routing_doc: dict[str, Any] | None = None,
    port: int | None = None,
    **env: str,
) -> Host:
    """Start the host (on ``port``, or a free one) and wait for its banner."""
    port = port or free_port()
    log_path = tmp / f"host-{port}.log"
    restarts = 0
    while log_path.exists():  # a restart on the same port keeps the earlier log
        restarts += 1
        log_path = tmp / f"host-{port}.{restarts}.log"
    with log_path.open("w") as sink:
        proc = subprocess.Popen(
            serve_cmd(port, redis_url, *extra),
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env=host_env(tmp, routing_doc, **env),
            cwd=ROOT,
        )
    host = Host(port, proc, log_path)
    try:
        wait_for(lambda: "task manager on" in host.log() or proc.poll() is not None, 30)
    except AssertionError:
        host.stop()
        raise
    assert proc.poll() is None, host.log()
    return host


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket) -> Answer | None:
    """One HTTP response from ``sock``, or ``None`` when it closed without one."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Answer(status, headers, rest[:length])


def raw(host: Host, data: bytes) -> Answer | None:
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the host may answer and close before reading everything
        return read_answer(sock)


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
