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

import http.client
import json
import logging
import os
import select
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from .models import endpoint_path
from .store import Dispatch, Queued, TaskStore

if TYPE_CHECKING:
    from .settings import ManagedIdentity

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

    The SDK client is created on first use. On Azure the runtime publishes with the
    Function App's managed identity (:mod:`ai4ec_runtime.identity`; the topic refuses
    keys). A topic key is still accepted for a topic that allows keys. Elsewhere, with
    neither, ``azure.identity`` is imported (only then) for a developer's own login, and
    its absence is a clear :class:`DispatchError`, never an import failure of the app.

    Args:
        topic_uri: ``EVENT_GRID_TOPIC_URI``.
        key: ``EVENT_GRID_KEY``; ``None`` publishes with an identity.
        inline_max_bytes: larger bodies are sent by reference.
        identity: App Service's token endpoint (``IDENTITY_ENDPOINT``/``_HEADER``).
    """

    def __init__(
        self,
        topic_uri: str,
        key: str | None,
        inline_max_bytes: int,
        identity: ManagedIdentity | None = None,
    ) -> None:
        self.topic_uri = topic_uri
        self.key = key
        self.identity = identity
        self.inline_max_bytes = inline_max_bytes
        self._client: Any = None
        self._identity_credential: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.eventgrid import EventGridPublisherClient

                self._client = EventGridPublisherClient(self.topic_uri, self._credential())
            return self._client

    def _credential(self) -> Any:
        if self.key:
            from azure.core.credentials import AzureKeyCredential

            return AzureKeyCredential(self.key)
        if self.identity is not None:
            from .identity import AppServiceIdentityCredential

            self._identity_credential = AppServiceIdentityCredential(self.identity)
            return self._identity_credential
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise DispatchError(
                "no way to authenticate to Event Grid: no managed identity "
                "(IDENTITY_ENDPOINT/IDENTITY_HEADER), no EVENT_GRID_KEY, and azure-identity "
                "is not installed"
            ) from None
        return DefaultAzureCredential()

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
            if self._identity_credential is not None:
                self._identity_credential.close()
                self._identity_credential = None


def _tls_context(client_cert_pem: str | None) -> ssl.SSLContext:
    """The TLS settings of HTTPS dispatch: system trust, and the client certificate.

    ``ssl`` loads a key and certificate only from a file, so the PEM is written to a
    private temporary file (mode 0600), loaded, and the file removed at once.
    """
    ctx = ssl.create_default_context()
    if client_cert_pem:
        fd, path = tempfile.mkstemp(prefix="ai4ec-client-", suffix=".pem")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(client_cert_pem)
            ctx.load_cert_chain(path)
        finally:
            Path(path).unlink()
    return ctx


class BackendClient:
    """POSTs bodies to backends over a pool of kept-alive HTTP/1.1 connections.

    A fresh connection per call (upstream created an ``HttpClient`` per call) would cost
    a TCP handshake per task. The pool is shared by all threads: a connection is taken
    for one request and put back afterwards, so any number of caller threads use at
    most as many sockets as run concurrently.

    Exactly one request reaches the backend per call: a model run is not idempotent, so
    a request is only sent again when sending it on a *reused* socket failed (the
    backend had closed the idle connection, so nothing was delivered). A read timeout
    or a connection dropped after the request went out is an error for the caller's
    attempt, never a silent second POST.

    Args:
        timeout: seconds for connecting and for each socket read; keep it below Event
            Grid's 30 s webhook limit.
        client_cert_pem: PEM key and certificate presented to every HTTPS backend (the
            gateways' mutual TLS), or None. Server certificates are verified as usual.
    """

    def __init__(self, timeout: float, client_cert_pem: str | None = None) -> None:
        self.timeout = timeout
        self._tls = _tls_context(client_cert_pem)
        self._free: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def post(self, url: str, body: str, task_id: str) -> int:
        """POST ``body`` to ``url`` with the ``taskId`` header; returns the status code.

        Raises:
            OSError: connecting, sending or reading the answer failed or timed out.
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
        while True:
            conn, reused = self._take(key)
            try:
                conn.request("POST", target, body=payload, headers=headers)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused:
                    continue  # the backend closed this idle socket: nothing was sent
                raise OSError(f"POST {url} failed: {exc}") from exc
            try:
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # the request went out: the backend may be running it
                raise OSError(f"POST {url}: no answer: {exc}") from exc
            self._give(key, conn, reusable=not resp.will_close)
            return int(resp.status)

    def _take(self, key: tuple[str, str]) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was used before (idle ones found closed are dropped)."""
        while True:
            with self._lock:
                free = self._free.get(key)
                conn = free.pop() if free else None
            if conn is None:
                break
            if conn.sock is not None and not _dropped(conn.sock):
                return conn, True
            conn.close()
        if key[0] == "https":
            return http.client.HTTPSConnection(
                key[1], timeout=self.timeout, context=self._tls
            ), False
        return http.client.HTTPConnection(key[1], timeout=self.timeout), False

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


def _dropped(sock: Any) -> bool:
    """Whether an idle kept-alive socket was closed by its peer (readable = EOF or junk)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Outcome(StrEnum):
    """What happened to one delivery attempt."""

    #: The backend accepted the task (2xx).
    DELIVERED = "delivered"
    #: Nothing to do: the task moved on or vanished.
    STALE = "stale"
    #: Another delivery of the same dispatch holds the lease; its queue entry waits.
    LEASED = "leased"
    #: 429/503: the backend is busy; the transport retries (Event Grid, old style).
    BUSY = "busy"
    #: Network error or other 5xx: the transport retries.
    ERROR = "error"
    #: Busy, cold or down: parked in the API's durable delivery queue for a retry.
    QUEUED = "queued"
    #: A 4xx other than 408/429: retrying cannot help; the task is failed.
    REJECTED = "rejected"
    #: Retries are exhausted; the task was failed.
    GAVE_UP = "gave_up"


BUSY_CODES = frozenset({429, 503})
#: 4xx answers that mean "try again" rather than "your request is wrong".
RETRYABLE_4XX = frozenset({408, 425, 429})
#: Seconds a busy or cold backend's task waits in its queue before the first retry.
DEFAULT_REQUEUE_SECONDS = 1.0


def deliver(
    store: TaskStore,
    backend: BackendClient,
    item: Dispatch,
    *,
    body_from_store: bool,
    lease_seconds: float,
    final_attempt: bool,
    requeue_after: float | None = DEFAULT_REQUEUE_SECONDS,
) -> Outcome:
    """Deliver one dispatch to its backend and record the result in the task.

    A busy (429/503), cold (connection refused) or failing backend does not hand the
    task back to the transport: it is parked in the API's durable delivery queue
    (``requeue_after`` seconds) and delivered from there as soon as the backend
    answers, by the local dispatcher's lane for that API or by :func:`pump`. So a
    GPU API scaled to zero never waits on Event Grid's backoff, and its backlog never
    holds up another API's deliveries.

    Args:
        store: task store.
        backend: HTTP client for the backend POST (one POST per call).
        item: the dispatch (its body is ignored when ``body_from_store``).
        body_from_store: load the body from ``<TaskId>_ORIG`` (reference events).
        lease_seconds: how long this delivery blocks duplicates.
        final_attempt: no retry follows; fail the task if this attempt fails.
        requeue_after: park a busy/failed delivery for this many seconds; ``None``
            leaves the retry to the transport (answers BUSY/ERROR).
    """
    claim = store.claim(item.task_id, item.endpoint, lease_seconds, want_body=body_from_store)
    if claim.state == "leased":
        log.info("task %s: skip delivery (leased by another delivery)", item.task_id)
        return Outcome.LEASED
    if claim.state != "ok":
        log.info("task %s: skip delivery (%s)", item.task_id, claim.state)
        return Outcome.STALE
    body = claim.body if body_from_store else item.body
    try:
        status = backend.post(item.endpoint, body, item.task_id)
    except OSError as exc:
        # The public status text says only that the backend did not answer: the error's
        # own text names hosts and ports (and tells "refused" from "timed out"). The log
        # line, for operators, keeps the class.
        log.warning("task %s: backend unreachable (%s)", item.task_id, type(exc).__name__)
        status, detail = 0, "unreachable"
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
    kind = "busy" if busy else "error"
    store.note_waiting(item.task_id, item.endpoint, kind, detail, requeue_after=requeue_after)
    log.info("task %s: backend %s (%s); will retry", item.task_id, kind, detail)
    if requeue_after is not None:
        return Outcome.QUEUED
    return Outcome.BUSY if busy else Outcome.ERROR


def retry_delay(busy_count: int, base: float, cap: float) -> float:
    """Backoff before the next delivery after ``busy_count`` busy/failed ones."""
    return float(min(cap, base * 2 ** max(0, busy_count)))


def deliver_queued(
    store: TaskStore,
    backend: BackendClient,
    queued: Queued,
    *,
    lease_seconds: float,
    max_attempts: int,
    base_delay: float,
    max_delay: float,
) -> Outcome:
    """Deliver one entry taken from a durable delivery queue and settle the entry.

    Whatever goes wrong, the entry is never dropped: when the claim or the store
    raises, it is requeued, and if even that fails its lease (set by the take) makes
    it due again.
    """
    item = queued.item
    try:
        outcome = deliver(
            store,
            backend,
            item,
            body_from_store=False,
            lease_seconds=lease_seconds,
            final_attempt=queued.busy_count + 1 >= max_attempts,
            requeue_after=retry_delay(queued.busy_count, base_delay, max_delay),
        )
    except Exception:
        log.warning("task %s: delivery failed in the store; requeued", item.task_id, exc_info=True)
        try:
            store.enqueue(item.task_id, retry_delay(queued.busy_count, base_delay, max_delay))
        except Exception:  # Redis is down: the take's lease brings the entry back
            log.warning("task %s: requeue failed; due again after its lease", item.task_id)
        return Outcome.ERROR
    if outcome in (Outcome.DELIVERED, Outcome.STALE, Outcome.REJECTED, Outcome.GAVE_UP):
        store.delivered(item.task_id, queued.api)
    return outcome


def pump(
    store: TaskStore,
    backend: BackendClient,
    apis: Sequence[str],
    *,
    lease_seconds: float,
    max_attempts: int,
    base_delay: float,
    max_delay: float,
    batch: int = 50,
) -> dict[str, int]:
    """Deliver the due entries of every API's delivery queue once (the Azure timer).

    Returns:
        Outcome counts.
    """
    counts: dict[str, int] = {}
    for api in apis:
        for queued in store.take(api, batch, lease_seconds):
            outcome = deliver_queued(
                store,
                backend,
                queued,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                base_delay=base_delay,
                max_delay=max_delay,
            )
            counts[outcome.value] = counts.get(outcome.value, 0) + 1
    return counts


class _Lane:
    """The delivery threads of one API: a slow or cold API only ever blocks its own."""

    def __init__(self, owner: LocalDispatcher, api: str, workers: int) -> None:
        self.owner = owner
        self.api = api
        self.cond = threading.Condition()
        self.wakeups = 0
        self.threads = [
            threading.Thread(target=self._work, name=f"ai4ec-dq-{api or '_'}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def wake(self) -> None:
        with self.cond:
            self.wakeups += 1
            self.cond.notify()

    def _wait(self, seconds: float) -> None:
        with self.cond:
            if self.wakeups == 0 and not self.owner.closed:
                self.cond.wait(seconds)
            self.wakeups = max(0, self.wakeups - 1)

    def _work(self) -> None:
        o = self.owner
        while not o.closed:
            try:
                jobs = o.store.take(self.api, 1, o.lease_seconds)
                if not jobs:
                    due = o.store.next_due(self.api)
                    self._wait(o.poll_interval if due is None else min(o.poll_interval, due))
                    continue
            except Exception:  # Redis hiccup: wait, then look again
                log.warning("delivery queue %s: take failed", self.api or "_", exc_info=True)
                self._wait(o.poll_interval)
                continue
            for queued in jobs:
                o.run(queued)


class LocalDispatcher:
    """Delivers dispatches itself, from durable per-API queues in Redis.

    This replaces Event Grid on the local host: no topic, no webhook, the same
    :func:`deliver` step. :meth:`dispatch` puts the task into its API's delivery queue
    (a sorted set in Redis), and each API has its own *lane* of ``workers`` threads that
    takes due entries, so one API's backlog never delays another's. A busy (429/503),
    cold or failing backend parks the entry for ``base * 2**n`` seconds (capped at
    ``max_delay``), up to ``max_attempts`` deliveries; then the task is failed, as a
    dead-lettered event would be in Azure. The queue survives SIGTERM and kill -9: a
    restarted host finds the queued entries (and the ones that were in flight, once
    their lease ends) and delivers them. A sweeper thread also runs the store's
    deadline sweep and re-dispatches timed-out tasks (the timer functions' job in Azure).

    Args:
        store: task store.
        backend: HTTP client.
        workers: delivery threads per API (a slow backend holds one while it answers).
        base_delay: first retry delay in seconds.
        max_delay: cap of the retry delay.
        max_attempts: deliveries before giving up.
        lease_seconds: delivery lease: an entry taken by a host that died is due again
            after this long (see :meth:`TaskStore.claim`).
        sweep_interval: seconds between deadline sweeps (0 disables the sweeper).
        sweep_batch: deadlines handled per sweep call.
        poll_interval: longest a lane sleeps before looking at its queue again.
    """

    def __init__(
        self,
        store: TaskStore,
        backend: BackendClient,
        *,
        workers: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        max_attempts: int = 20,
        lease_seconds: float = 600.0,
        sweep_interval: float = 1.0,
        sweep_batch: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.backend = backend
        self.workers = workers
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.sweep_interval = sweep_interval
        self.sweep_batch = sweep_batch
        self.poll_interval = poll_interval
        self.closed = False
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._busy = 0
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self._sweeper: threading.Thread | None = None
        if sweep_interval > 0:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="ai4ec-sweeper", daemon=True
            )
            self._sweeper.start()

    def apis(self) -> list[str]:
        """Every delivery queue this host serves: each routed API, and '' (unrouted)."""
        return ["", *sorted(self.store.routing.apis)]

    def _lane(self, api: str) -> _Lane:
        with self._lock:
            lane = self._lanes.get(api)
            if lane is None:
                lane = self._lanes[api] = _Lane(self, api, self.workers)
            return lane

    def dispatch(self, item: Dispatch) -> None:
        """Queue ``item`` durably for delivery by its API's lane.

        Raises:
            DispatchError: the dispatcher is closed or Redis refused the entry.
        """
        if self.closed:
            raise DispatchError("local dispatcher is closed")
        if item.queued:
            # The create's script queued it already (TaskStore.upsert(queue=True)): the
            # lane of its API only needs waking.
            route = self.store.routing.resolve(endpoint_path(item.endpoint))
            self._lane(route.api_id if route is not None else "").wake()
            return
        try:
            api = self.store.enqueue(item.task_id)
        except Exception as exc:
            raise DispatchError(f"could not queue the delivery: {exc}") from exc
        if api is not None:
            self._lane(api).wake()

    def run(self, queued: Queued) -> None:
        """Deliver one taken entry (lane threads)."""
        with self._lock:
            self._busy += 1
        try:
            outcome = deliver_queued(
                self.store,
                self.backend,
                queued,
                lease_seconds=self.lease_seconds,
                max_attempts=self.max_attempts,
                base_delay=self.base_delay,
                max_delay=self.max_delay,
            )
            with self._lock:
                self.outcomes[outcome] += 1
        finally:
            with self._lock:
                self._busy -= 1

    def idle(self) -> bool:
        """No delivery queued, parked or in flight (tests wait on this)."""
        with self._lock:
            if self._busy:
                return False
        return not any(self.store.backlog(self.apis()).values())

    def recover(self) -> None:
        """Start a lane for every API whose durable queue holds entries (after a restart)."""
        for api, count in self.store.backlog(self.apis()).items():
            if count:
                self._lane(api).wake()

    def _sweep_loop(self) -> None:
        first = True
        while first or not self._stop.wait(self.sweep_interval):
            first = False
            try:
                self.recover()
                run_timers(self.store, self, self.sweep_batch)
            except Exception:  # Redis hiccups must not kill the sweeper
                log.warning("sweep failed", exc_info=True)

    def close(self) -> None:
        """Stop the threads; queued deliveries stay in Redis for the next host."""
        self.closed = True
        self._stop.set()
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            with lane.cond:
                lane.cond.notify_all()
        threads = [t for lane in lanes for t in lane.threads]
        if self._sweeper is not None:
            threads.append(self._sweeper)
        for thread in threads:
            thread.join(timeout=5)


def publish(store: TaskStore, dispatcher: Dispatcher, item: Dispatch) -> bytes | None:
    """Hand ``item`` to the dispatcher; when it cannot, publish it again later.

    A refused publish is usually brief (Event Grid throttling or an outage past the
    SDK's own retries, or, right after a first deployment, the Function App's role on
    the topic still propagating), so the task is not failed at once: it waits in the
    retry queue, bounded by its queue timeout (:meth:`TaskStore.publish_failed`).

    Returns:
        The task's record when publishing failed (awaiting a retry, or failed at the
        bound), else ``None``.
    """
    try:
        dispatcher.dispatch(item)
    except DispatchError as exc:
        gave_up, record = store.publish_failed(item.task_id, item.endpoint)
        log.log(
            logging.ERROR if gave_up else logging.WARNING,
            "task %s: %s; %s",
            item.task_id,
            exc,
            "failed: its queue timeout has passed" if gave_up else "publishing it again later",
        )
        return record
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
    "deliver_queued",
    "event_data",
    "publish",
    "pump",
    "retry_delay",
    "run_timers",
]
