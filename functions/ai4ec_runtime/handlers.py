"""The functions' logic as plain ``Request -> Response`` callables.

Nothing here knows about Azure Functions or sockets: :mod:`ai4ec_runtime.app` converts
``azure.functions.HttpRequest`` objects, :mod:`ai4ec_runtime.localhost` converts raw HTTP,
and both call :func:`handle`. That is what keeps the local host honest: it runs exactly
the code Azure runs.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis

from . import metrics
from .dispatch import (
    BODY_REF_KEY,
    EVENT_TYPE,
    BackendClient,
    Dispatcher,
    EventGridDispatcher,
    LocalDispatcher,
    Outcome,
    deliver,
    publish,
    pump,
    run_timers,
)
from .models import (
    BadRequest,
    ConfigurationError,
    IllegalTransition,
    TaskError,
    UpsertRequest,
)
from .routing import Defaults, Routing
from .settings import Settings
from .store import Blocking, Dispatch, Steps, TaskStore, connect_redis, drive

log = logging.getLogger("ai4ec_runtime")

JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"

#: What the upstream Framework client sends as ``Endpoint`` when its GET found no record
#: (``distributed_api_task.py``); never a backend, so an update carrying it keeps the
#: stored Endpoint instead of moving the task to path ``/``.
CLIENT_FALLBACK_ENDPOINT = "http://localhost"
#: Request header with which a caller that understands them (APIM's policies) asks for
#: the strict 404/409/503 answers regardless of ``AI4EC_STRICT_ANSWERS``.
ANSWERS_HEADER = "x-ai4ec-answers"
#: Response header naming the error a upstream-shaped 200 stands for.
ERROR_HEADER = "X-Ai4ec-Error"
#: What an Event Grid WebHook-Request-Origin (a host name, maybe with a port) looks like.
_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]+")
#: The ``user:password@`` part of a URL, never echoed or logged (:func:`redact`).
_USERINFO = re.compile(r"//[^/?#@\s]*@")
#: Characters no URL we POST to may contain (whitespace, controls); urlsplit keeps them.
_URL_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
#: Counters are 64-bit signed integers in Redis; anything larger is a client error.
_INT64 = 2**63
#: Redis failures that mean "unreachable", as opposed to a script or data error.
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request, reduced to what the handlers read.

    Attributes:
        method: upper-case HTTP method.
        params: query parameters (first value of each).
        headers: header names in lower case.
        body: raw body bytes.
    """

    method: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def param(self, name: str) -> str | None:
        """A query parameter, matched case-insensitively like ASP.NET did upstream."""
        if name in self.params:
            return self.params[name]
        lower = name.lower()
        for key, value in self.params.items():
            if key.lower() == lower:
                return value
        return None

    def header(self, name: str) -> str | None:
        """A header value by case-insensitive name."""
        return self.headers.get(name.lower())


@dataclass(slots=True)
class Response:
    """An HTTP response produced by a handler."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, doc: Any) -> Response:
        """A compact JSON response."""
        return cls(status, json.dumps(doc, separators=(",", ":")).encode())

    @classmethod
    def error(cls, exc: TaskError) -> Response:
        """The JSON error body of a :class:`TaskError`."""
        return cls(exc.status, exc.to_json())

    @classmethod
    def unavailable(cls) -> Response:
        """503 for an unreachable task store; the message never names Redis' address."""
        resp = cls.json(
            503, {"error": "store_unavailable", "message": "The task store is unavailable"}
        )
        resp.headers["Retry-After"] = "5"
        return resp


