"""Capacity rules and "no silent changes" (issue 12, items 4 and 6): valid means it runs.

A platform that validates must run as written. These rules look across the model once
every reader is done (placement resolved, defaults filled) and report, each at the field
that decides it and naming the numbers:

* **Per pod** (E-CAPACITY-CPU, E-CAPACITY-MEMORY): an API's CPU and memory requests plus
  its Istio sidecar's against what one node of its pool offers to pods - AKS's allocatable
  (:func:`ai4ec.catalog.allocatable`: the VM minus kube-reserved and the eviction threshold)
  minus the requests of the DaemonSets ai4ec puts on that pool. A pod that does not fit
  stays Pending forever. (GPUs per pod against GPUs per node is E-GPU-CAPACITY, checked
  where the pool is resolved.)
* **GPU sums per pool**: ``minReplicas x gpu`` over the APIs on a GPU pool against the
  pool's maximum nodes x GPUs per node is an error (E-CAPACITY-GPU-MIN: the floor can never
  be met); ``maxReplicas x gpu`` beyond it a warning (W-CAPACITY-GPU-MAX: scale-out stalls).
* **Sync on spot** (W-CAPACITY-SPOT-SYNC): a sync API kept on a spot pool loses every
  replica when Azure evicts the pool's nodes.
* **No silent changes**: with KEDA off, ``minReplicas: 0`` (E-SCALING-ZERO-NO-KEDA) and the
  rules only KEDA can run (E-SCALING-NEEDS-KEDA) used to be rewritten or dropped by the
  renderer; an async API's default queue-depth rule dropped for lack of KEDA warns
  (W-SCALING-NO-KEDA). An HTTPS ingress without a concrete host (E-INGRESS-HOSTS) left API
  Management calling ``https://<cluster>.ingress.invalid``. A product quota below its rate
  limit, or over a shorter period (E-PRODUCT-QUOTA), made the rate limit meaningless.

The rules read the finished model and the raw document only to locate fields; a rule
skips what another rule already rejected (an unknown VM size, an unresolved pool).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..catalog import allocatable, find_vm_size
from ..load import JsonPath
from .catalog_rules import catalog
from .context import ModelContext
from .defaults import (
    ISTIO_SIDECAR_CPU_MILLICORES,
    ISTIO_SIDECAR_MEMORY_MIB,
    PLATFORM_DAEMONSETS,
    quantity,
)
from .types import Api, Cluster, Pool, Product

_MIB = 2**20


def check_capacity_rules(
    ctx: ModelContext,
    clusters: Sequence[Cluster],
    apis: Sequence[Api],
    products: Sequence[Product],
) -> None:
    """Run every rule of this module over the assembled model."""
    by_cluster = {c.name: (i, c) for i, c in enumerate(clusters)}
    for i, api in enumerate(apis):
        found = by_cluster.get(api.cluster)
        if found is None:
            continue  # E-REF-CLUSTER / E-AMBIGUOUS-CLUSTER said why
        ci, cluster = found
        check_pod_fits(ctx, api, i, cluster)
        check_spot_sync(ctx, api, i, cluster)
        check_scaling_without_keda(ctx, api, i, cluster, ci)
    for ci, cluster in enumerate(clusters):
        check_gpu_sums(ctx, cluster, ci, [a for a in apis if a.cluster == cluster.name])
        check_ingress_hosts(ctx, cluster, ci)
    for pi, product in enumerate(products):
        check_product_quota(ctx, product, pi)


# ------------------------------------------------------------------------------ locating


def _raw(ctx: ModelContext, path: JsonPath) -> Any:
    """The raw value at ``path``, or ``None`` when some part of it is not written."""
    node: Any = ctx.data
    for part in path:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def _deepest(ctx: ModelContext, path: JsonPath) -> JsonPath:
    """``path`` if it is written, else its longest written prefix (for locating)."""
    for n in range(len(path), 0, -1):
        if _raw(ctx, path[:n]) is not None:
            return path[:n]
    return path


# ------------------------------------------------------------------------------ per pod


def cpu_millicores(value: str) -> int:
    """A CPU quantity in whole millicores, rounded up as Kubernetes does (``0.0005`` -> 1m)."""
    return math.ceil(round(quantity(value) * 1000, 6))


def memory_bytes(value: str) -> int:
    """A memory quantity in bytes (fractions of a byte rounded up)."""
    return math.ceil(round(quantity(value), 3))


def _mib(n_bytes: int) -> str:
    return f"{math.ceil(n_bytes / _MIB)}Mi"


def daemonset_requests(cluster: Cluster, pool: Pool) -> tuple[int, int]:
    """(millicores, MiB) that ai4ec's own DaemonSets request on every node of ``pool``."""
    cpu = mem = 0
    for ds in PLATFORM_DAEMONSETS:
        if ds.gpu_pools_only and not (pool.gpu and cluster.nvidia_device_plugin):
            continue
        cpu += ds.cpu_millicores
        mem += ds.memory_mib
    return cpu, mem


