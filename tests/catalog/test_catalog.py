"""The dated Azure catalog: its file, its loader and the pure checks model rules call.

Dates are fixed in the tests (the checks take the day as an argument), so the answers do
not change as the calendar moves on.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from ai4ec.catalog import (
    FamilyUsage,
    PoolDemand,
    allocatable,
    check_cache_sku,
    check_kubernetes_version,
    check_mesh_revision,
    check_quota,
    check_region,
    check_vm_size,
    load_catalog,
    parse_catalog,
    read_catalog,
    required_cores,
)
from ai4ec.catalog.capacity import reserved_cpu_millicores
from ai4ec.catalog.data import CatalogError, catalog_path, dump_catalog
from ai4ec.errors import Severity

DAY = dt.date(2026, 12, 5)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(catalog_path().read_text())
    return data


def test_file_is_dated_sourced_and_canonical(doc: dict[str, Any]) -> None:
    cat = load_catalog()
    assert cat.taken_on == dt.date(2026, 12, 2)
    assert all(s.url for s in cat.sources.values())
    # Every source is used by something, and the text is what refresh would write back.
    used = {i for v in cat.vm_sizes.values() for i in v.sources}
    used |= {i for v in cat.kubernetes.values() for i in v.sources}
    used |= {i for v in cat.mesh.values() for i in v.sources}
    used |= {i for v in cat.caches.values() for i in v.sources} | set(cat.node.sources)
    used |= set(doc["regions"]["sources"])
    assert used == set(cat.sources)
    assert catalog_path().read_text() == dump_catalog(doc)


def test_vm_sizes_json_is_merged_unchanged() -> None:
    """diff/cost and today's model still read vm_sizes.json; the catalog agrees with it."""
    old = json.loads((ROOT / "compiler/data/vm_sizes.json").read_text())["sizes"]
    cat = load_catalog()
    for name, v in old.items():
        s = cat.vm_sizes[name]
        assert (s.vcpus, s.memory_gib, s.gpus, s.gpu_model, s.usd_per_hour) == (
            v["vcpus"],
            v["memoryGiB"],
            v["gpus"],
            v["gpuModel"],
            v["usdPerHour"],
        ), name


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("takenOn"), r"\$\.takenOn: missing"),
        (
            lambda d: d["vmSizes"]["Standard_D2s_v5"].update(vcpus="2"),
            r"\$\.vmSizes\.Standard_D2s_v5\.vcpus: expected a non-negative integer",
        ),
        (
            lambda d: d["vmSizes"]["Standard_NC6s_v3"].update(replacement="Standard_X"),
            r"Standard_NC6s_v3\.replacement: Standard_X is not listed",
        ),
        (
            lambda d: d["kubernetesVersions"]["1.35"].update(endOfLife="March 2027"),
            r"1\.35\.endOfLife: expected a YYYY-MM-DD date, got 'March 2027'",
        ),
        (
            lambda d: d["meshRevisions"]["asm-1-28"].update(sources=["nowhere"]),
            r"asm-1-28\.sources: unknown source id\(s\) nowhere",
        ),
        (lambda d: d["kubernetesVersions"].update({"latest": {}}), r"must be a minor version"),
    ],
)
def test_malformed_catalog_is_named_by_path(doc: dict[str, Any], mutate: Any, message: str) -> None:
    bad = copy.deepcopy(doc)
    mutate(bad)
    with pytest.raises(CatalogError, match=message):
        parse_catalog(bad, "azure-catalog.json")


def test_unreadable_or_non_json_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the Azure catalog"):
        read_catalog(tmp_path / "missing.json")
    broken = tmp_path / "c.json"
    broken.write_text('{\n "takenOn": 2026-12-02\n}\n')
    with pytest.raises(CatalogError, match=r"c\.json:2:\d+: not JSON"):
        read_catalog(broken)


