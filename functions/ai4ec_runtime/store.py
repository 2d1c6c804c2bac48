"""Redis task store: typed Python calls over the one Lua script.

Every method that changes state is exactly one ``EVALSHA`` (one round trip); reads are
one ``GET`` or one pipeline. The store never publishes anything itself: methods that
require a dispatch return a :class:`Dispatch` and the caller hands it to a dispatcher,
so the Functions host and the local host share this code unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import keys
from .models import (
    PUBLISH_FAILED_TEXT,
    BackendStatus,
    BadRequest,
    IdempotencyMismatch,
    IllegalTransition,
    TaskError,
    TaskNotFound,
    UpsertRequest,
    endpoint_path,
    json_output,
    new_task_id,
    utc_now_iso,
)
from .routing import ApiRoute, Routing, step_url
from .scripts import TASK_SCRIPT

#: TaskIds are GUIDs. Anything else is answered "not found" without touching Redis, so a
#: crafted id cannot read other keys (upstream's Get did ``GET <anything>``).
_TASK_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)

#: Seconds a request reporter counter survives without updates (leaked counts of crashed
#: pods disappear instead of pinning a scaling metric forever).
CURRENT_REQUESTS_EXPIRE = 24 * 3600


def valid_task_id(task_id: str | None) -> bool:
    """Whether ``task_id`` has the GUID shape every TaskId has."""
    return bool(task_id) and _TASK_ID.match(task_id or "") is not None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task to hand to the backend at ``endpoint`` with ``body`` and ``taskId`` header."""

    task_id: str
    endpoint: str
    body: str


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Outcome of an upsert.

    Attributes:
        record: the task JSON as stored (what the caller gets back).
        dispatch: what to publish now, if anything.
        created: a new task was created.
        replayed: an ``Idempotency-Key`` matched an existing task; nothing changed.
    """

    record: bytes
    dispatch: Dispatch | None = None
    created: bool = False
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """Result of claiming a delivery: ``state`` is ok, stale, leased or gone."""

    state: str
    endpoint: str = ""
    body: str = ""


_iso_cache: tuple[int, bytes] = (-1, b"")


def _iso(now: float) -> bytes:
    """``utc_now_iso`` as bytes, formatting the date part once per second (hot path).

    The cache is one tuple swapped atomically, so concurrent threads never pair one
    second's prefix with another second's check.
    """
    global _iso_cache
    sec = int(now)
    cached_sec, prefix = _iso_cache
    if cached_sec != sec:
        prefix = utc_now_iso(sec)[:-4].encode()  # 'YYYY-MM-DDTHH:MM:SS.'
        _iso_cache = (sec, prefix)
    return prefix + b"%03dZ" % min(999, int((now - sec) * 1000))


def _pack(parts: list[bytes]) -> bytes:
    """One command in RESP: ``*<n>`` then ``$<len>`` + bytes per argument."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out += (b"$%d\r\n" % len(part), part, b"\r\n")
    return b"".join(out)


