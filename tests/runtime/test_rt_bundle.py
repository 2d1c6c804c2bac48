"""The deployable zip is deterministic and boots with only what it carries.

Azure runs the app from the package (``WEBSITE_RUN_FROM_PACKAGE=1``) and never installs
anything, so the proof that the bundle is deployable is to run it where nothing but the
bundle is importable: a fresh ``python -I -S`` whose ``sys.path`` is the stdlib, the
unpacked zip and its ``.python_packages/lib/site-packages`` - no dev venv.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import redis
from packaging.markers import default_environment
from packaging.requirements import Requirement
from rt_support import FUNCTIONS, RedisServer

from ai4ec_runtime import bundle
from ai4ec_runtime.auth import AccessKeys

ROOT = FUNCTIONS.parent
SITE = bundle.SITE_PACKAGES
#: The interpreter the app runs on in Azure (linuxFxVersion 'Python|3.11' on Linux).
TARGET_ENV = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.11",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


def test_zip_is_deterministic(tmp_path: Path, routing_doc: dict[str, Any]) -> None:
    settings = {
        "AI4EC_BACKEND_BASE_URL": "https://ingress.example",
        "AI4EC_NOT_FOUND_STATUS": "404",
    }
    a = bundle.build_zip(tmp_path / "a" / "functions.zip", routing_doc, settings)
    (FUNCTIONS / "ai4ec_runtime" / "__pycache__").mkdir(exist_ok=True)  # must be ignored
    b = bundle.build_zip(tmp_path / "b.zip", dict(reversed(list(routing_doc.items()))), settings)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert {
            "function_app.py",
            "host.json",
            "requirements.txt",
            "routing.json",
            "ai4ec_settings.json",
            "ai4ec_runtime/py.typed",
            "ai4ec_runtime/app.py",
            "ai4ec_runtime/scripts.py",
            f"{SITE}/redis/__init__.py",
            f"{SITE}/azure/functions/__init__.py",
            f"{SITE}/charset_normalizer/md.py",
            f"{SITE}/redis-8.1.0.dist-info/METADATA",
        } <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert not [n for n in names if n.endswith((".so", ".pyd")) or ".cpython-" in n]
        assert not [n for n in names if n.endswith(("/RECORD", "/INSTALLER", "/WHEEL"))]
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_DEFLATED
    no_routing = bundle.build_zip(tmp_path / "c.zip", None, None)
    with zipfile.ZipFile(no_routing) as zf:
        assert "routing.json" not in zf.namelist()


def test_zip_is_byte_identical_across_processes(
    tmp_path: Path, routing_doc: dict[str, Any]
) -> None:
    """Another interpreter (its own hash seed, its own file reads) writes the same bytes."""
    here = bundle.zip_bytes(routing_doc, {"AI4EC_DISPATCH": "local"})
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1])\n"
        "from ai4ec_runtime import bundle\n"
        "sys.stdout.buffer.write(bundle.zip_bytes(json.loads(sys.argv[2]),"
        " {'AI4EC_DISPATCH': 'local'}))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    there = subprocess.run(
        [sys.executable, "-c", code, str(FUNCTIONS), json.dumps(routing_doc)],
        capture_output=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert here == there


def test_embedded_files_match_the_repository() -> None:
    assert (FUNCTIONS / "function_app.py").read_text() == bundle.FUNCTION_APP_PY
    assert (FUNCTIONS / "host.json").read_text() == bundle.HOST_JSON
    assert (FUNCTIONS / "requirements.txt").read_text() == bundle.REQUIREMENTS_TXT


def test_lock_is_closed_and_equals_the_runtime_extra() -> None:
    """Every dependency of a locked distribution (on the app's Python) is locked too,
    and setup.cfg's ``runtime`` extra installs exactly the lock, so a build machine with
    ``ai4ec[runtime]`` can always vendor it."""
    from importlib import metadata

    pins = {p.name: p.version for p in bundle.locked_requirements()}
    for name in pins:
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(TARGET_ENV):
                assert bundle.normalize(req.name) in pins, f"{name} needs {req} (not locked)"
                assert req.specifier.contains(pins[bundle.normalize(req.name)])
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extra = [
        Requirement(line)
        for line in cfg["options.extras_require"]["runtime"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert {bundle.normalize(r.name): str(r.specifier) for r in extra} == {
        n: f"=={v}" for n, v in pins.items()
    }


def test_refuses_what_it_cannot_vendor() -> None:
    with pytest.raises(bundle.BundleError, match=r"redis 8\.1\.0 is installed but .* 0\.0\.1"):
        bundle._dist_files(bundle.Pin("redis", "0.0.1"))
    with pytest.raises(bundle.BundleError, match=r"not installed.*ai4ec\[runtime\]"):
        bundle._dist_files(bundle.Pin("ai4ec-no-such-dist", "1.0"))
    from importlib import metadata

    yaml_version = metadata.version("PyYAML")  # ships _yaml, a C extension, no fallback
    with pytest.raises(bundle.BundleError, match=r"pyyaml .* ships compiled code \(.*_yaml"):
        bundle._dist_files(bundle.Pin("pyyaml", yaml_version))
    with pytest.raises(bundle.BundleError, match=r"requirements.txt:2: 'redis>=8' is not an"):
        bundle.locked_requirements("# x\nredis>=8\n")


#: Runs in the fresh interpreter, from the unpacked bundle; prints one JSON line.
BOOT = r"""
import json, os, sys
app_dir = os.getcwd()
sys.path[:0] = [app_dir, os.path.join(app_dir, ".python_packages", "lib", "site-packages")]
leaks = [p for p in sys.path if "site-packages" in p and not p.startswith(app_dir)]
assert not leaks, leaks
import azure.functions as func
import function_app
fns = {f.get_function_name(): f for f in function_app.app.get_functions()}

keys = json.loads(os.environ["AI4EC_ACCESS_KEYS"])

def call(name, body, key):
    req = func.HttpRequest(method="POST", url="/api/" + name, params={},
                           body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json", "x-functions-key": key})
    resp = fns[name].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body())

validation = call("BackendWebhook", [{
    "id": "v1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
    "subject": "", "data": {"validationCode": "code-123"}, "dataVersion": "2"}], keys["eventGrid"])
created = call("CacheConnectorUpsert", {
    "Status": "created", "BackendStatus": "created",
    "Endpoint": "http://10.0.0.1/v1/detector/detect", "Body": "{}", "PublishToGrid": False},
    keys["apim"])
import charset_normalizer.md, markupsafe, redis, requests, werkzeug, azure.core, azure.eventgrid
mods = [redis, requests, werkzeug, azure.core, azure.eventgrid, func, charset_normalizer.md,
        markupsafe, sys.modules["ai4ec_runtime"]]
outside = [m.__name__ for m in mods if not m.__file__.startswith(app_dir)]
print(json.dumps({"functions": sorted(fns), "validation": validation, "created": created,
                  "outside": outside, "md": os.path.basename(charset_normalizer.md.__file__),
                  "redis_version": __import__("importlib.metadata").metadata.version("redis"),
                  "flags": [sys.flags.isolated, sys.flags.no_site]}))
"""


def test_bundle_boots_with_only_what_it_carries(
    tmp_path: Path, routing_doc: dict[str, Any], redis_server: RedisServer
) -> None:
    """Unpacked into an empty directory, the app imports, indexes every function, answers
    Event Grid's subscription handshake and stores a task in a real Redis - with no
    package but the bundle's own."""
    settings = {"AI4EC_DISPATCH": "local", "AI4EC_NOT_FOUND_STATUS": "404"}
    zip_path = bundle.build_zip(tmp_path / "bundle.zip", routing_doc, settings)
    app_dir = tmp_path / "wwwroot"
    app_dir.mkdir()
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(app_dir)
    env = {
        "PATH": "/usr/bin:/bin",
        "AI4EC_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/3",
        # What the app setting resolves to on Azure (a Key Vault reference).
        "AI4EC_ACCESS_KEYS": AccessKeys.generate(routing_doc["apis"]).to_json(),
    }
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", BOOT],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["flags"] == [1, 1]
    assert result["outside"] == []
    assert result["md"] == "md.py"  # the pure fallback, not the build machine's binary
    assert result["redis_version"] == "8.1.0"
    assert result["functions"] == [
        "BackendDeadLetter",
        "BackendDeadLetterBlob",
        "BackendWebhook",
        "CacheConnectorGet",
        "CacheConnectorUpsert",
        "CurrentProcessingGet",
        "CurrentProcessingUpsert",
        "Health",
        "TaskProcessLogger",
        "TaskQueueLogger",
        "TaskTimeoutSweeper",
    ]
    assert result["validation"] == [200, {"validationResponse": "code-123"}]
    status, task = result["created"]
    assert status == 200
    client = redis.Redis(port=redis_server.port, db=3)
    try:
        assert any(task["TaskId"].encode() in key for key in client.keys("*"))
    finally:
        client.flushdb()
        client.close()
    assert os.path.getsize(zip_path) < 12 * 1024 * 1024
