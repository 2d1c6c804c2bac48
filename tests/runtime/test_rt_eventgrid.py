"""Publishing through the real azure-eventgrid client to a local Event Grid sink."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from rt_support import DETECT, make_runtime

from ai4ec_runtime import keys
from ai4ec_runtime.dispatch import EventGridDispatcher, run_timers
from ai4ec_runtime.handlers import Request, handle
from ai4ec_runtime.models import PUBLISH_FAILED_TEXT


class TopicSink:
    """Accepts publishes like an Event Grid topic and records them."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.requests: list[dict[str, Any]] = []
        #: Publishes still to refuse with 403, as Event Grid refuses an identity whose
        #: role assignment has not reached it yet.
        self.refuse = 0
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                sink.requests.append(
                    {
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "key": self.headers.get("aeg-sas-key"),
                        "content_type": self.headers.get("Content-Type"),
                        "body": body,
                    }
                )
                code = 200 if self.headers.get("aeg-sas-key") == sink.key else 401
                if sink.refuse > 0:
                    sink.refuse -= 1
                    code = 403
                sink.requests[-1]["accepted"] = code == 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/api/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def topic() -> Iterator[TopicSink]:
    sink = TopicSink("topic-key-1")
    yield sink
    sink.server.shutdown()
    sink.server.server_close()


def test_publish_wire_format(r: redis.Redis, topic: TopicSink, routing_doc: dict[str, Any]) -> None:
    dispatcher = EventGridDispatcher(topic.uri, "topic-key-1", inline_max_bytes=1024)
    rt = make_runtime(r, routing_doc, dispatcher=dispatcher)
    resp = handle(
        rt,
        "CacheConnectorUpsert",
        Request(
            "POST",
            body=json.dumps(
                {
                    "Status": "created",
                    "BackendStatus": "created",
                    "Endpoint": DETECT + "?render=1",
                    "Body": '{"image":"a.jpg"}',
                    "PublishToGrid": True,
                }
            ).encode(),
        ),
    )
    task = json.loads(resp.body)
    assert resp.status == 200 and task["BackendStatus"] == "created"
    (req,) = topic.requests
    assert req["path"] == "/api/events"
    assert req["query"] == {"api-version": ["2018-01-01"]}
    assert req["key"] == "topic-key-1"
    assert req["content_type"].startswith("application/json")
    (event,) = req["body"]
    assert event["id"] == task["TaskId"]
    assert event["eventType"] == "task"
    assert event["subject"] == DETECT + "?render=1"
    assert event["data"] == '{"image":"a.jpg"}'
    assert event["dataVersion"] == "1.0"
    assert event["eventTime"]


def test_large_body_is_sent_by_reference(
    r: redis.Redis, topic: TopicSink, routing_doc: dict[str, Any]
) -> None:
    dispatcher = EventGridDispatcher(topic.uri, "topic-key-1", inline_max_bytes=1024)
    rt = make_runtime(r, routing_doc, dispatcher=dispatcher)
    big = json.dumps({"pixels": "x" * 5000})
    resp = handle(
        rt,
        "CacheConnectorUpsert",
        Request(
            "POST",
            body=json.dumps({"Endpoint": DETECT, "Body": big, "PublishToGrid": True}).encode(),
        ),
    )
    tid = json.loads(resp.body)["TaskId"]
    (event,) = topic.requests[0]["body"]
    assert event["data"] == {"ai4ecBodyRef": f"{tid}_ORIG"}
    assert r.get(f"{tid}_ORIG") == big.encode()


def _create(rt: Any) -> dict[str, Any]:
    body = json.dumps({"Endpoint": DETECT, "Body": "{}", "PublishToGrid": True}).encode()
    resp = handle(rt, "CacheConnectorUpsert", Request("POST", body=body))
    assert resp.status == 200
    return dict(json.loads(resp.body))


