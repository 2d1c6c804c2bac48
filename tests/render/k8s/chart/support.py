"""Shared helpers for the ai4ec-api chart tests (render, parse, simulate scheduling)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[4]
CHART_DIR = REPO / "templates" / "k8s" / "chart"
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
NAMESPACE = "ai4ec-apis"

FIXTURES = ("sync-cpu", "async-gpu-scale-to-zero", "async-cpu-hpa", "secrets-spc")

# Settings the Framework reads that embed keys: they may only ever come from a Secret.
RUNTIME_SECRET_SETTINGS = (
    "CACHE_CONNECTOR_UPSERT_URI",
    "CACHE_CONNECTOR_GET_URI",
    "CURRENT_PROCESSING_UPSERT_URI",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
)
CONTRACT_LABELS = (
    "app.kubernetes.io/managed-by",
    "ai4ec.io/platform",
    "ai4ec.io/environment",
    "ai4ec.io/api",
)
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)
CRD_GROUPS = ("keda.sh/", "secrets-store.csi.x-k8s.io/")


# Variants of the fixtures that reach the optional branches of the templates; validated like
# the fixtures themselves. Each: (fixture, dotted changes).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sync-keda-prometheus": (
        "sync-cpu",
        {
            "autoscaling.keda.enabled": True,
            "autoscaling.memoryUtilization": 85,
            "autoscaling.keda.prometheus": {
                "enabled": True,
                "serverAddress": "https://prom.example.monitor.azure.com",
                "query": 'sum(rate(istio_requests_total{destination_workload="landcover-v2"}[1m]))',
                "threshold": "20.5",
                "activationThreshold": "1",
                "authentication": {"kind": "ClusterTriggerAuthentication", "name": "prometheus"},
            },
            "autoscaling.keda.cron": [
                {
                    "name": "office-hours",
                    "timezone": "Etc/UTC",
                    "start": "0 8 * * 1-5",
                    "end": "0 18 * * 1-5",
                    "desiredReplicas": 3,
                }
            ],
        },
    ),
    "fixed-replicas": (
        "sync-cpu",
        {
            "autoscaling.enabled": False,
            "replicas": 3,
            "podDisruptionBudget.enabled": False,
            "placement.excludeNodePools": [],
            "placement.spreadAcrossZones": False,
            "env": {},
            "istio.proxyConfig": {},
            "runtimeSecret.secretProviderClass": "",
        },
    ),
    "gpu-mig-cluster-auth": (
        "async-gpu-scale-to-zero",
        {
            "gpu.resourceName": "nvidia.com/mig-3g.40gb",
            "istio.injection": "enabled",
            "autoscaling.keda.redis.authentication.kind": "ClusterTriggerAuthentication",
            "autoscaling.cpuUtilization": 90,
            "container.command": ["/startup.sh"],
            "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        },
    ),
}


def load_case(case: str) -> dict[str, Any]:
    """Values of a fixture or of a variant (see VARIANTS)."""
    if case in VARIANTS:
        base, changes = VARIANTS[case]
        return with_changes(load_values(base), changes)
    return load_values(case)


def load_values(name: str) -> dict[str, Any]:
    """Values of one fixture file (a fresh copy every call)."""
    data: dict[str, Any] = yaml.safe_load((FIXTURES_DIR / f"{name}.yaml").read_text())
    return data


def render(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, str]:
    """Render like the compiler does: release name = apiId, namespace = the APIs' namespace."""
    return chart.render(values, name=values["name"], namespace=NAMESPACE)


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """All non-empty YAML documents, in template path order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(rendered):
        docs.extend(doc for doc in yaml.safe_load_all(rendered[path]) if doc)
    return docs


def by_kind(docs: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Index documents by kind; the chart emits at most one object per kind."""
    index: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in index, f"two {doc['kind']} objects"
        index[doc["kind"]] = doc
    return index


def render_docs(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return by_kind(documents(render(chart, values)))


def pod_spec(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects["Deployment"]["spec"]["template"]["spec"]
    return spec


def api_container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(objects)["containers"]
    assert [c["name"] for c in containers] == ["api"]
    container: dict[str, Any] = containers[0]
    return container


def env_by_name(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = container.get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env: {names}"
    return {e["name"]: e for e in entries}


def with_changes(values: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Deep copy of values with dotted-path assignments applied ("a.b.c": value)."""
    out = copy.deepcopy(values)
    for dotted, value in changes.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return out


def schema_free_archive(chart_dir: Path = CHART_DIR) -> bytes:
    """The chart as .tgz bytes without values.schema.json: the compiler's fast path."""
    from ai4ec.render.k8s.chart import chart_archive

    return chart_archive(chart_dir)


def values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
    return schema


# --------------------------------------------------------------------- scheduling simulation


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    for tol in tolerations:
        if tol.get("effect") not in (None, "", taint["effect"]):
            continue
        if tol.get("operator", "Equal") == "Exists":
            if tol.get("key") in (None, "", taint["key"]):
                return True
        elif tol.get("key") == taint["key"] and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _matches_expression(labels: dict[str, str], expr: dict[str, Any]) -> bool:
    value = labels.get(expr["key"])
    op = expr["operator"]
    if op == "In":
        return value in expr["values"]
    if op == "NotIn":
        return value not in expr["values"]
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    raise AssertionError(f"operator {op} not simulated")


def schedulable_on(
    spec: dict[str, Any], node_labels: dict[str, str], taints: list[dict[str, str]]
) -> bool:
    """Would the scheduler's filter phase accept this pod on a node (nodeSelector, required
    node affinity, NoSchedule/NoExecute taints)? Enough of kube-scheduler to test placement."""
    for key, value in spec.get("nodeSelector", {}).items():
        if node_labels.get(key) != value:
            return False
    required = (
        spec.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if required:
        terms = required["nodeSelectorTerms"]
        if not any(
            all(_matches_expression(node_labels, e) for e in term.get("matchExpressions", []))
            for term in terms
        ):
            return False
    tolerations = spec.get("tolerations", [])
    return all(
        _tolerates(tolerations, taint)
        for taint in taints
        if taint["effect"] in ("NoSchedule", "NoExecute")
    )
