"""Both sides of the scaling contract, end to end: the KEDA trigger that `ai4ec build`
generates for the camera-trap detector reads exactly the Redis key that the runtime -
served by the real `ai4ec functions serve` command with that platform's routing table -
keeps up to date as tasks are created, picked up, finished and handed to the next
pipeline step. The Lua below does what KEDA's redis scaler does (TYPE, then ZCARD /
SCARD / LLEN); it is written here, not copied."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis
import yaml

from ai4ec.pipeline import check_platform, render_platforms

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "camera-trap" / "platform.yaml"

KEDA_LENGTH = """
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'zset' then return redis.call('ZCARD', KEYS[1]) end
if t == 'set' then return redis.call('SCARD', KEYS[1]) end
if t == 'hash' then return redis.call('HLEN', KEYS[1]) end
return redis.call('LLEN', KEYS[1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _triggers() -> dict[str, dict[str, Any]]:
    rendered, _ = render_platforms(check_platform(SAMPLE))[0]
    manifests = next(a for a in rendered.artifacts if str(a.path).endswith("manifests.yaml"))
    out = {}
    for doc in yaml.safe_load_all(manifests.content):
        if doc and doc["kind"] == "ScaledObject":
            for t in doc["spec"]["triggers"]:
                if t["type"] == "redis":
                    out[doc["metadata"]["name"]] = t["metadata"]
    return out


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def test_generated_keda_trigger_reads_the_runtime_pending_key(
    r: redis.Redis, redis_url: str
) -> None:
    triggers = _triggers()
    assert set(triggers) == {"detector-v1", "classifier-v1"}
    detector_key = triggers["detector-v1"]["listName"]
    classifier_key = triggers["classifier-v1"]["listName"]

    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ai4ec",
            "functions",
            "serve",
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--platform",
            str(SAMPLE),
            "--insecure-no-auth",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        endpoint = "http://ingress.invalid/v1/camera-trap/detector/detect"
        created = [
            _post(
                f"{base}/CacheConnectorUpsert",
                {
                    "Status": "created",
                    "BackendStatus": "created",
                    "Endpoint": endpoint,
                    "Body": json.dumps({"image": i}),
                    "PublishToGrid": False,
                },
            )
            for i in range(3)
        ]
        count = lambda key: int(r.eval(KEDA_LENGTH, 1, key))  # noqa: E731
        assert count(detector_key) == 3 and count(classifier_key) == 0

        first = created[0]["TaskId"]
        _post(
            f"{base}/CacheConnectorUpsert",
            {
                "TaskId": first,
                "Status": "working",
                "BackendStatus": "running",
                "Endpoint": endpoint,
            },
        )
        assert count(detector_key) == 3  # running work still counts: no scale-down under load
        _post(
            f"{base}/CacheConnectorUpsert",
            {"TaskId": first, "Status": "done", "BackendStatus": "completed", "Endpoint": endpoint},
        )
        assert count(detector_key) == 2

        # A pipeline hop (the Framework's AddPipelineTask) moves the work to the classifier.
        second = created[1]["TaskId"]
        _post(
            f"{base}/CacheConnectorUpsert",
            {
                "TaskId": second,
                "Status": "created",
                "BackendStatus": "created",
                "Endpoint": "http://ingress.invalid/v1/camera-trap/classifier/classify",
                "Body": "{}",
                "PublishToGrid": False,
            },
        )
        assert count(detector_key) == 1 and count(classifier_key) == 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"Traceback" not in err, err.decode()
