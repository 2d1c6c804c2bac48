"""The local host over real HTTP: upstream client sequence, pipelines, retries."""

from __future__ import annotations

import dataclasses
import http.client
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from rt_support import Backend, free_port, start_backend, wait_for
from rt_upstream_client import UpstreamTaskClient

from ai4ec_runtime.dispatch import LocalDispatcher, Outcome, RecordingDispatcher
from ai4ec_runtime.localhost import LocalServer, make_server
from ai4ec_runtime.settings import Settings

Factory = Callable[..., LocalServer]


@pytest.fixture
def local_host(redis_url: str, r: redis.Redis) -> Iterator[Factory]:
    servers: list[LocalServer] = []

    def start(
        routing: dict[str, Any], dispatcher: Any = None, port: int = 0, **settings: Any
    ) -> LocalServer:
        base = Settings.from_env(env={}, bundled=None)
        fast = {"local_retry_base_seconds": 0.05, "local_retry_max_seconds": 0.2, **settings}
        server = make_server(
            "127.0.0.1",
            port,
            redis_url,
            routing=routing,
            settings=dataclasses.replace(base, **fast),
            dispatcher=dispatcher,
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def start(tm_url: str, *args: str) -> Backend:
        b = start_backend(tm_url, *args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.proc.kill()
        b.proc.wait()


def http_json(url: str, method: str = "GET", doc: Any = None, **headers: str) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        body = None if doc is None else json.dumps(doc).encode()
        conn.request(
            method,
            parts.path + ("?" + parts.query if parts.query else ""),
            body=body,
            headers=headers,
        )
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


def apim_create(server: LocalServer, endpoint: str, body: Any, **extra: Any) -> dict[str, Any]:
    """What the APIM async policy sends to CacheConnectorUpsert."""
    status, task = http_json(
        server.url + "/api/CacheConnectorUpsert?code=k",
        "POST",
        {
            "Status": "created",
            "BackendStatus": "created",
            "Endpoint": endpoint,
            "Body": json.dumps(body, separators=(",", ":")),
            "PublishToGrid": True,
            **extra,
        },
    )
    assert status == 200, task
    return dict(task)


def poll(server: LocalServer, task_id: str, until: str) -> dict[str, Any]:
    def check() -> Any:
        status, doc = http_json(f"{server.url}/api/CacheConnectorGet?code=k&taskId={task_id}")
        return doc if status == 200 and doc["BackendStatus"] == until else None

    return dict(wait_for(check, timeout=15))


def routing(base: str = "", **api: Any) -> dict[str, Any]:
    det = {"taskTtlSeconds": 3600, "timeoutSeconds": 600, "paths": ["/v1/detector/detect"]}
    cls = {"taskTtlSeconds": 3600, "timeoutSeconds": 600, "paths": ["/v1/classifier/classify"]}
    return {
        "schemaVersion": 1,
        "apis": {"detector-v1": {**det, **api}, "classifier-v1": cls},
        "pipelines": {
            "species-v1": {
                "taskTtlSeconds": 3600,
                "steps": [
                    {"api": "detector-v1", "path": "/v1/detector/detect"},
                    {"api": "classifier-v1", "path": "/v1/classifier/classify"},
                ],
            }
        },
    }


def test_upstream_client_call_sequence(local_host: Factory, r: redis.Redis) -> None:
    """The Framework's exact requests (GET then POST) against the local host."""
    recorder = RecordingDispatcher()
    server = local_host(routing(), dispatcher=recorder)
    client = UpstreamTaskClient(
        server.url + "/api/CacheConnectorUpsert?code=k",
        server.url + "/api/CacheConnectorGet?code=k",
    )
    task = apim_create(server, "http://10.1.2.3/v1/detector/detect", {"image": "a"})
    tid = task["TaskId"]
    assert client.GetTaskStatus(tid)["BackendStatus"] == "created"
    assert client.UpdateTaskStatus(tid, "loading model")[0] == 200
    assert client.UpdateTaskStatus(tid, "50%")[1]["Status"] == "50%"
    status, rec = client.AddPipelineTask(tid, "classifier", "v1", "classify", '{"boxes":[]}')
    assert status == 200 and rec["Endpoint"] == "http://10.1.2.3/v1/classifier/classify"
    assert r.zscore("/v1/detector/detect_running", tid) is None  # upstream left it here
    assert recorder.items[-1].body == '{"boxes":[]}'
    assert client.UpdateTaskStatus(tid, "classifying")[0] == 200
    status, rec = client.CompleteTask(tid, "completed - output written to: https://blob/sas")
    assert status == 200 and rec["BackendStatus"] == "completed"
    status, rec = client.UpdateTaskStatus(tid, "late")  # refused: the record, unchanged
    assert status == 200 and rec["BackendStatus"] == "completed" and rec["Status"] != "late"
    other = apim_create(server, "http://10.1.2.3/v1/detector/detect", {"image": "b"})["TaskId"]
    assert client.FailTask(other, "Task failed - try again")[1]["BackendStatus"] == "failed"
    assert client.GetTaskStatus("f0000000-0000-4000-8000-000000000000")["Status"] == "not found"


def test_async_api_and_declarative_pipeline(
    local_host: Factory, backends: Callable[..., Backend], r: redis.Redis
) -> None:
    server = local_host(routing())
    backend = backends(server.url)
    single = apim_create(server, backend.url + "/v1/detector/detect", {"image": "one"})
    piped = apim_create(
        server,
        backend.url + "/v1/detector/detect?conf=0.5",
        {"image": "two"},
        Pipeline="species-v1",
    )
    done = poll(server, single["TaskId"], "completed")
    assert json.loads(done["Status"]) == {"step": "/v1/detector/detect", "input": {"image": "one"}}
    final = poll(server, piped["TaskId"], "completed")
    assert final["EndpointPath"] == "/v1/classifier/classify"
    step2_input = {"step": "/v1/detector/detect?conf=0.5", "input": {"image": "two"}}
    assert json.loads(final["Status"]) == {"step": "/v1/classifier/classify", "input": step2_input}
    log = [(e["path"], e["taskId"]) for e in backend.log()]
    tid = piped["TaskId"]
    assert log.count(("/v1/detector/detect?conf=0.5", tid)) == 1
    assert log.count(("/v1/classifier/classify", tid)) == 1
    for path in ("/v1/detector/detect", "/v1/classifier/classify"):
        for st in ("created", "running", "failed"):
            assert r.zscore(f"{path}_{st}", tid) is None
    assert r.zscore("/v1/classifier/classify_completed", tid) is not None
    assert r.zcard("ai4ec:pending:detector-v1") == r.zcard("ai4ec:pending:classifier-v1") == 0


def test_pipeline_steps_reach_the_cluster_of_their_api(
    local_host: Factory, backends: Callable[..., Backend], r: redis.Redis
) -> None:
    """Two clusters, two ingresses (two real HTTP backends): each step goes to its own.

    The detector runs on cluster ``east``, the classifier on ``west``. The fallback
    ``AI4EC_BACKEND_BASE_URL`` points at east, as it did when one ingress served a whole
    environment: the classifier step must still reach west.
    """
    doc = routing()
    doc["apis"]["detector-v1"]["cluster"] = "east"
    doc["apis"]["classifier-v1"]["cluster"] = "west"
    port = free_port()
    # The backends report back to the task manager, so it gets its port first.
    east, west = backends(f"http://127.0.0.1:{port}"), backends(f"http://127.0.0.1:{port}")
    server = local_host(
        doc,
        port=port,
        backend_base_url=east.url,
        backend_base_urls={"east": east.url, "west": west.url},
    )
    task = apim_create(
        server, east.url + "/v1/detector/detect", {"image": "x"}, Pipeline="species-v1"
    )
    final = poll(server, task["TaskId"], "completed")
    assert final["EndpointPath"] == "/v1/classifier/classify"
    assert final["Endpoint"] == west.url + "/v1/classifier/classify"
    tid = task["TaskId"]
    assert [(e["path"], e["taskId"]) for e in east.log()] == [("/v1/detector/detect", tid)]
    assert [(e["path"], e["taskId"]) for e in west.log()] == [("/v1/classifier/classify", tid)]


def test_busy_backend_is_retried_with_backoff(
    local_host: Factory, backends: Callable[..., Backend]
) -> None:
    server = local_host(routing())
    backend = backends(server.url, "--busy", "429,503")
    tid = apim_create(server, backend.url + "/v1/detector/detect", {"x": 1})["TaskId"]
    poll(server, tid, "completed")
    assert [e["taskId"] for e in backend.log()] == [tid, tid, tid]
    dispatcher = server.runtime.dispatcher
    assert isinstance(dispatcher, LocalDispatcher)
    assert dispatcher.outcomes[Outcome.QUEUED] == 2 and dispatcher.outcomes[Outcome.DELIVERED] == 1


def test_retries_exhausted_fail_the_task(
    local_host: Factory, backends: Callable[..., Backend]
) -> None:
    server = local_host(routing(), local_max_attempts=3)
    backend = backends(server.url, "--busy", "503,500,503")
    tid = apim_create(server, backend.url + "/v1/detector/detect", {"x": 1})["TaskId"]
    doc = poll(server, tid, "failed")
    assert doc["Status"] == "Failed - backend busy and delivery retries exhausted (last: HTTP 503)."
    assert len(backend.log()) == 3


def test_unreachable_backend_status_names_no_host(local_host: Factory) -> None:
    """A refused connection fails the task with a fixed text: the error's own words name
    the host and port (and tell "refused" from "timed out"), which would make the public
    status a port-scan oracle (issue 13 item 7)."""
    server = local_host(routing(), local_max_attempts=2)
    port = free_port()  # nothing listens there
    tid = apim_create(server, f"http://127.0.0.1:{port}/v1/detector/detect", {"x": 1})["TaskId"]
    doc = poll(server, tid, "failed")
    assert doc["Status"] == (
        "Failed - backend unavailable and delivery retries exhausted (last: unreachable)."
    )
    assert str(port) not in doc["Status"] and "refused" not in doc["Status"].lower()


def test_stuck_task_is_retried_then_failed(
    local_host: Factory, backends: Callable[..., Backend], r: redis.Redis
) -> None:
    server = local_host(routing(timeoutSeconds=1, retry={"maxAttempts": 2, "backoffSeconds": 0}))
    backend = backends(server.url, "--mode", "stall")
    tid = apim_create(server, backend.url + "/v1/detector/detect", {"x": 1})["TaskId"]
    doc = poll(server, tid, "failed")
    assert doc["Status"] == "Failed - running longer than 1 seconds (attempt 2 of 2)."
    assert [e["taskId"] for e in backend.log()] == [tid, tid]  # dispatched again once
    assert r.zcard("ai4ec:pending:detector-v1") == 0


def test_idempotency_key_over_http(local_host: Factory, r: redis.Redis) -> None:
    server = local_host(routing(), dispatcher=RecordingDispatcher())
    netloc = urlsplit(server.url).netloc
    doc = json.dumps(
        {"Endpoint": "http://10.1.2.3/v1/detector/detect", "Body": "{}", "PublishToGrid": True}
    ).encode()

    def client(_: int) -> set[str]:
        conn = http.client.HTTPConnection(netloc, timeout=30)
        ids = set()
        for _ in range(20):  # 50 keep-alive connections x 20 = 1,000 creates
            conn.request(
                "POST",
                "/api/CacheConnectorUpsert",
                body=doc,
                headers={"Idempotency-Key": "same-key"},
            )
            resp = conn.getresponse()
            assert resp.status == 200
            ids.add(json.loads(resp.read())["TaskId"])
        conn.close()
        return ids

    with ThreadPoolExecutor(50) as pool:
        ids = set().union(*pool.map(client, range(50)))
    assert len(ids) == 1
    assert r.zcard("/v1/detector/detect_created") == 1


def test_http_details(local_host: Factory) -> None:
    server = local_host(routing(), dispatcher=RecordingDispatcher())
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b'{"status":"ok"}')
    conn.putrequest("POST", "/api/CacheConnectorUpsert")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    payload = json.dumps({"Endpoint": "http://10.1.2.3/v1/detector/detect"}).encode()
    conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["BackendStatus"] == "created"
    conn.request("GET", "/api/CacheConnectorGet?taskId=nope")  # same kept-alive socket
    resp = conn.getresponse()
    assert resp.status == 404 and json.loads(resp.read())["error"] == "not_found"
    conn.request("GET", "/elsewhere")
    resp = conn.getresponse()
    assert resp.status == 404
    resp.read()
    conn.request("GET", "/api/CacheConnectorUpsert")
    resp = conn.getresponse()
    assert resp.status == 405
    resp.read()
    conn.close()


def test_serve_on_a_redis_cluster(redis_cluster: Any) -> None:
    """`functions serve --redis-mode cluster` keeps tasks on a real three-node Redis Cluster.

    The host used to open a plain client whatever the mode, which a cluster answers with
    MOVED for two keys in three; here every call of the upstream client's sequence must
    succeed, /health must answer, and the task must be readable through a cluster client.
    """
    from ai4ec_runtime.store import connect_redis

    redis_cluster.flush()
    base = Settings.from_env(env={}, bundled=None)
    server = make_server(
        "127.0.0.1",
        0,
        redis_cluster.url,
        routing=routing(),
        settings=dataclasses.replace(base, redis_mode="cluster"),
        dispatcher=RecordingDispatcher(),
    ).start()
    cluster = connect_redis(redis_cluster.url, "cluster")
    try:
        conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        client = UpstreamTaskClient(
            server.url + "/api/CacheConnectorUpsert?code=k",
            server.url + "/api/CacheConnectorGet?code=k",
        )
        ids = [
            apim_create(server, "http://10.1.2.3/v1/detector/detect", {"image": n})["TaskId"]
            for n in range(12)  # enough task ids to land on every shard
        ]
        for tid in ids:
            assert client.UpdateTaskStatus(tid, "running")[0] == 200
            status, rec = client.CompleteTask(tid, "completed")
            assert status == 200 and rec["BackendStatus"] == "completed"
        assert client.GetTaskStatus(ids[-1])["BackendStatus"] == "completed"
        # the documents sit in the cluster, under the keys the runtime names
        from ai4ec_runtime import keys

        shards = base.redis_shards
        assert all(cluster.exists(keys.task(tid, keys.tag_for(tid, shards))) for tid in ids)
    finally:
        cluster.close()
        server.shutdown()
