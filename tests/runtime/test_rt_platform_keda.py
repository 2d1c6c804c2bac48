"""Both sides of the scaling contract, end to end: the KEDA triggers that `ai4ec build`
generates for the camera-trap detector read exactly the Redis keys that the runtime keeps
up to date as tasks are created, picked up, finished and handed to the next pipeline step.

With the legacy cache (one Redis) the runtime is the real `ai4ec functions serve` command
with that platform's routing table, and KEDA has one ``redis`` trigger. With Azure
Managed Redis (the default: OSS cluster policy) the runtime runs in cluster mode on a real
three-master Redis Cluster, KEDA has one ``redis-cluster`` trigger per index shard, and
the sum of their lengths - what the generated ``scalingModifiers`` formula adds up - is
the API's backlog. The Lua below does what KEDA's redis scalers do (TYPE, then ZCARD /
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
from rt_cluster import RedisClusterProcs
from rt_support import make_runtime

from ai4ec.pipeline import check_platform, render_platforms
from ai4ec.render.runtime import app_settings, routing_table
from ai4ec_runtime.handlers import Request, handle
from ai4ec_runtime.store import connect_redis

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


def _manifests(platform: Path) -> list[dict[str, Any]]:
    rendered, _ = render_platforms(check_platform(platform))[0]
    manifests = next(a for a in rendered.artifacts if str(a.path).endswith("manifests.yaml"))
    return [d for d in yaml.safe_load_all(manifests.content) if d]


def _triggers(platform: Path, kind: str = "redis") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in _manifests(platform):
        if doc["kind"] == "ScaledObject":
            for t in doc["spec"]["triggers"]:
                if t["type"] == kind:
                    out.setdefault(doc["metadata"]["name"], []).append(t)
    return out


def _legacy_sample(tmp_path: Path) -> Path:
    text = SAMPLE.read_text(encoding="utf-8")
    managed = "cache: {sku: Balanced_B1}     # Azure Managed Redis"
    assert managed in text
    path = tmp_path / "platform.yaml"
    path.write_text(
        text.replace(managed, "cache: {kind: legacy, sku: Standard, capacity: 1}"),
        encoding="utf-8",
    )
    return path


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def test_generated_keda_trigger_reads_the_runtime_pending_key(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    platform = _legacy_sample(tmp_path)
    triggers = _triggers(platform)
    assert set(triggers) == {"detector-v1", "classifier-v1"}
    detector_key = triggers["detector-v1"][0]["metadata"]["listName"]
    classifier_key = triggers["classifier-v1"][0]["metadata"]["listName"]

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
            str(platform),
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


def test_generated_cluster_triggers_sum_the_runtime_shards(
    redis_cluster: RedisClusterProcs,
) -> None:
    """Azure Managed Redis: per-shard keys on a real cluster, summed as the formula does."""
    triggers = _triggers(SAMPLE, "redis-cluster")
    assert set(triggers) == {"detector-v1", "classifier-v1"}
    scaled = {d["metadata"]["name"]: d for d in _manifests(SAMPLE) if d["kind"] == "ScaledObject"}
    for api, ts in triggers.items():
        formula = scaled[api]["spec"]["advanced"]["scalingModifiers"]["formula"]
        assert formula == " + ".join(t["name"] for t in ts)
    detector = [t["metadata"]["listName"] for t in triggers["detector-v1"]]
    classifier = [t["metadata"]["listName"] for t in triggers["classifier-v1"]]
    plat = next(iter(check_platform(SAMPLE).platforms()))
    settings = app_settings(plat)
    assert settings["AI4EC_REDIS_MODE"] == "cluster"
    redis_cluster.flush()
    client = connect_redis(redis_cluster.url, settings["AI4EC_REDIS_MODE"])
    rt = make_runtime(
        client,
        routing_table(plat),
        strict_answers=False,
        redis_shards=int(settings["AI4EC_REDIS_SHARDS"]),
    )

    def count(keys: list[str]) -> int:
        return sum(int(client.eval(KEDA_LENGTH, 1, key)) for key in keys)

    def upsert(doc: dict[str, Any]) -> dict[str, Any]:
        resp = handle(rt, "CacheConnectorUpsert", Request("POST", body=json.dumps(doc).encode()))
        assert resp.status == 200, resp.body
        out: dict[str, Any] = json.loads(resp.body)
        return out

    endpoint = "http://ingress.invalid/v1/camera-trap/detector/detect"
    created = [
        upsert(
            {
                "Status": "created",
                "BackendStatus": "created",
                "Endpoint": endpoint,
                "Body": json.dumps({"image": i}),
                "PublishToGrid": False,
            }
        )["TaskId"]
        for i in range(24)
    ]
    # The tasks spread over the shards: no single trigger sees the whole backlog.
    assert max(int(client.eval(KEDA_LENGTH, 1, key)) for key in detector) < 24
    assert count(detector) == 24 and count(classifier) == 0
    upsert({"TaskId": created[0], "BackendStatus": "running", "Endpoint": endpoint})
    assert count(detector) == 24
    upsert({"TaskId": created[0], "BackendStatus": "completed", "Endpoint": endpoint})
    assert count(detector) == 23
    upsert(
        {
            "TaskId": created[1],
            "Status": "created",
            "BackendStatus": "created",
            "Endpoint": "http://ingress.invalid/v1/camera-trap/classifier/classify",
            "Body": "{}",
            "PublishToGrid": False,
        }
    )
    assert count(detector) == 22 and count(classifier) == 1
