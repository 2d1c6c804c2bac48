"""The state machine and key layout, through the store and the plain handlers."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from rt_support import CLASSIFY, DETECT, make_runtime

from ai4ec_runtime.handlers import Request, Runtime, handle
from ai4ec_runtime.models import (
    IllegalTransition,
    TaskNotFound,
    UpsertRequest,
)

pytestmark = pytest.mark.usefixtures("both_paths")

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STATUSES = ("created", "running", "completed", "failed")


def upsert(rt: Runtime, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = handle(
        rt,
        "CacheConnectorUpsert",
        Request("POST", headers=headers or {}, body=json.dumps(doc).encode()),
    )
    return resp.status, json.loads(resp.body) if resp.body else None


def create(
    rt: Runtime, endpoint: str = DETECT, body: str = '{"image":"a.jpg"}', **extra: Any
) -> str:
    status, rec = upsert(
        rt,
        {
            "Status": "created",
            "BackendStatus": "created",
            "Endpoint": endpoint,
            "Body": body,
            "PublishToGrid": True,
            **extra,
        },
    )
    assert status == 200, rec
    return str(rec["TaskId"])


def membership(r: redis.Redis, task_id: str, *paths: str) -> set[str]:
    """Which ``<path>_<status>`` sets hold the task."""
    return {
        f"{p}_{s}" for p in paths for s in STATUSES if r.zscore(f"{p}_{s}", task_id) is not None
    }


def test_lifecycle_created_running_completed(runtime: Runtime, r: redis.Redis) -> None:
    tid = create(runtime)
    rec = runtime.store.get_doc(tid)
    assert rec is not None
    assert list(rec) == [
        "TaskId",
        "Timestamp",
        "Status",
        "BackendStatus",
        "Endpoint",
        "Body",
        "PublishToGrid",
        "EndpointPath",
    ]
    assert rec["BackendStatus"] == "created" and rec["Body"] is None
    assert rec["EndpointPath"] == "/v1/detector/detect" and ISO.match(rec["Timestamp"])
    assert r.get(f"{tid}_ORIG") == b'{"image":"a.jpg"}'
    assert membership(r, tid, "/v1/detector/detect") == {"/v1/detector/detect_created"}
    assert r.zscore("ai4ec:pending:detector-v1", tid) is not None
    assert [d.task_id for d in runtime.dispatcher.items] == [tid]  # type: ignore[attr-defined]

    status, rec = upsert(
        runtime,
        {
            "TaskId": tid,
            "Status": "50%",
            "BackendStatus": "running",
            "Endpoint": DETECT,
            "PublishToGrid": False,
        },
    )
    assert status == 200 and rec["BackendStatus"] == "running" and rec["Status"] == "50%"
    assert membership(r, tid, "/v1/detector/detect") == {"/v1/detector/detect_running"}
    assert r.zscore("ai4ec:deadlines", tid) is not None  # run timeout armed

    status, rec = upsert(runtime, {"TaskId": tid, "Status": "done", "BackendStatus": "completed"})
    assert status == 200 and rec["BackendStatus"] == "completed"
    assert membership(r, tid, "/v1/detector/detect") == {"/v1/detector/detect_completed"}
    assert r.zcard("ai4ec:pending:detector-v1") == 0
    assert r.zscore("ai4ec:deadlines", tid) is None
    for key in (tid, f"{tid}_ORIG", f"ai4ec:task:{tid}"):
        assert 604790 < r.ttl(key) <= 604800

    resp = handle(runtime, "CacheConnectorGet", Request("GET", params={"taskId": tid}))
    assert resp.status == 200 and json.loads(resp.body)["Status"] == "done"


def test_update_without_endpoint_keeps_stored_one(runtime: Runtime) -> None:
    """Upstream crashed on ``new Uri(null)`` (500); the server merges instead."""
    tid = create(runtime)
    status, rec = upsert(runtime, {"TaskId": tid, "BackendStatus": "running"})
    assert status == 200
    assert rec["Endpoint"] == DETECT and rec["Status"] == "running"
    status, rec = upsert(runtime, {"TaskId": tid, "Status": "halfway"})
    assert rec["BackendStatus"] == "running" and rec["Status"] == "halfway"


def test_array_body_and_bad_requests(runtime: Runtime) -> None:
    resp = handle(
        runtime,
        "CacheConnectorUpsert",
        Request(
            "POST",
            body=json.dumps([{"Endpoint": DETECT, "Body": "{}", "PublishToGrid": False}]).encode(),
        ),
    )
    assert resp.status == 200
    for body in (
        b"",
        b"not json",
        b"[]",
        b'{"BackendStatus":"done","Endpoint":"http://x/y"}',
        b'{"Endpoint":"ftp://x/y"}',
        b'{"Status":"x"}',
    ):
        resp = handle(runtime, "CacheConnectorUpsert", Request("POST", body=body))
        assert resp.status == 400, body
        assert json.loads(resp.body)["error"] == "bad_request"


def test_terminal_states_are_final(runtime: Runtime, r: redis.Redis) -> None:
    tid = create(runtime)
    assert upsert(runtime, {"TaskId": tid, "BackendStatus": "completed", "Status": "ok"})[0] == 200
    status, err = upsert(runtime, {"TaskId": tid, "BackendStatus": "running", "Status": "late"})
    assert status == 409
    assert err["error"] == "illegal_transition" and err["BackendStatus"] == "completed"
    assert err["Requested"] == "running" and "final" in err["message"]
    # FailTask after CompleteTask (the service raised after completing): 200, no change.
    status, rec = upsert(runtime, {"TaskId": tid, "BackendStatus": "failed", "Status": "boom"})
    assert status == 200 and rec["BackendStatus"] == "completed" and rec["Status"] == "ok"
    assert (
        upsert(runtime, {"TaskId": tid, "BackendStatus": "completed", "Status": "other"})[0] == 409
    )
    # An identical repeat (a client retry) is answered 200 and changes nothing.
    assert upsert(runtime, {"TaskId": tid, "BackendStatus": "completed", "Status": "ok"})[0] == 200
    assert runtime.store.get_doc(tid)["Status"] == "ok"  # type: ignore[index]
    assert membership(r, tid, "/v1/detector/detect") == {"/v1/detector/detect_completed"}


def test_running_back_to_created_needs_a_publish(runtime: Runtime) -> None:
    tid = create(runtime)
    upsert(runtime, {"TaskId": tid, "BackendStatus": "running"})
    assert upsert(runtime, {"TaskId": tid, "BackendStatus": "created"})[0] == 409


def test_unknown_and_malformed_task_ids(runtime: Runtime, r: redis.Redis) -> None:
    r.set("ai4ec:secret", "x")
    for tid in ("0b6d1c3e-7d55-4c42-9f77-8e0f1c0d2a11", "ai4ec:secret", "../etc"):
        status, err = upsert(runtime, {"TaskId": tid, "BackendStatus": "running"})
        assert status == 404 and err["error"] == "not_found"
        resp = handle(runtime, "CacheConnectorGet", Request("GET", params={"taskId": tid}))
        assert resp.status == 404
    resp = handle(runtime, "CacheConnectorGet", Request("GET", params={}))
    assert resp.status == 404
    rt204 = make_runtime(r, {"schemaVersion": 1}, not_found_status=204)
    resp = handle(rt204, "CacheConnectorGet", Request("GET", params={"taskid": "nope"}))
    assert resp.status == 204 and resp.body == b""


def test_created_to_failed_leaves_no_stale_membership(runtime: Runtime, r: redis.Redis) -> None:
    """Upstream left ``created -> failed`` ids in ``_created`` forever."""
    tid = create(runtime)
    upsert(runtime, {"TaskId": tid, "BackendStatus": "failed", "Status": "bad input"})
    assert membership(r, tid, "/v1/detector/detect") == {"/v1/detector/detect_failed"}
    assert r.zcard("ai4ec:pending:detector-v1") == 0


def test_add_pipeline_task_moves_sets_and_pending(runtime: Runtime, r: redis.Redis) -> None:
    """The Framework's imperative hop: upstream left the id in ``<prev>_running``."""
    tid = create(runtime)
    upsert(runtime, {"TaskId": tid, "BackendStatus": "running", "Endpoint": DETECT})
    status, rec = upsert(
        runtime,
        {
            "TaskId": tid,
            "Status": "created",
            "BackendStatus": "created",
            "Endpoint": CLASSIFY,
            "Body": '{"boxes":[1]}',
            "PublishToGrid": True,
        },
    )
    assert status == 200 and rec["EndpointPath"] == "/v1/classifier/classify"
    paths = ("/v1/detector/detect", "/v1/classifier/classify")
    assert membership(r, tid, *paths) == {"/v1/classifier/classify_created"}
    assert r.zcard("ai4ec:pending:detector-v1") == 0
    assert r.zscore("ai4ec:pending:classifier-v1", tid) is not None
    assert r.get(f"{tid}_ORIG") == b'{"boxes":[1]}'
    items = runtime.dispatcher.items  # type: ignore[attr-defined]
    assert items[-1].endpoint == CLASSIFY and items[-1].body == '{"boxes":[1]}'
    # Without a body the stored one is re-sent (upstream rule).
    upsert(runtime, {"TaskId": tid, "BackendStatus": "running"})
    upsert(
        runtime,
        {"TaskId": tid, "BackendStatus": "created", "Endpoint": DETECT, "PublishToGrid": True},
    )
    assert items[-1].body == '{"boxes":[1]}'
    assert membership(r, tid, *paths) == {"/v1/detector/detect_created"}


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ({"Body": '{"from":"body"}', "Status": '{"from":"status"}'}, '{"from":"body"}'),
        ({"Status": '{"from":"status"}'}, '{"from":"status"}'),
        ({"Status": "done, output at https://blob/x"}, '{"image":"a.jpg"}'),
        ({"Status": "42"}, '{"image":"a.jpg"}'),
    ],
)
def test_declarative_pipeline_output_rule(
    runtime: Runtime, r: redis.Redis, completion: dict[str, str], expected: str
) -> None:
    tid = create(runtime, Pipeline="species-v1")
    upsert(runtime, {"TaskId": tid, "BackendStatus": "running", "Endpoint": DETECT})
    status, rec = upsert(runtime, {"TaskId": tid, "BackendStatus": "completed", **completion})
    assert status == 200
    assert rec["BackendStatus"] == "created" and rec["Endpoint"] == CLASSIFY
    items = runtime.dispatcher.items  # type: ignore[attr-defined]
    assert (items[-1].task_id, items[-1].endpoint, items[-1].body) == (tid, CLASSIFY, expected)
    paths = ("/v1/detector/detect", "/v1/classifier/classify")
    assert membership(r, tid, *paths) == {"/v1/classifier/classify_created"}
    assert r.zcard("ai4ec:pending:detector-v1") == 0
    assert r.zscore("ai4ec:pending:classifier-v1", tid) is not None
    # A late update naming the previous step is a no-op, not applied to the next one.
    status, late = upsert(
        runtime, {"TaskId": tid, "BackendStatus": "completed", "Endpoint": DETECT}
    )
    assert status == 200 and late["Endpoint"] == CLASSIFY and late["BackendStatus"] == "created"
    # So is one echoing the current Endpoint before step 2 was delivered (fenced).
    status, late = upsert(
        runtime, {"TaskId": tid, "BackendStatus": "completed", "Endpoint": CLASSIFY}
    )
    assert status == 200 and late["BackendStatus"] == "created"
    assert runtime.store.claim(tid, CLASSIFY, 60, want_body=False).state == "ok"
    # The last step's completion is final; the pipeline's TTL applies.
    upsert(runtime, {"TaskId": tid, "BackendStatus": "completed", "Status": "species: fox"})
    assert runtime.store.get_doc(tid)["BackendStatus"] == "completed"  # type: ignore[index]
    assert membership(r, tid, *paths) == {"/v1/classifier/classify_completed"}
    assert 86390 < r.ttl(tid) <= 86400
    assert len(items) == 2


