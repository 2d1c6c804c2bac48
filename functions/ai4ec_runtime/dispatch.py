"""Getting a task to its backend: publishers, the delivery step, and the local worker.

Two halves:

* **Publishing** (after an upsert decided a dispatch is due): :class:`EventGridDispatcher`
  sends one Event Grid event per task (``id``=TaskId, ``event_type``="task",
  ``subject``=Endpoint, ``data``=body, ``data_version``="1.0", upstream's shape); a body
  larger than ``AI4EC_EVENT_INLINE_MAX_BYTES`` travels as a reference to ``<TaskId>_ORIG``
  instead. :class:`LocalDispatcher` keeps the dispatch in process and delivers it
  itself, with retries, for the local host and tests.
* **Delivering** (:func:`deliver`): claim the dispatch in Redis, POST the body to the
  backend with the ``taskId`` header, and classify the answer: delivered, busy (429/503,
  retried with backoff), rejected (other 4xx: failed at once), or error (5xx / network,
  retried). The webhook and the local worker share it, so both transports behave alike.
"""

from __future__ import annotations

import heapq
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

from .store import Dispatch, TaskStore

log = logging.getLogger("ai4ec_runtime.dispatch")

#: Key of the reference object sent instead of a body too large for an event.
BODY_REF_KEY = "ai4ecBodyRef"
#: Upstream's event type, kept so existing subscriptions and filters still match.
EVENT_TYPE = "task"


class DispatchError(Exception):
    """Publishing a dispatch failed; the caller marks the task failed."""


class Dispatcher(Protocol):
    """Anything that can hand a task to its backend (eventually)."""

    def dispatch(self, item: Dispatch) -> None:
        """Publish ``item``; raise :class:`DispatchError` when that is impossible."""

    def close(self) -> None:
        """Release resources (threads, HTTP sessions)."""


def event_data(item: Dispatch, inline_max_bytes: int) -> str | dict[str, str]:
    """The event's ``data``: the body itself, or a reference when it is too large.

    Inline bodies are always JSON strings (the exact text to POST, as upstream sent
    them), so a JSON *object* carrying :data:`BODY_REF_KEY` cannot be confused with one.
    """
    encoded = len(json.dumps(item.body).encode())
    if encoded > inline_max_bytes:
        return {BODY_REF_KEY: item.task_id + "_ORIG"}
    return item.body


class EventGridDispatcher:
    """Publishes dispatches to an Event Grid custom topic (the Azure transport).

    The SDK client is created on first use, and ``azure.identity`` is imported only
    when no topic key is configured, so a missing optional package or setting never
    breaks importing the Functions app.

    Args:
        topic_uri: ``EVENT_GRID_TOPIC_URI``.
        key: ``EVENT_GRID_KEY``; ``None`` uses ``DefaultAzureCredential``.
        inline_max_bytes: larger bodies are sent by reference.
    """

    def __init__(self, topic_uri: str, key: str | None, inline_max_bytes: int) -> None:
        self.topic_uri = topic_uri
        self.key = key
        self.inline_max_bytes = inline_max_bytes
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.eventgrid import EventGridPublisherClient

                credential: Any
                if self.key:
                    from azure.core.credentials import AzureKeyCredential

                    credential = AzureKeyCredential(self.key)
                else:
                    from azure.identity import DefaultAzureCredential

                    credential = DefaultAzureCredential()
                self._client = EventGridPublisherClient(self.topic_uri, credential)
            return self._client

    def dispatch(self, item: Dispatch) -> None:
        """Send one ``task`` event for ``item``.

        Raises:
            DispatchError: the SDK could not publish (network, auth, size).
        """
        from azure.eventgrid import EventGridEvent

        event = EventGridEvent(
            subject=item.endpoint,
            event_type=EVENT_TYPE,
            data=event_data(item, self.inline_max_bytes),
            data_version="1.0",
            id=item.task_id,
        )
        try:
            self._get_client().send([event])
        except Exception as exc:  # any SDK failure means "not published"
            raise DispatchError(f"Event Grid publish failed: {exc}") from exc

    def close(self) -> None:
        """Close the SDK client's HTTP session."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class BackendClient:
    """POSTs bodies to backends over a pool of kept-alive HTTP/1.1 connections.

    A fresh connection per call (upstream created an ``HttpClient`` per call) would cost
    a TCP handshake per task. The pool is shared by all threads: a connection is taken
    for one request and put back afterwards, so any number of caller threads use at
    most as many sockets as run concurrently.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._free: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def post(self, url: str, body: str, task_id: str) -> int:
        """POST ``body`` to ``url`` with the ``taskId`` header; returns the status code.

        Raises:
            OSError: connection failed or timed out (after one reconnect attempt).
        """
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        payload = body.encode()
        headers = {
            "taskId": task_id,
            "Content-Type": "application/json",
            "Content-Length": str(len(payload)),
        }
        for attempt in (1, 2):
            conn = self._take(key)
            try:
                conn.request("POST", target, body=payload, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                # A kept-alive connection the backend closed fails on first use: retry
                # once on a new connection; a second failure is real.
                if attempt == 2:
                    raise OSError(f"POST {url} failed: {exc}") from exc
                continue
            self._give(key, conn, reusable=not resp.will_close)
            return int(resp.status)
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self, key: tuple[str, str]) -> http.client.HTTPConnection:
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        cls = http.client.HTTPSConnection if key[0] == "https" else http.client.HTTPConnection
        return cls(key[1], timeout=self.timeout)

    def _give(self, key: tuple[str, str], conn: http.client.HTTPConnection, reusable: bool) -> None:
        with self._lock:
            if reusable and not self._closed:
                self._free.setdefault(key, []).append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        with self._lock:
            self._closed = True
            conns = [c for free in self._free.values() for c in free]
            self._free.clear()
        for conn in conns:
            conn.close()


