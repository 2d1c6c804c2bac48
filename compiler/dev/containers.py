"""Run each API's ``image`` with Docker or Podman, as its pod would run it.

Only when an engine answers (``docker info`` / ``podman info``): a CLI without a daemon
counts as none, and the API is reported at start instead. Each container gets the
variables the chart gives the pod (from :func:`ai4ec.dev.session.container_env`), with
the task manager reached at ``host.docker.internal`` (mapped to the host gateway), and
publishes the API's port on a free loopback port. Its output goes to the one terminal,
tagged ``api:<id>``. :meth:`ContainerRunner.stop` stops (and so removes, ``--rm``) every
container it started.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass, field

from ..errors import dev_error
from ..model.types import Api
from .redis import free_port, reap

log = logging.getLogger("ai4ec.dev.containers")

#: Engines tried, in order (the first that answers ``info`` wins).
ENGINES = ("docker", "podman")
#: Host name containers use for the host (``--add-host ...:host-gateway``).
HOST_ALIAS = "host.docker.internal"


def find_engine() -> str | None:
    """The path of a container engine whose daemon answers, else None."""
    for name in ENGINES:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            done = subprocess.run(
                [path, "info"],
                capture_output=True,
                timeout=10,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return path
    return None


def container_name(platform: str, api: Api) -> str:
    """``ai4ec-dev-<platform>-<api id>``: one per API, so a second run finds the first."""
    return f"ai4ec-dev-{platform}-{api.id}"


@dataclass
class ContainerRunner:
    """The containers of one ``ai4ec dev`` run."""

    engine: str
    platform: str
    _running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, api: Api, env: dict[str, str]) -> str:
        """Start ``api``'s image; return the loopback URL its port is published on."""
        host_port = free_port()
        name = container_name(self.platform, api)
        args = [self.engine, "run", "--rm", "--name", name]
        args += ["--add-host", f"{HOST_ALIAS}:host-gateway"]
        args += ["-p", f"127.0.0.1:{host_port}:{api.port}"]
        for key, value in sorted(env.items()):
            args += ["-e", f"{key}={value}"]
        args.append(api.image)
        try:
            proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise dev_error(f"cannot run {api.image} for {api.id}: {exc.strerror}") from None
        self._running.append((name, proc))
        threading.Thread(target=_relay, args=(api.id, proc), daemon=True).start()
        log.info("%s: container %s from %s on 127.0.0.1:%d", api.id, name, api.image, host_port)
        return f"http://127.0.0.1:{host_port}"

    def stop(self) -> None:
        """Stop every container started (5 s grace, then kill); safe to call twice."""
        running, self._running = self._running, []
        for name, proc in reversed(running):
            if proc.poll() is None:
                subprocess.run(
                    [self.engine, "stop", "-t", "5", name],
                    capture_output=True,
                    timeout=30,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            reap(proc, 10)


def _relay(api_id: str, proc: subprocess.Popen[bytes]) -> None:
    """Copy the container's output to the terminal, one log line per line, tagged."""
    out = logging.getLogger(f"ai4ec.dev.api.{api_id}")
    assert proc.stdout is not None
    for raw in proc.stdout:
        out.info("%s", raw.decode("utf-8", "replace").rstrip())
    code = proc.wait()
    if code not in (0, 143, -15):
        out.warning("container exited with code %d", code)
