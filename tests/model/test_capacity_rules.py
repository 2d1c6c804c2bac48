"""Capacity and "no silent changes" rules: the arithmetic at its edges, through validate.

Each test writes a small platform.yaml and runs the real pipeline (load, schema, model),
so a rule is proven where users meet it. The numbers come from the dated catalog: a
Standard_DS2_v2 node (2 vCPU, 7 GiB, 30 pods) leaves 1900m and 6418Mi allocatable; a
Standard_NC4as_T4_v3 node (4 vCPU, 28 GiB, 1 T4) leaves 3860m and 27922Mi, minus the
NVIDIA device plugin's 10m and 32Mi. Every pod adds the Istio sidecar's 100m and 128Mi.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import pytest
import yaml

from ai4ec.catalog import allocatable
from ai4ec.model.capacity_rules import cpu_millicores, memory_bytes
from ai4ec.model.catalog_rules import catalog
from ai4ec.model.defaults import (
    ISTIO_SIDECAR_CPU_MILLICORES,
    ISTIO_SIDECAR_MEMORY_MIB,
    PLATFORM_DAEMONSETS,
)
from ai4ec.pipeline import check_platform
from ai4ec.render.k8s.addons import render_addons

from ..conftest import ROOT, SAMPLES

BASE = Template("""\
apiVersion: ai4ec/v1
kind: Platform
metadata: {name: my-platform}
azure:
  subscriptionId: 00000000-0000-0000-0000-000000000000
  resourceGroup: my-platform-rg
  location: eastus
  namePrefix: myplat
  apiManagement: {sku: Developer, publisherName: My Lab, publisherEmail: me@example.org}
clusters:
  - name: main
    kubernetesVersion: "1.35"
    nvidiaDevicePlugin: $plugin
    keda: {enabled: $keda}
    pools:
      - {name: cpu, vmSize: Standard_DS2_v2, autoscale: {min: 1, max: 3}}
      - name: gpu
        vmSize: Standard_NC4as_T4_v3
        autoscale: {min: 0, max: $gpu_max}
$spot
    istio:
      ingress: $ingress
apis:
  - name: hello
    version: v1
    image: hello:1.0.0
    mode: $mode
    endpoints: [{path: /run, timeout: 60s}]
    pool: $pool
    resources: $resources
    scaling: $scaling
    products: [public]
products:
  - name: public
    rateLimit: $rate
    quota: $quota
