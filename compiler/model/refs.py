"""Reference resolution: a name in platform.yaml -> the cluster, pool, API or pipeline it means.

Each resolver reports E-REF-* (nothing by that name) or E-AMBIGUOUS-* (several
candidates) at the referring field and returns ``None``, so callers skip what cannot
be built and keep collecting diagnostics.
"""

from __future__ import annotations

from typing import Any

from ..load import JsonPath
from .context import ModelContext
from .types import (
    Api,
    Cluster,
    Pool,
)


def api_wants_gpu(a: dict[str, Any]) -> bool:
    """Whether a raw API entry asks for GPUs."""
    return bool((a.get("resources") or {}).get("gpu", 0))


def api_cluster_name(ctx: ModelContext, a: dict[str, Any]) -> str | None:
    """The cluster a raw API entry names, or the only cluster when it names none."""
    if "cluster" in a:
        return str(a["cluster"])
    clusters = ctx.data["clusters"]
    return str(clusters[0]["name"]) if len(clusters) == 1 else None


def resolve_cluster(
    ctx: ModelContext, a: dict[str, Any], path: JsonPath, clusters: tuple[Cluster, ...]
) -> Cluster | None:
    """The cluster an API runs on (E-REF-CLUSTER / E-AMBIGUOUS-CLUSTER)."""
    names = [c.name for c in clusters]
    if "cluster" in a:
        for c in clusters:
            if c.name == a["cluster"]:
                return c
        if ctx.is_broken("clusters", a["cluster"]):
            return None
        ctx.report(
            "E-REF-CLUSTER",
            f"API {a['name']!r} runs on unknown cluster {a['cluster']!r}",
            (*path, "cluster"),
            f"defined clusters: {', '.join(names)}",
        )
        return None
    if ctx.is_broken("clusters"):
        return None  # which cluster it would run on is unknown while one is left out
    if len(clusters) == 1:
        return clusters[0]
    ctx.report(
        "E-AMBIGUOUS-CLUSTER",
        f"API {a['name']!r} does not say which cluster it runs on",
        path,
        f"add `cluster:` (one of {', '.join(names)})",
    )
    return None


def _gpu_pool_hint(cluster: Cluster) -> str:
    """Name the GPU pools to move to, or say how to add one: a bare "GPU pool" helps no one."""
    names = [p.name for p in cluster.gpu_pools]
    if names:
        return f"set `pool:` to a GPU pool of cluster {cluster.name!r}: {', '.join(names)}"
    return (
        f"cluster {cluster.name!r} has no GPU pool: add one with `gpu: true` and a GPU VM "
        "size (e.g. Standard_NC4as_T4_v3)"
    )


def resolve_pool(
    ctx: ModelContext,
    a: dict[str, Any],
    path: JsonPath,
    cluster: Cluster | None,
    gpu: int,
) -> str:
    """The pool an API runs on, checked against the pool's GPUs (CPU and memory: capacity_rules)."""
    if cluster is None:
        return str(a.get("pool", ""))
    pools = {p.name: p for p in cluster.pools}
    pool: Pool | None = None
    if "pool" in a:
        pool = pools.get(a["pool"])
        if pool is None:
            ctx.report(
                "E-REF-POOL",
                f"API {a['name']!r} uses unknown pool {a['pool']!r} of cluster {cluster.name!r}",
                (*path, "pool"),
                f"pools of {cluster.name}: {', '.join(pools)}",
            )
            return str(a["pool"])
    elif gpu:
        gpu_pools = cluster.gpu_pools
        if len(gpu_pools) == 1:
            pool = gpu_pools[0]
        else:
            ctx.report(
                "E-AMBIGUOUS-POOL" if gpu_pools else "E-GPU-POOL",
                f"API {a['name']!r} needs a GPU but "
                + (
                    "the cluster has several GPU pools"
                    if gpu_pools
                    else f"cluster {cluster.name!r} has no GPU pool"
                ),
                (*path, "resources", "gpu"),
                (
                    "add `pool:` naming one of the GPU pools: "
                    + ", ".join(p.name for p in gpu_pools)
                    if gpu_pools
                    else "add a pool with `gpu: true` and a GPU VM size (e.g. Standard_NC4as_T4_v3)"
                ),
            )
            return ""
    if pool is None:
        return ""  # any CPU pool: the chart keeps it off GPU pools
    if gpu and not pool.gpu and pool.gpus_per_node is None:
        pass  # unknown size: E-AZ-VM-SIZE says it; guessing "no GPU" would not
    elif gpu and not pool.gpu:
        ctx.report(
            "E-GPU-POOL",
            f"API {a['name']!r} requests {gpu} GPU(s) but pool {pool.name!r} "
            f"({pool.vm_size}) has none",
            (*path, "pool"),
            _gpu_pool_hint(cluster),
        )
    elif gpu and pool.gpus_per_node is not None and gpu > pool.gpus_per_node:
        ctx.report(
            "E-GPU-CAPACITY",
            f"API {a['name']!r} requests {gpu} GPUs but a {pool.vm_size} node has "
            f"{pool.gpus_per_node}",
            (*path, "resources", "gpu"),
            "lower the request or pick a larger VM size; replicas cannot span nodes",
        )
    elif not gpu and pool.gpu:
        ctx.report(
            "W-CPU-ON-GPU-POOL",
            f"CPU API {a['name']!r} is placed on GPU pool {pool.name!r}",
            (*path, "pool"),
            "GPU nodes are expensive; use a CPU pool unless this is intended",
            warning=True,
        )
    return pool.name