def test_pipeline_uses_backend_base_url(r: redis.Redis, routing_doc: dict[str, Any]) -> None:
    rt = make_runtime(r, routing_doc, backend_base_url="https://ingress.example")
    tid = create(rt, Pipeline="species-v1")
    upsert(rt, {"TaskId": tid, "BackendStatus": "completed"})
    assert rt.dispatcher.items[-1].endpoint == "https://ingress.example/v1/classifier/classify"  # type: ignore[attr-defined]
    assert upsert(rt, {"Endpoint": CLASSIFY, "Pipeline": "species-v1"})[0] == 200
    assert upsert(rt, {"Endpoint": DETECT, "Pipeline": "nope"})[0] == 400
    assert upsert(rt, {"Endpoint": "http://x/other", "Pipeline": "species-v1"})[0] == 400


def test_unknown_path_keeps_upstream_sets_without_pending(runtime: Runtime, r: redis.Redis) -> None:
    tid = create(runtime, endpoint="http://10.0.0.1/v1/org/free-api")
    assert membership(r, tid, "/v1/org/free-api") == {"/v1/org/free-api_created"}
    assert [k for k in r.keys("ai4ec:pending:*")] == []
    upsert(runtime, {"TaskId": tid, "BackendStatus": "completed"})
    assert membership(r, tid, "/v1/org/free-api") == {"/v1/org/free-api_completed"}
    assert r.ttl(tid) > 0  # default TTL for unrouted paths


