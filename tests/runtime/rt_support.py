"""Helpers shared by the runtime tests (fixtures live in conftest.py).

Kept out of conftest.py so test modules can import them by a name unique in the whole
test tree (``import conftest`` is ambiguous once several conftest.py files exist).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
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