class Outcome(StrEnum):
    """What happened to one delivery attempt."""

    #: The backend accepted the task (2xx).
    DELIVERED = "delivered"
    #: Nothing to do: the task moved on, vanished, or another delivery holds it.
    STALE = "stale"
    #: 429/503: the backend is busy; try again later.
    BUSY = "busy"
    #: Network error or other 5xx: try again later.
    ERROR = "error"
    #: A 4xx other than 408/429: retrying cannot help; the task is failed.
    REJECTED = "rejected"
    #: Retries are exhausted; the task was failed.
    GAVE_UP = "gave_up"


BUSY_CODES = frozenset({429, 503})
#: 4xx answers that mean "try again" rather than "your request is wrong".
RETRYABLE_4XX = frozenset({408, 425, 429})


def deliver(
    store: TaskStore,
    backend: BackendClient,
    item: Dispatch,
    *,
    body_from_store: bool,
    lease_seconds: float,
    final_attempt: bool,
) -> Outcome:
    """Deliver one dispatch to its backend and record the result in the task.

    Args:
        store: task store.
        backend: HTTP client for the backend POST.
        item: the dispatch (its body is ignored when ``body_from_store``).
        body_from_store: load the body from ``<TaskId>_ORIG`` (reference events).
        lease_seconds: how long this delivery blocks duplicates.
        final_attempt: the transport will not retry again; fail the task if this fails.
    """
    claim = store.claim(item.task_id, item.endpoint, lease_seconds, want_body=body_from_store)
    if claim.state != "ok":
        log.info("task %s: skip delivery (%s)", item.task_id, claim.state)
        return Outcome.STALE
    body = claim.body if body_from_store else item.body
    try:
        status = backend.post(item.endpoint, body, item.task_id)
    except OSError as exc:
        status, detail = 0, f"unreachable: {exc}"
    else:
        detail = f"HTTP {status}"
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        store.fail(
            item.task_id,
            f"Failed - the backend rejected the request ({detail}).",
            endpoint=item.endpoint,
        )
        return Outcome.REJECTED
    busy = status in BUSY_CODES
    if final_attempt:
        what = "busy" if busy else "unavailable"
        store.fail(
            item.task_id,
            f"Failed - backend {what} and delivery retries exhausted (last: {detail}).",
            endpoint=item.endpoint,
        )
        return Outcome.GAVE_UP
    store.note_waiting(item.task_id, item.endpoint, "busy" if busy else "error", detail)
    log.info(
        "task %s: backend %s (%s); will retry", item.task_id, "busy" if busy else "error", detail
    )
    return Outcome.BUSY if busy else Outcome.ERROR


@dataclass(order=True, slots=True)
class _Job:
    due: float
    seq: int
    item: Dispatch
    attempt: int