def _encode(args: Sequence[str | int | float]) -> list[bytes]:
    return [a.encode() if isinstance(a, str) else str(a).encode() for a in args]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskStore:
    """All task operations against one Redis database.

    Args:
        client: a redis-py client (``decode_responses=False``).
        routing: routing table used to resolve APIs and pipelines.
        backend_base_url: ``AI4EC_BACKEND_BASE_URL`` for pipeline step URLs.
        clock: seconds since the epoch; injectable for tests.
    """

    def __init__(
        self,
        client: redis.Redis,
        routing: Routing,
        *,
        backend_base_url: str | None = None,
        clock: Any = time.time,
    ) -> None:
        self.redis = client
        self.routing = routing
        self.backend_base_url = backend_base_url
        self.clock = clock
        self._sha_b = hashlib.sha1(TASK_SCRIPT.encode()).hexdigest().encode()
        self._idle: list[Any] = []
        self._idle_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------

    def _eval(self, mode: str, *args: str | int | float) -> Any:
        """Run the task script once: one round trip."""
        return self._eval_many([(mode, args)])[0]

    def _eval_many(self, calls: Sequence[tuple[str, Sequence[str | int | float]]]) -> list[Any]:
        """Run script calls pipelined in one round trip; error replies come back in place.

        The RESP request is packed here rather than by redis-py's generic command path:
        on a transition that path (argument encoding, packing, instrumentation) costs
        more client CPU than Redis spends running the script.
        """
        if not calls:
            return []
        now = self.clock()
        stamp = (repr(now).encode(), _iso(now))
        packed = b"".join(
            _pack([b"EVALSHA", self._sha_b, b"0", mode.encode(), *stamp, *_encode(args)])
            for mode, args in calls
        )
        replies = self._roundtrip(packed, len(calls))
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            # First use, or Redis restarted/flushed its script cache: a call answered
            # NOSCRIPT did nothing, so load the script and run exactly those again.
            self.redis.script_load(TASK_SCRIPT)
            for i, reply in zip(missing, self._eval_many([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies

    def _roundtrip(self, packed: bytes, count: int) -> list[Any]:
        """Send pre-packed commands on an idle connection and read ``count`` replies.

        Connections come from the store's own free list rather than redis-py's pool,
        whose checkout polls every socket for stray data (a syscall per command). Every
        reply is always read, so a connection goes back clean; one that failed is closed.
        Connection errors are retried per the client's retry policy (a Redis restart):
        commands written to an already-dead socket never reached a live server.
        """
        conn = self._take()

        def send_recv() -> list[Any]:
            conn.send_packed_command([packed], check_health=False)
            out: list[Any] = []
            for _ in range(count):
                try:
                    out.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    out.append(exc)  # keep reading: the connection must stay in sync
            return out

        try:
            result: list[Any] = conn.retry.call_with_retry(
                send_recv,
                lambda _: conn.disconnect(),
            )
        except BaseException:
            conn.disconnect()
            raise
        with self._idle_lock:
            self._idle.append(conn)
        return result

    def _take(self) -> Any:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        pool = self.redis.connection_pool
        return pool.connection_class(**pool.connection_kwargs)  # connects on first use

    def close(self) -> None:
        """Close the store's own connections (the redis-py pool is the caller's)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()

    def _policy(self, route: ApiRoute | None) -> tuple[str, int, int, int, int, float]:
        d = self.routing.defaults
        if route is None:
            return ("", d.task_ttl_seconds, d.timeout_seconds, d.queue_timeout_seconds, 1, 30.0)
        return (
            route.api_id,
            route.task_ttl_seconds,
            route.timeout_seconds,
            route.queue_timeout_seconds,
            route.retry.max_attempts,
            route.retry.backoff_seconds,
        )

    # -- task API -------------------------------------------------------------------

    def upsert(
        self,
        req: UpsertRequest,
        *,
        idempotency_key: str | None = None,
        caller: str = "",
    ) -> UpsertResult:
        """Create (no TaskId) or update a task, atomically, in one round trip.

        Raises:
            BadRequest: creation without Endpoint, unknown pipeline, bad TaskId.
            TaskNotFound: update of an unknown TaskId.
            IllegalTransition: the change breaks the state machine.
            IdempotencyMismatch: the key was used for a different request.
        """
        mode, args, finish = self._prepare(req, idempotency_key, caller)
        return finish(self._eval(mode, *args))

    def upsert_many(self, reqs: Sequence[UpsertRequest]) -> list[UpsertResult | TaskError]:
        """Apply many upserts in one pipelined round trip (each still its own script).

        Each request is checked and applied atomically on its own, exactly as
        :meth:`upsert` would; batching only saves network round trips, which dominate
        on a busy host (workers, sweepers, the benchmark). Errors come back in place.
        """
        prepared: list[Any] = []
        for req in reqs:
            try:
                prepared.append(self._prepare(req, None, ""))
            except TaskError as exc:
                prepared.append(exc)
        todo = [p for p in prepared if not isinstance(p, TaskError)]
        replies = iter(self._eval_many([(mode, args) for mode, args, _ in todo]))
        out: list[UpsertResult | TaskError] = []
        for p in prepared:
            if isinstance(p, TaskError):
                out.append(p)
                continue
            reply = next(replies)
            if isinstance(reply, Exception):
                raise reply
            try:
                out.append(p[2](reply))
            except TaskError as exc:
                out.append(exc)
        return out

    def _prepare(
        self, req: UpsertRequest, idem: str | None, caller: str
    ) -> tuple[str, tuple[str | int | float, ...], Callable[[Any], UpsertResult]]:
        if req.task_id is None:
            return self._prepare_create(req, idem, caller)
        return self._prepare_update(req)

    def _prepare_create(
        self, req: UpsertRequest, idem: str | None, caller: str
    ) -> tuple[str, tuple[str | int | float, ...], Callable[[Any], UpsertResult]]:
        if req.endpoint is None:
            raise BadRequest("Creating a task needs an Endpoint (the backend URL)")
        if req.backend_status not in (None, BackendStatus.CREATED):
            raise BadRequest("A new task starts as 'created'; send a TaskId to update one")
        endpoint = req.endpoint
        path = endpoint_path(endpoint)
        route = self.routing.resolve(path)
        api, ttl, tmo, qto, maxatt, boff = self._policy(route)
        pipeline_id, step, steps = "", 0, ""
        if req.pipeline is not None:
            pipeline = self.routing.pipelines.get(req.pipeline)
            if pipeline is None:
                raise BadRequest(f"Unknown pipeline {req.pipeline!r}", field="Pipeline")
            matches = [i for i, s in enumerate(pipeline.steps) if s.path == path]
            if not matches:
                first = pipeline.steps[0].path
                raise BadRequest(
                    f"Endpoint path {path} is not a step of pipeline {req.pipeline} "
                    f"(first step: {first})",
                    field="Endpoint",
                )
            pipeline_id, step, ttl = pipeline.pipeline_id, matches[0], pipeline.task_ttl_seconds
            table = []
            for s in pipeline.steps:
                _, _, s_tmo, s_qto, s_max, s_boff = self._policy(self.routing.apis[s.api_id])
                url = step_url(endpoint, s.path, self.backend_base_url)
                table.append([url, s.path, s.api_id, s_tmo, s_qto, s_max, s_boff])
            table[step][0] = endpoint  # the first hop keeps APIM's exact URL (query too)
            steps = json.dumps(table, separators=(",", ":"))
        publish = bool(req.publish)
        body = req.body or ""
        idem_key, fingerprint = "", ""
        if idem:
            idem_key = keys.idempotency(idem, path, caller)
            fingerprint = hashlib.sha256(
                f"{endpoint}\n{req.pipeline or ''}\n{body}".encode()
            ).hexdigest()[:32]
        task_id = new_task_id()
        text = req.status if req.status is not None else BackendStatus.CREATED.value
        args = (
            task_id, text, endpoint, path, api, ttl, tmo, qto, maxatt, boff,
            "1" if publish else "0", body, pipeline_id, step, steps, idem_key, fingerprint,
        )  # fmt: skip

        def finish(reply: Any) -> UpsertResult:
            kind = _s(reply[0])
            if kind == "idem_mismatch":
                raise IdempotencyMismatch(
                    "Idempotency-Key was already used for a different request",
                    TaskId=_s(reply[1]),
                )
            if kind == "replay":
                record = reply[1] or self._gone_record(_s(reply[2]))
                return UpsertResult(record=record, replayed=True)
            # 'ok', or 'exists' (a retried call whose first reply was lost): publish.
            dispatch = Dispatch(task_id, endpoint, body) if publish else None
            return UpsertResult(record=reply[1], dispatch=dispatch, created=True)

        return "create", args, finish

    @staticmethod
    def _gone_record(task_id: str) -> bytes:
        # The idempotency key outlived its task (TTL race): answer with a minimal record.
        doc = {"TaskId": task_id, "Status": "expired", "BackendStatus": "completed"}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _prepare_update(
        self, req: UpsertRequest
    ) -> tuple[str, tuple[str | int | float, ...], Callable[[Any], UpsertResult]]:
        task_id = req.task_id or ""
        if not valid_task_id(task_id):
            raise TaskNotFound(f"Unknown TaskId {task_id!r}", TaskId=task_id)
        path, api, ttl, tmo, qto, maxatt, boff = "", "", 0, 0, 0, 1, 0.0
        if req.endpoint is not None:
            path = endpoint_path(req.endpoint)
            api, ttl, tmo, qto, maxatt, boff = self._policy(self.routing.resolve(path))
        bs = req.backend_status.value if req.backend_status else ""
        completing = req.backend_status is BackendStatus.COMPLETED
        args = (
            task_id, "0" if req.status is None else "1", req.status or "", bs,
            req.endpoint or "", path, api, ttl, tmo, qto, maxatt, boff,
            "" if req.publish is None else ("1" if req.publish else "0"), req.body or "",
            "1" if completing and not req.body and json_output(req.status) else "0",
        )  # fmt: skip
        return "update", args, lambda reply: self._finish_update(task_id, reply)

    @staticmethod
    def _finish_update(task_id: str, reply: Any) -> UpsertResult:
        kind = _s(reply[0])
        if kind == "ok":
            dispatch = None
            if reply[2] == b"1":
                dispatch = Dispatch(task_id, _s(reply[3]), _s(reply[4]))
            return UpsertResult(record=reply[1], dispatch=dispatch)
        if kind == "noop":
            return UpsertResult(record=reply[1])
        if kind == "notfound":
            raise TaskNotFound(f"Unknown TaskId {task_id!r}", TaskId=task_id)
        if kind == "conflict":
            current, wanted = _s(reply[1]), _s(reply[2])
            if current in ("completed", "failed"):
                why = f"{current} is final"
            else:
                why = "a running task only goes back to created as a pipeline hop (PublishToGrid)"
            raise IllegalTransition(
                f"Task {task_id} is {current}; cannot change it to {wanted}: {why}",
                TaskId=task_id,
                BackendStatus=current,
                Requested=wanted,
            )
        # 'stale': a declarative pipeline task got an update naming an earlier step.
        raise IllegalTransition(
            f"Task {task_id} has moved on to {_s(reply[1])}; this update names an "
            "earlier pipeline step",
            TaskId=task_id,
            Endpoint=_s(reply[1]),
        )

    def get(self, task_id: str | None) -> bytes | None:
        """The stored task JSON, or ``None`` for unknown (or malformed) ids."""
        if not valid_task_id(task_id):
            return None
        # The hottest read (status polling): packed by hand like the scripts.
        (value,) = self._roundtrip(_pack([b"GET", keys.task(task_id or "").encode()]), 1)
        if isinstance(value, redis.exceptions.ResponseError):
            raise value
        return value if isinstance(value, bytes) else None

    def get_doc(self, task_id: str) -> dict[str, Any] | None:
        """The stored task as a dict (tests, tooling)."""
        raw = self.get(task_id)
        return None if raw is None else dict(json.loads(raw))

    # -- dispatch bookkeeping ------------------------------------------------------

    def claim(self, task_id: str, endpoint: str, lease_seconds: float, *, want_body: bool) -> Claim:
        """Lease the current dispatch of a task before POSTing it to the backend.

        The lease stops duplicate deliveries (an Event Grid batch retried because another
        event in it was busy, or a stale retry) from reaching the backend twice; it only
        succeeds while the task is still ``created`` at ``endpoint``.
        """
        reply = self._eval("claim", task_id, endpoint, lease_seconds, "1" if want_body else "0")
        state = _s(reply[0])
        if state != "ok":
            return Claim(state)
        return Claim(state, _s(reply[1]), _s(reply[2]))

    def note_waiting(self, task_id: str, endpoint: str, kind: str, detail: str = "") -> None:
        """Record that the backend was busy (429/503) or erred; the dispatch is retried.

        Writes upstream's ``Awaiting service availability. Queued for N seconds.`` (N is
        measured from when the task entered ``created``, in seconds) and releases the
        delivery lease so the retry can deliver.
        """
        self._eval("busy", task_id, endpoint, kind, detail)

    def fail(
        self, task_id: str, text: str, *, endpoint: str = "", only_if_created: bool = True
    ) -> bytes | None:
        """Mark a task failed by the platform (dispatch gave up); returns the record.

        Guarded: a task that already moved on (running, completed, another endpoint) is
        left alone, so a late dead-letter cannot fail a task that in fact ran.

        Returns:
            The failed record, or ``None`` when the task was left alone.
        """
        reply = self._eval("fail", task_id, endpoint, text, "1" if only_if_created else "0")
        return reply[1] if _s(reply[0]) == "ok" else None

    def fail_publish(self, task_id: str, endpoint: str) -> bytes | None:
        """Mark a task failed because publishing its dispatch failed (upstream's text)."""
        return self.fail(task_id, PUBLISH_FAILED_TEXT, endpoint=endpoint)

    # -- timers ----------------------------------------------------------------------

    def sweep(self, limit: int = 500) -> list[tuple[str, str]]:
        """Retry or fail tasks past their queue or run timeout; returns (id, action)."""
        flat = self._eval("sweep", limit)
        return [(_s(flat[i]), _s(flat[i + 1])) for i in range(0, len(flat), 2)]

    def due_retries(self, limit: int = 500) -> list[Dispatch]:
        """Claim timed-out tasks whose backoff has passed; the caller dispatches them."""
        flat = self._eval("due", limit)
        return [
            Dispatch(_s(flat[i]), _s(flat[i + 1]), _s(flat[i + 2])) for i in range(0, len(flat), 3)
        ]

    def known_paths(self) -> list[str]:
        """Every EndpointPath the runtime has seen (sorted)."""
        return sorted(_s(p) for p in self.redis.smembers(keys.PATHS))

    def trim_finished(self) -> int:
        """Drop completed/failed set members older than their path's task TTL.

        The task keys expire on their own; this keeps the upstream ``_completed`` and
        ``_failed`` sorted sets from growing forever (upstream bug 1).
        """
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        for path in self.known_paths():
            cutoff = now - self.routing.ttl_for_path(path)
            for status in ("completed", "failed"):
                pipe.zremrangebyscore(keys.status_set(path, status), "-inf", cutoff)
        return sum(int(n) for n in pipe.execute())

    def queue_sizes(self, statuses: Sequence[str]) -> dict[str, int]:
        """Sizes of the upstream status sets and of each API's pending set.

        Keys of the result are the metric names: ``<EndpointPath>_<status>`` (upstream's
        names) and ``ai4ec:pending:<apiId>``.
        """
        names = [keys.status_set(p, s) for p in self.known_paths() for s in statuses]
        names += [keys.pending(api) for api in sorted(self.routing.apis)]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zcard(name)
        return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))

    # -- request reporter ------------------------------------------------------------

    def current_processing_add(self, cluster: str, api_path: str, delta: int) -> int:
        """Add ``delta`` to the in-flight counter of (cluster, path); never below 0."""
        key = keys.current_requests(cluster, api_path)
        return int(self._eval("current", key, delta, CURRENT_REQUESTS_EXPIRE))

    def current_processing_get(self, cluster: str, api_path: str) -> int | None:
        """The in-flight counter, or ``None`` when nothing was ever reported."""
        value = self.redis.get(keys.current_requests(cluster, api_path))
        return None if value is None else int(value)
