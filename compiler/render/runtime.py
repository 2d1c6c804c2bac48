"""Runtime target: the task manager's routing table and app settings for one environment.

Writes ``functions/routing.json`` (format in docs/contracts.md: which API owns which
backend path, task TTLs, retry policy, and each pipeline's ordered steps) and
``functions/settings.json`` (the Function App settings, secrets as Key Vault references
only). The runtime reads the first; the Azure target puts the second into the Function
App. Both come from the model alone. The ingress address that dispatch targets
(``AI4EC_BACKEND_BASE_URL``) is only known once a cluster exists, so the Azure target
sets it from the deployment, not from here.
"""

from __future__ import annotations

import sys
from pathlib import PurePosixPath
from typing import Any

from ..cache import DiskCache, code_fingerprint, key_of
from ..errors import BuildError
from ..model.types import Mode, Platform
from .artifact import Artifact, RenderContext, json_artifact

ROUTING_SCHEMA_VERSION = 1


def routing_table(platform: Platform) -> dict[str, Any]:
    """The routing table the runtime uses to own, expire, retry and chain tasks."""
    apis: dict[str, Any] = {}
    for api in platform.apis:
        async_eps = [e for e in api.endpoints if e.mode is Mode.ASYNC]
        if not async_eps:
            continue
        apis[api.id] = {
            "taskTtlSeconds": api.tasks.ttl_seconds,
            "timeoutSeconds": max(e.timeout_seconds for e in async_eps),
            "queueTimeoutSeconds": api.tasks.queue_timeout_seconds,
            "retry": {
                "maxAttempts": api.tasks.max_attempts,
                "backoffSeconds": api.tasks.backoff_seconds,
            },
            "paths": sorted(e.backend_path for e in async_eps),
            # Dispatch posts the API's pipeline steps to this cluster's ingress
            # (AI4EC_BACKEND_BASE_URLS), not to one ingress for the whole environment.
            "cluster": api.cluster,
        }
    pipelines = {
        p.id: {
            "taskTtlSeconds": p.tasks.ttl_seconds,
            "steps": [{"api": s.api, "path": s.endpoint_path} for s in p.steps],
        }
        for p in platform.pipelines
    }
    return {"schemaVersion": ROUTING_SCHEMA_VERSION, "apis": apis, "pipelines": pipelines}


def app_settings(platform: Platform) -> dict[str, str]:
    """Function App settings; secret ones are Key Vault references, never values."""
    az = platform.azure
    vault = f"https://{az.key_vault.name}.vault.azure.net/secrets"
    cache = az.cache
    # The URL (host, port 10000 or 6380, rediss:// = TLS) is the Key Vault secret; the mode
    # says how to talk to it: Azure Managed Redis (OSS cluster policy) is a Redis Cluster.
    redis = {"AI4EC_REDIS_MODE": "cluster" if cache.managed else "single"}
    if cache.shards:
        redis["AI4EC_REDIS_SHARDS"] = str(cache.shards)
    return {
        "AI4EC_PLATFORM": platform.name,
        "AI4EC_ENVIRONMENT": platform.environment,
        **redis,
        "AI4EC_REDIS_URL": f"@Microsoft.KeyVault(SecretUri={vault}/ai4ec-redis-url/)",
        "EVENT_GRID_TOPIC_URI": f"https://{az.event_grid.topic_name}.{az.location}-1.eventgrid.azure.net/api/events",
        "AI4EC_ROUTING_PATH": "routing.json",
        "FUNCTIONS_WORKER_RUNTIME": "python",
    }


#: Bumped when what a cached bundle entry holds changes.
_BUNDLE_FORMAT = "functions-zip/1"


def _bundle(routing: dict[str, Any], defaults: dict[str, str]) -> bytes:
    """The task manager's zip, from the render cache when its entries were zipped before.

    Deflating its ~550 files was a tenth of a second of every render, though they
    rarely change (the routing table and settings are two of them). The key hashes
    every entry's name and bytes (the vendored dependencies as installed), ai4ec's code
    with zlib's version (:func:`~ai4ec.cache.code_fingerprint`) and Python's (zipfile
    writes the headers), so a hit is the zip this build would write.
    """
    from ai4ec_runtime.bundle import bundle_entries, zip_bytes

    entries = bundle_entries(routing, defaults)
    store = DiskCache("functions")
    key = ""
    if store.active:
        parts: list[str | bytes] = [_BUNDLE_FORMAT, code_fingerprint(), sys.version]
        for name, data in sorted(entries.items()):
            parts += [name, data]
        key = key_of(*parts)
        hit = store.get(key)
        if hit is not None:
            return hit
    bundle = zip_bytes(routing, defaults)  # zips bundle_entries(routing, defaults)
    if key:
        store.put(key, bundle)
    return bundle


def render_runtime(platform: Platform, context: RenderContext) -> list[Artifact]:
    """Routing table, settings and the deployable zip of the task manager."""
    del context
    from ai4ec_runtime.bundle import BundleError
    from ai4ec_runtime.routing import Routing

    routing = routing_table(platform)
    # The runtime's own parser reads the table at build time, so a contract drift between
    # compiler and runtime fails the build, not the first task in production.
    Routing(routing)
    settings = app_settings(platform)
    defaults = {k: v for k, v in settings.items() if not v.startswith("@Microsoft.KeyVault(")}
    try:
        bundle = _bundle(routing, defaults)
    except BundleError as exc:
        # The installed environment, not the platform, is at fault (a runtime dependency
        # missing or at another version): a user error with the fix, not an ai4ec bug.
        raise BuildError(str(exc)) from None
    return [
        json_artifact("functions/routing.json", routing),
        json_artifact("functions/settings.json", settings),
        Artifact(PurePosixPath("functions/bundle.zip"), bundle),
    ]
