"""Clusters and node pools: defaults, taints, GPU and capacity rules."""

from __future__ import annotations

from typing import Any

from ..catalog import find_vm_size
from ..load import JsonPath, format_path
from .catalog_rules import catalog
from .context import ModelContext
from .defaults import (
    DEFAULT_MESH_REVISION,
    GPU_TAINT,
    SPOT_TAINT,
)
from .naming import env_part
from .refs import (
    api_cluster_name,
    api_wants_gpu,
)
from .rules import unique
from .types import (
    Cluster,
    Ingress,
    Pool,
    Spot,
    Taint,
)


def read_pool(ctx: ModelContext, p: dict[str, Any], path: JsonPath, system: bool = False) -> Pool:
    """One node pool with its VM size facts, taints and size rules."""
    vm = p.get("vmSize", "Standard_D4s_v5")
    info = ctx.vm_sizes.get(vm)
    if info is None:
        # vm_sizes.json (prices, diff) lags the dated catalog (e.g. H100 sizes, or what
        # `catalog refresh` added): take a size's GPUs, vCPUs and memory from the catalog,
        # so GPU detection and the GPU-per-node rule hold for every size Azure offers. A
        # size neither knows is E-AZ-VM-SIZE (catalog_rules), with a did-you-mean.
        size = find_vm_size(catalog(), vm)
        if size is not None:
            info = {"gpus": size.gpus, "vcpus": size.vcpus, "memoryGiB": size.memory_gib}
    known_gpus = info["gpus"] if info else None
    gpu = p.get("gpu")
    if gpu is True and known_gpus == 0:
        ctx.report(
            "E-GPU-POOL",
            f"pool {p.get('name', 'system')!r} says gpu: true but {vm} has no GPU",
            (*path, "gpu"),
            "pick a GPU VM size (e.g. Standard_NC4as_T4_v3 or Standard_NC24ads_A100_v4) "
            "or remove `gpu: true`",
        )
    if gpu is None:
        gpu = bool(known_gpus)
    if "count" in p and "autoscale" in p:
        ctx.report(
            "E-POOL-SIZE",
            "give either `count` or `autoscale`, not both",
            (*path, "autoscale"),
            prefer_key=True,
        )
    if not system and "count" not in p and "autoscale" not in p:
        ctx.report(
            "E-POOL-SIZE",
            f"pool {p['name']!r} needs `count` or `autoscale`",
            path,
            "e.g. autoscale: {min: 0, max: 3}",
        )
    auto = p.get("autoscale")
    if auto and auto["min"] > auto["max"]:
        ctx.report(
            "E-MIN-MAX",
            f"autoscale min ({auto['min']}) is greater than max ({auto['max']})",
            (*path, "autoscale", "min"),
        )
    if system and auto and auto["min"] < 1:
        ctx.report(
            "E-SCHEMA-RANGE",
            "the system pool needs at least one node",
            (*path, "autoscale", "min"),
        )
    taints: list[Taint] = []
    for t in p.get("taints", []):
        head, effect = t.rsplit(":", 1)
        key, _, value = head.partition("=")
        taints.append(Taint(key=key, value=value, effect=effect))
    if gpu and GPU_TAINT not in taints:
        taints.append(GPU_TAINT)
    spot = p.get("spot")
    if spot is not None and SPOT_TAINT not in taints:
        taints.append(SPOT_TAINT)
    count = p.get("count")
    if system and count is None and auto is None:
        count = 2
    return Pool(
        name=p.get("name", "system"),
        vm_size=vm,
        count=count,
        min_count=auto["min"] if auto else None,
        max_count=auto["max"] if auto else None,
        spot=(
            Spot(
                max_price=float(spot.get("maxPrice", -1)),
                eviction_policy=spot.get("evictionPolicy", "Delete"),
            )
            if spot is not None
            else None
        ),
        gpu=bool(gpu),
        gpus_per_node=known_gpus,
        vcpus=info["vcpus"] if info else None,
        memory_gib=float(info["memoryGiB"]) if info else None,
        taints=tuple(taints),
        labels=tuple(sorted((p.get("labels") or {}).items())),
        zones=tuple(str(z) for z in p.get("zones", [])),
        os_disk_size_gb=p.get("osDiskSizeGb", 128),
        max_pods=p.get("maxPods", 30),
        system=system,
        json_path=format_path(path),
    )


