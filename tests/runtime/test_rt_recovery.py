"""Recovery of the real local host: kill -9 under load, and cold backends.

Everything is a real process or socket: ``ai4ec functions serve`` as a child process, a
private ``redis-server`` with an append-only file, the fake Framework API
(rt_fake_backend.py, which reports progress with the upstream client's HTTP calls) and
in-process socket backends. Timeouts are configured short (seconds) so the recovery
bounds are seconds too; every wait is a bounded wait for a condition, never a
wall-clock assertion.
"""

from __future__ import annotations

import copy
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from rt_host import Host, start_host
from rt_support import ROUTING, RedisServer, start_backend, wait_for

TERMINAL = frozenset({"completed", "failed"})

#: Short bounds, so a test waits seconds, not the production minutes.
QUEUE_TIMEOUT = 3  # queueTimeoutSeconds of the fast API
RUN_TIMEOUT = 3  # timeoutSeconds of the fast API
ATTEMPTS = 4  # retry.maxAttempts of the fast API
BACKOFF = 0.2  # retry.backoffSeconds
BACKEND_TIMEOUT = 0.5  # AI4EC_BACKEND_TIMEOUT_SECONDS: the hanging API's POSTs time out
DELIVERIES = 3  # AI4EC_LOCAL_MAX_ATTEMPTS: deliveries of one dispatch before it fails
LEASE = 2  # AI4EC_DELIVERY_LEASE_SECONDS: an entry taken by the dead host is due again
LANE_WORKERS = 4  # AI4EC_LOCAL_WORKERS

HOST_ENV = {
    "AI4EC_BACKEND_TIMEOUT_SECONDS": str(BACKEND_TIMEOUT),
    "AI4EC_LOCAL_MAX_ATTEMPTS": str(DELIVERIES),
    "AI4EC_DELIVERY_LEASE_SECONDS": str(LEASE),
    "AI4EC_LOCAL_WORKERS": str(LANE_WORKERS),
    "AI4EC_LOCAL_POLL_SECONDS": "0.2",
}


def recovery_routing() -> dict[str, Any]:
    """The test routing with the short timeouts: detector (fast), classifier (hangs)."""
    doc = copy.deepcopy(ROUTING)
    doc["apis"]["detector-v1"].update(
        timeoutSeconds=RUN_TIMEOUT,
        queueTimeoutSeconds=QUEUE_TIMEOUT,
        retry={"maxAttempts": ATTEMPTS, "backoffSeconds": BACKOFF},
    )
    # The hanging API fails by delivery attempts alone; its queue timeout stays out of
    # the way (it would re-dispatch and blur the POST count), yet still bounds a dispatch
    # lost with the host.
    doc["apis"]["classifier-v1"].update(
        timeoutSeconds=RUN_TIMEOUT, queueTimeoutSeconds=30, retry={"maxAttempts": 1}
    )
    return doc


class HangingBackend:
    """Reads each POST and never answers it: every delivery attempt times out.

    ``posts`` counts the POSTs received per ``taskId`` header, at the backend.
    """

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        buf = b""
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    task = ""
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        key = name.strip().lower()
                        if key == b"content-length":
                            length = int(value)
                        elif key == b"taskid":
                            task = value.strip().decode()
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    buf = buf[length:]
                    with self._lock:
                        self.posts[task] += 1
                    # No answer: the runtime's read timeout ends the attempt and closes.
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


class Load:
    """Creates tasks over HTTP, one after another, until stopped; keeps the acknowledged.

    A create is acknowledged when the host answered 200 with a TaskId; creates that
    fail while the host is dead are not, and are retried with the next request.
    """

    def __init__(self, port: int, endpoints: list[str], pause: float = 0.01) -> None:
        self.port = port
        self.endpoints = endpoints
        self.pause = pause
        self.acked: dict[str, str] = {}  # TaskId -> Endpoint
        self.failed_calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set():
            endpoint = self.endpoints[n % len(self.endpoints)]
            doc = {"Endpoint": endpoint, "Body": json.dumps({"n": n}), "PublishToGrid": True}
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request(
                    "POST",
                    "/api/CacheConnectorUpsert?code=local",
                    body=json.dumps(doc),
                    headers={"Content-Type": "application/json"},
                )
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 200:
                    self.acked[json.loads(data)["TaskId"]] = endpoint
                else:
                    self.failed_calls += 1
            except (OSError, http.client.HTTPException):
                self.failed_calls += 1
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.05)
            self._stop.wait(self.pause)
        if conn is not None:
            conn.close()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "everysec")
    server.start()
    yield server
    server.stop()


