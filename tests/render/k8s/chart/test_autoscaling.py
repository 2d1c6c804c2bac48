"""KEDA ScaledObject vs HPA, the Redis backlog trigger, and scale to zero."""

from __future__ import annotations

import itertools
from typing import Any

import helm_python
import pytest

from .support import FIXTURES, load_values, render_docs, with_changes

AUTOSCALERS = {"HorizontalPodAutoscaler", "ScaledObject"}


def _expected_behavior(values: dict[str, Any]) -> dict[str, Any]:
    b = values["autoscaling"]["behavior"]
    return {
        "scaleUp": {"stabilizationWindowSeconds": b["scaleUpStabilizationSeconds"]},
        "scaleDown": {
            "stabilizationWindowSeconds": b["scaleDownStabilizationSeconds"],
            "selectPolicy": "Max",
            "policies": [
                {
                    "type": "Pods",
                    "value": b["scaleDownPods"],
                    "periodSeconds": b["scaleDownPeriodSeconds"],
                }
            ],
        },
    }


@pytest.mark.parametrize(
    ("name", "enabled", "keda"),
    list(itertools.product(FIXTURES, [True, False], [True, False])),
)
def test_never_both_autoscalers(
    chart: helm_python.Chart, name: str, enabled: bool, keda: bool
) -> None:
    values = with_changes(
        load_values(name),
        {"autoscaling.enabled": enabled, "autoscaling.keda.enabled": keda},
    )
    if enabled and not keda:
        # The HPA fallback keeps at least one replica; values must say so.
        values = with_changes(values, {"autoscaling.minReplicas": 1})
        if not (
            values["autoscaling"]["cpuUtilization"] or values["autoscaling"]["memoryUtilization"]
        ):
            values = with_changes(values, {"autoscaling.cpuUtilization": 80})
    found = AUTOSCALERS & set(render_docs(chart, values))
    if not enabled:
        assert found == set()
    else:
        assert found == ({"ScaledObject"} if keda else {"HorizontalPodAutoscaler"})


def test_async_gpu_scales_to_zero_on_the_pending_backlog(chart: helm_python.Chart) -> None:
    values = load_values("async-gpu-scale-to-zero")
    objects = render_docs(chart, values)
    spec = objects["ScaledObject"]["spec"]
    keda = values["autoscaling"]["keda"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": values["name"],
    }
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] == values["autoscaling"]["maxReplicas"]
    assert spec["cooldownPeriod"] == keda["cooldownPeriod"]
    assert spec["pollingInterval"] == keda["pollingInterval"]
    assert spec["advanced"] == {
        "horizontalPodAutoscalerConfig": {"behavior": _expected_behavior(values)}
    }
    (trigger,) = spec["triggers"]
    assert trigger == {
        "type": "redis",
        "name": "pending-tasks",
        "metadata": {
            "address": keda["redis"]["address"],
            # docs/contracts.md: the key KEDA reads is ai4ec:pending:<apiId>.
            "listName": f"ai4ec:pending:{values['name']}",
            "listLength": "2",
            "activationListLength": "0",
            "enableTLS": "true",
            "databaseIndex": "0",
        },
        "authenticationRef": {"kind": "TriggerAuthentication", "name": "ai4ec-redis"},
    }
    assert "TriggerAuthentication" not in objects  # referenced, created by the addons
    assert "replicas" not in objects["Deployment"]["spec"]


def test_trigger_metadata_values_are_strings(chart: helm_python.Chart) -> None:
    spec = render_docs(chart, load_values("secrets-spc"))["ScaledObject"]["spec"]
    for trigger in spec["triggers"]:
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger


def test_keda_resource_and_cron_triggers(chart: helm_python.Chart) -> None:
    values = load_values("secrets-spc")
    triggers = render_docs(chart, values)["ScaledObject"]["spec"]["triggers"]
    assert [t["type"] for t in triggers] == ["redis", "cpu", "cron"]
    cpu = triggers[1]
    assert cpu == {
        "type": "cpu",
        "name": "cpu",
        "metricType": "Utilization",
        "metadata": {"value": "80", "containerName": "api"},
    }
    cron = values["autoscaling"]["keda"]["cron"][0]
    assert triggers[2]["name"] == cron["name"]
    assert triggers[2]["metadata"] == {
        "timezone": cron["timezone"],
        "start": cron["start"],
        "end": cron["end"],
        "desiredReplicas": str(cron["desiredReplicas"]),
    }
    memory = with_changes(values, {"autoscaling.memoryUtilization": 90})
    types = [t["type"] for t in render_docs(chart, memory)["ScaledObject"]["spec"]["triggers"]]
    assert types == ["redis", "cpu", "memory", "cron"]