def read_cluster(ctx: ModelContext, c: dict[str, Any], index: int) -> Cluster:
    """One ``clusters[index]`` entry with its pools; a CPU pool is required."""
    path: JsonPath = ("clusters", index)
    az = ctx.data["azure"]
    env = env_part(ctx.environment, 10)
    pools = tuple(read_pool(ctx, p, (*path, "pools", i)) for i, p in enumerate(c["pools"]))
    unique(ctx, [p["name"] for p in c["pools"]], (*path, "pools"), "node pool")
    system = read_pool(ctx, c.get("systemPool") or {}, (*path, "systemPool"), system=True)
    istio = c.get("istio") or {}
    ing = istio.get("ingress") or {}
    protocol = ing.get("protocol", "https")
    cert = (ing.get("certificate") or {}).get("keyVaultCertificate")
    if protocol == "https" and not cert:
        ctx.report(
            "E-INGRESS-CERT",
            f"cluster {c['name']!r}: an HTTPS ingress needs a Key Vault certificate",
            (*path, "istio", "ingress") if ing else path,
            "add istio.ingress.certificate.keyVaultCertificate (plain HTTP is for development "
            "environments only)",
        )
    check_ingress_door(ctx, c["name"], ing, (*path, "istio", "ingress"))
    if not any(not p.gpu for p in pools) and any(
        not api_wants_gpu(a) and api_cluster_name(ctx, a) == c["name"]
        for a in ctx.data.get("apis", [])
    ):
        ctx.report(
            "E-NO-CPU-POOL",
            f"cluster {c['name']!r} has CPU APIs but only GPU pools",
            (*path, "pools"),
            "add a pool with a CPU VM size; CPU APIs never run on GPU pools",
        )
    plugin = c.get("nvidiaDevicePlugin", "auto")
    return Cluster(
        name=c["name"],
        aks_name=f"{az['namePrefix']}{'-' + env if env else ''}-{c['name']}-aks",
        kubernetes_version=c["kubernetesVersion"],
        namespace=c.get("namespace", "ai4ec"),
        system_pool=system,
        pools=pools,
        istio_revision=istio.get("revision", DEFAULT_MESH_REVISION),
        ingress=Ingress(
            protocol=protocol,
            external=ing.get("external", True),
            hosts=tuple(ing.get("hosts", ["*"])),
            certificate=cert,
            allowed_source_ranges=tuple(ing.get("allowedSourceRanges", [])),
            client_certificate=ing.get("clientCertificate", "required") == "required",
        ),
        keda=(c.get("keda") or {}).get("enabled", True),
        nvidia_device_plugin=plugin == "auto" and any(p.gpu for p in pools),
        admin_groups=tuple(dict.fromkeys(g.lower() for g in c.get("adminGroupObjectIds", ()))),
        json_path=format_path(path),
    )


def check_ingress_door(ctx: ModelContext, name: str, ing: dict[str, Any], at: JsonPath) -> None:
    """The ingress is a door around API Management unless it is HTTPS with a client certificate.

    Plain HTTP would carry task bodies (with SAS URLs) in clear and cannot check who
    calls, so only an environment that declares itself for development may use it, and
    it is warned about there. A gateway without a client certificate on a public load
    balancer admits anyone who finds its address; on an internal one the network is the
    door, so ``clientCertificate: disabled`` is allowed only there.
    """
    if ing.get("protocol", "https") == "http":
        if ctx.data.get("development", False):
            ctx.report(
                "W-INGRESS-HTTP",
                f"cluster {name!r}: the ingress accepts plain HTTP "
                f"(allowed only because environment {ctx.environment!r} is for development)",
                (*at, "protocol"),
                "task bodies and SAS URLs cross the network unencrypted; use protocol: https "
                "with a Key Vault certificate outside throwaway environments",
                warning=True,
            )
        else:
            ctx.report(
                "E-INGRESS-HTTP",
                f"cluster {name!r}: a plain HTTP ingress is allowed only in a development "
                f"environment, and {ctx.environment!r} is not one",
                (*at, "protocol"),
                "use protocol: https with istio.ingress.certificate, or declare the "
                "environment with environments.<env>.development: true",
            )
    elif ing.get("clientCertificate", "required") == "disabled" and ing.get("external", True):
        ctx.report(
            "E-INGRESS-MTLS-OFF",
            f"cluster {name!r}: clientCertificate: disabled on a public load balancer lets anyone "
            "who finds its address call the APIs around API Management",
            (*at, "clientCertificate"),
            "remove clientCertificate (mutual TLS is the default), or set external: false",
        )
