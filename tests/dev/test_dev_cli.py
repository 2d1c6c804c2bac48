"""``ai4ec dev`` as a user runs it: a real process, real model APIs, Ctrl-C.

The model APIs are Framework-style Flask apps built on the upstream service wrapper and
task client (``framework_app.py``), started with the environment ``ai4ec dev`` wrote for
them; they run as separate processes, as a researcher's app in a debugger would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from ai4ec.dev.redis import free_port, redis_server_binary

from ..conftest import SAMPLES

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "upstream"
HERE = Path(__file__).resolve().parent
CAMERA_TRAP = SAMPLES / "camera-trap" / "platform.yaml"
KEY = "Ocp-Apim-Subscription-Key"

pytestmark = [
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server"),
    pytest.mark.skipif(
        not (UPSTREAM / "ai4e_service.py").exists(), reason="../shared/upstream is absent"
    ),
]


def _wait_for(check: Any, what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture
def dev_run(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``ai4ec dev`` with two Framework apps as backends; everything stopped afterwards."""
    pytest.importorskip("flask")
    pytest.importorskip("flask_restful")
    state = tmp_path / "state"
    ports = {"detector-v1": free_port(), "classifier-v1": free_port()}
    args = [sys.executable, "-m", "ai4ec", "dev", str(CAMERA_TRAP), "--port", "0", "--demo"]
    args += ["--state-dir", str(state)]
    for api, port in ports.items():
        args += ["--backend", f"{api}=http://127.0.0.1:{port}"]
    dev = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    apps: list[subprocess.Popen[str]] = []
    try:
        info = _wait_for(
            lambda: (state / "dev.json").exists() and json.loads((state / "dev.json").read_text()),
            "dev.json",
        )
        for api, port in ports.items():
            env = {**os.environ, **_env_file(state / "env" / f"{api}.env")}
            name, path = {
                "detector-v1": ("detector", "/detect"),
                "classifier-v1": ("classifier", "/classify"),
            }[api]
            apps.append(
                subprocess.Popen(
                    [sys.executable, str(HERE / "framework_app.py"), str(port), name, path],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        for port in ports.values():
            _wait_for(lambda p=port: _listening(p), f"framework app on {port}")
        yield {"dev": dev, "info": info, "state": state}
    finally:
        for app in apps:
            app.terminate()
            app.wait(10)
        if dev.poll() is None:
            dev.kill()
        dev.communicate(timeout=10)


def _poll(url: str, headers: dict[str, str]) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        record = requests.get(url, headers=headers, timeout=10).json()
        return record if record.get("BackendStatus") in ("completed", "failed") else None

    return dict(_wait_for(done, f"task at {url}"))


def test_framework_apps_through_the_local_platform_then_ctrl_c(dev_run: dict[str, Any]) -> None:
    """401 without a key; 202 + Location; the app's result; the pipeline; 429; Ctrl-C."""
    gateway = dev_run["info"]["gateway"]
    keys = dev_run["info"]["keys"]
    partner = {KEY: keys["partner"]}
    detect = f"{gateway}/v1/camera-trap/detector/detect"
    assert requests.post(detect, json={"image": "a"}, timeout=10).status_code == 401

    created = requests.post(detect, json={"image": "a"}, headers=partner, timeout=10)
    assert created.status_code == 202, created.text
    record = _poll(gateway + created.headers["Location"], partner)
    assert record["BackendStatus"] == "completed", record
    assert json.loads(record["Status"]) == {"model": "detector", "saw": {"image": "a"}}

    created = requests.post(
        f"{gateway}/v1/camera-trap/species/", json={"image": "b"}, headers=partner, timeout=10
    )
    assert created.status_code == 202, created.text
    record = _poll(gateway + created.headers["Location"], partner)
    assert json.loads(record["Status"]) == {
        "model": "classifier",
        "saw": {"model": "detector", "saw": {"image": "b"}},
    }

    public = {KEY: keys["public"]}
    sync = f"{gateway}/v1/camera-trap/detector-sync/detect"
    codes = [requests.post(sync, json={}, headers=public, timeout=10).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]

    dev = dev_run["dev"]
    children = psutil.Process(dev.pid).children(recursive=True)
    assert children, "the embedded Redis runs as a child process"
    gateway_port = int(gateway.rsplit(":", 1)[1])
    dev.send_signal(signal.SIGINT)
    out, err = dev.communicate(timeout=15)
    assert dev.returncode == 0, err
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {alive}"
    assert not _listening(gateway_port)
    assert "curl -i -X POST" in out and keys["partner"] in out
    assert "[gateway]" in err and "[ingress]" in err, "one terminal, tagged by component"
    assert "Traceback" not in err