def test_vm_size_lookup() -> None:
    cat = load_catalog()
    assert check_vm_size(cat, "Standard_NC4as_T4_v3", DAY) is None
    assert check_vm_size(cat, "standard_nc4as_t4_v3", DAY) is None  # ARM ignores case
    retired = check_vm_size(cat, "Standard_NC6s_v3", DAY)
    assert retired is not None and retired.severity is Severity.ERROR
    assert retired.message == (
        "VM size Standard_NC6s_v3 was retired on 2025-09-30: Azure deallocates it"
    )
    assert retired.hint == "use Standard_NC24ads_A100_v4 (24 vCPU, 220 GiB, 1 A100 GPU)"
    typo = check_vm_size(cat, "Standard_NC4as_T4", DAY)
    assert typo is not None and typo.code == "E-AZ-VM-SIZE"
    assert typo.hint.startswith("did you mean Standard_NC4as_T4_v3")
    # Before its retirement, within 90 days: a warning with the same replacement.
    soon = check_vm_size(cat, "Standard_NC6s_v3", dt.date(2025, 8, 1))
    assert soon is not None and soon.severity is Severity.WARNING
    assert soon.message.endswith("retires on 2025-09-30 (60 days from 2025-08-01)")
    assert check_vm_size(cat, "Standard_NC6s_v3", dt.date(2025, 6, 1)) is None


def test_retired_replacement_is_followed(doc: dict[str, Any]) -> None:
    chained = copy.deepcopy(doc)
    chained["vmSizes"]["Standard_NC24ads_A100_v4"]["retired"] = "2026-01-01"
    chained["vmSizes"]["Standard_NC24ads_A100_v4"]["replacement"] = "Standard_NC40ads_H100_v5"
    found = check_vm_size(parse_catalog(chained), "Standard_NC6s_v3", DAY)
    assert found is not None and found.hint.startswith("use Standard_NC40ads_H100_v5 (40 vCPU")


def test_kubernetes_support_on_a_date() -> None:
    cat = load_catalog()
    assert check_kubernetes_version(cat, "1.35", DAY) is None
    assert check_kubernetes_version(cat, "1.36.1", DAY) is None
    old = check_kubernetes_version(cat, "1.31", DAY)
    assert old is not None and old.code == "E-AZ-K8S-RETIRED"
    assert (
        old.message
        == "Kubernetes 1.31 left AKS support on 2025-11-01: AKS refuses new clusters on it"
    )
    assert old.hint.startswith("use 1.35")
    lts = check_kubernetes_version(cat, "1.33", DAY, lts=True)
    assert lts is None  # LTS until 2027-07-31
    soon = check_kubernetes_version(cat, "1.35", dt.date(2027, 1, 15))
    assert soon is not None and soon.severity is Severity.WARNING
    assert "2027-03-31 (75 days" in soon.message and soon.hint.startswith("use 1.36")
    assert check_kubernetes_version(cat, "1.22", DAY).code == "E-AZ-K8S-RETIRED"  # type: ignore[union-attr]
    assert check_kubernetes_version(cat, "1.40", DAY).severity is Severity.WARNING  # type: ignore[union-attr]
    assert check_kubernetes_version(cat, "latest", DAY).code == "E-AZ-K8S-VERSION"  # type: ignore[union-attr]


def test_mesh_revision_support() -> None:
    cat = load_catalog()
    gone = check_mesh_revision(cat, "asm-1-25", DAY)
    assert gone is not None and gone.severity is Severity.ERROR
    assert gone.message == "Istio revision asm-1-25 left support on 2026-01-31"
    assert gone.hint == "use asm-1-29 or asm-1-30"
    assert check_mesh_revision(cat, "asm-1-30", DAY) is None
    # An end date the source only expects: past it is a warning, not an error.
    probably = check_mesh_revision(cat, "asm-1-28", DAY)
    assert probably is not None and probably.severity is Severity.WARNING
    typo = check_mesh_revision(cat, "asm-130", DAY)
    assert typo is not None and typo.code == "E-AZ-MESH-REVISION"
    assert "did you mean asm-1-30" in typo.hint


def test_region_lookup() -> None:
    cat = load_catalog()
    assert check_region(cat, "westeurope") is None
    typo = check_region(cat, "westeurpe")
    assert typo is not None and typo.code == "E-AZ-REGION"
    assert typo.hint.startswith("did you mean westeurope")
    display = check_region(cat, "West Europe")
    assert display is not None and display.hint == "use westeurope"
    d = typo.at("platform.yaml", 3, 13, "$.azure.location")
    assert (d.code, d.file, d.line, d.col, d.json_path, d.severity) == (
        "E-AZ-REGION",
        "platform.yaml",
        3,
        13,
        "$.azure.location",
        Severity.ERROR,
    )
    assert d.message == typo.message and d.hint == typo.hint
    assert cat.regions["swedencentral"].display_name == "Sweden Central"


