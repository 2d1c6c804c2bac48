"""Azure Functions (Python v2 programming model) bindings for the handlers.

Each function only converts ``azure.functions`` objects to :class:`~.handlers.Request`,
calls :func:`~.handlers.handle` and converts back. The :class:`~.handlers.Runtime` is
built on first invocation (not at import), so indexing never fails on missing settings.

Function names are upstream's (``CacheConnectorUpsert`` ...) so existing URLs, APIM
policies and container env vars keep working. Timers:

* ``TaskQueueLogger`` (every 30 s): backlog metrics;
* ``TaskProcessLogger`` (every 5 min): running/completed/failed metrics, set trimming;
* ``TaskTimeoutSweeper`` (every 5 s): run/queue timeouts, retries with backoff, the
  durable delivery queues.

``BackendDeadLetterBlob`` reads Event Grid's dead-letter blobs from the container
``ai4ec-deadletter`` of the Functions storage account (``AzureWebJobsStorage``, a
setting every Function App has, so the trigger can never break indexing the way
upstream's stray Service Bus trigger did).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import azure.functions as func
import redis

from .auth import AccessKeys, KeysFileError, authorized_handle, presented_key, unauthorized
from .handlers import (
    Request,
    Response,
    Runtime,
    dead_letter,
    handle,
    task_process_logger,
    task_queue_logger,
    task_timeout_sweeper,
)
from .health import HEALTH_ROUTE, check_health, probe_client
from .models import ConfigurationError
from .settings import Settings

log = logging.getLogger("ai4ec_runtime.app")

#: Container Event Grid dead-letters undeliverable events to (see docs/contracts.md).
DEAD_LETTER_CONTAINER = "ai4ec-deadletter"

#: App setting holding the access keys document (a Key Vault reference on Azure).
ACCESS_KEYS_SETTING = "AI4EC_ACCESS_KEYS"

# Anonymous to the Functions host: its keys would open every function to every holder.
# The runtime checks its own least-privilege keys instead (:mod:`.auth`), before any
# store read or outbound request.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_runtime: Runtime | None = None
_lock = threading.Lock()
# The fail-fast client the health probe pings, made from the runtime's on first use.
_probe: redis.Redis | None = None


@dataclass(frozen=True, slots=True)
class _KeyState:
    """The loaded keys, or why there are none (answered as a 503, never as open access)."""

    keys: AccessKeys | None
    problem: str = ""
    insecure: bool = False


_keys: _KeyState | None = None


def _load_keys() -> _KeyState:
    """The access keys from ``AI4EC_ACCESS_KEYS``; fails closed when absent or invalid."""
    text = os.environ.get(ACCESS_KEYS_SETTING, "")
    if not text.strip():
        return _KeyState(None, f"{ACCESS_KEYS_SETTING} is not set")
    if text.startswith("@Microsoft.KeyVault("):
        # App Service left the reference unresolved (secret missing or no access).
        return _KeyState(None, f"{ACCESS_KEYS_SETTING}: the Key Vault reference did not resolve")
    try:
        return _KeyState(AccessKeys.parse(text, ACCESS_KEYS_SETTING))
    except KeysFileError as exc:
        return _KeyState(None, str(exc))


def get_access_keys() -> _KeyState:
    """The process-wide keys, read from the app settings on first use."""
    global _keys
    with _lock:
        if _keys is None:
            _keys = _load_keys()
            if _keys.keys is None:
                log.error("access keys unavailable, refusing every call: %s", _keys.problem)
        return _keys


def set_access_keys(keys: AccessKeys | None, *, insecure: bool = False) -> None:
    """Replace the process-wide keys (tests); ``insecure`` turns checking off, loudly.

    ``None`` without ``insecure`` forgets them, so the next call reads the settings.
    """
    global _keys
    with _lock:
        if insecure:
            log.warning("WARNING: no key checking: anyone can call every function")
            _keys = _KeyState(None, insecure=True)
        else:
            _keys = _KeyState(keys) if keys is not None else None


def get_runtime() -> Runtime:
    """The process-wide runtime, built from app settings on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(Settings.from_env())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Replace the process-wide runtime (tests inject one bound to their Redis)."""
    global _runtime, _probe
    with _lock:
        _runtime = runtime
        if _probe is not None:
            # The probe owns its pool, but a client given a pool never closes it: close
            # the sockets here, or they leak until garbage collection.
            _probe.close()
            _probe.connection_pool.disconnect()
        _probe = None


def get_probe() -> redis.Redis | None:
    """The health probe's client on the runtime's Redis; ``None`` when not configured."""
    global _probe
    try:
        rt = get_runtime()
    except ConfigurationError as exc:
        log.error("health: configuration error: %s", exc.message)
        return None
    with _lock:
        if _probe is None:
            _probe = probe_client(rt.redis)
        return _probe


def to_request(req: func.HttpRequest) -> Request:
    """Convert an ``azure.functions.HttpRequest``."""
    return Request(
        method=req.method.upper(),
        params=dict(req.params),
        headers={k.lower(): v for k, v in req.headers.items()},
        body=req.get_body() or b"",
    )


def to_response(resp: Response) -> func.HttpResponse:
    """Convert a handler :class:`Response`."""
    mimetype, _, params = resp.content_type.partition(";")
    charset = params.strip().removeprefix("charset=") or "utf-8"
    return func.HttpResponse(
        body=resp.body if resp.status != 204 else None,
        status_code=resp.status,
        headers=dict(resp.headers),
        mimetype=mimetype.strip(),
        charset=charset,
    )


def _http(name: str, req: func.HttpRequest) -> func.HttpResponse:
    request = to_request(req)
    state = get_access_keys()
    if state.insecure:
        return to_response(handle(get_runtime, name, request))
    if state.keys is None:
        # Fail closed: without keys nobody is let in. The body names no secret and no host.
        body = {"error": "unavailable", "message": "Access keys are not configured"}
        return to_response(Response.json(503, body))
    principal = state.keys.who(presented_key(request))
    if principal is None:
        # Answer before building the runtime: an anonymous caller learns nothing.
        return to_response(unauthorized())
    try:
        rt = get_runtime()
    except ConfigurationError as exc:
        log.error("%s: configuration error: %s", name, exc.message)
        return to_response(Response.error(exc))
    return to_response(authorized_handle(rt, principal, name, request))


@app.function_name("Health")
@app.route(route=HEALTH_ROUTE, methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    """App Service's health check (``siteConfig.healthCheckPath``): does Redis answer?

    The only function that asks for no key: App Service's prober sends none, and the
    answer (``{"status":"ok"}`` or a generic 503) reveals no host, port or key. It
    reads no task and publishes nothing, so it opens nothing the keys protect.
    """
    del req  # nothing in the request matters
    return to_response(check_health(get_probe()))


@app.function_name("CacheConnectorUpsert")
@app.route(route="CacheConnectorUpsert", methods=["POST"])
def cache_connector_upsert(req: func.HttpRequest) -> func.HttpResponse:
    """Create or update a task (APIM and the API containers call this)."""
    return _http("CacheConnectorUpsert", req)


@app.function_name("CacheConnectorGet")
@app.route(route="CacheConnectorGet", methods=["GET"])
def cache_connector_get(req: func.HttpRequest) -> func.HttpResponse:
    """Read a task (APIM's ``GET /task/{taskId}`` proxies here)."""
    return _http("CacheConnectorGet", req)


@app.function_name("CurrentProcessingUpsert")
@app.route(route="CurrentProcessingUpsert", methods=["POST"])
def current_processing_upsert(req: func.HttpRequest) -> func.HttpResponse:
    """Adjust a requests-in-flight counter."""
    return _http("CurrentProcessingUpsert", req)


@app.function_name("CurrentProcessingGet")
@app.route(route="CurrentProcessingGet", methods=["GET", "POST"])
def current_processing_get(req: func.HttpRequest) -> func.HttpResponse:
    """Read a requests-in-flight counter (GET; POST kept for upstream callers)."""
    return _http("CurrentProcessingGet", req)


@app.function_name("BackendWebhook")
@app.route(route="BackendWebhook", methods=["POST", "OPTIONS"])
def backend_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Event Grid subscription endpoint: validation handshakes and task delivery."""
    return _http("BackendWebhook", req)


@app.function_name("BackendDeadLetter")
@app.route(route="BackendDeadLetter", methods=["POST"])
def backend_dead_letter(req: func.HttpRequest) -> func.HttpResponse:
    """Fail the tasks of dead-lettered events posted as a JSON array."""
    return _http("BackendDeadLetter", req)


@app.function_name("BackendDeadLetterBlob")
@app.blob_trigger(
    arg_name="blob", path=DEAD_LETTER_CONTAINER + "/{name}", connection="AzureWebJobsStorage"
)
def backend_dead_letter_blob(blob: func.InputStream) -> None:
    """Fail the tasks of the events in one Event Grid dead-letter blob."""
    failed = dead_letter(get_runtime(), blob.read())
    log.info("dead-letter blob %s: failed %d task(s)", blob.name, len(failed))


def _note_past_due(name: str, timer: func.TimerRequest) -> None:
    # A late tick means the host was busy or restarting; the sweep catches up anyway.
    if timer.past_due:
        log.warning("%s: timer is past due", name)


@app.function_name("TaskQueueLogger")
@app.timer_trigger(arg_name="timer", schedule="*/30 * * * * *", use_monitor=False)
def task_queue_logger_timer(timer: func.TimerRequest) -> None:
    """Emit backlog metrics."""
    _note_past_due("TaskQueueLogger", timer)
    task_queue_logger(get_runtime())


@app.function_name("TaskProcessLogger")
@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", use_monitor=False)
def task_process_logger_timer(timer: func.TimerRequest) -> None:
    """Emit processing metrics and trim expired status-set members."""
    _note_past_due("TaskProcessLogger", timer)
    task_process_logger(get_runtime())


@app.function_name("TaskTimeoutSweeper")
@app.timer_trigger(arg_name="timer", schedule="*/5 * * * * *", use_monitor=False)
def task_timeout_sweeper_timer(timer: func.TimerRequest) -> None:
    """Fail or retry tasks past their timeouts, re-dispatch due retries, pump the queues.

    Every 5 s: the same tick delivers what busy or cold backends left in the durable
    per-API queues, so a task waits seconds after its backend becomes ready, not a
    30 s tick (each tick is a few Redis calls when nothing is due).
    """
    _note_past_due("TaskTimeoutSweeper", timer)
    task_timeout_sweeper(get_runtime())