def statuses(client: redis.Redis, ids: list[str]) -> dict[str, str]:
    """BackendStatus of every task, as stored ('missing' when the record is gone)."""
    out = {}
    for tid, raw in zip(ids, client.mget(ids), strict=True):
        out[tid] = json.loads(raw)["BackendStatus"] if raw else "missing"
    return out


def test_kill_9_of_the_host_under_load(tmp_path: Path, aof_redis: RedisServer) -> None:
    """kill -9 of ``functions serve`` mid-load, restart: every acknowledged task ends.

    Load: a client creating tasks for two APIs continuously; the detector's backend
    completes them with the upstream client's calls, the classifier's backend never
    answers (each delivery attempt times out). The host is killed (SIGKILL: no shutdown,
    no flush) while tasks are being created, delivered and reported, and restarted on the
    same port. After the configured bounds no acknowledged task is lost or non-terminal:
    lost deliveries come back when their lease ends, lost dispatches after the queue
    timeout, lost completions after the run timeout (re-dispatch). The hanging backend
    counts one POST per delivery attempt: ``DELIVERIES`` per task, plus at most one for an
    attempt that was in flight when the host died.
    """
    routing = recovery_routing()
    hang = HangingBackend()
    host = start_host(tmp_path, aof_redis.url, routing_doc=routing, **HOST_ENV)
    backend = start_backend(host.url, "--work-seconds", "0.05")
    hosts: list[Host] = [host]
    check = redis.Redis(port=aof_redis.port)
    try:
        fast = backend.url + "/v1/detector/detect"
        slow = hang.url + "/v1/classifier/classify"
        with Load(host.port, [fast, fast, fast, fast, fast, slow]) as load:
            wait_for(lambda: len(load.acked) >= 150, timeout=60)
            wait_for(lambda: sum(hang.posts.values()) >= 2, timeout=30)
            host.proc.kill()  # SIGKILL mid-load
            host.proc.wait(timeout=10)
            acked_before_kill = len(load.acked)
            time.sleep(0.5)  # the load and the backends' reports fail meanwhile
            host = start_host(
                tmp_path, aof_redis.url, routing_doc=routing, port=host.port, **HOST_ENV
            )
            hosts.append(host)
            wait_for(lambda: len(load.acked) >= acked_before_kill + 50, timeout=60)
        assert load.failed_calls > 0  # the load really ran into the dead host
        ids = sorted(load.acked)

        # The bound: a lost dispatch waits the queue timeout, a lost completion the run
        # timeout, then every retry its backoff and run; the hanging API needs its
        # deliveries' timeouts and backoffs. Generous slack for a loaded 2-core machine.
        bound = QUEUE_TIMEOUT + ATTEMPTS * (RUN_TIMEOUT + BACKOFF * 2**ATTEMPTS) + 3 * LEASE
        bound += len(ids) * DELIVERIES * BACKEND_TIMEOUT / LANE_WORKERS + 30
        wait_for(
            lambda: set(statuses(check, ids).values()) <= TERMINAL, timeout=bound, interval=0.2
        )

        final = statuses(check, ids)
        assert "missing" not in final.values()
        fast_ids = [t for t in ids if load.acked[t] == fast]
        slow_ids = [t for t in ids if load.acked[t] == slow]
        # The detector's backend always completes: every task did, re-dispatched if need be.
        assert {final[t] for t in fast_ids} == {"completed"}
        assert {final[t] for t in slow_ids} == {"failed"}
        # Every fast task reached its backend (some twice: re-dispatched after the kill).
        delivered = Counter(entry["taskId"] for entry in backend.log())
        assert all(delivered[t] >= 1 for t in fast_ids)
        for tid in slow_ids:
            doc = json.loads(check.get(tid) or b"{}")
            assert "delivery retries exhausted" in doc["Status"], doc
        # One POST per delivery attempt, counted at the backend.
        counts = Counter(hang.posts[t] for t in slow_ids)
        assert set(counts) <= {DELIVERIES, DELIVERIES + 1}, counts
        assert counts[DELIVERIES + 1] <= LANE_WORKERS, counts
        assert sum(hang.posts.values()) == sum(hang.posts[t] for t in slow_ids)
        # Nothing left behind: no pending (KEDA) entries, no queued deliveries.
        assert not [k for k in check.scan_iter("ai4ec:pending:*") if check.zcard(k)]
        assert not [k for k in check.scan_iter("ai4ec:dq:*") if check.zcard(k)]
        for path in ("/v1/detector/detect", "/v1/classifier/classify"):
            assert check.zcard(f"{path}_created") == 0
            assert check.zcard(f"{path}_running") == 0
    finally:
        check.close()
        for h in hosts:
            h.stop()
        backend.proc.kill()
        backend.proc.wait()
        hang.close()


