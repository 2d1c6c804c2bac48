"""Defaults of the platform model: values platform.yaml may leave out, and unit parsing.

Everything here is a pure function of one raw value (no references, no diagnostics),
so every other model module can use it: durations and sizes in their schema forms,
probes, task policies, auth, CORS and rate limits with their documented defaults.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .types import (
    Auth,
    Cors,
    EntraAuth,
    Limit,
    Probe,
    Taint,
    TaskPolicy,
)

#: Istio add-on revision when a cluster names none: one the dated catalog lists as supported
#: (tests/model/test_catalog_rules.py fails when a catalog update retires it).
DEFAULT_MESH_REVISION = "asm-1-30"

#: Requests of the Istio sidecar (``istio-proxy``) injected into every API pod: the add-on's
#: injector defaults (istio/istio ``manifests/charts/istio-control/istio-discovery/values.yaml``,
#: ``global.proxy.resources.requests``); the chart sets no ``sidecar.istio.io/proxyCPU`` or
#: ``proxyMemory`` annotation, so these are what the scheduler adds to each pod.
ISTIO_SIDECAR_CPU_MILLICORES = 100
ISTIO_SIDECAR_MEMORY_MIB = 128


@dataclass(frozen=True, slots=True)
class DaemonSetRequests:
    """What one DaemonSet that ai4ec renders takes from every node it runs on."""

    name: str
    cpu_millicores: int
    memory_mib: int
    #: Runs on the cluster's GPU pools only (and only when the cluster deploys it).
    gpu_pools_only: bool


#: The DaemonSets ai4ec renders, with their requests as
#: ``templates/k8s/addons/nvidia-device-plugin.yaml.j2`` writes them (a test renders the
#: add-on and compares). AKS's own system DaemonSets are not counted here.
PLATFORM_DAEMONSETS = (
    DaemonSetRequests(
        "nvidia-device-plugin", cpu_millicores=10, memory_mib=32, gpu_pools_only=True
    ),
)

#: Taint every GPU pool gets, so that pods without the toleration never land there.
GPU_TAINT = Taint(key="sku", value="gpu", effect="NoSchedule")
#: The taint AKS puts on spot pools itself; listed so APIs placed there tolerate it.
SPOT_TAINT = Taint(key="kubernetes.azure.com/scalesetpriority", value="spot", effect="NoSchedule")
#: Environment variables the platform sets; users may not override them.
RESERVED_ENV = frozenset(
    {
        "CACHE_CONNECTOR_UPSERT_URI",
        "CACHE_CONNECTOR_GET_URI",
        "CURRENT_PROCESSING_UPSERT_URI",
        "API_PREFIX",
        "SERVICE_CLUSTER",
        "SERVICE_NAME",
        "SERVICE_VERSION",
        "NEXT_API_NAME_IN_PIPELINE",
        "APPINSIGHTS_INSTRUMENTATIONKEY",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        # Where the API writes its results (its own container, docs/contracts.md).
        "AI4EC_RESULTS_ACCOUNT_URL",
        "AI4EC_RESULTS_CONTAINER",
        "AI4EC_RESULTS_URL",
    }
)
SECRET_LIKE_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CONNECTION_STRING|SAS)$", re.I)
#: APIM's forward-request timeout cannot exceed 240 s on classic tiers.
APIM_MAX_SYNC_TIMEOUT = 240
DEFAULT_SYNC_TIMEOUT = 30
DEFAULT_ASYNC_TIMEOUT = 3600

_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_UNITS_B = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
}
_QTY = {
    "": 1,
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def seconds(value: Any) -> int:
    """``"30s"``/``"5m"``/``600`` -> whole seconds (sub-second values round up)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"([0-9]+)(ms|s|m|h|d)", str(value))
    assert m, value  # the schema guarantees the form
    return math.ceil(int(m.group(1)) * _UNITS_S[m.group(2)])


def byte_size(value: Any) -> int:
    """``"4Mi"``/``1048576`` -> bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"([0-9]+)(B|KB|MB|GB|Ki|Mi|Gi)?", str(value))
    assert m, value
    return int(m.group(1)) * _UNITS_B[m.group(2) or ""]


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a float (cores or bytes)."""
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(value))
    assert m, value
    return float(m.group(1)) * _QTY[m.group(2) or ""]


def quantity_text(value: Any) -> str:
    """Normalise a quantity for output: numbers become their shortest text."""
    if isinstance(value, bool):  # pragma: no cover - the schema forbids it
        raise TypeError(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def operation_name(rel: str) -> str:
    """An APIM operation name derived from an endpoint path (``/`` -> ``root``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", rel.lower()).strip("-")
    return slug or "root"


def default_probe(
    raw: dict[str, Any] | None, health: str, delay: int, period: int, timeout: int, failures: int
) -> Probe:
    """A health probe: the user's settings over the given defaults."""
    raw = raw or {}
    return Probe(
        path=raw.get("path", health),
        initial_delay_seconds=raw.get("initialDelaySeconds", delay),
        period_seconds=raw.get("periodSeconds", period),
        timeout_seconds=raw.get("timeoutSeconds", timeout),
        failure_threshold=raw.get("failureThreshold", failures),
    )


def read_tasks(raw: dict[str, Any] | None) -> TaskPolicy:
    """Task TTL, queue timeout and retry policy, with the documented defaults."""
    raw = raw or {}
    retry = raw.get("retry") or {}
    return TaskPolicy(
        ttl_seconds=seconds(raw.get("ttl", "7d")),
        max_attempts=retry.get("maxAttempts", 3),
        backoff_seconds=seconds(retry.get("backoff", "30s")),
        queue_timeout_seconds=seconds(raw.get("queueTimeout", "15m")),
    )


def read_auth(raw: dict[str, Any] | None) -> Auth:
    """Subscription-key and Entra ID settings of an API or pipeline."""
    raw = raw or {}
    entra = raw.get("entraId")
    return Auth(
        subscription_key=raw.get("subscriptionKey", True),
        entra_id=(
            EntraAuth(
                tenant_id=entra["tenantId"].lower(),
                audiences=tuple(entra["audiences"]),
                required_roles=tuple(entra.get("requiredRoles", [])),
            )
            if entra
            else None
        ),
    )


def read_cors(raw: dict[str, Any] | None) -> Cors | None:
    """CORS settings, or ``None`` when the API allows no cross-origin calls."""
    if not raw:
        return None
    return Cors(
        allowed_origins=tuple(raw["allowedOrigins"]),
        allowed_methods=tuple(raw.get("allowedMethods", ["GET", "POST"])),
        allowed_headers=tuple(raw.get("allowedHeaders", ["*"])),
        allow_credentials=raw.get("allowCredentials", False),
        max_age_seconds=seconds(raw.get("maxAge", "10m")),
    )


def read_limit(raw: dict[str, Any] | None) -> Limit | None:
    """A rate limit or quota (calls per period), or ``None``."""
    if not raw:
        return None
    return Limit(calls=raw["calls"], period_seconds=seconds(raw["period"]))