class Runtime:
    """Everything a handler needs: settings, Redis, routing, store and dispatcher.

    Built once per process (the Functions worker keeps it between invocations, so the
    Redis pool and the Event Grid client are reused). The dispatcher is created on first
    use, so a missing ``EVENT_GRID_TOPIC_URI`` only fails requests that must publish.

    Args:
        settings: app settings.
        redis_client: an existing client (tests, local host); default: from settings.
        routing: an already-built routing table or routing.json dict; default: load
            ``settings.routing_path``.
        dispatcher: publisher to use; default: per ``settings.dispatch``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        routing: Routing | Mapping[str, Any] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        defaults = Defaults(
            task_ttl_seconds=settings.default_task_ttl_seconds,
            timeout_seconds=settings.default_timeout_seconds,
            queue_timeout_seconds=settings.default_queue_timeout_seconds,
        )
        if isinstance(routing, Routing):
            self.routing = routing
        elif routing is not None:
            self.routing = Routing(routing, defaults)
        else:
            self.routing = Routing.load(settings.routing_path, defaults)
        if redis_client is None:
            redis_client = connect_redis(settings.require_redis_url(), settings.redis_mode)
        self.redis = redis_client
        self.store = TaskStore(
            redis_client,
            self.routing,
            backend_base_url=settings.backend_base_url,
            backend_base_urls=settings.backend_base_urls,
            shards=settings.redis_shards,
            op_ttl_seconds=settings.op_ttl_seconds,
        )
        self.backend = BackendClient(settings.backend_timeout_seconds, settings.gateway_client_cert)
        self._dispatcher = dispatcher
        self._lock = threading.Lock()

    @property
    def dispatcher(self) -> Dispatcher:
        """The publisher, created on first use.

        Raises:
            ConfigurationError: Event Grid dispatch without ``EVENT_GRID_TOPIC_URI``.
        """
        with self._lock:
            if self._dispatcher is None:
                s = self.settings
                if s.dispatch == "local":
                    self._dispatcher = LocalDispatcher(
                        self.store,
                        self.backend,
                        base_delay=s.local_retry_base_seconds,
                        max_delay=s.local_retry_max_seconds,
                        max_attempts=s.local_max_attempts,
                        lease_seconds=s.delivery_lease_seconds,
                        sweep_batch=s.sweep_batch,
                        workers=s.local_workers,
                        poll_interval=s.local_poll_seconds,
                    )
                else:
                    self._dispatcher = EventGridDispatcher(
                        s.require_event_grid(),
                        s.event_grid_key,
                        s.event_inline_max_bytes,
                        identity=s.managed_identity,
                    )
            return self._dispatcher

    def close(self) -> None:
        """Stop the dispatcher and close the Redis pool."""
        with self._lock:
            if self._dispatcher is not None:
                self._dispatcher.close()
        self.backend.close()
        self.store.close()
        self.redis.close()


def connect(url: str, max_connections: int = 256) -> redis.Redis:
    """A redis-py client for the task store.

    Connection errors are retried with jittered backoff, which rides out a Redis
    restart or failover: a command sent on a dead connection never reached a server.
    """
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        max_connections=max_connections,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 8),
    )


# -- task functions ------------------------------------------------------------------


def strict(rt: Runtime, req: Request) -> bool:
    """Whether this request gets the strict 404/409/503 answers (see :func:`shaped`)."""
    return rt.settings.strict_answers or (req.header(ANSWERS_HEADER) or "") == "strict"


def redact(text: str) -> str:
    """``text`` with the ``user:password`` part of any URL in it replaced by ``***``."""
    return _USERINFO.sub("//***@", text)


def check_endpoint(url: str) -> None:
    """Refuse an ``Endpoint`` that could not be POSTed to later.

    A URL with spaces, control characters, an unparsable host or port is accepted by
    ``urlsplit`` often enough to be stored, and then fails inside a delivery worker;
    refusing it at create time gives the caller the error instead.

    Raises:
        BadRequest: the URL is not a plain absolute http(s) URL.
    """
    if _USERINFO.search(url):
        # Credentials in a URL end up in logs and status texts; never accept them.
        raise BadRequest("Endpoint must not carry a user name or password", field="Endpoint")
    bad = BadRequest(f"Endpoint is not a valid http(s) URL: {url[:200]!r}", field="Endpoint")
    if _URL_BAD_CHARS.search(url):
        raise bad
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
        host = parts.hostname
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not host:
        raise bad


def parse_upsert(raw: bytes) -> UpsertRequest:
    """:meth:`UpsertRequest.parse` plus :func:`check_endpoint`, every failure a 400.

    Raises:
        BadRequest: malformed, too deeply nested, or an unusable ``Endpoint``.
    """
    try:
        upsert = UpsertRequest.parse(raw)
    except RecursionError:
        raise BadRequest("Request body is nested too deeply") from None
    except ValueError as exc:  # e.g. urlsplit on "http://[::1/x"
        raise BadRequest(redact(f"Request body is malformed: {exc}")) from None
    except BadRequest as exc:
        if _USERINFO.search(exc.message):  # e.g. "ftp://user:pw@host" named in the error
            raise BadRequest(redact(exc.message), **exc.extra) from None
        raise
    if upsert.endpoint is not None:
        check_endpoint(upsert.endpoint)
    return upsert


def shaped(task_id: str, record: bytes | dict[str, Any] | None, code: str) -> Response:
    """A 200 in the shape the upstream Framework client parses, standing for an error.

    The client (``DistributedApiTaskManager``) raises on any non-200 answer: ``Upsert``
    with ``AttributeError`` (it prints ``resp.status_code``, which aiohttp lacks), ``Get``
    with ``KeyError`` (it reads ``Endpoint`` from the record it synthesizes). So, unless
    :func:`strict`, an update that changes nothing answers 200 with the current record
    (or the client's own synthetic record) and names the real outcome in
    ``X-Ai4ec-Error``.
    """
    if record is None:
        record = {"TaskId": task_id, "Status": "unable to update"}
    resp = Response(200, record) if isinstance(record, bytes) else Response.json(200, record)
    resp.headers[ERROR_HEADER] = code
    return resp


def _task_id_of(raw: bytes) -> str | None:
    """The ``TaskId`` of a body that failed to parse as an upsert, if it has one."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, list):
        doc = doc[0] if doc else None
    task_id = doc.get("TaskId") if isinstance(doc, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


def _shaped_update(rt: Runtime, task_id: str, exc: TaskError | None) -> Steps[Response]:
    code = exc.code if exc is not None else "store_unavailable"
    if exc is None:
        log.warning(
            "CacheConnectorUpsert: task store unavailable; update of %s not recorded", task_id
        )
        return shaped(task_id, None, code)
    log.info("CacheConnectorUpsert: update of %s refused (%s), answered 200", task_id, code)
    if isinstance(exc, IllegalTransition):
        # The no-op answer: the record as it stands, unchanged by the late update.
        try:
            return shaped(task_id, (yield from rt.store.get_io(task_id)), code)
        except UNREACHABLE:
            return shaped(task_id, None, code)
    if exc.status == 404:
        return shaped(task_id, {"TaskId": task_id, "Status": "not found"}, code)
    return shaped(task_id, None, code)


def cache_connector_upsert(rt: Runtime, req: Request) -> Response:
    """``POST /api/CacheConnectorUpsert``: :func:`cache_connector_upsert_io`, blocking."""
    return drive(cache_connector_upsert_io(rt, req))


def cache_connector_upsert_io(rt: Runtime, req: Request) -> Steps[Response]:
    """``POST /api/CacheConnectorUpsert``: create or update a task, publish if asked.

    Returns 200 and the task record; after a publish failure, the record as it then
    stands: awaiting the publish's retry, or failed once its queue timeout would pass
    (see :func:`~ai4ec_runtime.dispatch.publish`). An *update* (one with
    a ``TaskId``) that is refused or cannot be stored answers a 200 in the upstream
    client's shape unless :func:`strict` (see :func:`shaped`); creates always get the
    strict answers, which APIM's policy maps for its callers.
    """
    try:
        upsert = parse_upsert(req.body)
    except BadRequest as exc:
        task_id = _task_id_of(req.body)
        if task_id is None or strict(rt, req):
            raise
        return (yield from _shaped_update(rt, task_id, exc))
    if upsert.task_id is not None and upsert.endpoint == CLIENT_FALLBACK_ENDPOINT:
        upsert = dataclasses.replace(upsert, endpoint=None)
    queue = False
    if upsert.publish:
        # A missing transport setting fails before the task exists. The local transport
        # is the store's own delivery queue: the create's script queues it (one round
        # trip, not two).
        queue = isinstance(rt.dispatcher, LocalDispatcher) and not rt.dispatcher.closed
    try:
        result = yield from rt.store.upsert_io(
            upsert,
            idempotency_key=req.header("idempotency-key") if upsert.task_id is None else None,
            caller=req.header("x-ai4ec-caller") or "",
            queue=queue,
        )
    except ConfigurationError:
        raise
    except TaskError as exc:
        if upsert.task_id is None or strict(rt, req):
            raise
        return (yield from _shaped_update(rt, upsert.task_id, exc))
    except UNREACHABLE:
        if upsert.task_id is None or strict(rt, req):
            raise
        return (yield from _shaped_update(rt, upsert.task_id, None))
    record = result.record
    if result.dispatch is not None:
        # Publishing may POST to Event Grid or queue in Redis: a thread does it.
        published = yield Blocking(publish, (rt.store, rt.dispatcher, result.dispatch))
        record = published or record
    resp = Response(200, record)
    if result.replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


def cache_connector_get(rt: Runtime, req: Request) -> Response:
    """``GET /api/CacheConnectorGet``: :func:`cache_connector_get_io`, blocking."""
    return drive(cache_connector_get_io(rt, req))


def cache_connector_get_io(rt: Runtime, req: Request) -> Steps[Response]:
    """``GET /api/CacheConnectorGet?taskId=``: the stored record, or not found.

    Unknown ids answer 404 with a JSON error by default; ``AI4EC_NOT_FOUND_STATUS=204``
    restores upstream's empty 204 for clients that test for it.
    """
    task_id = req.param("taskId")
    try:
        record = yield from rt.store.get_io(task_id)
    except UNREACHABLE:
        if strict(rt, req):
            raise
        log.warning("CacheConnectorGet: task store unavailable")
        # The record the client synthesizes itself for a non-200, plus the Endpoint it
        # then reads: its update falls back to CLIENT_FALLBACK_ENDPOINT (ignored above)
        # and AddPipelineTask stops on "not found" without POSTing.
        return shaped(
            task_id or "",
            {"TaskId": task_id, "Status": "not found", "Endpoint": ""},
            "store_unavailable",
        )
    if record is not None:
        return Response(200, record)
    if rt.settings.not_found_status == 204:
        return Response(204, b"", TEXT)
    return Response.json(
        404, {"error": "not_found", "message": f"Unknown TaskId {task_id!r}", "TaskId": task_id}
    )


def _loads(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except ValueError:
        raise BadRequest(f"{what} is not valid JSON") from None


def _first_object(raw: bytes) -> dict[str, Any]:
    doc = _loads(raw, "Request body")
    if isinstance(doc, list):
        doc = doc[0] if doc else None
    if not isinstance(doc, dict):
        raise BadRequest("Request body must be a JSON object or an array of one")
    return doc


def _as_int(value: Any, name: str) -> int:
    if value in (None, ""):
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{name} must be an integer") from None
    if not -_INT64 < number < _INT64:
        raise BadRequest(f"{name} is out of range (a 64-bit integer)")
    return number


def current_processing_upsert(rt: Runtime, req: Request) -> Response:
    """``POST /api/CurrentProcessingUpsert``: :func:`current_processing_upsert_io`, blocking."""
    return drive(current_processing_upsert_io(rt, req))


def current_processing_upsert_io(rt: Runtime, req: Request) -> Steps[Response]:
    """``POST /api/CurrentProcessingUpsert``: add ``IncrementBy - DecrementBy``.

    Answers the new count as text. The counter never goes below zero and expires a day
    after its last update, so a crashed pod cannot pin it.
    """
    if not req.body.strip():
        raise BadRequest("Request body is empty")
    doc = _first_object(req.body)
    path, cluster = doc.get("ApiPath"), doc.get("ServiceCluster")
    if not path or cluster is None:
        raise BadRequest("ApiPath and ServiceCluster are required")
    delta = _as_int(doc.get("IncrementBy"), "IncrementBy") - _as_int(
        doc.get("DecrementBy"), "DecrementBy"
    )
    try:
        count = yield from rt.store.current_processing_add_io(str(cluster), str(path), delta)
    except redis.exceptions.ResponseError:
        # INCRBY past 2**63: the counter cannot hold it; nothing was changed.
        raise BadRequest("IncrementBy/DecrementBy would overflow the counter") from None
    return Response(200, str(count).encode(), TEXT)


def current_processing_get(rt: Runtime, req: Request) -> Response:
    """``GET|POST /api/CurrentProcessingGet``: :func:`current_processing_get_io`, blocking."""
    return drive(current_processing_get_io(rt, req))


def current_processing_get_io(rt: Runtime, req: Request) -> Steps[Response]:
    """``GET|POST /api/CurrentProcessingGet?cluster=&path=``: the in-flight count.

    Reads the key Upsert writes (upstream read a different one and never found it).
    """
    cluster, path = req.param("cluster"), req.param("path")
    if cluster is None or not path:
        raise BadRequest("The cluster and path parameters are required.")
    count = yield from rt.store.current_processing_get_io(cluster, path)
    if count is None:
        return Response(204, b"", TEXT)
    return Response(200, str(count).encode(), TEXT)


# -- transport ------------------------------------------------------------------------


def _event_body(event: Mapping[str, Any]) -> tuple[str, bool]:
    """(body, from_store) of a task event in either schema."""
    if "data_base64" in event:
        return base64.b64decode(event["data_base64"]).decode(), False
    data = event.get("data")
    if isinstance(data, dict) and BODY_REF_KEY in data:
        return "", True
    if data is None:
        return "", False
    if isinstance(data, str):
        return data, False
    return json.dumps(data, separators=(",", ":")), False


def backend_webhook(rt: Runtime, req: Request) -> Response:
    """``POST|OPTIONS /api/BackendWebhook``: Event Grid (both schemas) -> backend.

    * Event Grid schema: answers ``SubscriptionValidationEvent`` with
      ``{"validationResponse": code}``; CloudEvents: answers the ``OPTIONS`` abuse-protection
      handshake with ``WebHook-Allowed-Origin``.
    * Delivers **every** ``task`` event of a batch (upstream returned after the first).
    * Answers 503 when any event must be retried (backend busy or down): Event Grid then
      redelivers the batch, and events already delivered are skipped by their lease.
      On the subscription's last attempt (``aeg-delivery-count``) the task is failed
      instead, so it never stays ``created`` forever.
    """
    if req.method == "OPTIONS":
        origin = req.header("webhook-request-origin")
        if not origin:
            raise BadRequest("OPTIONS without WebHook-Request-Origin")
        if not _HOST.fullmatch(origin):
            # Reflected into a response header: only host-name characters, never CR/LF.
            raise BadRequest("WebHook-Request-Origin must be a host name")
        return Response(
            200,
            b"",
            TEXT,
            {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST"},
        )
    doc = _loads(req.body or b"null", "Webhook body")
    events = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(e, dict) for e in events):
        raise BadRequest("Webhook body must be an event or an array of events")
    for event in events:
        if event.get("eventType") == VALIDATION_EVENT:
            data = event.get("data")
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str) or not code:
                raise BadRequest("Validation event without data.validationCode")
            log.info("Event Grid subscription validation answered")
            return Response.json(200, {"validationResponse": code})
    try:
        attempts = int(req.header("aeg-delivery-count") or 0)
    except ValueError:
        attempts = 0
    final = attempts + 1 >= rt.settings.event_max_delivery_attempts

    def one(event: dict[str, Any]) -> dict[str, str]:
        kind = event.get("eventType") if "specversion" not in event else event.get("type")
        task_id, endpoint = str(event.get("id") or ""), str(event.get("subject") or "")
        if kind != EVENT_TYPE or not task_id or not endpoint:
            return {"id": task_id, "outcome": "ignored"}
        body, from_store = _event_body(event)
        outcome = deliver(
            rt.store,
            rt.backend,
            Dispatch(task_id, endpoint, body),
            body_from_store=from_store,
            lease_seconds=rt.settings.delivery_lease_seconds,
            final_attempt=final,
        )
        return {"TaskId": task_id, "outcome": outcome.value}

    if len(events) <= 1:
        results = [one(e) for e in events]  # an empty batch is acknowledged
    else:
        # A batch is delivered concurrently: Event Grid gives the whole batch 30 s.
        with ThreadPoolExecutor(min(16, len(events))) as pool:
            results = list(pool.map(one, events))
    retry = any(r["outcome"] in (Outcome.BUSY, Outcome.ERROR) for r in results)
    if retry:
        resp = Response.json(503, {"retry": True, "results": results})
        resp.headers["Retry-After"] = "10"
        return resp
    return Response.json(200, {"results": results})


def dead_letter(rt: Runtime, raw: bytes) -> list[str]:
    """Fail every task whose event Event Grid dead-lettered; returns their ids.

    Event Grid writes undeliverable events (retries or TTL exhausted, 400/413 answers)
    as a JSON array into the dead-letter container; each carries ``deadLetterReason``,
    ``deliveryAttempts`` and ``lastHttpStatusCode``. Upstream configured no dead-letter
    destination, so such tasks stayed ``created`` forever.
    """
    doc = json.loads(raw or b"[]")
    events = doc if isinstance(doc, list) else [doc]
    failed = []
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("eventType", event.get("type"))
        task_id, endpoint = str(event.get("id") or ""), str(event.get("subject") or "")
        if kind != EVENT_TYPE or not task_id:
            continue
        reason = event.get("deadLetterReason", "undeliverable")
        attempts = event.get("deliveryAttempts", "?")
        last = event.get("lastHttpStatusCode", event.get("lastDeliveryOutcome", "?"))
        text = (
            f"Failed - dispatch to the backend gave up ({reason}; {attempts} attempts; "
            f"last: {last})."
        )
        if rt.store.fail(task_id, text, endpoint=endpoint) is not None:
            failed.append(task_id)
    return failed


def backend_dead_letter(rt: Runtime, req: Request) -> Response:
    """``POST /api/BackendDeadLetter``: :func:`dead_letter` over HTTP (and locally)."""
    try:
        failed = dead_letter(rt, req.body)
    except RecursionError:
        raise BadRequest("Dead-letter body is nested too deeply") from None
    except ValueError:
        raise BadRequest("Dead-letter body is not valid JSON") from None
    return Response.json(200, {"failed": failed})


# -- timers ---------------------------------------------------------------------------


def task_queue_logger(rt: Runtime) -> dict[str, int]:
    """Every 30 s: backlog metrics (``<path>_created`` and ``ai4ec:pending:<api>``)."""
    sizes = rt.store.queue_sizes(("created",))
    metrics.emit(sizes)
    return sizes


def task_process_logger(rt: Runtime) -> dict[str, int]:
    """Every 5 min: running/completed/failed set sizes; trims expired set members."""
    trimmed = rt.store.trim_finished()
    sizes = rt.store.queue_sizes(("running", "completed", "failed"))
    metrics.emit(sizes)
    log.info("trimmed %d expired status-set members", trimmed)
    return sizes


def task_timeout_sweeper(rt: Runtime) -> dict[str, int]:
    """Every 5 s: fail or retry tasks past their run/queue timeout, re-dispatch retries."""
    counts = run_timers(rt.store, rt.dispatcher, rt.settings.sweep_batch)
    s = rt.settings
    # Deliver what busy or cold backends left in the durable per-API queues.
    delivered = pump(
        rt.store,
        rt.backend,
        ["", *sorted(rt.routing.apis)],
        lease_seconds=s.delivery_lease_seconds,
        max_attempts=s.local_max_attempts,
        base_delay=s.local_retry_base_seconds,
        max_delay=s.local_retry_max_seconds,
    )
    counts.update({f"queue_{k}": v for k, v in delivered.items()})
    if any(counts.values()):
        log.info("timeout sweep: %s", counts)
    return counts


# -- routing table ------------------------------------------------------------------------

Handler = Callable[[Runtime, Request], Response]

#: Function name -> (HTTP methods, handler). The names are upstream's, so existing URLs
#: (``/api/<Name>?code=...``) keep working.
ROUTES: dict[str, tuple[tuple[str, ...], Handler]] = {
    "CacheConnectorUpsert": (("POST",), cache_connector_upsert),
    "CacheConnectorGet": (("GET",), cache_connector_get),
    "CurrentProcessingUpsert": (("POST",), current_processing_upsert),
    "CurrentProcessingGet": (("GET", "POST"), current_processing_get),
    "BackendWebhook": (("POST", "OPTIONS"), backend_webhook),
    "BackendDeadLetter": (("POST",), backend_dead_letter),
}

#: The routes that only talk to Redis, as steps (see :func:`handle_io`): the local host
#: runs them on its event loop, everything else in threads.
STEPS: dict[str, Callable[[Runtime, Request], Steps[Response]]] = {
    "CacheConnectorUpsert": cache_connector_upsert_io,
    "CacheConnectorGet": cache_connector_get_io,
    "CurrentProcessingUpsert": current_processing_upsert_io,
    "CurrentProcessingGet": current_processing_get_io,
}


def handle(runtime: Runtime | Callable[[], Runtime], name: str, req: Request) -> Response:
    """Run the handler ``name`` and turn every failure into a JSON answer.

    ``runtime`` may be a factory so a configuration error surfaces here, as a clear
    500 for this request, rather than at import time.
    """
    return drive(handle_io(runtime, name, req))


def handle_io(runtime: Runtime | Callable[[], Runtime], name: str, req: Request) -> Steps[Response]:
    """:func:`handle` as steps.

    The routes of :data:`STEPS` yield their Redis calls; the others run inside, blocking
    (the local host runs those in threads).
    """
    entry = ROUTES.get(name)
    if entry is None:
        return Response.json(404, {"error": "not_found", "message": f"No function {name}"})
    methods, handler = entry
    if req.method not in methods:
        return Response.json(
            405, {"error": "method_not_allowed", "message": f"{name} accepts {', '.join(methods)}"}
        )
    try:
        rt = runtime if isinstance(runtime, Runtime) else runtime()
        steps = STEPS.get(name)
        if steps is not None:
            return (yield from steps(rt, req))
        return handler(rt, req)
    except ConfigurationError as exc:
        log.error("%s: configuration error: %s", name, exc.message)
        return Response.error(exc)
    except TaskError as exc:
        return Response.error(exc)
    except RecursionError:
        return Response.error(BadRequest("Request is nested too deeply"))
    except UNREACHABLE as exc:
        # One line, no traceback: an outage is an operations event, not a bug, and the
        # exception text names Redis' host and port.
        log.warning("%s: task store unavailable (%s)", name, type(exc).__name__)
        return Response.unavailable()
    except redis.exceptions.RedisError:
        log.exception("%s: task store error", name)
        return Response.unavailable()
    except Exception:
        log.exception("%s: unhandled error", name)
        return Response.json(500, {"error": "internal_error", "message": "Internal error"})