def test_prometheus_trigger_for_requests_per_second(chart: helm_python.Chart) -> None:
    query = (
        'sum(rate(istio_requests_total{reporter="destination",'
        'destination_workload="landcover-v2"}[1m]))'
    )
    values = with_changes(
        load_values("sync-cpu"),
        {
            "autoscaling.keda.enabled": True,
            "autoscaling.cpuUtilization": 0,
            "autoscaling.keda.prometheus": {
                "enabled": True,
                "serverAddress": "https://prom.example.monitor.azure.com",
                "query": query,
                "threshold": "20",
                "activationThreshold": "0",
                "authentication": {"kind": "TriggerAuthentication", "name": "ai4ec-prometheus"},
            },
        },
    )
    (trigger,) = render_docs(chart, values)["ScaledObject"]["spec"]["triggers"]
    assert trigger == {
        "type": "prometheus",
        "name": "prometheus",
        "metadata": {
            "serverAddress": "https://prom.example.monitor.azure.com",
            "query": query,
            "threshold": "20",
            "activationThreshold": "0",
        },
        "authenticationRef": {"kind": "TriggerAuthentication", "name": "ai4ec-prometheus"},
    }
    anonymous = with_changes(values, {"autoscaling.keda.prometheus.authentication.name": ""})
    (trigger,) = render_docs(chart, anonymous)["ScaledObject"]["spec"]["triggers"]
    assert "authenticationRef" not in trigger


def test_trigger_authentication_created_only_on_request(chart: helm_python.Chart) -> None:
    values = load_values("secrets-spc")
    auth = values["autoscaling"]["keda"]["redis"]["authentication"]
    ta = render_docs(chart, values)["TriggerAuthentication"]
    assert ta["metadata"]["name"] == auth["name"]
    assert ta["spec"] == {
        "secretTargetRef": [
            {"parameter": "password", "name": auth["secretName"], "key": auth["passwordKey"]}
        ]
    }
    shared = with_changes(values, {"autoscaling.keda.redis.authentication.create": False})
    assert "TriggerAuthentication" not in render_docs(chart, shared)


def test_hpa_fallback_when_keda_disabled(chart: helm_python.Chart) -> None:
    values = load_values("async-cpu-hpa")
    objects = render_docs(chart, values)
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["minReplicas"] == 1
    assert spec["maxReplicas"] == values["autoscaling"]["maxReplicas"]
    assert spec["metrics"] == [
        {
            "type": "ContainerResource",
            "containerResource": {
                "name": resource,
                "container": "api",
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
        for resource, target in (("cpu", 75), ("memory", 85))
    ]
    assert spec["behavior"] == _expected_behavior(values)
    assert "replicas" not in objects["Deployment"]["spec"]


# ------------------------------------------------------------------ scale to zero: who may


def test_scale_to_zero_values_for_async(chart: helm_python.Chart) -> None:
    for name in ("async-gpu-scale-to-zero", "secrets-spc"):
        values = load_values(name)
        assert values["mode"] == "async"
        spec = render_docs(chart, values)["ScaledObject"]["spec"]
        assert spec["minReplicaCount"] == 0
        assert any(t["type"] == "redis" for t in spec["triggers"])


def test_sync_api_with_min_zero_is_refused_by_the_chart(chart: helm_python.Chart) -> None:
    # The lead's validator refuses this first; the chart refuses it again (defence in depth).
    values = with_changes(
        load_values("sync-cpu"),
        {
            "autoscaling.minReplicas": 0,
            "autoscaling.keda.enabled": True,
            "autoscaling.keda.cron": [
                {
                    "name": "daytime",
                    "timezone": "UTC",
                    "start": "0 8 * * *",
                    "end": "0 18 * * *",
                    "desiredReplicas": 1,
                }
            ],
        },
    )
    with pytest.raises(helm_python.HelmValuesError, match="minReplicas"):
        render_docs(chart, values)
    # The same values as async are accepted and do render minReplicaCount 0.
    as_async = with_changes(values, {"mode": "async"})
    assert render_docs(chart, as_async)["ScaledObject"]["spec"]["minReplicaCount"] == 0


def test_sync_api_keeps_its_minimum_under_keda(chart: helm_python.Chart) -> None:
    values = with_changes(load_values("sync-cpu"), {"autoscaling.keda.enabled": True})
    spec = render_docs(chart, values)["ScaledObject"]["spec"]
    assert spec["minReplicaCount"] == 2
    assert [t["type"] for t in spec["triggers"]] == ["cpu"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        # HPA cannot scale to zero.
        ({"autoscaling.keda.enabled": False}, "minReplicas"),
        # CPU/memory triggers cannot wake a Deployment from zero.
        ({"autoscaling.keda.redis.enabled": False, "autoscaling.cpuUtilization": 80}, "redis"),
        # Sync APIs never scale on the async backlog.
        ({"mode": "sync"}, "minReplicas"),
    ],
)
def test_unsafe_scale_to_zero_is_refused(
    chart: helm_python.Chart, changes: dict[str, Any], fragment: str
) -> None:
    values = with_changes(load_values("async-gpu-scale-to-zero"), changes)
    with pytest.raises(helm_python.HelmValuesError, match=fragment):
        render_docs(chart, values)
