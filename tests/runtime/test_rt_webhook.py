"""BackendWebhook (both event schemas), busy retries, dead-letters, timeouts."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from rt_support import make_runtime

from ai4ec_runtime.dispatch import pump, run_timers
from ai4ec_runtime.handlers import Request, Runtime, handle


class Sink:
    """An in-process backend whose answers the test scripts."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.by_task: dict[str, list[int]] = {}  # batches are delivered concurrently
        self.received: list[tuple[str, str, str]] = []
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                sink.received.append((self.path, self.headers.get("taskId", ""), body))
                task_codes = sink.by_task.get(self.headers.get("taskId", ""))
                if task_codes:
                    code = task_codes.pop(0)
                else:
                    code = sink.codes.pop(0) if sink.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.server.shutdown()
    s.server.server_close()


def routing(sink_url: str, **api: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "apis": {
            "det-v1": {
                "taskTtlSeconds": 3600,
                "timeoutSeconds": 600,
                "paths": ["/v1/det/detect"],
                **api,
            }
        },
    }


def create(rt: Runtime, endpoint: str, body: str = '{"n":1}') -> str:
    resp = handle(
        rt,
        "CacheConnectorUpsert",
        Request(
            "POST",
            body=json.dumps({"Endpoint": endpoint, "Body": body, "PublishToGrid": True}).encode(),
        ),
    )
    assert resp.status == 200
    return str(json.loads(resp.body)["TaskId"])


def eg_event(task_id: str, endpoint: str, data: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "eventType": "task",
        "subject": endpoint,
        "data": data,
        "dataVersion": "1.0",
        "eventTime": "2026-11-25T10:00:00Z",
        "topic": "t",
    }


def webhook(rt: Runtime, events: Any, **headers: str) -> tuple[int, Any, dict[str, str]]:
    resp = handle(
        rt, "BackendWebhook", Request("POST", headers=headers, body=json.dumps(events).encode())
    )
    return resp.status, json.loads(resp.body) if resp.body else None, resp.headers


def state(rt: Runtime, tid: str) -> tuple[str, str]:
    doc = rt.store.get_doc(tid)
    assert doc is not None
    return doc["BackendStatus"], doc["Status"]


def test_event_grid_validation_handshake(runtime: Runtime) -> None:
    event = {
        "id": "1",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "subject": "",
        "data": {"validationCode": "512d38b6-c7b8"},
        "dataVersion": "2",
    }
    status, doc, _ = webhook(runtime, [event], **{"aeg-event-type": "SubscriptionValidation"})
    assert (status, doc) == (200, {"validationResponse": "512d38b6-c7b8"})


def test_cloudevents_options_handshake(runtime: Runtime) -> None:
    resp = handle(
        runtime,
        "BackendWebhook",
        Request("OPTIONS", headers={"webhook-request-origin": "eventgrid.azure.net"}),
    )
    assert resp.status == 200
    assert resp.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert handle(runtime, "BackendWebhook", Request("OPTIONS")).status == 400


def test_every_event_of_a_batch_is_delivered(r: redis.Redis, sink: Sink) -> None:
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    ids = [create(rt, ep, f'{{"n":{i}}}') for i in range(3)]
    status, doc, _ = webhook(rt, [eg_event(t, ep, f'{{"n":{i}}}') for i, t in enumerate(ids)])
    assert status == 200
    assert [x["outcome"] for x in doc["results"]] == ["delivered"] * 3
    assert sorted(sink.received) == sorted(
        ("/v1/det/detect", t, f'{{"n":{i}}}') for i, t in enumerate(ids)
    )
    # A redelivered batch (Event Grid at-least-once) does not reach the backend twice.
    status, doc, _ = webhook(rt, [eg_event(t, ep, "{}") for t in ids])
    assert status == 200 and {x["outcome"] for x in doc["results"]} == {"leased"}
    assert len(sink.received) == 3


def pump_until(rt: Runtime, done: Any, max_attempts: int = 20) -> dict[str, int]:
    """Run the queue pump (the sweeper timer's job) until ``done()``; a bounded wait."""
    totals: dict[str, int] = {}
    deadline = time.monotonic() + 20
    while not done():
        assert time.monotonic() < deadline, "the delivery queue never delivered"
        counts = pump(
            rt.store,
            rt.backend,
            ["", *rt.routing.apis],
            lease_seconds=60,
            max_attempts=max_attempts,
            base_delay=0.05,
            max_delay=0.1,
        )
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        time.sleep(0.02)
    return totals


