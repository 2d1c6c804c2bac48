"""App settings -> a typed :class:`Settings` value.

Sources, highest priority first: the process environment (Function App settings),
then ``ai4ec_settings.json`` next to ``function_app.py`` (non-secret values the compiler
bakes into the bundle), then the defaults below. Nothing here touches the network, and
nothing fails at import: a missing required setting raises
:class:`~ai4ec_runtime.models.ConfigurationError` when a function first needs it, so the
Functions host still indexes every function and the error shows up in the response and
the logs instead of as an opaque worker crash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from .models import ConfigurationError

#: Directory that holds function_app.py, host.json and (optionally) routing.json.
APP_DIR = Path(__file__).resolve().parent.parent
#: Bundled defaults written by :func:`ai4ec_runtime.bundle.build_zip`.
BUNDLED_SETTINGS = APP_DIR / "ai4ec_settings.json"


def parse_stackexchange(conn: str) -> str:
    """Turn an upstream StackExchange.Redis connection string into a redis:// URL.

    ``host:6380,password=KEY,ssl=True,abortConnect=False`` becomes
    ``rediss://:KEY@host:6380/0``. Unknown options are ignored, as StackExchange does.

    Raises:
        ConfigurationError: no host in the string.
    """
    parts = [p.strip() for p in conn.split(",") if p.strip()]
    endpoint = ""
    options: dict[str, str] = {}
    for part in parts:
        if "=" in part:
            key, _, value = part.partition("=")
            options[key.strip().lower()] = value.strip()
        elif not endpoint:
            endpoint = part
    if not endpoint:
        raise ConfigurationError("REDIS_CONNECTION_STRING has no host:port part")
    ssl = options.get("ssl", "false").lower() == "true"
    if ":" not in endpoint:
        endpoint += ":6380" if ssl else ":6379"
    user = quote(options.get("user", ""), safe="")
    password = options.get("password", "")
    auth = f"{user}:{quote(password, safe='')}@" if password or user else ""
    db = options.get("defaultdatabase", "0")
    return f"{'rediss' if ssl else 'redis'}://{auth}{endpoint}/{db}"


def parse_base_urls(raw: str) -> dict[str, str]:
    """``AI4EC_BACKEND_BASE_URLS`` -> ``{cluster: base URL}`` without stand-ins.

    The Azure template fills the setting from the ingress addresses ``apply`` found;
    a cluster whose address was not found yet keeps the build's stand-in
    ``<scheme>://<cluster>.ingress.invalid``. ``.invalid`` never resolves (RFC 2606), so
    such an entry is dropped and the step falls back to ``AI4EC_BACKEND_BASE_URL`` or
    the task's own Endpoint instead of failing every delivery.

    Raises:
        ConfigurationError: the value is not a JSON object of http(s) URLs.
    """
    if not raw.strip():
        return {}
    bad = ConfigurationError(
        "App setting AI4EC_BACKEND_BASE_URLS must be a JSON object of cluster name -> "
        'http(s) base URL, e.g. {"main": "https://ingress.example.org"}'
    )
    try:
        doc = json.loads(raw)
    except ValueError:
        raise bad from None
    if not isinstance(doc, dict):
        raise bad
    out: dict[str, str] = {}
    for cluster, url in sorted(doc.items()):
        if not isinstance(url, str):
            raise bad
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            if url.strip():
                raise bad
            continue
        if parts.hostname.endswith(".invalid"):
            continue
        out[str(cluster)] = url.strip().rstrip("/")
    return out


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"App setting {name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"App setting {name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class ManagedIdentity:
    """Where an App Service app asks for its identity's tokens (:mod:`.identity`).

    App Service sets ``IDENTITY_ENDPOINT`` (reachable from the app only) and
    ``IDENTITY_HEADER`` (a value it rotates, sent back as ``X-IDENTITY-HEADER``); the
    header is a credential, so it is never in ``repr``.
    """

    endpoint: str
    header: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ManagedIdentity | None:
        """The app's identity endpoint, or ``None`` outside App Service."""
        endpoint, header = env.get("IDENTITY_ENDPOINT"), env.get("IDENTITY_HEADER")
        if endpoint and header:
            return cls(endpoint, header)
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every knob of the runtime; names of the app settings in the field docs.

    Attributes:
        redis_url: ``AI4EC_REDIS_URL``, else parsed ``REDIS_CONNECTION_STRING``.
        event_grid_topic_uri: ``EVENT_GRID_TOPIC_URI``.
        event_grid_key: ``EVENT_GRID_KEY``; absent means an identity publishes. Not in
            ``repr``.
        managed_identity: App Service's token endpoint (``IDENTITY_ENDPOINT`` and
            ``IDENTITY_HEADER``, set by the platform); the runtime publishes with it.
        routing_path: ``AI4EC_ROUTING_PATH`` (default: routing.json next to function_app.py).
        backend_base_url: ``AI4EC_BACKEND_BASE_URL``: scheme+host dispatch targets when
            the API's cluster has no entry in ``backend_base_urls``.
        backend_base_urls: ``AI4EC_BACKEND_BASE_URLS``: a JSON object, cluster name ->
            scheme+host of that cluster's ingress, so each pipeline step reaches the
            cluster that runs its API. Entries on the reserved ``.invalid`` domain (the
            compiler's stand-in for an address not yet known) are ignored.
        dispatch: ``AI4EC_DISPATCH``: ``eventgrid`` (Azure) or ``local`` (direct POST).
        not_found_status: ``AI4EC_NOT_FOUND_STATUS``: 404 (default) or upstream's 204.
        strict_answers: ``AI4EC_STRICT_ANSWERS``: answer task updates with 404/409/503
            instead of the 200 the upstream Framework client needs (it raises on any
            other status); see the deviations table in docs/runtime.md.
        default_task_ttl_seconds: ``AI4EC_DEFAULT_TASK_TTL_SECONDS`` for unrouted paths.
        default_timeout_seconds: ``AI4EC_DEFAULT_TIMEOUT_SECONDS`` (0 = no run timeout).
        default_queue_timeout_seconds: ``AI4EC_DEFAULT_QUEUE_TIMEOUT_SECONDS``: how long a
            task may wait undelivered when routing.json gives no ``queueTimeoutSeconds``
            (15 minutes: long enough for a GPU node to start, short enough that a task
            lost by a crashed host is retried or failed the same hour).
        event_max_delivery_attempts: ``AI4EC_EVENT_MAX_DELIVERY_ATTEMPTS``: the Event Grid
            subscription's ``maxDeliveryAttempts``; the webhook fails the task on the last.
        event_inline_max_bytes: ``AI4EC_EVENT_INLINE_MAX_BYTES``: larger bodies travel by
            reference (``<TaskId>_ORIG``) instead of inside the event.
        backend_timeout_seconds: ``AI4EC_BACKEND_TIMEOUT_SECONDS`` for the POST to a backend.
        delivery_lease_seconds: ``AI4EC_DELIVERY_LEASE_SECONDS``: how long a delivered
            event blocks duplicate deliveries of the same dispatch.
        local_retry_base_seconds: ``AI4EC_LOCAL_RETRY_BASE_SECONDS`` (local dispatcher).
        local_retry_max_seconds: ``AI4EC_LOCAL_RETRY_MAX_SECONDS`` (local dispatcher).
        local_max_attempts: ``AI4EC_LOCAL_MAX_ATTEMPTS`` (local dispatcher).
        sweep_batch: ``AI4EC_SWEEP_BATCH``: deadlines handled per script call.
        redis_mode: ``AI4EC_REDIS_MODE``: ``single`` (one Redis) or ``cluster`` (a Redis
            Cluster, e.g. Azure Managed Redis with the OSS cluster policy).
        redis_shards: ``AI4EC_REDIS_SHARDS``: index shards on a cluster (every process
            of one deployment must use the same number).
        op_ttl_seconds: ``AI4EC_OP_TTL_SECONDS``: how long a store call's reply is kept
            so a call re-sent after a lost reply is not run twice.
        local_workers: ``AI4EC_LOCAL_WORKERS``: delivery threads per API (local dispatcher).
        local_poll_seconds: ``AI4EC_LOCAL_POLL_SECONDS``: longest a local delivery lane
            sleeps before looking at its durable queue again.
        gateway_client_cert: ``AI4EC_GATEWAY_CLIENT_CERT``: PEM private key and
            certificate dispatch presents to HTTPS backends (the gateways' mutual TLS); on
            Azure a Key Vault reference. Never logged; not in ``repr``.
    """

    redis_url: str | None = None
    event_grid_topic_uri: str | None = None
    event_grid_key: str | None = field(default=None, repr=False)
    managed_identity: ManagedIdentity | None = None
    routing_path: Path = field(default_factory=lambda: APP_DIR / "routing.json")
    backend_base_url: str | None = None
    backend_base_urls: dict[str, str] = field(default_factory=dict)
    dispatch: str = "eventgrid"
    not_found_status: int = 404
    strict_answers: bool = False
    default_task_ttl_seconds: int = 7 * 24 * 3600
    default_timeout_seconds: int = 3600
    default_queue_timeout_seconds: int = 15 * 60
    event_max_delivery_attempts: int = 30
    event_inline_max_bytes: int = 512 * 1024
    backend_timeout_seconds: float = 25.0
    delivery_lease_seconds: int = 600
    local_retry_base_seconds: float = 0.5
    local_retry_max_seconds: float = 30.0
    local_max_attempts: int = 20
    sweep_batch: int = 500
    redis_mode: str = "single"
    redis_shards: int = 8
    op_ttl_seconds: int = 120
    local_workers: int = 4
    local_poll_seconds: float = 1.0
    gateway_client_cert: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, bundled: Path | None = BUNDLED_SETTINGS
    ) -> Settings:
        """Read settings from ``env`` (default ``os.environ``) over the bundled file.

        Raises:
            ConfigurationError: a setting has an invalid value.
        """
        merged: dict[str, str] = {}
        if bundled is not None and bundled.is_file():
            try:
                doc = json.loads(bundled.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigurationError(f"{bundled} is not valid JSON: {exc}") from None
            merged.update({str(k): str(v) for k, v in doc.items() if v is not None})
        merged.update(os.environ if env is None else env)
        e = merged

        redis_url = e.get("AI4EC_REDIS_URL") or None
        if not redis_url and e.get("REDIS_CONNECTION_STRING"):
            redis_url = parse_stackexchange(e["REDIS_CONNECTION_STRING"])
        not_found = _int(e, "AI4EC_NOT_FOUND_STATUS", 404)
        if not_found not in (204, 404):
            raise ConfigurationError("AI4EC_NOT_FOUND_STATUS must be 404 or 204")
        dispatch = (e.get("AI4EC_DISPATCH") or "eventgrid").lower()
        if dispatch not in ("eventgrid", "local"):
            raise ConfigurationError("AI4EC_DISPATCH must be 'eventgrid' or 'local'")
        strict = (e.get("AI4EC_STRICT_ANSWERS") or "false").strip().lower()
        if strict not in ("true", "false", "1", "0"):
            raise ConfigurationError("AI4EC_STRICT_ANSWERS must be true or false")
        routing_path = e.get("AI4EC_ROUTING_PATH")
        redis_mode = (e.get("AI4EC_REDIS_MODE") or "single").lower()
        if redis_mode not in ("single", "cluster"):
            raise ConfigurationError("AI4EC_REDIS_MODE must be 'single' or 'cluster'")
        shards = _int(e, "AI4EC_REDIS_SHARDS", 8)
        if not 1 <= shards <= 1024:
            raise ConfigurationError("AI4EC_REDIS_SHARDS must be between 1 and 1024")
        return cls(
            redis_url=redis_url,
            event_grid_topic_uri=e.get("EVENT_GRID_TOPIC_URI") or None,
            event_grid_key=e.get("EVENT_GRID_KEY") or None,
            managed_identity=ManagedIdentity.from_env(e),
            routing_path=Path(routing_path) if routing_path else APP_DIR / "routing.json",
            backend_base_url=(e.get("AI4EC_BACKEND_BASE_URL") or "").rstrip("/") or None,
            backend_base_urls=parse_base_urls(e.get("AI4EC_BACKEND_BASE_URLS") or ""),
            dispatch=dispatch,
            not_found_status=not_found,
            strict_answers=strict in ("true", "1"),
            default_task_ttl_seconds=_int(e, "AI4EC_DEFAULT_TASK_TTL_SECONDS", 7 * 24 * 3600),
            default_timeout_seconds=_int(e, "AI4EC_DEFAULT_TIMEOUT_SECONDS", 3600),
            default_queue_timeout_seconds=_int(e, "AI4EC_DEFAULT_QUEUE_TIMEOUT_SECONDS", 15 * 60),
            event_max_delivery_attempts=_int(e, "AI4EC_EVENT_MAX_DELIVERY_ATTEMPTS", 30),
            event_inline_max_bytes=_int(e, "AI4EC_EVENT_INLINE_MAX_BYTES", 512 * 1024),
            backend_timeout_seconds=_float(e, "AI4EC_BACKEND_TIMEOUT_SECONDS", 25.0),
            delivery_lease_seconds=_int(e, "AI4EC_DELIVERY_LEASE_SECONDS", 600),
            local_retry_base_seconds=_float(e, "AI4EC_LOCAL_RETRY_BASE_SECONDS", 0.5),
            local_retry_max_seconds=_float(e, "AI4EC_LOCAL_RETRY_MAX_SECONDS", 30.0),
            local_max_attempts=_int(e, "AI4EC_LOCAL_MAX_ATTEMPTS", 20),
            sweep_batch=_int(e, "AI4EC_SWEEP_BATCH", 500),
            redis_mode=redis_mode,
            redis_shards=shards,
            op_ttl_seconds=_int(e, "AI4EC_OP_TTL_SECONDS", 120),
            local_workers=max(1, _int(e, "AI4EC_LOCAL_WORKERS", 4)),
            local_poll_seconds=_float(e, "AI4EC_LOCAL_POLL_SECONDS", 1.0),
            gateway_client_cert=_client_pem(e.get("AI4EC_GATEWAY_CLIENT_CERT") or ""),
        )

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error naming the settings to set.

        Raises:
            ConfigurationError: neither Redis setting is present.
        """
        if not self.redis_url:
            raise ConfigurationError(
                "No Redis configured: set the app setting AI4EC_REDIS_URL "
                "(rediss://:<key>@<host>:6380/0) or REDIS_CONNECTION_STRING"
            )
        return self.redis_url

    def require_event_grid(self) -> str:
        """The Event Grid topic endpoint, or a clear error.

        Raises:
            ConfigurationError: ``EVENT_GRID_TOPIC_URI`` is not set.
        """
        if not self.event_grid_topic_uri:
            raise ConfigurationError(
                "No Event Grid topic configured: set the app setting EVENT_GRID_TOPIC_URI "
                "(or AI4EC_DISPATCH=local to POST to backends directly)"
            )
        return self.event_grid_topic_uri


def _client_pem(text: str) -> str | None:
    """The client certificate PEM, checked for both parts (the value is never shown).

    Raises:
        ConfigurationError: the setting is present but not a PEM key and certificate
            (an unresolved Key Vault reference arrives as its ``@Microsoft.KeyVault``
            text, which this names without echoing anything else).
    """
    if not text.strip():
        return None
    if text.startswith("@Microsoft.KeyVault"):
        raise ConfigurationError(
            "AI4EC_GATEWAY_CLIENT_CERT is an unresolved Key Vault reference: the Function "
            "App cannot read the secret ai4ec-gateway-client-pem (does it exist? `ai4ec "
            "apply` writes it)"
        )
    if "PRIVATE KEY-----" not in text or "BEGIN CERTIFICATE-----" not in text:
        raise ConfigurationError(
            "AI4EC_GATEWAY_CLIENT_CERT must hold a PEM private key and certificate"
        )
    return text