class ColdApi:
    """An API that answers 503 until ``cold_seconds`` after its first POST, then 200.

    The shape of a GPU API scaled to zero: KEDA wakes it, and its replica is ready after
    a while (60 s in the issue; ``cold_seconds`` here). On a 200 it completes the task
    through the task manager, as an API container does. It records when it first answered
    200 (``warm``) and every POST.
    """

    def __init__(self, tm_url: str, cold_seconds: float) -> None:
        self.cold_seconds = cold_seconds
        self.first_post: float | None = None
        self.warm = threading.Event()
        self.posts: list[tuple[str, int]] = []
        api = self
        upsert = tm_url + "/api/CacheConnectorUpsert?code=local"

        def complete(task_id: str) -> None:
            import urllib.request

            doc = {"TaskId": task_id, "BackendStatus": "completed", "Status": "done"}
            req = urllib.request.Request(upsert, data=json.dumps(doc).encode(), method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                now = time.monotonic()
                if api.first_post is None:
                    api.first_post = now
                code = 503 if now - api.first_post < api.cold_seconds else 200
                task_id = self.headers.get("taskId", "")
                api.posts.append((task_id, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if code == 200:
                    api.warm.set()
                    threading.Thread(target=complete, args=(task_id,), daemon=True).start()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cold_api_completes_soon_after_it_warms_and_never_delays_another(
    tmp_path: Path, aof_redis: RedisServer
) -> None:
    """503 for ``cold_seconds`` (60 s in production, 3 s here), then 200.

    Over the real host: the cold API's task waits in the runtime's own durable queue
    (there is no Event Grid on the local host, so no Event Grid redelivery can be
    involved), is retried with the configured backoff, and completes within a short bound
    (the retry cap plus slack) after the backend's first 200. Meanwhile another API's task
    is delivered and completed while the first one is still cold.
    """
    retry_cap = 0.5
    host = start_host(
        tmp_path,
        aof_redis.url,
        routing_doc=recovery_routing(),
        AI4EC_LOCAL_RETRY_BASE_SECONDS="0.1",
        AI4EC_LOCAL_RETRY_MAX_SECONDS=str(retry_cap),
        AI4EC_LOCAL_MAX_ATTEMPTS="1000",
        AI4EC_LOCAL_POLL_SECONDS="0.2",
    )
    cold = ColdApi(host.url, cold_seconds=3.0)
    other = ColdApi(host.url, cold_seconds=0.0)
    check = redis.Redis(port=aof_redis.port)

    def create(endpoint: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
        doc = {"Endpoint": endpoint, "Body": "{}", "PublishToGrid": True}
        conn.request("POST", "/api/CacheConnectorUpsert?code=local", body=json.dumps(doc))
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status == 200, data
        return str(json.loads(data)["TaskId"])

    def status(tid: str) -> str:
        return str(statuses(check, [tid])[tid])

    try:
        tid = create(cold.url + "/v1/detector/detect")
        wait_for(lambda: len(cold.posts) >= 2)  # answered 503 at least twice: cold
        assert status(tid) == "created"
        doc = json.loads(check.get(tid) or b"{}")
        assert doc["Status"].startswith("Awaiting service availability."), doc
        assert check.zcard("ai4ec:pending:detector-v1") == 1  # what wakes KEDA

        # Another API's task goes through while the detector is still cold.
        quick = create(other.url + "/v1/classifier/classify")
        wait_for(lambda: status(quick) == "completed")
        assert not cold.warm.is_set() and status(tid) == "created"

        cold.warm.wait(timeout=30)
        assert cold.warm.is_set()
        # Within a short bound of the first 200: the retry cap plus slack, not a backoff
        # measured in minutes.
        wait_for(lambda: status(tid) == "completed", timeout=retry_cap + 10)
        codes = [code for t, code in cold.posts if t == tid]
        assert codes.count(200) == 1 and codes[-1] == 200 and codes.count(503) >= 2
        assert check.zcard("ai4ec:pending:detector-v1") == 0
    finally:
        check.close()
        host.stop()
        cold.close()
        other.close()