@pytest.mark.parametrize("code", [429, 503])
def test_busy_backend_is_queued_not_returned_to_event_grid(
    r: redis.Redis, sink: Sink, code: int
) -> None:
    """A busy or cold backend's task waits in the runtime's own durable queue.

    The webhook answers 200 (Event Grid does not redeliver on its own backoff), and the
    task is delivered from the API's queue as soon as the backend answers.
    """
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    tid = create(rt, ep)
    other = create(rt, ep)
    sink.by_task[tid] = [code]
    status, doc, _ = webhook(rt, [eg_event(tid, ep, "{}"), eg_event(other, ep, "{}")])
    assert status == 200
    assert [x["outcome"] for x in doc["results"]] == ["queued", "delivered"]
    st, text = state(rt, tid)
    assert st == "created"
    assert text.startswith("Awaiting service availability. Queued for ") and text.endswith(
        " seconds."
    )
    assert rt.store.backlog(["det-v1"]) == {"det-v1": 1}
    counts = pump_until(rt, lambda: sum(1 for _, t, _ in sink.received if t == tid) == 2)
    assert counts == {"delivered": 1}
    assert sorted(t for _, t, _ in sink.received) == sorted([tid, other, tid])
    assert rt.store.backlog(["det-v1"]) == {"det-v1": 0}


def test_last_delivery_attempt_fails_the_task(r: redis.Redis, sink: Sink) -> None:
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    tid = create(rt, ep)
    sink.codes = [503, 500, 503]
    status, doc, _ = webhook(rt, [eg_event(tid, ep, "{}")])
    assert status == 200 and doc["results"][0]["outcome"] == "queued"
    counts = pump_until(rt, lambda: state(rt, tid)[0] == "failed", max_attempts=3)
    assert counts == {"queued": 1, "gave_up": 1}
    st, text = state(rt, tid)
    assert text == "Failed - backend busy and delivery retries exhausted (last: HTTP 503)."
    assert r.zcard("ai4ec:pending:det-v1") == 0 and r.zcard("ai4ec:dq:det-v1") == 0
    assert len(sink.received) == 3  # one POST per attempt


def test_rejected_request_fails_at_once(r: redis.Redis, sink: Sink) -> None:
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    tid = create(rt, ep)
    sink.codes = [400]
    status, doc, _ = webhook(rt, [eg_event(tid, ep, "{}")])
    assert status == 200 and doc["results"][0]["outcome"] == "rejected"
    assert state(rt, tid) == ("failed", "Failed - the backend rejected the request (HTTP 400).")


def test_unreachable_backend_is_retried(r: redis.Redis) -> None:
    rt = make_runtime(r, routing("x"), backend_timeout_seconds=1.0)
    ep = "http://127.0.0.1:9/v1/det/detect"
    tid = create(rt, ep)
    status, doc, _ = webhook(rt, [eg_event(tid, ep, "{}")])
    assert status == 200 and doc["results"][0]["outcome"] == "queued"
    assert state(rt, tid)[0] == "created"
    assert r.zscore("ai4ec:dq:det-v1", tid) is not None


def test_large_body_travels_by_reference(r: redis.Redis, sink: Sink) -> None:
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    big = json.dumps({"pixels": "x" * 300_000})
    tid = create(rt, ep, big)
    status, _, _ = webhook(rt, [eg_event(tid, ep, {"ai4ecBodyRef": f"{tid}_ORIG"})])
    assert status == 200 and sink.received[-1][2] == big


def test_cloudevents_schema_single_and_batch(r: redis.Redis, sink: Sink) -> None:
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    a, b = create(rt, ep), create(rt, ep)
    ce = {
        "specversion": "1.0",
        "type": "task",
        "source": "/topics/t",
        "id": a,
        "subject": ep,
        "data": {"k": "v"},
    }
    assert webhook(rt, ce)[0] == 200
    ce_b = {**ce, "id": b, "data_base64": base64.b64encode(b'{"bin":1}').decode()}
    ce_b.pop("data")
    status, doc, _ = webhook(rt, [ce_b, {**ce, "type": "other.event"}])
    assert status == 200 and [x["outcome"] for x in doc["results"]] == ["delivered", "ignored"]
    assert [body for _, _, body in sink.received] == ['{"k":"v"}', '{"bin":1}']


def test_stale_event_for_a_running_task_is_skipped(r: redis.Redis, sink: Sink) -> None:
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    tid = create(rt, ep)
    handle(
        rt,
        "CacheConnectorUpsert",
        Request("POST", body=json.dumps({"TaskId": tid, "BackendStatus": "running"}).encode()),
    )
    status, doc, _ = webhook(rt, [eg_event(tid, ep, "{}"), eg_event(tid, ep + "/other", "{}")])
    assert status == 200 and [x["outcome"] for x in doc["results"]] == ["stale", "stale"]
    assert sink.received == []
    assert webhook(rt, {"no": "events"})[0] == 200
    resp = handle(rt, "BackendWebhook", Request("POST", body=b"{bad"))
    assert resp.status == 400