""")

DEFAULTS = {
    "plugin": "auto",
    "keda": "true",
    "gpu_max": "3",
    "spot": "",
    "ingress": "{hosts: [api.example.org], certificate: {keyVaultCertificate: tls}}",
    "mode": "sync",
    "pool": "cpu",
    "resources": "{cpu: 500m, memory: 1Gi}",
    "scaling": "{minReplicas: 1, maxReplicas: 3}",
    "rate": "{calls: 10, period: 60s}",
    "quota": "{calls: 10000, period: 30d}",
}


def codes(tmp_path: Path, **values: str) -> list[str]:
    """The diagnostic codes of the base platform with ``values`` substituted."""
    path = tmp_path / "platform.yaml"
    path.write_text(BASE.substitute({**DEFAULTS, **values}), encoding="utf-8")
    return [d.code for d in check_platform(path).diagnostics]


def messages(tmp_path: Path, code: str, **values: str) -> list[str]:
    path = tmp_path / "platform.yaml"
    path.write_text(BASE.substitute({**DEFAULTS, **values}), encoding="utf-8")
    return [d.message for d in check_platform(path).diagnostics if d.code == code]


def test_the_base_platform_is_clean(tmp_path: Path) -> None:
    assert codes(tmp_path) == []


# ------------------------------------------------------------------------------ per pod


def test_allocatable_figures_the_messages_rely_on() -> None:
    ds2 = allocatable(catalog(), "Standard_DS2_v2", max_pods=30, kubernetes_version="1.35")
    assert (ds2.cpu_millicores, ds2.memory_mib) == (1900, 6418)
    t4 = allocatable(catalog(), "Standard_NC4as_T4_v3", max_pods=30, kubernetes_version="1.35")
    assert (t4.cpu_millicores, t4.memory_mib) == (3860, 27922)


@pytest.mark.parametrize(("cpu", "fits"), [("1800m", True), ("1801m", False), ('"2"', False)])
def test_cpu_exactly_fits_or_one_millicore_over(tmp_path: Path, cpu: str, fits: bool) -> None:
    found = codes(tmp_path, resources=f"{{cpu: {cpu}, memory: 1Gi}}")
    assert ("E-CAPACITY-CPU" not in found) is fits


@pytest.mark.parametrize(("memory", "fits"), [("6290Mi", True), ("6291Mi", False)])
def test_memory_exactly_fits_or_one_mebibyte_over(tmp_path: Path, memory: str, fits: bool) -> None:
    found = codes(tmp_path, resources=f"{{cpu: 500m, memory: {memory}}}")
    assert ("E-CAPACITY-MEMORY" not in found) is fits


def test_memory_one_byte_over_is_over(tmp_path: Path) -> None:
    """Bytes are compared, not rounded mebibytes: 6290Mi + 1 byte does not fit."""
    over = 6290 * 2**20 + 1
    assert "E-CAPACITY-MEMORY" in codes(tmp_path, resources=f"{{cpu: 500m, memory: {over}}}")


@pytest.mark.parametrize(
    ("plugin", "cpu", "fits"),
    [
        ("auto", "3750m", True),
        ("auto", "3751m", False),  # the device plugin's 10m counts
        ("none", "3760m", True),  # not deployed, not counted
        ("none", "3761m", False),
    ],
)
def test_gpu_pool_subtracts_the_device_plugin(
    tmp_path: Path, plugin: str, cpu: str, fits: bool
) -> None:
    found = codes(
        tmp_path,
        plugin=plugin,
        pool="gpu",
        mode="async",
        resources=f"{{cpu: {cpu}, memory: 1Gi, gpu: 1}}",
    )
    assert ("E-CAPACITY-CPU" not in found) is fits


def test_message_names_every_number(tmp_path: Path) -> None:
    [msg] = messages(
        tmp_path,
        "E-CAPACITY-CPU",
        pool="gpu",
        mode="async",
        resources="{cpu: 4, memory: 1Gi, gpu: 1}",
    )
    assert msg == (
        "API 'hello-v1' needs 4100m CPU per pod (4 requested + 100m Istio sidecar) but a "
        "Standard_NC4as_T4_v3 node of pool 'gpu' leaves 3850m (4000m - 140m reserved by AKS "
        "- 10m DaemonSets) for pods"
    )


def test_a_pool_less_api_fits_when_any_untainted_pool_fits(tmp_path: Path) -> None:
    text = BASE.substitute({**DEFAULTS, "pool": "cpu", "resources": "{cpu: 3, memory: 1Gi}"})
    big = "      - {name: big, vmSize: Standard_D8s_v5, autoscale: {min: 0, max: 2}}\n"
    text = text.replace("    pool: cpu\n", "").replace(
        "      - name: gpu\n", big + "      - name: gpu\n"
    )
    path = tmp_path / "platform.yaml"
    path.write_text(text, encoding="utf-8")
    assert [d.code for d in check_platform(path).diagnostics] == []


def test_quantities_round_up_like_kubernetes() -> None:
    assert cpu_millicores("0.0005") == 1
    assert cpu_millicores("1.5") == 1500
    assert cpu_millicores("250m") == 250
    assert memory_bytes("1Gi") == 2**30
    assert memory_bytes("1G") == 10**9


def test_overheads_are_what_ai4ec_renders() -> None:
    """The DaemonSet table matches the rendered add-on, and the chart leaves the sidecar alone."""
    [camera] = check_platform(SAMPLES / "camera-trap" / "platform.yaml").platforms()
    cluster = camera.clusters[0]
    files = render_addons(camera, cluster, list(camera.apis), "platform.yaml")
    [plugin] = [f for f in files if f.path == "addons/nvidia-device-plugin.yaml"]
    doc = yaml.safe_load(plugin.text)
    [container] = doc["spec"]["template"]["spec"]["containers"]
    requests = container["resources"]["requests"]
    [ds] = [d for d in PLATFORM_DAEMONSETS if d.name == doc["metadata"]["name"]]
    assert cpu_millicores(requests["cpu"]) == ds.cpu_millicores
    assert memory_bytes(requests["memory"]) == ds.memory_mib * 2**20
    chart = (ROOT / "templates" / "k8s" / "chart" / "templates" / "deployment.yaml").read_text(
        encoding="utf-8"
    )
    for annotation in ("sidecar.istio.io/proxyCPU", "sidecar.istio.io/proxyMemory"):
        assert annotation not in chart
    assert (ISTIO_SIDECAR_CPU_MILLICORES, ISTIO_SIDECAR_MEMORY_MIB) == (100, 128)


# ------------------------------------------------------------------------------ GPU sums


def _gpu(tmp_path: Path, mn: int, mx: int, gpu_max: int = 3) -> list[str]:
    return codes(
        tmp_path,
        pool="gpu",
        mode="async",
        gpu_max=str(gpu_max),
        resources="{cpu: 1, memory: 4Gi, gpu: 1}",
        scaling=f"{{minReplicas: {mn}, maxReplicas: {mx}}}",
    )


@pytest.mark.parametrize(
    ("mn", "mx", "expected"),
    [
        (0, 3, []),  # exactly the pool at maxReplicas
        (0, 4, ["W-CAPACITY-GPU-MAX"]),  # one replica over at the maximum
        (3, 3, []),  # exactly the pool at minReplicas
        (4, 4, ["E-CAPACITY-GPU-MIN"]),  # the floor itself cannot be met (no warning on top)
    ],
)
def test_gpu_sums_against_the_pool(tmp_path: Path, mn: int, mx: int, expected: list[str]) -> None:
    assert _gpu(tmp_path, mn, mx) == expected


def test_gpu_sums_add_up_every_api_of_the_pool(tmp_path: Path) -> None:
    text = BASE.substitute(
        {
            **DEFAULTS,
            "pool": "gpu",
            "mode": "async",
            "resources": "{cpu: 1, memory: 4Gi, gpu: 1}",
            "scaling": "{minReplicas: 2, maxReplicas: 2}",
        }
    )
    api = text[text.index("  - name: hello\n") : text.index("products:\n")]
    text = text.replace("products:\n", api.replace("version: v1", "version: v2") + "products:\n")
    path = tmp_path / "platform.yaml"
    path.write_text(text, encoding="utf-8")
    found = check_platform(path).diagnostics
    assert [d.code for d in found] == ["E-CAPACITY-GPU-MIN"]
    assert "need 4 GPUs at minReplicas (hello-v1 2 x 1, hello-v2 2 x 1)" in found[0].message
    assert found[0].json_path == "$.clusters[0].pools[1].autoscale.max"


# ------------------------------------------------------------------------------ spot


@pytest.mark.parametrize(("mode", "warns"), [("sync", True), ("async", False)])
def test_sync_api_on_spot_warns(tmp_path: Path, mode: str, warns: bool) -> None:
    found = codes(
        tmp_path,
        spot="        spot: {maxPrice: -1}",
        pool="gpu",
        mode=mode,
        resources="{cpu: 1, memory: 4Gi, gpu: 1}",
    )
    assert ("W-CAPACITY-SPOT-SYNC" in found) is warns


# ------------------------------------------------------------------------------ KEDA


@pytest.mark.parametrize(
    ("keda", "scaling", "expected"),
    [
        ("true", "{minReplicas: 0, maxReplicas: 3}", []),
        (
            "false",
            "{minReplicas: 0, maxReplicas: 3, cpuUtilization: 70}",
            ["E-SCALING-ZERO-NO-KEDA"],
        ),
        ("false", "{minReplicas: 1, maxReplicas: 3, cpuUtilization: 70}", []),
        ("false", "{minReplicas: 1, maxReplicas: 3}", ["W-SCALING-NO-KEDA"]),
        (
            "false",
            "{minReplicas: 1, maxReplicas: 3, pendingTasksPerReplica: 2, cpuUtilization: 80}",
            ["E-SCALING-NEEDS-KEDA"],
        ),
        (
            "false",
            "{minReplicas: 1, maxReplicas: 3, requestsPerSecond: 5, cpuUtilization: 80}",
            ["E-SCALING-NEEDS-KEDA"],
        ),
        (
            "false",
            "{minReplicas: 1, maxReplicas: 3, cpuUtilization: 80, schedules: "
            '[{start: "0 8 * * *", end: "0 18 * * *", minReplicas: 2}]}',
            ["E-SCALING-NEEDS-KEDA"],
        ),
    ],
)
def test_what_only_keda_can_do_is_never_dropped_silently(
    tmp_path: Path, keda: str, scaling: str, expected: list[str]
) -> None:
    assert codes(tmp_path, keda=keda, mode="async", scaling=scaling) == expected


# ------------------------------------------------------------------------------ ingress


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ("", ["E-INGRESS-HOSTS"]),
        (', hosts: ["*"]', ["E-INGRESS-HOSTS"]),
        (', hosts: ["*.example.org"]', ["E-INGRESS-HOSTS"]),
        (', hosts: ["*", api.example.org]', []),
    ],
)
def test_https_needs_a_concrete_host(tmp_path: Path, hosts: str, expected: list[str]) -> None:
    ingress = f"{{protocol: https, certificate: {{keyVaultCertificate: tls}}{hosts}}}"
    assert codes(tmp_path, ingress=ingress) == expected


# ------------------------------------------------------------------------------ products


@pytest.mark.parametrize(
    ("rate", "quota", "count"),
    [
        ("{calls: 100, period: 60s}", "{calls: 100, period: 60s}", 0),  # equal is fine
        ("{calls: 100, period: 60s}", "{calls: 99, period: 1d}", 1),
        ("{calls: 10, period: 60s}", "{calls: 1000, period: 59s}", 1),
        ("{calls: 100, period: 5m}", "{calls: 50, period: 1m}", 2),
    ],
)
def test_quota_against_rate_limit(tmp_path: Path, rate: str, quota: str, count: int) -> None:
    assert codes(tmp_path, rate=rate, quota=quota) == ["E-PRODUCT-QUOTA"] * count


# ------------------------------------------------------------------------------ catalog-only sizes


@pytest.mark.parametrize(("gpus", "expected"), [(1, []), (2, ["E-GPU-CAPACITY"])])
def test_sizes_only_the_catalog_knows_get_every_gpu_rule(
    tmp_path: Path, gpus: int, expected: list[str]
) -> None:
    """Standard_NC40ads_H100_v5 (1 H100) is in the dated catalog, not in vm_sizes.json.

    It is still detected as a GPU pool (so a GPU API is placed and tolerated there), and a
    pod asking 2 GPUs of a 1-GPU node is refused, as for every other size.
    """
    text = BASE.substitute(
        {
            **DEFAULTS,
            "pool": "gpu",
            "mode": "async",
            "resources": f"{{cpu: 4, memory: 32Gi, gpu: {gpus}}}",
        }
    ).replace("Standard_NC4as_T4_v3", "Standard_NC40ads_H100_v5")
    path = tmp_path / "platform.yaml"
    path.write_text(text, encoding="utf-8")
    result = check_platform(path)
    assert [d.code for d in result.diagnostics] == expected
    if not expected:
        [platform] = result.platforms()
        assert platform.clusters[0].pool("gpu").gpu


def test_a_fixed_size_gpu_pool_counts_its_nodes(tmp_path: Path) -> None:
    """`count: 2` holds 2 GPUs; the error points at `count`, the field that decides it."""
    text = BASE.substitute(
        {
            **DEFAULTS,
            "pool": "gpu",
            "mode": "async",
            "resources": "{cpu: 1, memory: 4Gi, gpu: 1}",
            "scaling": "{minReplicas: 3, maxReplicas: 3}",
        }
    ).replace("autoscale: {min: 0, max: 3}", "count: 2")
    path = tmp_path / "platform.yaml"
    path.write_text(text, encoding="utf-8")
    [diag] = check_platform(path).diagnostics
    assert (diag.code, diag.json_path) == ("E-CAPACITY-GPU-MIN", "$.clusters[0].pools[1].count")
    assert "the pool holds at most 2 (2 nodes x 1 GPU of Standard_NC4as_T4_v3)" in diag.message