def candidate_pools(cluster: Cluster, api: Api) -> list[Pool]:
    """The pools a replica of ``api`` may be scheduled on.

    A named pool (or the one GPU pool a GPU API was placed on) alone; otherwise every user
    pool without taints, since the chart gives pool-less APIs no tolerations and keeps
    them off GPU pools (and the system pool carries ``CriticalAddonsOnly``).
    """
    if api.pool:
        return [p for p in cluster.pools if p.name == api.pool]
    return [p for p in cluster.pools if not p.taints and not p.gpu]


def check_pod_fits(ctx: ModelContext, api: Api, index: int, cluster: Cluster) -> None:
    """E-CAPACITY-CPU / E-CAPACITY-MEMORY: one replica must fit one node of its pool.

    When several pools could take the API, it is enough that one of them fits; the
    message then names the roomiest one.
    """
    cat = catalog()
    fits: list[tuple[Pool, int, int, str, str]] = []
    for pool in candidate_pools(cluster, api):
        size = find_vm_size(cat, pool.vm_size)
        if size is None:
            continue  # E-AZ-VM-SIZE
        alloc = allocatable(
            cat, size, max_pods=pool.max_pods, kubernetes_version=cluster.kubernetes_version
        )
        ds_cpu, ds_mem = daemonset_requests(cluster, pool)
        free_cpu = alloc.cpu_millicores - ds_cpu
        free_mem = alloc.memory_mib - ds_mem
        ds_cpu_text = f" - {ds_cpu}m DaemonSets" if ds_cpu else ""
        ds_mem_text = f" - {ds_mem}Mi DaemonSets" if ds_mem else ""
        cpu_why = (
            f"{free_cpu}m ({size.vcpus * 1000}m - {alloc.reserved_cpu_millicores}m reserved "
            f"by AKS{ds_cpu_text})"
        )
        mem_why = (
            f"{free_mem}Mi ({round(size.memory_gib * 1024)}Mi - "
            f"{alloc.kube_reserved_memory_mib}Mi kube-reserved - "
            f"{alloc.eviction_threshold_mib}Mi eviction threshold{ds_mem_text})"
        )
        fits.append((pool, free_cpu, free_mem, cpu_why, mem_why))
    if not fits:
        return
    raw: JsonPath = ("apis", index, "resources")
    need_cpu = cpu_millicores(api.resources.cpu) + ISTIO_SIDECAR_CPU_MILLICORES
    if all(need_cpu > f[1] for f in fits):
        pool, free, _, why, _ = max(fits, key=lambda f: f[1])
        ctx.report(
            "E-CAPACITY-CPU",
            f"API {api.id!r} needs {need_cpu}m CPU per pod ({api.resources.cpu} requested + "
            f"{ISTIO_SIDECAR_CPU_MILLICORES}m Istio sidecar) but a {pool.vm_size} node of pool "
            f"{pool.name!r} leaves {why} for pods",
            _deepest(ctx, (*raw, "cpu")),
            f"request at most {free - ISTIO_SIDECAR_CPU_MILLICORES}m, or pick a larger VM "
            "size; the pod would stay Pending",
        )
    need_mem = memory_bytes(api.resources.memory) + ISTIO_SIDECAR_MEMORY_MIB * _MIB
    if all(need_mem > f[2] * _MIB for f in fits):
        pool, _, free, _, why = max(fits, key=lambda f: f[2])
        ctx.report(
            "E-CAPACITY-MEMORY",
            f"API {api.id!r} needs {_mib(need_mem)} memory per pod ({api.resources.memory} "
            f"requested + {ISTIO_SIDECAR_MEMORY_MIB}Mi Istio sidecar) but a {pool.vm_size} node "
            f"of pool {pool.name!r} leaves {why} for pods",
            _deepest(ctx, (*raw, "memory")),
            f"request at most {free - ISTIO_SIDECAR_MEMORY_MIB}Mi, or pick a larger VM size; "
            "the pod would stay Pending",
        )


# ------------------------------------------------------------------------------ GPU sums


