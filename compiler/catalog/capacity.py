"""Node allocatable and regional quota: the numbers capacity rules compare requests to.

A pod is scheduled against what the kubelet reports as *allocatable*, not against the
VM's nominal vCPUs and memory: AKS reserves CPU and memory for the kubelet and the
container runtime (kube-reserved) and evicts below a memory threshold. A request that
fits the VM but not the allocatable stays Pending forever, which is why ``cpu: "2"`` on a
2-vCPU node never runs. Likewise Azure refuses to scale a pool past the subscription's
vCPU quota for the VM family in the region, however valid the template.

Everything here is pure: the live quota numbers come from
:func:`ai4ec.catalog.live.fetch_usages`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import Severity
from .data import Catalog, NodeReservations, VmSize, minor_key
from .rules import Finding, find_vm_size

#: AKS's memory formula uses MB per pod; Kubernetes quantities are MiB, as is this module.
_MIB_PER_GIB = 1024


@dataclass(frozen=True)
class Allocatable:
    """What one node of a VM size offers to pods, and what AKS kept back."""

    vm_size: str
    cpu_millicores: int
    memory_mib: int
    gpus: int
    reserved_cpu_millicores: int
    kube_reserved_memory_mib: int
    eviction_threshold_mib: int


def reserved_cpu_millicores(node: NodeReservations, cores: int) -> int:
    """kube-reserved CPU for a host with ``cores`` cores.

    AKS documents the value for 1, 2, 4, 8, 16, 32 and 64 cores. From 4 cores on, every
    documented point lies on ``100 + 10 x cores`` (4 -> 140, 64 -> 740), so other core
    counts (6, 24, 40, 96...) use that line; below 4, linear between the documented points.
    """
    table = dict(node.cpu_by_cores)
    if cores in table:
        return table[cores]
    if cores >= 4:
        return 100 + 10 * cores
    points = sorted(table.items())
    for (c0, m0), (c1, m1) in zip(points, points[1:], strict=False):
        if c0 < cores < c1:
            return round(m0 + (m1 - m0) * (cores - c0) / (c1 - c0))
    return points[0][1]


def reserved_memory_mib(
    node: NodeReservations, memory_mib: int, max_pods: int, kubernetes_version: str | None
) -> tuple[int, int]:
    """(kube-reserved, eviction threshold) in MiB for a node of ``memory_mib``.

    AKS 1.29 and later: ``min(20 x max pods + 50, 25 % of memory)`` plus a 100Mi eviction
    threshold. Before 1.29: a regressive scale (25 % of the first 4 GiB, 20 % of the next
    4, 10 % of the next 8, 6 % of the next 112, 2 % above) and a 750Mi threshold. An
    unknown version counts as current.
    """
    key = minor_key(kubernetes_version) if kubernetes_version else None
    new = key is None or key >= (minor_key(node.memory_formula_from) or (0, 0))
    if new:
        reserved = min(
            node.per_pod_mib * max_pods + node.base_mib,
            math.floor(node.max_fraction * memory_mib),
        )
        return reserved, node.eviction_mib
    left = memory_mib / _MIB_PER_GIB
    reserved_gib = 0.0
    for band, fraction in node.legacy_fractions:
        part = left if band is None else min(left, band)
        reserved_gib += part * fraction
        left -= part
        if left <= 0:
            break
    return math.ceil(reserved_gib * _MIB_PER_GIB), node.legacy_eviction_mib


def allocatable(
    catalog: Catalog,
    vm_size: str | VmSize,
    *,
    max_pods: int | None = None,
    kubernetes_version: str | None = None,
) -> Allocatable:
    """Allocatable CPU, memory and GPUs of one node of ``vm_size`` on AKS.

    Args:
        catalog: the catalog (VM sizes and AKS's reservation rules).
        vm_size: a size name or a :class:`VmSize`.
        max_pods: the pool's max pods per node (AKS default from the catalog otherwise).
        kubernetes_version: the cluster's version; picks the memory formula.

    Raises:
        KeyError: an unknown size (check it with :func:`~ai4ec.catalog.rules.check_vm_size`
            first; a rule never computes capacity for a size it already rejected).
    """
    size = vm_size if isinstance(vm_size, VmSize) else find_vm_size(catalog, vm_size)
    if size is None:
        raise KeyError(vm_size)
    node = catalog.node
    cpu_reserved = reserved_cpu_millicores(node, size.vcpus)
    memory = round(size.memory_gib * _MIB_PER_GIB)
    kube_reserved, eviction = reserved_memory_mib(
        node, memory, max_pods or node.default_max_pods, kubernetes_version
    )
    return Allocatable(
        vm_size=size.name,
        cpu_millicores=size.vcpus * 1000 - cpu_reserved,
        memory_mib=memory - kube_reserved - eviction,
        gpus=size.gpus,
        reserved_cpu_millicores=cpu_reserved,
        kube_reserved_memory_mib=kube_reserved,
        eviction_threshold_mib=eviction,
    )


# ------------------------------------------------------------------------------ quota


@dataclass(frozen=True)
class FamilyUsage:
    """One line of the compute usages API: vCPUs used and allowed for a family in a region."""

    name: str
    current: int
    limit: int
    display_name: str = ""


@dataclass(frozen=True)
class PoolDemand:
    """A node pool at its maximum: what it can draw from the quota."""

    cluster: str
    pool: str
    vm_size: str
    max_nodes: int


@dataclass(frozen=True)
class QuotaNeed:
    """vCPUs the platform's pools of one family can use at their maxima."""

    family: str
    cores: int
    pools: tuple[str, ...]


#: The usages entry that caps all VM families of the region together.
REGIONAL_CORES = "cores"


def required_cores(catalog: Catalog, pools: Iterable[PoolDemand]) -> list[QuotaNeed]:
    """Sum ``max nodes x vCPUs`` per VM family (quota is counted per family, in vCPUs).

    Pools whose size is not in the catalog are skipped: the size rule reports them.
    """
    totals: dict[str, tuple[str, int, list[str]]] = {}
    for p in pools:
        size = find_vm_size(catalog, p.vm_size)
        if size is None:
            continue
        key = size.family.lower()
        family, cores, names = totals.get(key, (size.family, 0, []))
        names.append(f"{p.cluster}/{p.pool}")
        totals[key] = (family, cores + size.vcpus * p.max_nodes, names)
    return [
        QuotaNeed(family, cores, tuple(sorted(names)))
        for family, cores, names in sorted(totals.values(), key=lambda t: t[0].lower())
    ]


def check_quota(
    usages: Iterable[FamilyUsage], needs: Iterable[QuotaNeed], location: str
) -> list[Finding]:
    """Pools whose maxima exceed the free vCPU quota of their family (or of the region).

    Free quota is ``limit - current``. On a re-apply the platform's own running nodes are
    part of ``current``, so this errs on the cautious side; the message gives all numbers
    so a reader can tell.
    """
    by_name = {u.name.lower(): u for u in usages}
    needs = list(needs)
    out: list[Finding] = []
    for need in needs:
        u = by_name.get(need.family.lower())
        if u is None:
            out.append(
                Finding(
                    "E-AZ-QUOTA",
                    Severity.ERROR,
                    f"pools {', '.join(need.pools)} need up to {need.cores} vCPUs of "
                    f"{need.family} in {location}, and the subscription has no quota for it",
                    f"request {need.family} quota in {location} (Usage + quotas in the portal)",
                )
            )
            continue
        free = u.limit - u.current
        if need.cores > free:
            out.append(
                Finding(
                    "E-AZ-QUOTA",
                    Severity.ERROR,
                    f"pools {', '.join(need.pools)} need up to {need.cores} vCPUs of "
                    f"{need.family} in {location}; the quota is {u.limit} with {u.current} "
                    f"in use ({free} free)",
                    f"request at least {u.current + need.cores} vCPUs of {need.family} quota "
                    "or lower the pools' maximum node counts",
                )
            )
    regional = by_name.get(REGIONAL_CORES)
    total = sum(n.cores for n in needs)
    if regional is not None and total > regional.limit - regional.current:
        free = regional.limit - regional.current
        out.append(
            Finding(
                "E-AZ-QUOTA",
                Severity.ERROR,
                f"all pools together need up to {total} vCPUs in {location}; the regional "
                f"quota is {regional.limit} with {regional.current} in use ({free} free)",
                f"request at least {regional.current + total} Total Regional vCPUs",
            )
        )
    return out