class LocalDispatcher:
    """Delivers dispatches itself, in background threads, with backoff on busy/errors.

    This replaces Event Grid on the local host: no topic, no webhook, the same
    :func:`deliver` step. A busy (429/503) or failing backend is retried after
    ``base * 2**(attempt-1)`` seconds (capped at ``max_delay``), up to ``max_attempts``
    deliveries; then the task is failed, as a dead-lettered event would be in Azure.
    A sweeper thread also runs the store's deadline sweep and re-dispatches timed-out
    tasks whose backoff has passed (the job of the timer functions in Azure).

    Args:
        store: task store.
        backend: HTTP client.
        workers: delivery threads (a slow backend holds one while it answers).
        base_delay: first retry delay in seconds.
        max_delay: cap of the retry delay.
        max_attempts: deliveries before giving up.
        lease_seconds: delivery lease (see :meth:`TaskStore.claim`).
        sweep_interval: seconds between deadline sweeps (0 disables the sweeper).
        sweep_batch: deadlines handled per sweep call.
    """

    def __init__(
        self,
        store: TaskStore,
        backend: BackendClient,
        *,
        workers: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        max_attempts: int = 20,
        lease_seconds: float = 600.0,
        sweep_interval: float = 1.0,
        sweep_batch: int = 500,
    ) -> None:
        self.store = store
        self.backend = backend
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.sweep_interval = sweep_interval
        self.sweep_batch = sweep_batch
        self._heap: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._busy = 0
        self._closed = False
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self._threads = [
            threading.Thread(target=self._work, name=f"ai4ec-dispatch-{i}", daemon=True)
            for i in range(workers)
        ]
        if sweep_interval > 0:
            self._threads.append(
                threading.Thread(target=self._sweep_loop, name="ai4ec-sweeper", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def dispatch(self, item: Dispatch) -> None:
        """Queue ``item`` for immediate delivery."""
        self._push(item, 1, time.monotonic())

    def _push(self, item: Dispatch, attempt: int, due: float) -> None:
        with self._cond:
            if self._closed:
                raise DispatchError("local dispatcher is closed")
            self._seq += 1
            heapq.heappush(self._heap, _Job(due, self._seq, item, attempt))
            self._cond.notify()

    def idle(self) -> bool:
        """No delivery queued or in flight (tests wait on this)."""
        with self._cond:
            return not self._heap and self._busy == 0

    def _next(self) -> _Job | None:
        with self._cond:
            while not self._closed:
                if self._heap:
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        self._busy += 1
                        return heapq.heappop(self._heap)
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._run(job)
            except Exception:  # a worker must survive any single failure
                log.exception("task %s: delivery crashed", job.item.task_id)
            finally:
                with self._cond:
                    self._busy -= 1

    def _run(self, job: _Job) -> None:
        final = job.attempt >= self.max_attempts
        outcome = deliver(
            self.store,
            self.backend,
            job.item,
            body_from_store=False,
            lease_seconds=self.lease_seconds,
            final_attempt=final,
        )
        self.outcomes[outcome] += 1
        if outcome in (Outcome.BUSY, Outcome.ERROR):
            delay = min(self.max_delay, self.base_delay * 2 ** (job.attempt - 1))
            self._push(job.item, job.attempt + 1, time.monotonic() + delay)

    def _sweep_loop(self) -> None:
        while True:
            with self._cond:
                if not self._closed:
                    self._cond.wait(self.sweep_interval)
                closed = self._closed
            if closed:
                return
            try:
                run_timers(self.store, self, self.sweep_batch)
            except Exception:  # Redis hiccups must not kill the sweeper
                log.exception("sweep failed")

    def close(self) -> None:
        """Stop the threads; queued deliveries are dropped (their tasks time out)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)


def publish(store: TaskStore, dispatcher: Dispatcher, item: Dispatch) -> bytes | None:
    """Hand ``item`` to the dispatcher; on failure mark the task failed.

    Returns:
        The failed task record when publishing failed, else ``None``.
    """
    try:
        dispatcher.dispatch(item)
    except DispatchError as exc:
        log.error("task %s: %s", item.task_id, exc)
        return store.fail_publish(item.task_id, item.endpoint)
    return None


def run_timers(store: TaskStore, dispatcher: Dispatcher, batch: int = 500) -> dict[str, int]:
    """One pass of the recovery timer: time out stuck tasks, re-dispatch due retries.

    Returns:
        Counts of what was done (``retry``, ``failed``, ``redispatched``).
    """
    counts = {"retry": 0, "failed": 0, "redispatched": 0}
    while True:
        actions = store.sweep(batch)
        for _, action in actions:
            counts[action] = counts.get(action, 0) + 1
        if len(actions) < batch:
            break
    while True:
        due = store.due_retries(batch)
        for item in due:
            publish(store, dispatcher, item)
            counts["redispatched"] += 1
        if len(due) < batch:
            break
    return counts


class RecordingDispatcher:
    """Collects dispatches instead of sending them (tests, dry runs)."""

    def __init__(self, fail: Callable[[Dispatch], bool] | None = None) -> None:
        self.items: list[Dispatch] = []
        self.fail = fail
        self._lock = threading.Lock()

    def dispatch(self, item: Dispatch) -> None:
        """Record ``item``; raise :class:`DispatchError` when ``fail(item)`` says so."""
        if self.fail is not None and self.fail(item):
            raise DispatchError("recording dispatcher told to fail")
        with self._lock:
            self.items.append(item)

    def close(self) -> None:
        """Nothing to release."""


__all__ = [
    "BODY_REF_KEY",
    "EVENT_TYPE",
    "BackendClient",
    "DispatchError",
    "Dispatcher",
    "EventGridDispatcher",
    "LocalDispatcher",
    "Outcome",
    "RecordingDispatcher",
    "deliver",
    "event_data",
    "publish",
    "run_timers",
]
