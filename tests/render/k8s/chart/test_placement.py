"""GPU placement and the guarantee that CPU APIs never land on GPU pools."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from .support import (
    FIXTURES,
    api_container,
    load_values,
    pod_spec,
    render_docs,
    schedulable_on,
    with_changes,
)

POOL_LABEL = "kubernetes.azure.com/agentpool"

# A cluster like the fixtures assume: a system pool, a CPU user pool, two GPU pools. One GPU
# pool is tainted like upstream's (sku=gpu), the other is not tainted at all: the guarantee
# must not depend on taints.
POOLS: dict[str, dict[str, Any]] = {
    "system": {"gpu": False, "taints": []},
    "cpupool": {"gpu": False, "taints": []},
    "gpunc6": {"gpu": True, "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]},
    "gpunc24": {"gpu": True, "taints": []},
}
GPU_POOLS = [name for name, pool in POOLS.items() if pool["gpu"]]


def _schedulable_pools(spec: dict[str, Any]) -> set[str]:
    return {
        name
        for name, pool in POOLS.items()
        if schedulable_on(spec, {POOL_LABEL: name, "kubernetes.io/os": "linux"}, pool["taints"])
    }


def test_gpu_api_requests_gpus_and_targets_its_pool(chart: helm_python.Chart) -> None:
    values = load_values("async-gpu-scale-to-zero")
    objects = render_docs(chart, values)
    container = api_container(objects)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    spec = pod_spec(objects)
    assert spec["nodeSelector"] == {POOL_LABEL: "gpunc6"}
    assert spec["tolerations"] == values["placement"]["tolerations"]
    assert _schedulable_pools(spec) == {"gpunc6"}


def test_gpu_api_without_toleration_cannot_schedule_on_tainted_pool(
    chart: helm_python.Chart,
) -> None:
    values = with_changes(load_values("async-gpu-scale-to-zero"), {"placement.tolerations": []})
    assert _schedulable_pools(pod_spec(render_docs(chart, values))) == set()


@pytest.mark.parametrize("count", [2, 4])
def test_gpu_count_and_mig_resource_name(chart: helm_python.Chart, count: int) -> None:
    values = with_changes(
        load_values("async-gpu-scale-to-zero"),
        {"gpu.count": count, "gpu.resourceName": "nvidia.com/mig-1g.10gb"},
    )
    limits = api_container(render_docs(chart, values))["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == count
    assert "nvidia.com/gpu" not in limits


@pytest.mark.parametrize("name", [n for n in FIXTURES if n != "async-gpu-scale-to-zero"])
def test_cpu_apis_never_schedulable_on_gpu_pools(chart: helm_python.Chart, name: str) -> None:
    values = load_values(name)
    assert values["gpu"]["count"] == 0
    objects = render_docs(chart, values)
    spec = pod_spec(objects)
    assert not any("nvidia.com" in r for r in api_container(objects)["resources"]["limits"])
    allowed = _schedulable_pools(spec)
    assert allowed, "a CPU API must be schedulable somewhere"
    assert not allowed & set(GPU_POOLS), allowed


def test_cpu_api_without_pool_gets_notin_affinity(chart: helm_python.Chart) -> None:
    values = load_values("sync-cpu")
    assert values["placement"]["nodePool"] == ""
    spec = pod_spec(render_docs(chart, values))
    assert "nodeSelector" not in spec
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": POOL_LABEL, "operator": "NotIn", "values": ["gpunc6", "gpunc24"]}
                ]
            }
        ]
    }
    assert _schedulable_pools(spec) == {"system", "cpupool"}


def test_cpu_api_with_pool_is_pinned(chart: helm_python.Chart) -> None:
    spec = pod_spec(render_docs(chart, load_values("async-cpu-hpa")))
    assert spec["nodeSelector"] == {POOL_LABEL: "cpupool"}
    assert _schedulable_pools(spec) == {"cpupool"}


def test_template_emits_no_placement_of_its_own(chart: helm_python.Chart) -> None:
    # With no pool and no exclusions the chart adds nothing: every decision lives in values.
    values = with_changes(
        load_values("sync-cpu"),
        {"placement.excludeNodePools": [], "placement.spreadAcrossZones": False},
    )
    spec = pod_spec(render_docs(chart, values))
    assert not {"nodeSelector", "affinity", "tolerations", "topologySpreadConstraints"} & set(spec)


def test_spread_across_zones(chart: helm_python.Chart) -> None:
    spec = pod_spec(render_docs(chart, load_values("sync-cpu")))
    keys = [c["topologyKey"] for c in spec["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert {c["whenUnsatisfiable"] for c in spec["topologySpreadConstraints"]} == {"ScheduleAnyway"}
