"""A lost Redis reply never runs a transition twice (issue 14, item 1).

A TCP proxy (real sockets) sits between the runtime and a real redis-server. Armed
with a script mode, it forwards the next call of that mode, waits until Redis has
answered, then drops the reply and closes the connection: exactly what the runtime sees
when a connection breaks after Redis ran a call. The store re-sends the call (same
operation id) and must get the first answer back, so each transition ends in the same
state as without the drop, with exactly one dispatch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rt_support import CLASSIFY, DETECT, DropProxy, RedisServer, make_runtime

from ai4ec_runtime.dispatch import BackendClient, Outcome, deliver
from ai4ec_runtime.handlers import Request, Runtime, handle
from ai4ec_runtime.scripts import TASK_SCRIPT
from ai4ec_runtime.store import Dispatch, connect_redis

pytestmark = pytest.mark.usefixtures("both_paths")


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[DropProxy]:
    p = DropProxy(redis_server.port)
    yield p
    p.close()


@pytest.fixture
def rt(proxy: DropProxy, redis_server: RedisServer, routing_doc: dict[str, Any]) -> Runtime:
    client = connect_redis(f"redis://127.0.0.1:{proxy.port}/0")
    client.flushdb()
    client.script_load(TASK_SCRIPT)  # so the armed call is the one that runs the script
    return make_runtime(client, routing_doc)


def upsert(rt: Runtime, doc: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    resp = handle(
        rt, "CacheConnectorUpsert", Request("POST", headers=headers, body=json.dumps(doc).encode())
    )
    replayed = resp.headers.get("Idempotent-Replayed") == "true"
    return resp.status, {**json.loads(resp.body), "_replayed": replayed}


def dispatches(rt: Runtime) -> list[tuple[str, str]]:
    return [(d.task_id, d.endpoint) for d in rt.dispatcher.items]  # type: ignore[attr-defined]


def final(rt: Runtime, tid: str) -> tuple[str, str, str]:
    doc = rt.store.get_doc(tid)
    assert doc is not None
    return doc["BackendStatus"], doc["Status"], doc["Endpoint"]


NEW = {"Endpoint": DETECT, "Body": '{"n":1}', "PublishToGrid": True}


@pytest.mark.parametrize("drop", [False, True])
def test_create(rt: Runtime, proxy: DropProxy, drop: bool) -> None:
    if drop:
        proxy.arm("create")
    status, rec = upsert(rt, NEW)
    assert status == 200 and not rec["_replayed"]
    assert final(rt, rec["TaskId"]) == ("created", "created", DETECT)
    assert dispatches(rt) == [(rec["TaskId"], DETECT)]
    assert proxy.dropped == int(drop)


@pytest.mark.parametrize("drop", [False, True])
def test_create_with_idempotency_key(rt: Runtime, proxy: DropProxy, drop: bool) -> None:
    if drop:
        proxy.arm("create")
    status, rec = upsert(rt, NEW, **{"idempotency-key": "order-7"})
    # The retried call is not mistaken for a replay of the caller's key: it dispatches.
    assert status == 200 and not rec["_replayed"]
    assert dispatches(rt) == [(rec["TaskId"], DETECT)]
    status, again = upsert(rt, NEW, **{"idempotency-key": "order-7"})
    assert again["_replayed"] and again["TaskId"] == rec["TaskId"]
    assert len(dispatches(rt)) == 1
    assert proxy.dropped == int(drop)


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("target", ["running", "completed", "failed"])
def test_update(rt: Runtime, proxy: DropProxy, drop: bool, target: str) -> None:
    tid = upsert(rt, NEW)[1]["TaskId"]
    if target != "running":
        upsert(rt, {"TaskId": tid, "BackendStatus": "running"})
    if drop:
        proxy.arm("update")
    status, rec = upsert(rt, {"TaskId": tid, "BackendStatus": target, "Status": "s"})
    assert status == 200 and rec["BackendStatus"] == target
    assert final(rt, tid) == (target, "s", DETECT)
    assert len(dispatches(rt)) == 1
    assert proxy.dropped == int(drop)


@pytest.mark.parametrize("drop", [False, True])
def test_pipeline_hop(rt: Runtime, proxy: DropProxy, drop: bool) -> None:
    tid = upsert(rt, {**NEW, "Pipeline": "species-v1"})[1]["TaskId"]
    assert rt.store.claim(tid, DETECT, 60, want_body=False).state == "ok"
    upsert(rt, {"TaskId": tid, "BackendStatus": "running"})
    if drop:
        proxy.arm("update")
    status, rec = upsert(rt, {"TaskId": tid, "BackendStatus": "completed", "Status": '{"b":1}'})
    # The replay gets the hop's own answer (not a 409), and step 2 is dispatched once.
    assert status == 200 and (rec["BackendStatus"], rec["Endpoint"]) == ("created", CLASSIFY)
    assert final(rt, tid) == ("created", "created", CLASSIFY)
    assert dispatches(rt) == [(tid, DETECT), (tid, CLASSIFY)]
    assert rt.dispatcher.items[-1].body == '{"b":1}'  # type: ignore[attr-defined]
    assert proxy.dropped == int(drop)


class Sink:
    """A backend that counts the POSTs it receives."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                sink.posts.append(self.headers.get("taskId", ""))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("drop", [False, True])
def test_claim(rt: Runtime, proxy: DropProxy, drop: bool) -> None:
    """A replayed claim finds its own first answer, not its own lease: one delivery."""
    sink = Sink()
    backend = BackendClient(5.0)
    try:
        ep = sink.url + "/v1/detector/detect"
        tid = upsert(rt, {**NEW, "Endpoint": ep})[1]["TaskId"]
        if drop:
            proxy.arm("claim")
        item = Dispatch(tid, ep, '{"n":1}')
        kw: dict[str, Any] = {"body_from_store": False, "lease_seconds": 60}
        assert deliver(rt.store, backend, item, final_attempt=False, **kw) == Outcome.DELIVERED
        assert sink.posts == [tid]
        # A second delivery of the same dispatch (Event Grid at-least-once) is held off.
        assert deliver(rt.store, backend, item, final_attempt=False, **kw) == Outcome.LEASED
        assert sink.posts == [tid] and proxy.dropped == int(drop)
    finally:
        backend.close()
        sink.close()


@pytest.mark.parametrize("drop", [False, True])
def test_request_reporter_counter(rt: Runtime, proxy: DropProxy, drop: bool) -> None:
    if drop:
        proxy.arm("current")
    assert rt.store.current_processing_add("c", "/v1/x", 2) == 2
    assert rt.store.current_processing_get("c", "/v1/x") == 2
    assert proxy.dropped == int(drop)


def test_calls_without_replay_record_are_not_resent(
    rt: Runtime, proxy: DropProxy, redis_server: RedisServer
) -> None:
    """Only a failure to *send* is retried for a call that is not known replay-safe."""
    import redis

    client = connect_redis(f"redis://127.0.0.1:{proxy.port}/0")
    store = rt.store
    counter = "ai4ec:test:incr"
    proxy.arm("INCR")
    packed = b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(counter), counter.encode())
    with pytest.raises(redis.exceptions.ConnectionError):
        store._roundtrip(packed, 1, replay_safe=False)
    direct = redis.Redis(port=redis_server.port)
    assert direct.get(counter) == b"1"  # ran once, and was not run again
    direct.close()
    client.close()