def find_api(
    ctx: ModelContext, name: str, version: str | None, apis: list[Api], path: JsonPath, what: str
) -> Api | None:
    """The API a step or product names, by name and optional version."""
    if ctx.apis_by_name_for is not apis:
        ctx.apis_by_name = {}
        for a in apis:
            ctx.apis_by_name.setdefault(a.name, []).append(a)
        ctx.apis_by_name_for = apis
    matches = [a for a in ctx.apis_by_name.get(name, []) if version is None or a.version == version]
    if len(matches) == 1:
        return matches[0]
    if not matches and ctx.is_broken("apis", name):
        return None
    if not matches:
        known = sorted({f"{a.name}@{a.version}" for a in apis})
        close = [k for k in known if k.split("@")[0] == name]
        ctx.report(
            "E-REF-API",
            f"{what} references unknown API {name!r}"
            + (f" version {version!r}" if version else ""),
            path,
            f"known versions: {', '.join(close)}"
            if close
            else (f"defined APIs: {', '.join(known)}" if known else "define it under `apis`"),
        )
        return None
    ctx.report(
        "E-AMBIGUOUS-VERSION",
        f"{what} references API {name!r}, which exists in versions "
        f"{', '.join(a.version for a in matches)}",
        path,
        "name the version",
    )
    return None


def resolve_pipeline(
    ctx: ModelContext,
    step: dict[str, Any],
    by_name: dict[str, list[int]],
    raw: list[dict[str, Any]],
    path: JsonPath,
) -> int | None:
    """The index of the pipeline a step includes, by name and optional version."""
    name, version = step["pipeline"], step.get("version")
    cands = [i for i in by_name.get(name, []) if version is None or raw[i]["version"] == version]
    if len(cands) == 1:
        return cands[0]
    if not cands and ctx.is_broken("pipelines", name):
        return None
    if not cands:
        ctx.report(
            "E-REF-PIPELINE",
            f"step references unknown pipeline {name!r}",
            (*path, "pipeline"),
            f"defined pipelines: {', '.join(sorted(by_name)) or 'none'}",
        )
    else:
        ctx.report(
            "E-AMBIGUOUS-VERSION",
            f"step references pipeline {name!r}, which has several versions",
            (*path, "pipeline"),
            "add `version:`",
        )
    return None


def pipeline_index(ctx: ModelContext) -> dict[str, int]:
    """Pipeline id -> index in the document, for locating its diagnostics."""
    return {f"{r['name']}-{r['version']}": k for k, r in enumerate(ctx.data.get("pipelines", []))}


def unknown_product(ctx: ModelContext, name: str, path: JsonPath, names: set[str]) -> None:
    """Report a reference to a product that does not exist, naming the known ones."""
    if ctx.is_broken("products", name):
        return
    close = sorted(names)
    ctx.report(
        "E-REF-PRODUCT",
        f"unknown product {name!r}",
        path,
        f"defined products: {', '.join(close)}" if close else "define it under `products`",
    )