def test_cache_offers() -> None:
    cat = load_catalog()
    assert check_cache_sku(cat, "Balanced_B0", DAY) is None
    legacy = check_cache_sku(cat, "Standard_C1", DAY)
    assert legacy is not None and legacy.severity is Severity.WARNING
    assert "retires on 2028-09-30" in legacy.message and "2026-04-01" in legacy.message
    assert "Balanced_B0" in legacy.hint
    assert check_cache_sku(cat, "Standard_C1", dt.date(2028, 10, 1)).severity is Severity.ERROR  # type: ignore[union-attr]
    assert check_cache_sku(cat, "Enterprise_E10", dt.date(2027, 4, 1)).code == "E-AZ-CACHE-RETIRED"  # type: ignore[union-attr]
    assert cat.caches["managedRedis"].tls_port == 10000


def test_allocatable_follows_aks_reservations() -> None:
    """AKS's documented numbers: CPU per core count; memory 20 MiB x pods + 50 MiB (capped
    at 25 %) plus the 100Mi eviction threshold - 8 GiB with 30 pods keeps 7.25 GiB."""
    cat = load_catalog()
    table = {1: 60, 2: 100, 4: 140, 8: 180, 16: 260, 32: 420, 64: 740}
    for cores, millis in table.items():
        assert reserved_cpu_millicores(cat.node, cores) == millis
    assert reserved_cpu_millicores(cat.node, 6) == 160
    assert reserved_cpu_millicores(cat.node, 3) == 120
    d2 = allocatable(cat, "Standard_D2s_v5")
    assert (d2.cpu_millicores, d2.memory_mib) == (1900, 8192 - 650 - 100)
    # `cpu: "2"` on a 2-vCPU node or `cpu: "6"` on a 6-vCPU NC node can never schedule.
    assert d2.cpu_millicores < 2000
    assert allocatable(cat, "Standard_NC6s_v3").cpu_millicores == 5840
    many_pods = allocatable(cat, "Standard_D2s_v5", max_pods=250)
    assert many_pods.kube_reserved_memory_mib == 2048  # 25 % cap, not 5050 MiB
    legacy = allocatable(cat, "Standard_D2s_v5", kubernetes_version="1.28")
    assert (legacy.kube_reserved_memory_mib, legacy.eviction_threshold_mib) == (1844, 750)
    with pytest.raises(KeyError):
        allocatable(cat, "Standard_Nope")


def test_quota_against_pool_maxima() -> None:
    cat = load_catalog()
    pools = [
        PoolDemand("main", "gpu", "Standard_NC4as_T4_v3", 4),
        PoolDemand("edge", "gpu2", "standard_nc8as_t4_v3", 2),
        PoolDemand("main", "system", "Standard_D4s_v5", 3),
        PoolDemand("main", "typo", "Standard_Nope", 9),
    ]
    needs = required_cores(cat, pools)
    assert [(n.family, n.cores, n.pools) for n in needs] == [
        ("standardDSv5Family", 12, ("main/system",)),
        ("standardNCASv3_T4Family", 32, ("edge/gpu2", "main/gpu")),
    ]
    usages = [
        FamilyUsage("StandardNCASv3_T4Family", current=8, limit=24),
        FamilyUsage("standardDSv5Family", current=0, limit=100),
        FamilyUsage("cores", current=10, limit=100),
    ]
    [finding] = check_quota(usages, needs, "westeurope")
    assert finding.code == "E-AZ-QUOTA" and finding.severity is Severity.ERROR
    assert finding.message == (
        "pools edge/gpu2, main/gpu need up to 32 vCPUs of standardNCASv3_T4Family in "
        "westeurope; the quota is 24 with 8 in use (16 free)"
    )
    assert "request at least 40 vCPUs" in finding.hint
    assert (
        check_quota([FamilyUsage("standardNCASv3_T4Family", 0, 64), *usages[1:]], needs, "x") == []
    )
    missing = check_quota([FamilyUsage("cores", 0, 30)], needs, "westeurope")
    assert [f.message.split(" in ")[0] for f in missing][:2] == [
        "pools main/system need up to 12 vCPUs of standardDSv5Family",
        "pools edge/gpu2, main/gpu need up to 32 vCPUs of standardNCASv3_T4Family",
    ]
    assert "regional quota is 30" in missing[2].message
