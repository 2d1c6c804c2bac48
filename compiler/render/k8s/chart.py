"""Helm values for the shipped chart, and the chart rendered by the real Helm engine.

One release per API of ``templates/k8s/chart``, rendered in-process by helm-python-sdk.

The chart takes no decisions: placement, tolerations, grace periods, triggers and secret
wiring are decided here from the model and passed as values (interface in docs/chart.md).
The chart is loaded once per build and rendered once per release in-process.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ai4ec_runtime import keys as runtime_keys

from ...cache import DiskCache, code_fingerprint, key_of
from ...errors import Diagnostic, RenderError
from ...model.naming import results_container
from ...model.types import Api, Cluster, Mode, Platform, Probe
from ...resources import templates_dir
from .objects import (
    REDIS_AUTH,
    RUNTIME_SECRET,
    KubeObject,
    api_client_id,
    api_key_secret,
    objects_of_payload,
    objects_payload,
    parse_objects,
    tenant_id,
    toleration,
)

#: Threads rendering releases at once (Helm's engine is Go; more than the cores buys nothing).
HELM_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Seconds a terminating pod keeps serving after readiness goes away (endpoint removal).
PRE_STOP_SECONDS = 10
#: Extra seconds beyond the longest request, for the sidecar to drain and the app to exit.
SHUTDOWN_MARGIN_SECONDS = 30

#: Environment variable and Secret key of the API's own task-manager key (Key Vault secret
#: ``ai4ec-api-key-<workload>``), presented as ``x-functions-key`` by the API's container.
API_KEY_ENV = "AI4EC_API_KEY"
API_KEY_KEY = "ai4ec-api-key"

_RUNTIME_ENV_KEYS = {
    "CACHE_CONNECTOR_UPSERT_URI": "cache-connector-upsert-uri",
    "CACHE_CONNECTOR_GET_URI": "cache-connector-get-uri",
    "CURRENT_PROCESSING_UPSERT_URI": "current-processing-upsert-uri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "appinsights-connection-string",
    # Upstream Framework images log to Application Insights only through this one.
    "APPINSIGHTS_INSTRUMENTATIONKEY": "appinsights-instrumentation-key",
}


def _image(image: str) -> dict[str, str]:
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    repo, tag = image, "latest"
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
    return {"repository": repo, "tag": tag, "digest": digest, "pullPolicy": "IfNotPresent"}


def pipeline_stage(platform: Platform, api: Api) -> tuple[str, str, str]:
    """(component, partOf, NEXT_API_NAME_IN_PIPELINE) for an API."""
    next_ids = sorted({nxt for _, nxt in api.next_in_pipeline})
    member_of = platform.pipelines_of(api.id)
    if not member_of:
        return "api", platform.name, ""
    # NEXT_API_NAME_IN_PIPELINE names one successor; with several (the API is shared by
    # pipelines that continue differently) the routing table alone decides, so it is unset.
    nxt = platform.api(next_ids[0]).name if len(next_ids) == 1 else ""
    return "pipeline-stage", member_of[0] if len(member_of) == 1 else platform.name, nxt


def _tolerations(cluster: Cluster, api: Api) -> list[dict[str, str]]:
    return [toleration(t) for t in cluster.pool(api.pool).taints] if api.pool else []


def release_values(platform: Platform, cluster: Cluster, api: Api) -> dict[str, Any]:
    """The chart values of one API (every key explicit, as the chart requires)."""
    component, part_of, next_api = pipeline_stage(platform, api)
    s = api.scaling
    is_async = api.all_async
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": api.resources.cpu, "memory": api.resources.memory},
        "limits": {"memory": api.resources.memory},
    }
    if api.resources.cpu_limit:
        resources["limits"]["cpu"] = api.resources.cpu_limit
    probes = {
        "readiness": _probe(api.probes.readiness),
        "liveness": _probe(api.probes.liveness),
        "startup": {"enabled": True, **_probe(api.probes.startup)},
    }
    gpu_pool_names = [p.name for p in cluster.gpu_pools]
    sc = api.security_context
    return {
        "name": api.id,
        "platform": platform.name,
        "environment": platform.environment,
        "partOf": part_of,
        "component": component,
        "version": api.version,
        "mode": "async" if is_async else ("mixed" if api.has_async else "sync"),
        "image": _image(api.image),
        "imagePullSecrets": [],
        "container": {"port": api.port, "command": [], "args": []},
        "service": {"port": 80},
        "replicas": s.min_replicas or 1,
        "framework": {
            "apiPrefix": api.api_prefix,
            "serviceCluster": f"{platform.name}-{platform.environment}-{cluster.name}",
            "serviceName": api.name,
            "serviceVersion": api.version,
            "nextApiNameInPipeline": next_api,
        },
        "env": dict(api.env),
        "runtimeSecret": {
            "name": RUNTIME_SECRET,
            # Not mounted by the API's pods: the runtime SecretProviderClass signs in with
            # an identity of its own, and its sync Deployment keeps the Secret there.
            "secretProviderClass": "",
            "keys": dict(_RUNTIME_ENV_KEYS),
        },
        "secretEnv": [
            {"name": name, "secretName": f"{api.id}-secrets", "key": ref.key_vault_secret}
            for name, ref in api.secrets
        ]
        + [{"name": API_KEY_ENV, "secretName": f"{api.id}-secrets", "key": API_KEY_KEY}],
        "secretProviderClass": _api_secrets(platform, api),
        "serviceAccount": {
            "workloadIdentityClientId": api_client_id(api),
            "automountToken": False,
        },
        # Its own results container: the API's identity may write there and nowhere else.
        "results": {
            "accountUrl": platform.azure.storage.blob_endpoint,
            "container": results_container(platform.azure, api),
        },
        "resources": resources,
        "gpu": {"count": api.resources.gpu, "resourceName": "nvidia.com/gpu"},
        "placement": {
            "nodePool": api.pool,
            "excludeNodePools": [] if api.pool else gpu_pool_names,
            "tolerations": _tolerations(cluster, api),
            "spreadAcrossZones": True,
        },
        "probes": probes,
        "shutdown": {
            "preStopSleepSeconds": PRE_STOP_SECONDS,
            "terminationGracePeriodSeconds": PRE_STOP_SECONDS
            + _longest_request(api)
            + SHUTDOWN_MARGIN_SECONDS,
        },
        "securityContext": {
            "runAsNonRoot": sc.run_as_non_root,
            "runAsUser": sc.run_as_user,
            "runAsGroup": sc.run_as_group,
            "fsGroup": sc.fs_group,
            # Framework images write outside /tmp (supervisord, logs): the root filesystem
            # stays writable unless platform.yaml says otherwise.
            "readOnlyRootFilesystem": sc.read_only_root_filesystem,
        },
        "scratch": {"tmpSizeLimit": "2Gi", "shmSizeLimit": "1Gi" if api.resources.gpu else ""},
        "istio": {
            "injection": "namespace",
            "proxyConfig": {
                "holdApplicationUntilProxyStarts": True,
                "terminationDrainDuration": f"{_longest_request(api) + PRE_STOP_SECONDS}s",
            },
        },
        "podAnnotations": {},
        "deployment": {"revisionHistoryLimit": 3, "maxSurge": "25%", "maxUnavailable": 0},
        "podDisruptionBudget": {
            "enabled": s.max_replicas > 1,
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
        "autoscaling": _autoscaling(platform, cluster, api),
    }


def _autoscaling(platform: Platform, cluster: Cluster, api: Api) -> dict[str, Any]:
    """HPA bounds and KEDA triggers: scale to zero only where a trigger can wake the API."""
    s = api.scaling
    keda = cluster.keda
    pending = s.pending_tasks_per_replica if api.has_async else None
    redis_trigger = keda and pending is not None
    cron = [
        {
            "name": w.name,
            "timezone": w.timezone,
            "start": w.start,
            "end": w.end,
            "desiredReplicas": w.min_replicas,
        }
        for w in s.schedules
    ]
    can_wake = redis_trigger or bool(cron)
    min_replicas = s.min_replicas if (keda and can_wake) else max(1, s.min_replicas)
    cache = platform.azure.cache
    prometheus = _prometheus(platform, cluster, api)
    return {
        "enabled": True,
        "minReplicas": min_replicas,
        "maxReplicas": s.max_replicas,
        "cpuUtilization": s.cpu_utilization or 0,
        "memoryUtilization": s.memory_utilization or 0,
        "behavior": {
            "scaleUpStabilizationSeconds": 0,
            "scaleDownStabilizationSeconds": s.cooldown_seconds,
            "scaleDownPods": 1,
            "scaleDownPeriodSeconds": 60,
        },
        "keda": {
            "enabled": keda,
            "pollingInterval": 15,
            "cooldownPeriod": s.cooldown_seconds,
            "redis": {
                "enabled": redis_trigger,
                # Azure Managed Redis is a Redis Cluster (OSS policy): the runtime keeps one
                # pending set per index shard, hash-tagged, and KEDA reads each of them.
                "cluster": cache.managed,
                "address": f"{cache.host}:{cache.port}",
                "listName": runtime_keys.pending(api.id),
                "listNames": [
                    runtime_keys.pending(api.id, runtime_keys.shard_tag(i))
                    for i in range(cache.shards)
                ],
                "listLength": pending or 1,
                "activationListLength": 0,
                "enableTLS": True,
                "databaseIndex": 0,
                "authentication": {
                    "kind": "TriggerAuthentication",
                    "name": REDIS_AUTH,
                    "create": False,
                    "secretName": "",
                    "passwordKey": "",
                },
            },
            "prometheus": prometheus,
            "cron": cron,
            "scalingModifiers": _scaling_modifiers(
                cache.shards if redis_trigger and cache.managed else 0,
                pending or 1,
                prometheus,
                len(cron),
            ),
        },
    }


def _scaling_modifiers(
    shards: int, per_replica: int, prometheus: dict[str, Any], crons: int
) -> dict[str, str]:
    """KEDA's composite metric over the per-shard backlog triggers (empty: none).

    On a Redis Cluster an API's backlog is spread over one pending set per shard, each
    read by its own ``redis-cluster`` trigger (``pending_<i>``); the HPA must scale on
    their sum, not on the largest. A composite metric replaces every external metric of
    the ScaledObject, so a Prometheus or cron trigger (``prometheus``, ``cron_<i>``) is
    folded in as replicas wanted: ``max(backlog / per_replica, rps / threshold, cron)``
    against a target of 1.
    """
    if not shards:
        return {"formula": "", "target": "", "activationTarget": "", "metricType": ""}
    backlog = " + ".join(f"pending_{i}" for i in range(shards))
    others = [f"prometheus / {prometheus['threshold']}"] if prometheus["enabled"] else []
    others += [f"cron_{i}" for i in range(crons)]
    if not others:
        formula, target = backlog, str(per_replica)
    else:
        formula, target = f"max(({backlog}) / {per_replica}, {', '.join(others)})", "1"
    return {
        "formula": formula,
        "target": target,
        "activationTarget": "0",
        "metricType": "AverageValue",
    }


def _longest_request(api: Api) -> int:
    sync = [e.timeout_seconds for e in api.endpoints if e.mode is Mode.SYNC]
    # Async work runs in a background thread of the container for up to the endpoint's
    # timeout; the task manager retries what a terminated pod abandons, so the grace
    # period only needs to cover sync requests in flight (and a bounded drain for async).
    return max(sync) if sync else 60


def _probe(p: Probe) -> dict[str, str | int]:
    return {
        "path": p.path,
        "initialDelaySeconds": p.initial_delay_seconds,
        "periodSeconds": p.period_seconds,
        "timeoutSeconds": p.timeout_seconds,
        "failureThreshold": p.failure_threshold,
    }


def _prometheus(platform: Platform, cluster: Cluster, api: Api) -> dict[str, Any]:
    rps = api.scaling.requests_per_second
    query = (
        "sum(rate(istio_requests_total{"
        f'destination_workload="{api.id}",destination_workload_namespace="{cluster.namespace}"'
        "}[1m]))"
    )
    del platform
    return {
        "enabled": rps is not None and cluster.keda,
        "serverAddress": "http://prometheus.aks-istio-system.svc:9090" if rps else "",
        "query": query if rps else "",
        "threshold": f"{rps:g}" if rps else "",
        "activationThreshold": "0",
        "authentication": {"kind": "TriggerAuthentication", "name": ""},
    }


def _api_secrets(platform: Platform, api: Api) -> dict[str, Any]:
    """The API's own SecretProviderClass: its key and its platform.yaml secrets, nothing else.

    It signs in with the API's workload identity, which Key Vault lets read exactly these
    secrets; the API's key lets its pods update only their own API's tasks.
    """
    objects = [{"objectName": api_key_secret(api), "version": "", "key": API_KEY_KEY}]
    objects += [
        {
            "objectName": ref.key_vault_secret,
            "version": ref.version or "",
            "key": ref.key_vault_secret,
        }
        for _, ref in api.secrets
    ]
    return {
        "enabled": True,
        "name": f"{api.id}-secrets",
        "keyVaultName": platform.azure.key_vault.name,
        "tenantId": tenant_id(platform),
        "clientId": api_client_id(api),
        "cloudName": "",
        "secretName": f"{api.id}-secrets",
        "objects": objects,
        "mountPath": "/mnt/secrets-store",
    }


def chart_archive(chart_dir: Path) -> bytes:
    """The chart as deterministic ``.tgz`` bytes, without ``values.schema.json``.

    Helm re-compiles the values schema on every render, which is most of its cost (about
    8 s for 1,000 releases); rendering a schema-free copy and checking values once with a
    compiled validator gives byte-identical output about four times faster. The chart on
    disk keeps its schema for people who install it with Helm directly.
    """
    buffer = io.BytesIO()
    # Plain tar, gzipped below with a fixed header time: tarfile's "w:gz" stamps the gzip
    # header with the current time, so two archives made a second apart differed.
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in chart_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(chart_dir).as_posix()
            if rel == "values.schema.json":
                continue
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{chart_dir.name}/{rel}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def chart_dir() -> Path:
    """Where the shipped chart lives."""
    return templates_dir() / "k8s" / "chart"


@cache
def load_chart() -> Any:
    """The schema-free chart, loaded once per process (the handle is immutable and thread-safe)."""
    import helm_python

    return helm_python.Chart.load_archive(chart_archive(chart_dir()))


@cache
def chart_fingerprint() -> str:
    """Every file of the chart (its values schema included) and the engine's version."""
    from importlib.metadata import version

    h = hashlib.sha256(version("helm-python-sdk").encode())
    root = chart_dir()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@cache
