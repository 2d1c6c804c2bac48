"""Lifecycle, pipeline, timer and concurrency suites on a single Redis AND a Redis Cluster.

``any_runtime`` is parametrized (conftest.py): each test runs once against a single
``redis-server`` and once against a real three-master cluster, through the same
:class:`~ai4ec_runtime.store.TaskStore` code. Assertions go through the store (not raw
key names), since on a cluster every key carries its shard's hash tag.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from rt_support import CLASSIFY, DETECT, make_runtime

from ai4ec_runtime import keys
from ai4ec_runtime.dispatch import run_timers
from ai4ec_runtime.handlers import Request, Runtime, handle


def upsert(rt: Runtime, doc: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    resp = handle(
        rt, "CacheConnectorUpsert", Request("POST", headers=headers, body=json.dumps(doc).encode())
    )
    return resp.status, json.loads(resp.body)


def create(rt: Runtime, **extra: Any) -> str:
    status, rec = upsert(
        rt, {"Endpoint": DETECT, "Body": '{"n":1}', "PublishToGrid": True, **extra}
    )
    assert status == 200, rec
    return str(rec["TaskId"])


def test_lifecycle(any_runtime: Runtime) -> None:
    rt = any_runtime
    tid = create(rt)
    assert rt.store.get_doc(tid)["BackendStatus"] == "created"  # type: ignore[index]
    sizes = rt.store.queue_sizes(("created",))
    assert sizes["/v1/detector/detect_created"] == 1 and sizes["ai4ec:pending:detector-v1"] == 1
    assert upsert(rt, {"TaskId": tid, "BackendStatus": "running", "Status": "50%"})[0] == 200
    status, rec = upsert(rt, {"TaskId": tid, "BackendStatus": "completed", "Status": "ok"})
    assert status == 200 and rec["BackendStatus"] == "completed"
    assert upsert(rt, {"TaskId": tid, "BackendStatus": "running"})[0] == 409
    sizes = rt.store.queue_sizes(("created", "running", "completed"))
    assert sizes["/v1/detector/detect_completed"] == 1
    assert sizes["/v1/detector/detect_created"] == sizes["/v1/detector/detect_running"] == 0
    assert sizes["ai4ec:pending:detector-v1"] == 0
    assert rt.store.known_paths() == ["/v1/detector/detect"]
    assert len(rt.dispatcher.items) == 1  # type: ignore[attr-defined]
    # Idempotency-Key: one task per key, even on a cluster (the key lives in its slot).
    first = upsert(rt, {"Endpoint": DETECT, "PublishToGrid": True}, **{"idempotency-key": "k1"})
    again = upsert(rt, {"Endpoint": DETECT, "PublishToGrid": True}, **{"idempotency-key": "k1"})
    assert first[1]["TaskId"] == again[1]["TaskId"]
    # The request reporter counter is a key of its own slot.
    assert rt.store.current_processing_add("c1", "/v1/x", 3) == 3
    assert rt.store.current_processing_get("c1", "/v1/x") == 3


def test_pipeline_hop_and_fencing(any_runtime: Runtime) -> None:
    rt = any_runtime
    tid = create(rt, Pipeline="species-v1")
    assert rt.store.claim(tid, DETECT, 60, want_body=False).state == "ok"
    upsert(rt, {"TaskId": tid, "BackendStatus": "running", "Endpoint": DETECT})
    done = {"TaskId": tid, "BackendStatus": "completed", "Status": '{"boxes":[1]}'}
    status, rec = upsert(rt, {**done, "Endpoint": DETECT})
    assert status == 200 and (rec["BackendStatus"], rec["Endpoint"]) == ("created", CLASSIFY)
    # A duplicate completion of step 1 echoing the current Endpoint changes nothing.
    status, rec = upsert(rt, {**done, "Endpoint": CLASSIFY})
    assert status == 200 and rec["BackendStatus"] == "created"
    status, rec = upsert(rt, {"TaskId": tid, "BackendStatus": "failed", "Endpoint": CLASSIFY})
    assert status == 200 and rec["BackendStatus"] == "created"
    assert rt.store.claim(tid, CLASSIFY, 60, want_body=True).body == '{"boxes":[1]}'
    upsert(rt, {"TaskId": tid, "BackendStatus": "completed", "Status": "fox", "Endpoint": CLASSIFY})
    assert rt.store.get_doc(tid)["Status"] == "fox"  # type: ignore[index]
    items = rt.dispatcher.items  # type: ignore[attr-defined]
    assert [(d.task_id, d.endpoint) for d in items] == [(tid, DETECT), (tid, CLASSIFY)]
    sizes = rt.store.queue_sizes(("completed",))
    assert sizes["/v1/classifier/classify_completed"] == 1
    assert sizes["ai4ec:pending:classifier-v1"] == sizes["ai4ec:pending:detector-v1"] == 0


def test_queue_timeout_sweep(store_client: Any, routing_doc: dict[str, Any]) -> None:
    routing_doc["apis"]["detector-v1"].update(
        queueTimeoutSeconds=1, retry={"maxAttempts": 2, "backoffSeconds": 0}
    )
    rt = make_runtime(store_client, routing_doc)
    ids = [create(rt) for _ in range(20)]  # spread over the shards
    time.sleep(1.05)
    assert run_timers(rt.store, rt.dispatcher) == {"retry": 20, "failed": 0, "redispatched": 20}
    assert {rt.store.get_doc(t)["BackendStatus"] for t in ids} == {"created"}  # type: ignore[index]
    time.sleep(1.05)
    assert run_timers(rt.store, rt.dispatcher)["failed"] == 20


def test_racing_writers(any_runtime: Runtime) -> None:
    """8 writers race over 60 tasks; every task ends in exactly one consistent state."""
    rt = any_runtime
    ids = [create(rt) for _ in range(60)]
    errors: list[int] = []

    def writer(n: int) -> None:
        for i, tid in enumerate(ids):
            for st in ("running", "completed" if (i + n) % 2 else "failed"):
                status, _ = upsert(rt, {"TaskId": tid, "BackendStatus": st, "Status": st})
                if status not in (200, 409):
                    errors.append(status)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    finals = [rt.store.get_doc(t)["BackendStatus"] for t in ids]  # type: ignore[index]
    assert set(finals) <= {"completed", "failed"}
    sizes = rt.store.queue_sizes(("created", "running", "completed", "failed"))
    assert sizes["/v1/detector/detect_completed"] == finals.count("completed")
    assert sizes["/v1/detector/detect_failed"] == finals.count("failed")
    assert sizes["/v1/detector/detect_created"] == sizes["/v1/detector/detect_running"] == 0
    assert sizes["ai4ec:pending:detector-v1"] == 0


def test_every_key_of_a_task_shares_its_slot(any_runtime: Runtime) -> None:
    rt = any_runtime
    tid = create(rt)
    tag = rt.store.tag(tid)
    names = [keys.task(tid, tag), keys.orig(tid, tag), keys.meta(tid, tag)]
    names += [keys.status_set("/v1/detector/detect", "created", tag)]
    names += [keys.pending("detector-v1", tag), keys.deadlines(tag)]
    if rt.store.cluster:
        assert tag.startswith("{ai4ec:")
        assert len({rt.redis.keyslot(n) for n in names}) == 1
    else:
        assert tag == "" and names[0] == tid  # upstream's key names on a single Redis
    assert all(rt.redis.exists(n) for n in names)