def test_a_refused_publish_is_sent_again_from_the_retry_queue(
    r: redis.Redis, topic: TopicSink, routing_doc: dict[str, Any]
) -> None:
    """The real azure-eventgrid client against a local topic that refuses (403) its first
    two publishes, as Event Grid refuses a Function App whose new role assignment has not
    reached it: the task stays created and the timer publishes it again after 5, then
    10 seconds; one event is accepted and nothing is left in the retry queue."""
    topic.refuse = 2
    dispatcher = EventGridDispatcher(topic.uri, "topic-key-1", inline_max_bytes=1024)
    rt = make_runtime(r, routing_doc, dispatcher=dispatcher)
    now = [1_800_000_000.0]
    rt.store.clock = lambda: now[0]
    task = _create(rt)
    tid = task["TaskId"]
    waiting = "Awaiting dispatch; retrying. Queued for 0 seconds."
    assert (task["BackendStatus"], task["Status"]) == ("created", waiting)
    assert run_timers(rt.store, dispatcher)["redispatched"] == 0  # not due yet
    now[0] += 5
    assert run_timers(rt.store, dispatcher)["redispatched"] == 1  # refused again
    stored = json.loads(r.get(tid) or b"")
    assert stored["Status"] == "Awaiting dispatch; retrying. Queued for 5 seconds."
    now[0] += 9
    assert run_timers(rt.store, dispatcher)["redispatched"] == 0  # 10 s backoff now
    now[0] += 1
    assert run_timers(rt.store, dispatcher)["redispatched"] == 1
    assert [q["accepted"] for q in topic.requests] == [False, False, True]
    assert [e["id"] for e in topic.requests[-1]["body"]] == [tid]
    assert json.loads(r.get(tid) or b"")["BackendStatus"] == "created"
    assert r.zscore(keys.retry(), tid) is None
    assert r.zscore("ai4ec:pending:detector-v1", tid) is not None


def test_a_publish_refused_past_the_queue_timeout_fails_the_task(
    r: redis.Redis, topic: TopicSink, routing_doc: dict[str, Any]
) -> None:
    """A topic that never accepts (local stand-in): the task waits no longer than its
    queue timeout (60 s here), then fails with upstream's text and leaves every index."""
    routing_doc["apis"]["detector-v1"]["queueTimeoutSeconds"] = 60
    topic.refuse = 1000
    dispatcher = EventGridDispatcher(topic.uri, "topic-key-1", inline_max_bytes=1024)
    rt = make_runtime(r, routing_doc, dispatcher=dispatcher)
    now = [1_800_000_000.0]
    rt.store.clock = lambda: now[0]
    tid = _create(rt)["TaskId"]
    for _ in range(60):
        now[0] += 1
        run_timers(rt.store, dispatcher)
    task = json.loads(r.get(tid) or b"")
    assert (task["BackendStatus"], task["Status"]) == ("failed", PUBLISH_FAILED_TEXT)
    # 1 + tries at 5, 15 and 35 s; the next (at 75 s) would pass the 60 s bound.
    assert len(topic.requests) == 4
    assert r.zscore("/v1/detector/detect_failed", tid) is not None
    assert r.zcard("/v1/detector/detect_created") == 0
    assert r.zcard("ai4ec:pending:detector-v1") == 0
    assert r.zscore(keys.retry(), tid) is None


def test_missing_topic_setting_is_a_clear_error(
    r: redis.Redis, routing_doc: dict[str, Any]
) -> None:
    import dataclasses

    from ai4ec_runtime.handlers import Runtime
    from ai4ec_runtime.settings import Settings

    settings = dataclasses.replace(Settings.from_env(env={}, bundled=None), dispatch="eventgrid")
    rt = Runtime(settings, redis_client=r, routing=routing_doc)
    try:
        resp = handle(
            rt,
            "CacheConnectorUpsert",
            Request(
                "POST",
                body=json.dumps({"Endpoint": DETECT, "Body": "{}", "PublishToGrid": True}).encode(),
            ),
        )
        err = json.loads(resp.body)
        assert resp.status == 500 and err["error"] == "configuration_error"
        assert "EVENT_GRID_TOPIC_URI" in err["message"]
        assert r.dbsize() == 0  # no task was created that could never be dispatched
    finally:
        rt.close()


def test_azure_identity_is_imported_only_without_a_key() -> None:
    """On Azure (a key or App Service's identity endpoint) azure-identity, which the
    bundle cannot carry, is never imported; only a developer machine falls back to it."""
    import subprocess
    import sys

    from rt_support import FUNCTIONS

    code = (
        "import sys, function_app\n"
        "from ai4ec_runtime.dispatch import EventGridDispatcher\n"
        "assert 'azure.identity' not in sys.modules\n"
        "EventGridDispatcher('https://t.example/api/events', 'k', 1)._get_client()\n"
        "assert 'azure.identity' not in sys.modules\n"
        "from ai4ec_runtime.settings import ManagedIdentity\n"
        "mi = ManagedIdentity('http://127.0.0.1:9/token', 'h')\n"
        "c = EventGridDispatcher('https://t.example/api/events', None, 1, identity=mi)\n"
        "assert type(c._get_client()._credential).__name__ == 'AppServiceIdentityCredential'\n"
        "assert 'azure.identity' not in sys.modules\n"
        "client = EventGridDispatcher('https://t.example/api/events', None, 1)._get_client()\n"
        "print(type(client._credential).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=FUNCTIONS, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "DefaultAzureCredential"