def _pool_max_nodes(pool: Pool) -> int | None:
    return pool.max_count if pool.autoscaled else pool.count


def check_gpu_sums(ctx: ModelContext, cluster: Cluster, index: int, apis: list[Api]) -> None:
    """E-CAPACITY-GPU-MIN / W-CAPACITY-GPU-MAX: a GPU pool's GPUs against its APIs' replicas.

    GPUs are whole devices, so the sum is a lower bound on what is needed; a pod asking
    more GPUs than a node has is E-GPU-CAPACITY, reported where the pool is resolved.
    """
    cat = catalog()
    for j, pool in enumerate(cluster.pools):
        size = find_vm_size(cat, pool.vm_size)
        nodes = _pool_max_nodes(pool)
        if size is None or not size.gpus or nodes is None:
            continue
        users = [
            a
            for a in apis
            if a.pool == pool.name
            and 0 < a.resources.gpu <= size.gpus  # else E-GPU-CAPACITY
            and a.scaling.min_replicas <= a.scaling.max_replicas  # else E-MIN-MAX
        ]
        if not users:
            continue
        holds = nodes * size.gpus
        held = (
            f"the pool holds at most {holds} ({nodes} node{'s' if nodes != 1 else ''} x "
            f"{size.gpus} GPU{'s' if size.gpus != 1 else ''} of {size.name})"
        )
        key = "autoscale" if pool.autoscaled else "count"
        where: JsonPath = ("clusters", index, "pools", j, key)
        if pool.autoscaled:
            where = (*where, "max")
        at_min = sum(a.scaling.min_replicas * a.resources.gpu for a in users)
        at_max = sum(a.scaling.max_replicas * a.resources.gpu for a in users)
        if at_min > holds:
            parts = ", ".join(f"{a.id} {a.scaling.min_replicas} x {a.resources.gpu}" for a in users)
            ctx.report(
                "E-CAPACITY-GPU-MIN",
                f"APIs on GPU pool {pool.name!r} need {at_min} GPUs at minReplicas ({parts}) "
                f"but {held}",
                _deepest(ctx, where),
                "raise the pool's maximum, pick a size with more GPUs, or lower minReplicas",
            )
        elif at_max > holds:
            parts = ", ".join(f"{a.id} {a.scaling.max_replicas} x {a.resources.gpu}" for a in users)
            ctx.report(
                "W-CAPACITY-GPU-MAX",
                f"APIs on GPU pool {pool.name!r} may need {at_max} GPUs at maxReplicas "
                f"({parts}) but {held}",
                _deepest(ctx, where),
                "replicas beyond it stay Pending; raise the pool's maximum or lower maxReplicas",
                warning=True,
            )


# ------------------------------------------------------------------------------ spot


def check_spot_sync(ctx: ModelContext, api: Api, index: int, cluster: Cluster) -> None:
    """W-CAPACITY-SPOT-SYNC: a sync API whose every replica may be evicted at once."""
    if api.all_async or api.scaling.min_replicas < 1:
        return
    pools = candidate_pools(cluster, api)
    if not pools or any(p.spot is None for p in pools):
        return
    names = ", ".join(repr(p.name) for p in pools)
    ctx.report(
        "W-CAPACITY-SPOT-SYNC",
        f"sync API {api.id!r} keeps minReplicas {api.scaling.min_replicas} on spot pool "
        f"{names}: one eviction takes every replica, and sync callers get errors until a "
        "node is back",
        _deepest(ctx, ("apis", index, "pool")),
        "place it on a regular (non-spot) pool, or make its endpoints async",
        warning=True,
    )


# ------------------------------------------------------------------------------ KEDA