def test_finished_tasks_expire(r: redis.Redis, routing_doc: dict[str, Any]) -> None:
    routing_doc["apis"]["detector-v1"]["taskTtlSeconds"] = 1
    routing_doc["pipelines"]["species-v1"]["taskTtlSeconds"] = 1  # shares the path
    rt = make_runtime(r, routing_doc)
    tid = create(rt)
    running = create(rt)
    upsert(rt, {"TaskId": running, "BackendStatus": "running"})
    upsert(rt, {"TaskId": tid, "BackendStatus": "completed"})
    time.sleep(1.1)
    assert r.exists(tid, f"{tid}_ORIG", f"ai4ec:task:{tid}") == 0
    assert handle(rt, "CacheConnectorGet", Request("GET", params={"taskId": tid})).status == 404
    assert r.exists(running, f"{running}_ORIG") == 2  # unfinished tasks never expire
    assert rt.store.trim_finished() == 1
    assert r.zcard("/v1/detector/detect_completed") == 0


def test_concurrent_updates_to_one_task(runtime: Runtime, r: redis.Redis) -> None:
    """32 threads race running updates and two different completions on one task."""
    tid = create(runtime)
    results: list[tuple[str, int, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(32)

    def worker(i: int) -> None:
        start.wait()
        for j in range(20):
            if i in (7, 21) and j == 10:
                doc = {"TaskId": tid, "BackendStatus": "completed", "Status": f"winner {i}"}
                kind = "completed"
            else:
                doc = {"TaskId": tid, "BackendStatus": "running", "Status": f"t{i}-{j}"}
                kind = "running"
            status, rec = upsert(runtime, doc)
            with lock:
                results.append((kind, status, rec))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(worker, range(32)))
    completions = [rec for kind, st, rec in results if kind == "completed" and st == 200]
    assert len(completions) == 1, "exactly one completion wins"
    winner = completions[0]["Status"]
    final = runtime.store.get_doc(tid)
    assert final is not None and final["BackendStatus"] == "completed" and final["Status"] == winner
    loser = [st for kind, st, rec in results if kind == "completed" and st != 200]
    assert loser == [409]
    for kind, st, rec in results:
        assert st in (200, 409)
        if st == 200 and kind == "running":
            assert rec["BackendStatus"] == "running"  # never a running written over completed
        if st == 409:
            assert rec["BackendStatus"] == "completed"
    assert membership(r, tid, "/v1/detector/detect") == {"/v1/detector/detect_completed"}
    assert r.zcard("ai4ec:pending:detector-v1") == 0 and r.zcard("ai4ec:deadlines") == 0


def test_idempotency_key_thousand_concurrent_creates(runtime: Runtime, r: redis.Redis) -> None:
    doc = {"Endpoint": DETECT, "Body": '{"image":"a.jpg"}', "PublishToGrid": True}

    def one(_: int) -> tuple[int, str, str]:
        resp = handle(
            runtime,
            "CacheConnectorUpsert",
            Request("POST", headers={"idempotency-key": "order-42"}, body=json.dumps(doc).encode()),
        )
        return (
            resp.status,
            json.loads(resp.body)["TaskId"],
            resp.headers.get("Idempotent-Replayed", ""),
        )

    with ThreadPoolExecutor(50) as pool:
        out = list(pool.map(one, range(1000)))
    assert {status for status, _, _ in out} == {200}
    assert len({tid for _, tid, _ in out}) == 1
    assert sum(1 for *_, replay in out if replay == "true") == 999
    assert r.zcard("/v1/detector/detect_created") == 1
    assert len(runtime.dispatcher.items) == 1  # type: ignore[attr-defined]
    # The same key with another request is refused; another caller gets its own task.
    resp = handle(
        runtime,
        "CacheConnectorUpsert",
        Request(
            "POST",
            headers={"idempotency-key": "order-42"},
            body=json.dumps({**doc, "Body": "{}"}).encode(),
        ),
    )
    assert resp.status == 422 and json.loads(resp.body)["error"] == "idempotency_key_reused"
    resp = handle(
        runtime,
        "CacheConnectorUpsert",
        Request(
            "POST",
            headers={"idempotency-key": "order-42", "x-ai4ec-caller": "sub-2"},
            body=json.dumps(doc).encode(),
        ),
    )
    assert resp.status == 200 and json.loads(resp.body)["TaskId"] != out[0][1]


def test_task_ids_are_random_uuid4(runtime: Runtime) -> None:
    ids = {create(runtime) for _ in range(20)}
    assert len(ids) == 20
    assert all(
        re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", i)
        for i in ids
    )


def test_store_errors_are_typed(runtime: Runtime) -> None:
    with pytest.raises(TaskNotFound):
        runtime.store.upsert(
            UpsertRequest.from_dict({"TaskId": "0b6d1c3e-7d55-4c42-9f77-8e0f1c0d2a11"})
        )
    tid = create(runtime)
    runtime.store.upsert(UpsertRequest.from_dict({"TaskId": tid, "BackendStatus": "failed"}))
    with pytest.raises(IllegalTransition):
        runtime.store.upsert(UpsertRequest.from_dict({"TaskId": tid, "BackendStatus": "running"}))


def test_upsert_many_matches_single_calls(runtime: Runtime, r: redis.Redis) -> None:
    reqs = [UpsertRequest.from_dict({"Endpoint": DETECT, "Body": "{}", "PublishToGrid": True})] * 5
    created = runtime.store.upsert_many(reqs)
    ids = [json.loads(c.record)["TaskId"] for c in created]  # type: ignore[union-attr]
    r.script_flush()  # as after a Redis restart: the batch must reload the script
    done = runtime.store.upsert_many(
        [UpsertRequest.from_dict({"TaskId": i, "BackendStatus": "completed"}) for i in ids]
        + [UpsertRequest.from_dict({"TaskId": ids[0], "BackendStatus": "running"})]
    )
    assert all(json.loads(d.record)["BackendStatus"] == "completed" for d in done[:5])  # type: ignore[union-attr]
    assert isinstance(done[5], IllegalTransition)
    assert r.zcard("/v1/detector/detect_completed") == 5


def test_current_processing_reads_the_key_it_writes(runtime: Runtime, r: redis.Redis) -> None:
    """Upstream Upsert wrote ``CURRENT_REQUESTS/<c><p>``; Get read another key."""
    body = json.dumps(
        [
            {
                "ApiPath": "/v1/detector/detect",
                "ServiceCluster": "aks1",
                "IncrementBy": 3,
                "DecrementBy": 1,
            }
        ]
    ).encode()
    resp = handle(runtime, "CurrentProcessingUpsert", Request("POST", body=body))
    assert (resp.status, resp.body) == (200, b"2")
    assert r.get("CURRENT_REQUESTS/aks1/v1/detector/detect") == b"2"
    for method in ("GET", "POST"):
        for path in ("/v1/detector/detect", "v1/detector/detect"):
            resp = handle(
                runtime,
                "CurrentProcessingGet",
                Request(method, params={"cluster": "aks1", "path": path}),
            )
            assert (resp.status, resp.body) == (200, b"2")
    down = json.dumps(
        {"ApiPath": "/v1/detector/detect", "ServiceCluster": "aks1", "DecrementBy": 5}
    ).encode()
    assert handle(runtime, "CurrentProcessingUpsert", Request("POST", body=down)).body == b"0"
    resp = handle(
        runtime, "CurrentProcessingGet", Request("GET", params={"cluster": "x", "path": "/y"})
    )
    assert resp.status == 204
    resp = handle(runtime, "CurrentProcessingGet", Request("GET", params={"cluster": "aks1"}))
    assert resp.status == 400 and b"required" in resp.body
    assert handle(runtime, "CurrentProcessingUpsert", Request("POST", body=b"{}")).status == 400


def test_methods_and_unknown_functions(runtime: Runtime) -> None:
    assert handle(runtime, "CacheConnectorGet", Request("POST")).status == 405
    assert handle(runtime, "Nope", Request("GET")).status == 404
