"""Helpers shared by the runtime tests (fixtures live in conftest.py).

Kept out of conftest.py so test modules can import them by a name unique in the whole
test tree (``import conftest`` is ambiguous once several conftest.py files exist).
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
FUNCTIONS = HERE.parents[1] / "functions"
# function_app.py is not a package module; the Functions worker imports it from the app
# root, so do the same (this also makes ai4ec_runtime importable without an install).
for _p in (FUNCTIONS, HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from ai4ec_runtime.dispatch import RecordingDispatcher  # noqa: E402
from ai4ec_runtime.handlers import Runtime  # noqa: E402
from ai4ec_runtime.settings import Settings  # noqa: E402

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


class RedisServer:
    """A redis-server child process on a free port."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.workdir), "--save", ""]
        args += list(self.extra) or ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.02)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush anything."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


ROUTING: dict[str, Any] = {
    "schemaVersion": 1,
    "apis": {
        "detector-v1": {
            "taskTtlSeconds": 604800,
            "timeoutSeconds": 600,
            "retry": {"maxAttempts": 3, "backoffSeconds": 30},
            "paths": ["/v1/detector/detect"],
        },
        "classifier-v1": {
            "taskTtlSeconds": 604800,
            "timeoutSeconds": 600,
            "paths": ["/v1/classifier/classify"],
        },
    },
    "pipelines": {
        "species-v1": {
            "taskTtlSeconds": 86400,
            "steps": [
                {"api": "detector-v1", "path": "/v1/detector/detect"},
                {"api": "classifier-v1", "path": "/v1/classifier/classify"},
            ],
        }
    },
}

DETECT = "http://10.0.0.1/v1/detector/detect"
CLASSIFY = "http://10.0.0.1/v1/classifier/classify"


RUNTIMES: list[Runtime] = []


def make_runtime(
    r: redis.Redis, routing: dict[str, Any], dispatcher: Any = None, **settings: Any
) -> Runtime:
    """A runtime on the test Redis; closed automatically after the test.

    Strict answers (404/409/503 for updates) unless a test asks otherwise: the store
    suites check the real outcome of each transition, which the upstream-shaped default
    answers fold into a 200.
    """
    import dataclasses

    base = dataclasses.replace(Settings.from_env(env={}, bundled=None), strict_answers=True)
    rt = Runtime(
        dataclasses.replace(base, **settings),
        redis_client=r,
        routing=routing,
        dispatcher=dispatcher if dispatcher is not None else RecordingDispatcher(),
    )
    RUNTIMES.append(rt)
    return rt


class Backend:
    """The fake Framework async API (rt_fake_backend.py) in a subprocess."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> list[dict[str, Any]]:
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + "/_log", timeout=5) as resp:
            data: list[dict[str, Any]] = json.loads(resp.read())
            return data


def start_backend(tm_url: str, *args: str) -> Backend:
    port = free_port()
    cmd = [
        sys.executable,
        str(HERE / "rt_fake_backend.py"),
        "--port",
        str(port),
        "--upsert-uri",
        f"{tm_url}/api/CacheConnectorUpsert?code=local",
        "--get-uri",
        f"{tm_url}/api/CacheConnectorGet?code=local",
        *args,
    ]
    env = dict(os.environ, PYTHONPATH=str(HERE))
    proc = subprocess.Popen(cmd, env=env)
    wait_port(port)
    return Backend(port, proc)


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@functools.cache
def registered_functions() -> dict[str, Any]:
    """``function_app.app``'s functions by name, read once per process.

    ``FunctionApp.get_functions()`` refuses a second call in one process, and several
    suites call the registered functions as the host would.
    """
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def invoke_function(name: str, method: str, body: Any = None, **params: str) -> Any:
    """Call the registered function ``name`` as the Functions host would: a JSON body (if
    any) and ``params`` as the query string. Returns its ``func.HttpResponse``."""
    import json

    import azure.functions as func

    req = func.HttpRequest(
        method=method,
        url=f"/api/{name}",
        params=params,
        body=b"" if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return registered_functions()[name].get_user_function()(req)


def make_cert(
    cn: str, issuer: tuple[Any, Any] | None = None, *, ca: bool = False
) -> tuple[Any, Any]:
    """A 2048-bit RSA key and certificate for ``cn``, signed by ``issuer`` (else itself).

    ``cn="127.0.0.1"`` gets that IP as its subject alternative name (a TLS server on
    loopback); any other non-CA certificate is for client authentication.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key, signer = issuer if issuer else (key, None)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.subject if signer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if cn == "127.0.0.1":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(cn))]),
            critical=False,
        )
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return key, builder.sign(signer_key, hashes.SHA256())


def pem_of(key: Any, cert: Any) -> str:
    """``key`` (unencrypted PKCS#8) and ``cert`` as one PEM text."""
    from cryptography.hazmat.primitives import serialization

    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    ).decode()


class EventLoopHandle:
    """``handle`` as the local host runs it: the steps on an event loop (aio.AsyncDriver).

    A drop-in for :func:`ai4ec_runtime.handlers.handle` in a test module (see the
    ``both_paths`` fixture): the routes the host runs on its loop go through one
    :class:`~ai4ec_runtime.aio.AsyncDriver` per store, on a loop in a background thread;
    every other call (other routes, a Redis Cluster) takes the blocking path, as in the
    host. ``used`` counts the calls that went through a driver.
    """

    def __init__(self) -> None:
        import asyncio
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.loop = asyncio.new_event_loop()
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="test-blocking")
        self.drivers: dict[int, Any] = {}
        self.used = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def __call__(self, runtime: Any, name: str, req: Any) -> Any:
        import asyncio

        from ai4ec_runtime.aio import AsyncDriver, supported
        from ai4ec_runtime.handlers import STEPS, handle, handle_io

        if name not in STEPS or not isinstance(runtime, Runtime):
            return handle(runtime, name, req)
        if supported(runtime.store) is not None:
            return handle(runtime, name, req)
        key = id(runtime.store)
        if key not in self.drivers:
            self.drivers[key] = AsyncDriver(runtime.store, self.pool)
        self.used += 1
        coro = self.drivers[key].run(handle_io(runtime, name, req))
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        import asyncio

        async def close_drivers() -> None:
            for driver in self.drivers.values():
                driver.close()
            await asyncio.sleep(0.01)  # the transports close their sockets on the loop

        asyncio.run_coroutine_threadsafe(close_drivers(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
        self.pool.shutdown(wait=False)


class DropProxy:
    """Forwards 127.0.0.1:<port> to Redis; can drop the reply of one chosen script call."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: bytes | None = None
        self.dropped = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str) -> None:
        """Drop the reply of the next script call whose mode is ``mode``."""
        with self._lock:
            self.armed = b"\r\n$%d\r\n%s\r\n" % (len(mode), mode.encode())

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _take_armed(self, data: bytes) -> bool:
        with self._lock:
            if self.armed is not None and data.startswith(b"*") and self.armed in data:
                self.armed = None
                self.dropped += 1
                return True
        return False

    def _pipe(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream_port))
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 1.0)
                if client in ready:
                    data = client.recv(1 << 16)
                    if not data:
                        return
                    server.sendall(data)
                    if self._take_armed(data):
                        server.recv(1 << 16)  # Redis ran the call and answered...
                        return  # ...and the answer is lost with the connection
                if server in ready:
                    data = server.recv(1 << 16)
                    if not data:
                        return
                    client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