def values_validator() -> Callable[[Any], Any]:
    """The chart's values schema compiled once: it stands in for Helm's check per render."""
    from ...validate import compiled_validator

    schema = json.loads((chart_dir() / "values.schema.json").read_text(encoding="utf-8"))
    return compiled_validator("chart_values", schema)


def _reject(api_id: str, problem: str) -> RenderError:
    message = f"the chart rejected the values of {api_id}: {problem}"
    return RenderError(
        message,
        (
            Diagnostic(
                code="E-RENDER-CHART",
                message=message,
                hint="this is an ai4ec bug; please report it with your platform.yaml",
            ),
        ),
    )


@dataclass(frozen=True, slots=True)
class Release:
    """One API's release of the chart: the objects Helm rendered from its values."""

    api_id: str
    objects: list[KubeObject]


#: Bumped when what a release's cache entry holds changes shape.
#: 3: every object's text was parsed back in full and checked free of document markers.
#: 4: the key holds ai4ec's code too (a hit skips the values check).
_ENTRY_FORMAT = "release-objects/4"


def render_releases(platform: Platform, cluster: Cluster, apis: list[Api]) -> list[Release]:
    """The release of every API on ``cluster``, values checked against the chart's schema.

    A release's cache entry holds its objects already identified (kind, names, text as
    kept in manifests.yaml): on a hit neither Helm nor the YAML parser runs for it.
    """
    import helm_python

    chart = load_chart()
    check = values_validator()
    prepared = [(api, release_values(platform, cluster, api)) for api in apis]

    store = DiskCache("helm")
    chart_key = chart_fingerprint()
    code = code_fingerprint() if store.active else ""

    def render(item: tuple[Api, dict[str, Any]]) -> list[KubeObject] | Exception:
        # The release depends on nothing but the chart, its name, namespace and values.
        # They are checked here, on the pool: this thread's Python runs while the other
        # threads wait on Helm's engine, not before the first release starts. A cache hit
        # skips the check (about a millisecond a release): an entry is stored only after
        # these very values passed it, and its key holds the chart with its schema and
        # ai4ec's code (the validator's compiler), everything the verdict depends on.
        api, values = item
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        key = key_of(_ENTRY_FORMAT, chart_key, code, api.id, cluster.namespace, text)
        hit = store.get(key)
        cached = objects_of_payload(hit) if hit is not None else None
        if cached is not None:
            return cached
        try:
            check(values)
        except Exception as exc:  # noqa: BLE001 - any validator's rejection
            return _reject(api.id, str(getattr(exc, "message", exc)))
        try:
            out: dict[str, str] = chart.render(values, name=api.id, namespace=cluster.namespace)
        except helm_python.HelmError as exc:
            return exc
        try:
            objects = [
                obj
                for template, body in sorted(out.items())
                for obj in parse_objects(f"chart {template} of {api.id}", body)
            ]
        except RenderError as exc:
            return exc
        store.put(key, objects_payload(objects))
        return objects

    # Helm's engine runs in Go behind ctypes, which lets go of the GIL: releases render
    # in parallel (helm-python-sdk documents charts as safe to share between threads).
    # Results are taken in input order, so the output stays byte-identical.
    workers = max(1, min(HELM_THREADS, len(prepared)))
    with ThreadPoolExecutor(workers, thread_name_prefix="ai4ec-helm") as pool:
        rendered = list(pool.map(render, prepared))
    releases: list[Release] = []
    for (api, _values), out in zip(prepared, rendered, strict=True):
        if isinstance(out, RenderError):
            raise out
        if isinstance(out, Exception):
            raise _reject(api.id, str(out)) from out
        releases.append(Release(api.id, out))
    return releases
