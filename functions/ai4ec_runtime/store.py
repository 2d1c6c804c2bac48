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
import time
from collections.abc import Sequence
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
_TASK_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

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


_iso_cache: list[Any] = [-1, b""]


def _iso(now: float) -> bytes:
    """``utc_now_iso`` as bytes, formatting the date part once per second (hot path)."""
    sec = int(now)
    if _iso_cache[0] != sec:
        _iso_cache[1] = utc_now_iso(sec)[:-4].encode()  # 'YYYY-MM-DDTHH:MM:SS.'
        _iso_cache[0] = sec
    prefix: bytes = _iso_cache[1]
    return prefix + b"%03dZ" % min(999, int((now - sec) * 1000))


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

    # -- plumbing -----------------------------------------------------------------

    def _eval(self, mode: str, *args: str | int | float) -> Any:
        """Run the task script; load it on first use or after a Redis restart.

        Arguments are encoded to bytes here: redis-py's generic encoder is the largest
        client-side cost of a transition, and bytes pass through it untouched.
        """
        now = self.clock()
        argv = [
            b"EVALSHA",
            self._sha_b,
            b"0",
            mode.encode(),
            repr(now).encode(),
            _iso(now),
            *[a.encode() if isinstance(a, str) else str(a).encode() for a in args],
        ]
        try:
            return self.redis.execute_command(*argv)
        except redis.exceptions.NoScriptError:
            self.redis.script_load(TASK_SCRIPT)
            return self.redis.execute_command(*argv)

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
        """Create (no TaskId) or update a task, atomically.

        Raises:
            BadRequest: creation without Endpoint, unknown pipeline, bad TaskId.
            TaskNotFound: update of an unknown TaskId.
            IllegalTransition: the change breaks the state machine.
            IdempotencyMismatch: the key was used for a different request.
        """
        if req.task_id is None:
            return self._create(req, idempotency_key, caller)
        return self._update(req)

    def _create(self, req: UpsertRequest, idem: str | None, caller: str) -> UpsertResult:
        if req.endpoint is None:
            raise BadRequest("Creating a task needs an Endpoint (the backend URL)")
        if req.backend_status not in (None, BackendStatus.CREATED):
            raise BadRequest("A new task starts as 'created'; send a TaskId to update one")
        path = endpoint_path(req.endpoint)
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
                url = step_url(req.endpoint, s.path, self.backend_base_url)
                table.append([url, s.path, s.api_id, s_tmo, s_qto, s_max, s_boff])
            table[step][0] = req.endpoint  # the first hop keeps APIM's exact URL (query too)
            steps = json.dumps(table, separators=(",", ":"))
        publish = bool(req.publish)
        body = req.body or ""
        idem_key, fingerprint = "", ""
        if idem:
            idem_key = keys.idempotency(idem, path, caller)
            fingerprint = hashlib.sha256(
                f"{req.endpoint}\n{req.pipeline or ''}\n{body}".encode()
            ).hexdigest()[:32]
        task_id = new_task_id()
        text = req.status if req.status is not None else BackendStatus.CREATED.value
        reply = self._eval(
            "create", task_id, text, req.endpoint, path, api, ttl, tmo, qto, maxatt, boff,
            "1" if publish else "0", body, pipeline_id, step, steps, idem_key, fingerprint,
        )  # fmt: skip
        kind = _s(reply[0])
        if kind == "idem_mismatch":
            raise IdempotencyMismatch(
                "Idempotency-Key was already used for a different request",
                TaskId=_s(reply[1]),
            )
        if kind == "replay":
            record = reply[1] or self._gone_record(_s(reply[2]))
            return UpsertResult(record=record, replayed=True)
        # 'ok', or 'exists' (a retried call whose first reply was lost): publish either way.
        dispatch = Dispatch(task_id, req.endpoint, body) if publish else None
        return UpsertResult(record=reply[1], dispatch=dispatch, created=True)

    @staticmethod
    def _gone_record(task_id: str) -> bytes:
        # The idempotency key outlived its task (TTL race): answer with a minimal record.
        doc = {"TaskId": task_id, "Status": "expired", "BackendStatus": "completed"}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _update(self, req: UpsertRequest) -> UpsertResult:
        task_id = req.task_id or ""
        if not valid_task_id(task_id):
            raise TaskNotFound(f"Unknown TaskId {task_id!r}", TaskId=task_id)
        path, api, ttl, tmo, qto, maxatt, boff = "", "", 0, 0, 0, 1, 0.0
        if req.endpoint is not None:
            path = endpoint_path(req.endpoint)
            api, ttl, tmo, qto, maxatt, boff = self._policy(self.routing.resolve(path))
        bs = req.backend_status.value if req.backend_status else ""
        completing = req.backend_status is BackendStatus.COMPLETED
        reply = self._eval(
            "update", task_id, "0" if req.status is None else "1", req.status or "", bs,
            req.endpoint or "", path, api, ttl, tmo, qto, maxatt, boff,
            "" if req.publish is None else ("1" if req.publish else "0"), req.body or "",
            "1" if completing and not req.body and json_output(req.status) else "0",
        )  # fmt: skip
        kind = _s(reply[0])
        if kind == "notfound":
            raise TaskNotFound(f"Unknown TaskId {task_id!r}", TaskId=task_id)
        if kind == "noop":
            return UpsertResult(record=reply[1])
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
        if kind == "stale":
            raise IllegalTransition(
                f"Task {task_id} has moved on to {_s(reply[1])}; this update names an "
                "earlier pipeline step",
                TaskId=task_id,
                Endpoint=_s(reply[1]),
            )
        dispatch = None
        if _s(reply[2]) == "1":
            dispatch = Dispatch(task_id, _s(reply[3]), _s(reply[4]))
        return UpsertResult(record=reply[1], dispatch=dispatch)

    def get(self, task_id: str | None) -> bytes | None:
        """The stored task JSON, or ``None`` for unknown (or malformed) ids."""
        if not valid_task_id(task_id):
            return None
        value = self.redis.get(keys.task(task_id or ""))
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
        """
        reply = self._eval("fail", task_id, endpoint, text, "1" if only_if_created else "0")
        return reply[1] if len(reply) > 1 and reply[1] else None

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
        return sorted(_s(p) for p in self.redis.smembers(keys.PATHS))  # type: ignore[union-attr]

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
        return None if value is None else int(value)  # type: ignore[arg-type]