def test_dead_lettered_events_fail_their_tasks(r: redis.Redis, sink: Sink) -> None:
    rt = make_runtime(r, routing(sink.url))
    ep = sink.url + "/v1/det/detect"
    lost, ran = create(rt, ep), create(rt, ep)
    handle(
        rt,
        "CacheConnectorUpsert",
        Request("POST", body=json.dumps({"TaskId": ran, "BackendStatus": "running"}).encode()),
    )
    dead = [
        {
            **eg_event(t, ep, "{}"),
            "deadLetterReason": "MaxDeliveryAttemptsExceeded",
            "deliveryAttempts": 30,
            "lastDeliveryOutcome": "Busy",
            "lastHttpStatusCode": 503,
        }
        for t in (lost, ran)
    ]
    resp = handle(rt, "BackendDeadLetter", Request("POST", body=json.dumps(dead).encode()))
    assert resp.status == 200 and json.loads(resp.body) == {"failed": [lost]}
    st, text = state(rt, lost)
    assert st == "failed"
    assert text == (
        "Failed - dispatch to the backend gave up "
        "(MaxDeliveryAttemptsExceeded; 30 attempts; last: 503)."
    )
    assert state(rt, ran)[0] == "running"  # a late dead-letter never fails a task that ran


def test_stuck_running_task_is_retried_then_failed(r: redis.Redis) -> None:
    doc = routing("x", timeoutSeconds=1, retry={"maxAttempts": 2, "backoffSeconds": 0})
    rt = make_runtime(r, doc)
    tid = create(rt, "http://10.0.0.1/v1/det/detect")
    handle(
        rt,
        "CacheConnectorUpsert",
        Request("POST", body=json.dumps({"TaskId": tid, "BackendStatus": "running"}).encode()),
    )
    assert run_timers(rt.store, rt.dispatcher) == {"retry": 0, "failed": 0, "redispatched": 0}
    time.sleep(1.05)
    counts = run_timers(rt.store, rt.dispatcher)
    assert counts == {"retry": 1, "failed": 0, "redispatched": 1}
    st, text = state(rt, tid)
    assert st == "created"
    assert text == "Retrying: running longer than 1 seconds (attempt 2 of 2)."
    assert [d.task_id for d in rt.dispatcher.items] == [tid, tid]  # type: ignore[attr-defined]
    assert r.zscore("ai4ec:pending:det-v1", tid) is not None
    handle(
        rt,
        "CacheConnectorUpsert",
        Request("POST", body=json.dumps({"TaskId": tid, "BackendStatus": "running"}).encode()),
    )
    time.sleep(1.05)
    assert run_timers(rt.store, rt.dispatcher)["failed"] == 1
    st, text = state(rt, tid)
    assert (st, text) == ("failed", "Failed - running longer than 1 seconds (attempt 2 of 2).")
    assert r.zcard("ai4ec:pending:det-v1") == 0 and r.zcard("ai4ec:deadlines") == 0
    assert r.zscore("/v1/det/detect_failed", tid) is not None


def test_undelivered_task_is_redispatched_after_queue_timeout(r: redis.Redis) -> None:
    """A dispatch lost between create and publish is recovered by the queue timeout."""
    doc = routing("x", queueTimeoutSeconds=1, retry={"maxAttempts": 2, "backoffSeconds": 0})
    rt = make_runtime(r, doc)
    tid = create(rt, "http://10.0.0.1/v1/det/detect")
    time.sleep(1.05)
    assert run_timers(rt.store, rt.dispatcher)["redispatched"] == 1
    assert state(rt, tid) == (
        "created",
        "Retrying: not picked up by the backend within 1 seconds (attempt 2 of 2).",
    )


def test_late_completion_of_a_timed_out_step_cancels_its_retry(
    r: redis.Redis, routing_doc: dict[str, Any]
) -> None:
    routing_doc["apis"]["detector-v1"].update(
        timeoutSeconds=1, retry={"maxAttempts": 2, "backoffSeconds": 0.3}
    )
    rt = make_runtime(r, routing_doc)
    tid = create(rt, "http://10.0.0.1/v1/detector/detect")
    handle(
        rt,
        "CacheConnectorUpsert",
        Request("POST", body=json.dumps({"TaskId": tid, "BackendStatus": "running"}).encode()),
    )
    handle(
        rt,
        "CacheConnectorUpsert",
        Request(
            "POST",
            body=json.dumps({"TaskId": tid, "Status": "x", "BackendStatus": "running"}).encode(),
        ),
    )
    time.sleep(1.05)
    assert rt.store.sweep() == [(tid, "retry")]
    assert r.zscore("ai4ec:retry", tid) is not None
    # The first attempt finishes after all: the task moves on (here: it just completes).
    resp = handle(
        rt,
        "CacheConnectorUpsert",
        Request(
            "POST",
            body=json.dumps(
                {"TaskId": tid, "Status": "done", "BackendStatus": "completed"}
            ).encode(),
        ),
    )
    assert resp.status == 200
    assert r.zscore("ai4ec:retry", tid) is None
    time.sleep(0.35)
    assert rt.store.due_retries() == []
    assert state(rt, tid) == ("completed", "done")