def check_scaling_without_keda(
    ctx: ModelContext, api: Api, index: int, cluster: Cluster, cluster_index: int
) -> None:
    """What a KEDA-less cluster cannot do is an error, not a silent rewrite.

    Without KEDA the chart renders a plain HorizontalPodAutoscaler: it scales on CPU and
    memory only and never below one replica. So ``minReplicas: 0`` would become 1 (a GPU
    node kept on), and pending-task, requests-per-second and schedule rules would vanish.
    """
    if cluster.keda:
        return
    spath: JsonPath = ("apis", index, "scaling")
    raw = _raw(ctx, spath) or {}
    keda_path = f"clusters[{cluster_index}].keda.enabled"
    enable = f"enable KEDA ({keda_path}: true)"
    if api.scaling.min_replicas == 0 and api.all_async:  # else E-SCALE-ZERO-SYNC
        ctx.report(
            "E-SCALING-ZERO-NO-KEDA",
            f"API {api.id!r} asks minReplicas: 0 but cluster {cluster.name!r} has KEDA off; "
            "the Kubernetes autoscaler cannot scale to zero and would keep 1 replica",
            _deepest(ctx, (*spath, "minReplicas")),
            f"{enable}, or set minReplicas: 1",
        )
    needs = []
    if "pendingTasksPerReplica" in raw and api.has_async:
        needs.append(
            ("pendingTasksPerReplica", f"pending tasks ({raw['pendingTasksPerReplica']} a replica)")
        )
    if "requestsPerSecond" in raw:
        needs.append(("requestsPerSecond", f"requests per second ({raw['requestsPerSecond']})"))
    if raw.get("schedules"):
        needs.append(("schedules", f"{len(raw['schedules'])} schedule window(s)"))
    for key, what in needs:
        ctx.report(
            "E-SCALING-NEEDS-KEDA",
            f"API {api.id!r} scales on {what} but cluster {cluster.name!r} has KEDA off; "
            "only KEDA runs that rule, so it would be dropped",
            (*spath, key),
            f"{enable}, or scale on cpuUtilization or memoryUtilization",
        )
    chose = ("pendingTasksPerReplica", "cpuUtilization", "memoryUtilization")
    if api.has_async and not any(k in raw for k in chose):
        metrics = [
            f"{name} {value}%"
            for name, value in (
                ("CPU", api.scaling.cpu_utilization),
                ("memory", api.scaling.memory_utilization),
            )
            if value
        ]
        ctx.report(
            "W-SCALING-NO-KEDA",
            f"async API {api.id!r} would scale on its pending tasks, but cluster "
            f"{cluster.name!r} has KEDA off: it scales on "
            + (" and ".join(metrics) if metrics else "nothing")
            + " only",
            _deepest(ctx, spath),
            f"{enable}, or set cpuUtilization or memoryUtilization to choose it",
            warning=True,
        )


# ------------------------------------------------------------------------------ ingress


def check_ingress_hosts(ctx: ModelContext, cluster: Cluster, index: int) -> None:
    """E-INGRESS-HOSTS: HTTPS needs a concrete host name API Management can call."""
    ing = cluster.ingress
    if ing.protocol != "https":
        return
    if any(h != "*" and not h.startswith("*.") for h in ing.hosts):
        return
    path: JsonPath = ("clusters", index, "istio", "ingress")
    where = (*path, "hosts") if _raw(ctx, (*path, "hosts")) is not None else (*path, "protocol")
    ctx.report(
        "E-INGRESS-HOSTS",
        f"cluster {cluster.name!r}: an HTTPS ingress needs a host name in `hosts` (not only "
        f"wildcards); without one API Management and dispatch would call "
        f"https://{cluster.name}.ingress.invalid",
        _deepest(ctx, where),
        "add istio.ingress.hosts with the host name of the certificate, or set protocol: http",
    )


# ------------------------------------------------------------------------------ products


def _period(raw: Any, seconds: int) -> str:
    """A period as written, with its length in seconds when written otherwise."""
    text = str(raw)
    return text if text in (f"{seconds}s", str(seconds)) else f"{text} ({seconds}s)"


def check_product_quota(ctx: ModelContext, product: Product, index: int) -> None:
    """E-PRODUCT-QUOTA: a quota must allow at least the rate limit, over at least its period."""
    rate, quota = product.rate_limit, product.quota
    if rate is None or quota is None:
        return
    path: JsonPath = ("products", index)
    raw_rate = _raw(ctx, (*path, "rateLimit")) or {}
    raw_quota = _raw(ctx, (*path, "quota")) or {}
    if quota.calls < rate.calls:
        ctx.report(
            "E-PRODUCT-QUOTA",
            f"product {product.name!r} allows {quota.calls} calls per {raw_quota.get('period')} "
            f"(quota), fewer than its rate limit of {rate.calls} per {raw_rate.get('period')}",
            (*path, "quota", "calls"),
            "raise the quota's calls to at least the rate limit's, or lower the rate limit",
        )
    if quota.period_seconds < rate.period_seconds:
        ctx.report(
            "E-PRODUCT-QUOTA",
            f"product {product.name!r} has a quota period of "
            f"{_period(raw_quota.get('period'), quota.period_seconds)}, shorter than its "
            f"rate-limit period of {_period(raw_rate.get('period'), rate.period_seconds)}",
            (*path, "quota", "period"),
            "the quota is the long-term limit: give it a longer period than the rate limit",
        )
