"""Delivery: one POST per attempt, cold backends queued in Redis, per-API isolation.

Real sockets throughout: scripted raw-socket backends for the POST rules, and an
``http.server`` backend for the local dispatcher. No wall-clock asserts: every wait is a
generous bounded wait for a condition.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from rt_support import make_runtime, wait_for

from ai4ec_runtime.dispatch import BackendClient, LocalDispatcher, Outcome
from ai4ec_runtime.handlers import Runtime
from ai4ec_runtime.models import UpsertRequest


class RawBackend:
    """A raw-socket HTTP/1.1 backend; ``script(conn_no, req_no)`` picks each answer.

    The script returns ``"ok"`` (200, keep-alive), ``"ok-close-later"`` (200, keep-alive,
    then the socket is closed while idle), ``"hang"`` (read the request, never answer)
    or ``"drop"`` (read the request, close without an answer).
    """

    def __init__(self, script: Callable[[int, int], str]) -> None:
        self.script = script
        self.requests: list[tuple[int, int]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns += 1
            threading.Thread(target=self._serve, args=(conn, self._conns), daemon=True).start()

    def _serve(self, conn: socket.socket, conn_no: int) -> None:
        buf = b""
        req_no = 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                req_no += 1
                self.requests.append((conn_no, req_no))
                action = self.script(conn_no, req_no)
                if action == "hang":
                    time.sleep(3)
                    return
                if action == "drop":
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                if action == "ok-close-later":
                    time.sleep(0.2)
                    return

    def close(self) -> None:
        self.listener.close()


def test_read_timeout_is_one_post() -> None:
    backend = RawBackend(lambda c, n: "hang")
    client = BackendClient(0.3)
    with pytest.raises(OSError):
        client.post(backend.url + "/v1/x", "{}", "t1")
    time.sleep(0.1)
    assert backend.requests == [(1, 1)]  # the model would run once, not twice
    client.close()
    backend.close()


def test_answer_lost_after_sending_is_one_post() -> None:
    backend = RawBackend(lambda c, n: "ok" if (c, n) == (1, 1) else "drop")
    client = BackendClient(2.0)
    assert client.post(backend.url + "/v1/x", "{}", "t1") == 200
    with pytest.raises(OSError):  # sent on the reused socket; the answer never came
        client.post(backend.url + "/v1/x", "{}", "t2")
    assert backend.requests == [(1, 1), (1, 2)]
    client.close()
    backend.close()


def test_idle_socket_closed_by_the_backend_is_replaced_before_sending() -> None:
    backend = RawBackend(lambda c, n: "ok-close-later")
    client = BackendClient(2.0)
    assert client.post(backend.url + "/v1/x", "{}", "t1") == 200
    time.sleep(0.5)  # the backend closes the kept-alive socket meanwhile
    assert client.post(backend.url + "/v1/x", "{}", "t2") == 200
    assert backend.requests == [(1, 1), (2, 1)]  # one POST each, on a fresh connection
    client.close()
    backend.close()


class Api:
    """An API backend: answers 503 while ``cold``, blocks while ``hold`` is clear."""

    def __init__(self) -> None:
        self.cold = False
        self.hold = threading.Event()
        self.hold.set()
        self.posts: list[tuple[str, int]] = []
        api = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                code = 503 if api.cold else 200
                api.posts.append((self.headers.get("taskId", ""), code))
                api.hold.wait(20)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self, tid: str) -> bool:
        return (tid, 200) in self.posts

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def apis() -> Iterator[tuple[Api, Api]]:
    a, b = Api(), Api()
    yield a, b
    a.close()
    b.close()


def local(rt: Runtime, **kw: Any) -> LocalDispatcher:
    opts: dict[str, Any] = {
        "workers": 1,
        "base_delay": 0.05,
        "max_delay": 0.2,
        "lease_seconds": 30,
        "sweep_interval": 0.2,
        "poll_interval": 0.2,
    }
    return LocalDispatcher(rt.store, rt.backend, **{**opts, **kw})


def submit(rt: Runtime, d: LocalDispatcher, url: str) -> str:
    doc = {"Endpoint": url, "Body": "{}", "PublishToGrid": True}
    result = rt.store.upsert(UpsertRequest.parse(json.dumps(doc).encode()))
    assert result.dispatch is not None
    d.dispatch(result.dispatch)
    return result.dispatch.task_id


def test_cold_backend_waits_in_the_runtime_queue(
    r: redis.Redis, routing_doc: dict[str, Any], apis: tuple[Api, Api]
) -> None:
    """503 for a while, then 200: delivered from the durable queue, no Event Grid."""
    cold, _ = apis
    rt = make_runtime(r, routing_doc)
    d = local(rt)
    try:
        cold.cold = True
        tid = submit(rt, d, cold.url + "/v1/detector/detect")
        wait_for(lambda: len(cold.posts) >= 3)  # still cold: answered 503 each time
        doc = rt.store.get_doc(tid)
        assert doc is not None and doc["BackendStatus"] == "created"
        assert doc["Status"].startswith("Awaiting service availability.")
        assert rt.store.backlog(["detector-v1"]) == {"detector-v1": 1}
        cold.cold = False  # the replica is ready
        wait_for(lambda: cold.delivered(tid))
        wait_for(d.idle)
        assert d.outcomes[Outcome.DELIVERED] == 1 and d.outcomes[Outcome.QUEUED] >= 2
        assert [c for t, c in cold.posts if t == tid].count(200) == 1
    finally:
        d.close()


def test_one_api_backlog_never_delays_another(
    r: redis.Redis, routing_doc: dict[str, Any], apis: tuple[Api, Api]
) -> None:
    slow, fast = apis
    rt = make_runtime(r, routing_doc)
    d = local(rt)
    try:
        slow.hold.clear()  # the detector holds its POSTs: its lane (1 worker) is busy
        stuck = [submit(rt, d, slow.url + "/v1/detector/detect") for _ in range(3)]
        wait_for(lambda: len(slow.posts) == 1)
        ok = submit(rt, d, fast.url + "/v1/classifier/classify")
        wait_for(lambda: fast.delivered(ok))
        assert len(slow.posts) == 1  # the detector's backlog is still waiting
        slow.hold.set()
        wait_for(lambda: all(slow.delivered(t) for t in stuck))
    finally:
        d.close()


def test_queue_survives_a_stopped_dispatcher(
    r: redis.Redis, routing_doc: dict[str, Any], apis: tuple[Api, Api]
) -> None:
    """SIGTERM-style stop with a parked delivery: the next dispatcher delivers it."""
    api, _ = apis
    rt = make_runtime(r, routing_doc)
    first = local(rt, base_delay=1.0, max_delay=1.0)
    api.cold = True
    tid = submit(rt, first, api.url + "/v1/detector/detect")
    wait_for(lambda: len(api.posts) == 1)
    first.close()
    api.cold = False
    second = local(rt, base_delay=0.05)
    try:
        wait_for(lambda: api.delivered(tid), timeout=20)
    finally:
        second.close()


def test_claim_that_raises_requeues(
    r: redis.Redis,
    routing_doc: dict[str, Any],
    apis: tuple[Api, Api],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, _ = apis
    rt = make_runtime(r, routing_doc)
    real_claim = rt.store.claim
    calls = {"n": 0}

    def flaky_claim(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.exceptions.ConnectionError("Redis went away")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(rt.store, "claim", flaky_claim)
    d = local(rt)
    try:
        tid = submit(rt, d, api.url + "/v1/detector/detect")
        wait_for(lambda: api.delivered(tid))
        assert calls["n"] >= 2 and d.outcomes[Outcome.ERROR] == 1
    finally:
        d.close()


def test_timing_out_backend_gets_one_post_per_attempt(
    r: redis.Redis, routing_doc: dict[str, Any]
) -> None:
    backend = RawBackend(lambda c, n: "hang")
    rt = make_runtime(r, routing_doc, backend_timeout_seconds=0.3)
    d = local(rt, max_attempts=3)
    try:
        tid = submit(rt, d, backend.url + "/v1/detector/detect")
        wait_for(lambda: (rt.store.get_doc(tid) or {}).get("BackendStatus") == "failed", timeout=30)
        # The worker counts its outcome after the store's write that the line above saw.
        wait_for(lambda: d.outcomes[Outcome.GAVE_UP] == 1, timeout=10)
        assert len(backend.requests) == 3
        assert d.outcomes[Outcome.QUEUED] == 2
    finally:
        d.close()
        backend.close()
