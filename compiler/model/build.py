"""Stage 3: schema-valid data -> :class:`~ai4ec.model.types.Platform`.

This is the one place where defaults are filled, names derived, references resolved
and semantic rules checked (rules that need more than one value: references, GPU
capacity, routes, cycles, Azure naming). Every problem becomes a located
:class:`~ai4ec.errors.Diagnostic`; all of them are collected before returning.

Runs only on data that passed the schema, so it may rely on types and required fields.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, Severity
from ..load import JsonPath, SourceMap, format_path
from ..resources import load_table
from .types import (
    Api,
    ApiManagement,
    Auth,
    Azure,
    Cache,
    Cluster,
    Cors,
    CustomDomain,
    Endpoint,
    EntraAuth,
    EventGrid,
    Functions,
    Ingress,
    KeyVault,
    Limit,
    Mode,
    Monitoring,
    Pipeline,
    PipelineStep,
    Platform,
    Pool,
    Probe,
    Probes,
    Product,
    Registry,
    Resources,
    Scaling,
    Schedule,
    SecretRef,
    Spot,
    Storage,
    Taint,
    TaskPolicy,
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
    }
)
_SECRETISH = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CONNECTION_STRING|SAS)$", re.I)
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


class _Ctx:
    """Collects diagnostics, located through the merged document's source map."""

    def __init__(self, source: SourceMap, environment: str) -> None:
        self.source = source
        self.environment = environment
        self.diagnostics: list[Diagnostic] = []

    def report(
        self,
        code: str,
        message: str,
        path: JsonPath,
        hint: str = "",
        *,
        warning: bool = False,
        prefer_key: bool = False,
    ) -> None:
        pos = self.source.locate(path, prefer_key=prefer_key)
        self.diagnostics.append(
            Diagnostic(
                code=code,
                message=message,
                file=self.source.file,
                line=pos.line if pos else None,
                col=pos.col if pos else None,
                json_path=format_path(path),
                hint=hint,
                severity=Severity.WARNING if warning else Severity.ERROR,
            )
        )


def build_model(
    data: dict[str, Any],
    source: SourceMap,
    environment: str,
    base_dir: Path | None = None,
) -> tuple[Platform | None, list[Diagnostic]]:
    """Build the model for one environment.

    Args:
        data: Merged, schema-valid document (no ``environments`` key needed).
        source: Source map of ``data``.
        environment: Environment name (``default`` when the file defines none).
        base_dir: Directory of platform.yaml, for relative file references.

    Returns:
        The platform (``None`` when any error was found) and every diagnostic.
    """
    ctx = _Ctx(source, environment)
    builder = _Builder(data, ctx, base_dir or Path())
    platform = builder.build()
    has_error = any(d.severity is Severity.ERROR for d in ctx.diagnostics)
    return (None if has_error else platform), ctx.diagnostics


def _uniq(*parts: str) -> str:
    # Azure needs globally unique names for several resources; a short, deterministic
    # hash of where the platform lives keeps them unique yet stable across builds.
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:5]


def _env_part(env: str, width: int) -> str:
    return "" if env == "default" else re.sub(r"[^a-z0-9]", "", env)[:width]


class _Builder:
    def __init__(self, data: dict[str, Any], ctx: _Ctx, base_dir: Path) -> None:
        self.d = data
        self.ctx = ctx
        self.base_dir = base_dir
        self.vm_sizes: dict[str, dict[str, Any]] = load_table("vm_sizes")["sizes"]
        self._by_name: dict[str, list[Api]] = {}
        self._by_name_for: list[Api] | None = None

    # -- top level -------------------------------------------------------------------
    def build(self) -> Platform:
        meta = self.d["metadata"]
        azure = self._azure()
        clusters = tuple(self._cluster(c, i) for i, c in enumerate(self.d["clusters"]))
        self._unique([c["name"] for c in self.d["clusters"]], ("clusters",), "cluster")
        apis = [self._api(a, i, clusters, azure) for i, a in enumerate(self.d.get("apis", []))]
        self._check_api_ids(apis)
        pipelines = self._pipelines(apis)
        apis = self._link_pipelines(apis, pipelines)
        self._check_routes(apis, pipelines)
        products = self._products(apis, pipelines)
        tags = dict(sorted((meta.get("tags") or {}).items()))
        tags.setdefault("ai4ec-platform", meta["name"])
        tags.setdefault("ai4ec-environment", self.ctx.environment)
        return Platform(
            name=meta["name"],
            description=meta.get("description", ""),
            environment=self.ctx.environment,
            tags=tuple(sorted(tags.items())),
            azure=azure,
            clusters=clusters,
            apis=tuple(apis),
            pipelines=tuple(pipelines),
            products=products,
            source_file=self.ctx.source.file,
        )

    def _unique(self, names: Iterable[Any], path: JsonPath, what: str) -> None:
        seen: dict[Any, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                self.ctx.report(
                    "E-DUPLICATE-NAME",
                    f"{what} {name!r} is defined twice (first at index {seen[name]})",
                    (*path, i),
                    f"give each {what} a unique name",
                )
            else:
                seen[name] = i

    # -- azure -----------------------------------------------------------------------
    def _azure(self) -> Azure:
        a = self.d["azure"]
        env = self.ctx.environment
        prefix = a["namePrefix"]
        u = _uniq(a["subscriptionId"].lower(), a["resourceGroup"].lower(), env)
        e4 = _env_part(env, 4)
        dash = f"-{_env_part(env, 10)}" if e4 else ""

        reg = a.get("registry") or {}
        apim = a["apiManagement"]
        cache = a.get("cache") or {}
        fn = a.get("functions") or {}
        eg = a.get("eventGrid") or {}
        mon = a.get("monitoring") or {}
        kv = a.get("keyVault") or {}
        st = a.get("storage") or {}

        apim_sku = apim.get("sku", "Developer")
        apim_capacity = apim.get("capacity", 0 if apim_sku == "Consumption" else 1)
        if apim_sku == "Consumption" and apim_capacity != 0:
            self.ctx.report(
                "E-APIM-CAPACITY",
                "the Consumption tier has no capacity units",
                ("azure", "apiManagement", "capacity"),
                "remove capacity or set it to 0",
            )
        if apim_sku != "Consumption" and apim_capacity < 1:
            self.ctx.report(
                "E-APIM-CAPACITY",
                f"the {apim_sku} tier needs at least 1 capacity unit",
                ("azure", "apiManagement", "capacity"),
            )
        if apim_sku == "Developer" and apim_capacity > 1:
            self.ctx.report(
                "E-APIM-CAPACITY",
                "the Developer tier has exactly 1 unit",
                ("azure", "apiManagement", "capacity"),
            )
        cache_sku = cache.get("sku", "Basic")
        family = cache.get("family", "P" if cache_sku == "Premium" else "C")
        capacity = cache.get("capacity", 1)
        if (cache_sku == "Premium") != (family == "P"):
            self.ctx.report(
                "E-CACHE-SKU",
                f"Redis {cache_sku} uses family {'P' if cache_sku == 'Premium' else 'C'}, "
                f"not {family}",
                ("azure", "cache", "family"),
                "omit family; ai4ec derives it from the SKU",
            )
        elif family == "P" and not 1 <= capacity <= 5:
            self.ctx.report(
                "E-CACHE-SKU",
                f"Premium Redis sizes are P1-P5, not P{capacity}",
                ("azure", "cache", "capacity"),
            )
        ttl_minutes = math.ceil(seconds(eg.get("eventTtl", "1d")) / 60)
        if ttl_minutes > 1440:
            self.ctx.report(
                "E-SCHEMA-RANGE",
                f"eventTtl is {ttl_minutes} minutes; Event Grid keeps events at most 1440",
                ("azure", "eventGrid", "eventTtl"),
            )

        azure = Azure(
            subscription_id=a["subscriptionId"].lower(),
            tenant_id=a.get("tenantId"),
            resource_group=a["resourceGroup"],
            location=a["location"],
            name_prefix=prefix,
            registry=Registry(
                name=reg.get("name", f"{prefix}{e4}acr{u}"), sku=reg.get("sku", "Basic")
            ),
            api_management=ApiManagement(
                name=apim.get("name", f"{prefix}{dash}-apim-{u}"),
                sku=apim_sku,
                capacity=apim_capacity,
                publisher_name=apim["publisherName"],
                publisher_email=apim["publisherEmail"],
                custom_domain=(
                    CustomDomain(
                        host_name=apim["customDomain"]["hostName"],
                        key_vault_certificate=apim["customDomain"]["keyVaultCertificate"],
                    )
                    if "customDomain" in apim
                    else None
                ),
            ),
            cache=Cache(
                name=f"{prefix}{dash}-redis-{u}", sku=cache_sku, family=family, capacity=capacity
            ),
            functions=Functions(
                app_name=f"{prefix}{dash}-tasks-{u}",
                plan_name=f"{prefix}{dash}-tasks-plan",
                plan_sku=fn.get("planSku", "EP1"),
                minimum_instances=fn.get("minimumInstances", 1),
            ),
            event_grid=EventGrid(
                topic_name=f"{prefix}{dash}-tasks-{u}",
                max_delivery_attempts=eg.get("maxDeliveryAttempts", 30),
                event_ttl_minutes=min(ttl_minutes, 1440),
            ),
            monitoring=Monitoring(
                workspace_name=f"{prefix}{dash}-logs",
                app_insights_name=f"{prefix}{dash}-appi",
                retention_days=mon.get("retentionDays", 30),
                daily_cap_gb=mon.get("dailyCapGb"),
            ),
            key_vault=KeyVault(
                name=kv.get("name", f"{prefix}-{e4 + '-' if e4 else ''}kv-{u}"),
                sku=kv.get("sku", "standard"),
                soft_delete_retention_days=kv.get("softDeleteRetentionDays", 90),
                purge_protection=kv.get("purgeProtection", True),
            ),
            storage=Storage(
                name=st.get("name", f"{prefix}{e4}st{u}"),
                sku=st.get("sku", "Standard_LRS"),
                results_container=st.get("resultsContainer", "results"),
            ),
        )
        self._check_azure_names(azure, a)
        return azure

    def _check_azure_names(self, az: Azure, raw: dict[str, Any]) -> None:
        # (name, rule regex, human rule, path of an override or of namePrefix)
        def where(section: str) -> JsonPath:
            return (
                ("azure", section, "name")
                if "name" in (raw.get(section) or {})
                else ("azure", "namePrefix")
            )

        rules = [
            (
                az.storage.name,
                r"[a-z0-9]{3,24}",
                "storage account names are 3-24 lowercase letters and digits",
                where("storage"),
            ),
            (
                az.key_vault.name,
                r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]",
                "Key Vault names are 3-24 letters, digits and single hyphens, starting "
                "with a letter",
                where("keyVault"),
            ),
            (
                az.registry.name,
                r"[a-zA-Z0-9]{5,50}",
                "registry names are 5-50 letters and digits",
                where("registry"),
            ),
            (
                az.api_management.name,
                r"[a-zA-Z](?:[a-zA-Z0-9-]{0,48}[a-zA-Z0-9])?",
                "API Management names are 1-50 letters, digits and hyphens, starting with a letter",
                where("apiManagement"),
            ),
        ]
        for name, pattern, rule, path in rules:
            if not re.fullmatch(pattern, name):
                self.ctx.report("E-AZURE-NAME", f"invalid Azure name {name!r}: {rule}", path)

    # -- clusters ----------------------------------------------------------------------
    def _pool(self, p: dict[str, Any], path: JsonPath, system: bool = False) -> Pool:
        vm = p.get("vmSize", "Standard_D4s_v5")
        info = self.vm_sizes.get(vm)
        known_gpus = info["gpus"] if info else None
        gpu = p.get("gpu")
        if info is None and not system:
            self.ctx.report(
                "W-VM-UNKNOWN",
                f"ai4ec does not know VM size {vm!r}; GPU and capacity checks are skipped",
                (*path, "vmSize"),
                "check the spelling, or set `gpu:` explicitly",
                warning=True,
            )
        if gpu is True and known_gpus == 0:
            self.ctx.report(
                "E-GPU-POOL",
                f"pool {p.get('name', 'system')!r} says gpu: true but {vm} has no GPU",
                (*path, "gpu"),
                "pick a GPU VM size (e.g. Standard_NC6s_v3) or remove `gpu: true`",
            )
        if gpu is None:
            gpu = bool(known_gpus)
        if "count" in p and "autoscale" in p:
            self.ctx.report(
                "E-POOL-SIZE",
                "give either `count` or `autoscale`, not both",
                (*path, "autoscale"),
                prefer_key=True,
            )
        if not system and "count" not in p and "autoscale" not in p:
            self.ctx.report(
                "E-POOL-SIZE",
                f"pool {p['name']!r} needs `count` or `autoscale`",
                path,
                "e.g. autoscale: {min: 0, max: 3}",
            )
        auto = p.get("autoscale")
        if auto and auto["min"] > auto["max"]:
            self.ctx.report(
                "E-MIN-MAX",
                f"autoscale min ({auto['min']}) is greater than max ({auto['max']})",
                (*path, "autoscale", "min"),
            )
        if system and auto and auto["min"] < 1:
            self.ctx.report(
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

    def _cluster(self, c: dict[str, Any], index: int) -> Cluster:
        path: JsonPath = ("clusters", index)
        az = self.d["azure"]
        env = _env_part(self.ctx.environment, 10)
        pools = tuple(self._pool(p, (*path, "pools", i)) for i, p in enumerate(c["pools"]))
        self._unique([p["name"] for p in c["pools"]], (*path, "pools"), "node pool")
        system = self._pool(c.get("systemPool") or {}, (*path, "systemPool"), system=True)
        istio = c.get("istio") or {}
        ing = istio.get("ingress") or {}
        protocol = ing.get("protocol", "https")
        cert = (ing.get("certificate") or {}).get("keyVaultCertificate")
        if protocol == "https" and not cert:
            self.ctx.report(
                "E-INGRESS-CERT",
                f"cluster {c['name']!r}: an HTTPS ingress needs a Key Vault certificate",
                (*path, "istio", "ingress") if ing else path,
                "add istio.ingress.certificate.keyVaultCertificate, or set protocol: http",
            )
        if not any(not p.gpu for p in pools) and any(
            not self._api_wants_gpu(a) and self._api_cluster_name(a) == c["name"]
            for a in self.d.get("apis", [])
        ):
            self.ctx.report(
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
            istio_revision=istio.get("revision", "asm-1-25"),
            ingress=Ingress(
                protocol=protocol,
                external=ing.get("external", True),
                hosts=tuple(ing.get("hosts", ["*"])),
                certificate=cert,
                allowed_source_ranges=tuple(ing.get("allowedSourceRanges", [])),
            ),
            keda=(c.get("keda") or {}).get("enabled", True),
            nvidia_device_plugin=plugin == "auto" and any(p.gpu for p in pools),
            json_path=format_path(path),
        )

    @staticmethod
    def _api_wants_gpu(a: dict[str, Any]) -> bool:
        return bool((a.get("resources") or {}).get("gpu", 0))

    def _api_cluster_name(self, a: dict[str, Any]) -> str | None:
        if "cluster" in a:
            return str(a["cluster"])
        clusters = self.d["clusters"]
        return str(clusters[0]["name"]) if len(clusters) == 1 else None

    # -- apis ------------------------------------------------------------------------
    def _api(
        self, a: dict[str, Any], index: int, clusters: tuple[Cluster, ...], azure: Azure
    ) -> Api:
        path: JsonPath = ("apis", index)
        api_id = f"{a['name']}-{a['version']}"
        mode = Mode(a.get("mode", "sync"))
        base = a.get("basePath") or (
            f"/{a['version']}/{a['organization']}/{a['name']}"
            if a.get("organization")
            else f"/{a['version']}/{a['name']}"
        )
        base = base.rstrip("/") or "/"
        prefix = (a.get("apiPrefix") or base).rstrip("/") or "/"

        cluster = self._resolve_cluster(a, path, clusters)
        res = a.get("resources") or {}
        gpu = res.get("gpu", 0)
        pool_name = self._resolve_pool(a, path, cluster, gpu, res)

        endpoints = self._endpoints(a, path, mode, base)
        scaling = self._scaling(a, path, endpoints)
        env, secrets = self._env(a, path)
        image = a["image"]
        first = image.split("/", 1)[0]
        if "/" not in image or not ("." in first or ":" in first or first == "localhost"):
            image = f"{azure.registry.login_server}/{image}"
        openapi = a.get("openapi")
        if openapi is not None and not (self.base_dir / openapi).is_file():
            self.ctx.report(
                "E-REF-FILE",
                f"OpenAPI file {openapi!r} not found next to the platform file",
                (*path, "openapi"),
                "paths are relative to the directory of platform.yaml",
            )
        probes = a.get("probes") or {}
        health = prefix.rstrip("/") + "/"
        return Api(
            id=api_id,
            name=a["name"],
            version=a["version"],
            display_name=a.get("displayName", f"{a['name']} {a['version']}"),
            description=a.get("description", ""),
            base_path=base,
            api_prefix=prefix,
            image=image,
            cluster=cluster.name if cluster else "",
            pool=pool_name,
            port=a.get("port", 1212),
            endpoints=endpoints,
            openapi=openapi,
            probes=Probes(
                readiness=_probe(probes.get("readiness"), health, 5, 10, 5, 3),
                liveness=_probe(probes.get("liveness"), health, 30, 20, 5, 3),
                startup=_probe(probes.get("startup"), health, 0, 10, 5, 60),
            ),
            resources=Resources(
                cpu=quantity_text(res.get("cpu", "500m")),
                memory=quantity_text(res.get("memory", "1Gi")),
                gpu=gpu,
                cpu_limit=quantity_text(res["cpuLimit"]) if "cpuLimit" in res else None,
            ),
            env=env,
            secrets=secrets,
            scaling=scaling,
            concurrency=a.get("concurrency", 1),
            tasks=_tasks(a.get("tasks")),
            products=tuple(a.get("products", [])),
            auth=_auth(a.get("auth")),
            cors=_cors(a.get("cors")),
            upstream_status_codes=(a.get("compatibility") or {}).get("upstreamStatusCodes", False),
            json_path=format_path(path),
        )

    def _resolve_cluster(
        self, a: dict[str, Any], path: JsonPath, clusters: tuple[Cluster, ...]
    ) -> Cluster | None:
        names = [c.name for c in clusters]
        if "cluster" in a:
            for c in clusters:
                if c.name == a["cluster"]:
                    return c
            self.ctx.report(
                "E-REF-CLUSTER",
                f"API {a['name']!r} runs on unknown cluster {a['cluster']!r}",
                (*path, "cluster"),
                f"defined clusters: {', '.join(names)}",
            )
            return None
        if len(clusters) == 1:
            return clusters[0]
        self.ctx.report(
            "E-AMBIGUOUS-CLUSTER",
            f"API {a['name']!r} does not say which cluster it runs on",
            path,
            f"add `cluster:` (one of {', '.join(names)})",
        )
        return None

    def _resolve_pool(
        self,
        a: dict[str, Any],
        path: JsonPath,
        cluster: Cluster | None,
        gpu: int,
        res: dict[str, Any],
    ) -> str:
        if cluster is None:
            return str(a.get("pool", ""))
        pools = {p.name: p for p in cluster.pools}
        pool: Pool | None = None
        if "pool" in a:
            pool = pools.get(a["pool"])
            if pool is None:
                self.ctx.report(
                    "E-REF-POOL",
                    f"API {a['name']!r} uses unknown pool {a['pool']!r} of cluster "
                    f"{cluster.name!r}",
                    (*path, "pool"),
                    f"pools of {cluster.name}: {', '.join(pools)}",
                )
                return str(a["pool"])
        elif gpu:
            gpu_pools = cluster.gpu_pools
            if len(gpu_pools) == 1:
                pool = gpu_pools[0]
            else:
                self.ctx.report(
                    "E-AMBIGUOUS-POOL" if gpu_pools else "E-GPU-POOL",
                    f"API {a['name']!r} needs a GPU but "
                    + (
                        "the cluster has several GPU pools"
                        if gpu_pools
                        else f"cluster {cluster.name!r} has no GPU pool"
                    ),
                    (*path, "resources", "gpu"),
                    "add `pool:` naming a GPU pool" if gpu_pools else "add a GPU node pool",
                )
                return ""
        if pool is None:
            return ""  # any CPU pool: the chart keeps it off GPU pools
        if gpu and not pool.gpu:
            self.ctx.report(
                "E-GPU-POOL",
                f"API {a['name']!r} requests {gpu} GPU(s) but pool {pool.name!r} "
                f"({pool.vm_size}) has none",
                (*path, "pool"),
                "place it on a GPU pool",
            )
        elif gpu and pool.gpus_per_node is not None and gpu > pool.gpus_per_node:
            self.ctx.report(
                "E-GPU-CAPACITY",
                f"API {a['name']!r} requests {gpu} GPUs but a {pool.vm_size} node has "
                f"{pool.gpus_per_node}",
                (*path, "resources", "gpu"),
                "lower the request or pick a larger VM size; replicas cannot span nodes",
            )
        elif not gpu and pool.gpu:
            self.ctx.report(
                "W-CPU-ON-GPU-POOL",
                f"CPU API {a['name']!r} is placed on GPU pool {pool.name!r}",
                (*path, "pool"),
                "GPU nodes are expensive; use a CPU pool unless this is intended",
                warning=True,
            )
        if pool.vcpus is not None and "cpu" in res and quantity(res["cpu"]) > pool.vcpus:
            self.ctx.report(
                "E-RESOURCE-CAPACITY",
                f"API {a['name']!r} requests {res['cpu']} CPU but a {pool.vm_size} node has "
                f"{pool.vcpus}",
                (*path, "resources", "cpu"),
            )
        if (
            pool.memory_gib is not None
            and "memory" in res
            and quantity(res["memory"]) > pool.memory_gib * 2**30
        ):
            self.ctx.report(
                "E-RESOURCE-CAPACITY",
                f"API {a['name']!r} requests {res['memory']} memory but a {pool.vm_size} node "
                f"has {pool.memory_gib:g}Gi",
                (*path, "resources", "memory"),
            )
        return pool.name

    def _endpoints(
        self, a: dict[str, Any], path: JsonPath, mode: Mode, base: str
    ) -> tuple[Endpoint, ...]:
        out = []
        seen_names: dict[str, int] = {}
        for i, e in enumerate(a["endpoints"]):
            epath: JsonPath = (*path, "endpoints", i)
            emode = Mode(e.get("mode", mode))
            methods = tuple(e.get("methods", ["POST"]))
            if emode is Mode.ASYNC and "POST" not in methods:
                self.ctx.report(
                    "E-ASYNC-METHOD",
                    f"async endpoint {e['path']!r} must accept POST (the task body is JSON)",
                    (*epath, "methods"),
                )
            default_timeout = DEFAULT_ASYNC_TIMEOUT if emode is Mode.ASYNC else DEFAULT_SYNC_TIMEOUT
            timeout = seconds(e.get("timeout", default_timeout))
            if emode is Mode.SYNC and timeout > APIM_MAX_SYNC_TIMEOUT:
                self.ctx.report(
                    "W-SYNC-TIMEOUT",
                    f"sync endpoint {e['path']!r} waits {timeout}s; API Management gives up "
                    f"after {APIM_MAX_SYNC_TIMEOUT}s",
                    (*epath, "timeout"),
                    "make long-running work async",
                    warning=True,
                )
            rel = e["path"].rstrip("/") or "/"
            name = e.get("name") or _op_name(rel)
            if name in seen_names:
                self.ctx.report(
                    "E-DUPLICATE-ROUTE",
                    f"API {a['name']!r} has two endpoints named/at {rel!r}",
                    (*epath, "path"),
                    f"first defined at endpoints[{seen_names[name]}]",
                )
            seen_names[name] = i
            backend = (base.rstrip("/") + rel) if rel != "/" else base
            out.append(
                Endpoint(
                    name=name,
                    path=rel,
                    backend_path=backend,
                    methods=methods,
                    mode=emode,
                    timeout_seconds=timeout,
                    max_body_bytes=byte_size(e.get("maxBodySize", "4Mi")),
                    description=e.get("description", ""),
                    json_path=format_path(epath),
                )
            )
        return tuple(out)

    def _scaling(
        self, a: dict[str, Any], path: JsonPath, endpoints: tuple[Endpoint, ...]
    ) -> Scaling:
        s = a.get("scaling") or {}
        spath: JsonPath = (*path, "scaling")
        mn = s.get("minReplicas", 1)
        mx = s.get("maxReplicas", max(3, mn))
        all_async = all(e.mode is Mode.ASYNC for e in endpoints)
        if mn > mx:
            self.ctx.report(
                "E-MIN-MAX",
                f"minReplicas ({mn}) is greater than maxReplicas ({mx})",
                (*spath, "minReplicas"),
            )
        if mn == 0 and not all_async:
            self.ctx.report(
                "E-SCALE-ZERO-SYNC",
                f"API {a['name']!r} cannot scale to zero: it has sync endpoints",
                (*spath, "minReplicas"),
                "sync callers would wait for a cold start; keep minReplicas >= 1 or make "
                "every endpoint async",
            )
        pending = s.get("pendingTasksPerReplica")
        if pending is not None and not any(e.mode is Mode.ASYNC for e in endpoints):
            self.ctx.report(
                "E-SCALING-RULE",
                f"API {a['name']!r} has no async endpoint, so there are no pending tasks to "
                "scale on",
                (*spath, "pendingTasksPerReplica"),
                "use cpuUtilization or requestsPerSecond",
            )
        if pending is None and any(e.mode is Mode.ASYNC for e in endpoints):
            pending = a.get("concurrency", 1)
        cpu = s.get("cpuUtilization")
        if cpu is None and not any(
            k in s for k in ("memoryUtilization", "requestsPerSecond", "pendingTasksPerReplica")
        ):
            cpu = 80
        schedules = []
        for i, sch in enumerate(s.get("schedules", [])):
            if sch["minReplicas"] > mx:
                self.ctx.report(
                    "E-MIN-MAX",
                    f"schedule minReplicas ({sch['minReplicas']}) exceeds maxReplicas ({mx})",
                    (*spath, "schedules", i, "minReplicas"),
                )
            schedules.append(
                Schedule(
                    name=sch.get("name", f"window-{i}"),
                    start=sch["start"],
                    end=sch["end"],
                    timezone=sch.get("timezone", "Etc/UTC"),
                    min_replicas=sch["minReplicas"],
                )
            )
        return Scaling(
            min_replicas=mn,
            max_replicas=mx,
            pending_tasks_per_replica=pending,
            cpu_utilization=cpu,
            memory_utilization=s.get("memoryUtilization"),
            requests_per_second=s.get("requestsPerSecond"),
            schedules=tuple(schedules),
            cooldown_seconds=seconds(s.get("cooldown", "5m")),
        )

    def _env(
        self, a: dict[str, Any], path: JsonPath
    ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, SecretRef], ...]]:
        env: dict[str, str] = {}
        for k, v in (a.get("env") or {}).items():
            if k in RESERVED_ENV:
                self.ctx.report(
                    "E-ENV-RESERVED",
                    f"{k} is set by the platform and cannot be overridden",
                    (*path, "env", k),
                    prefer_key=True,
                )
                continue
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            if _SECRETISH.search(k) and text:
                self.ctx.report(
                    "W-ENV-SECRET",
                    f"env {k} looks like a secret but is written in plain text",
                    (*path, "env", k),
                    "move it to `secrets:` with a Key Vault reference",
                    warning=True,
                )
            env[k] = text
        secrets: dict[str, SecretRef] = {}
        for k, ref in (a.get("secrets") or {}).items():
            if k in RESERVED_ENV:
                self.ctx.report(
                    "E-ENV-RESERVED",
                    f"{k} is set by the platform and cannot be overridden",
                    (*path, "secrets", k),
                    prefer_key=True,
                )
                continue
            if k in env:
                self.ctx.report(
                    "E-DUPLICATE-NAME",
                    f"{k} is both a plain env value and a secret",
                    (*path, "secrets", k),
                    prefer_key=True,
                )
            secrets[k] = SecretRef(
                key_vault_secret=ref["keyVaultSecret"], version=ref.get("version")
            )
        return tuple(sorted(env.items())), tuple(sorted(secrets.items()))

    def _check_api_ids(self, apis: list[Api]) -> None:
        self._unique([a.id for a in apis], ("apis",), "API (name + version)")

    # -- pipelines ---------------------------------------------------------------------
    def _find_api(
        self, name: str, version: str | None, apis: list[Api], path: JsonPath, what: str
    ) -> Api | None:
        if self._by_name_for is not apis:
            self._by_name = {}
            for a in apis:
                self._by_name.setdefault(a.name, []).append(a)
            self._by_name_for = apis
        matches = [
            a for a in self._by_name.get(name, []) if version is None or a.version == version
        ]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            known = sorted({f"{a.name}@{a.version}" for a in apis})
            close = [k for k in known if k.split("@")[0] == name]
            self.ctx.report(
                "E-REF-API",
                f"{what} references unknown API {name!r}"
                + (f" version {version!r}" if version else ""),
                path,
                f"known versions: {', '.join(close)}"
                if close
                else (f"defined APIs: {', '.join(known)}" if known else "define it under `apis`"),
            )
            return None
        self.ctx.report(
            "E-AMBIGUOUS-VERSION",
            f"{what} references API {name!r}, which exists in versions "
            f"{', '.join(a.version for a in matches)}",
            path,
            "name the version",
        )
        return None

    def _pipelines(self, apis: list[Api]) -> list[Pipeline]:
        raw = self.d.get("pipelines", [])
        self._unique(
            [f"{p['name']}-{p['version']}" for p in raw],
            ("pipelines",),
            "pipeline (name + version)",
        )
        by_name: dict[str, list[int]] = {}
        for i, p in enumerate(raw):
            by_name.setdefault(p["name"], []).append(i)
        expanded: dict[int, list[PipelineStep] | None] = {}

        def expand(i: int, stack: tuple[int, ...]) -> list[PipelineStep] | None:
            if i in expanded:
                return expanded[i]
            p = raw[i]
            steps: list[PipelineStep] | None = []
            for j, s in enumerate(p["steps"]):
                spath: JsonPath = ("pipelines", i, "steps", j)
                if "pipeline" in s:
                    target = self._resolve_pipeline(s, by_name, raw, spath)
                    if target is None:
                        steps = None
                        continue
                    if target in stack or target == i:
                        cycle = " -> ".join(raw[k]["name"] for k in (*stack, i, target))
                        self.ctx.report(
                            "E-PIPELINE-CYCLE",
                            f"pipeline {p['name']!r} includes itself: {cycle}",
                            (*spath, "pipeline"),
                        )
                        steps = None
                        continue
                    sub = expand(target, (*stack, i))
                    if sub is None or steps is None:
                        steps = None
                        continue
                    steps.extend(sub)
                    continue
                api = self._find_api(s["api"], s.get("version"), apis, (*spath, "api"), "step")
                if api is None:
                    steps = None
                    continue
                rel = s["endpoint"].rstrip("/") or "/"
                ep = next((e for e in api.endpoints if e.path == rel), None)
                if ep is None:
                    self.ctx.report(
                        "E-REF-ENDPOINT",
                        f"API {api.id!r} has no endpoint {rel!r}",
                        (*spath, "endpoint"),
                        f"its endpoints: {', '.join(e.path for e in api.endpoints)}",
                    )
                    steps = None
                    continue
                if ep.mode is not Mode.ASYNC:
                    self.ctx.report(
                        "E-PIPELINE-STEP-SYNC",
                        f"step {api.id} {rel} is a sync endpoint; pipeline steps are "
                        "dispatched as tasks",
                        (*spath, "endpoint"),
                        "make the endpoint async (mode: async)",
                    )
                    steps = None
                    continue
                if steps is not None:
                    steps.append(PipelineStep(api=api.id, endpoint_path=ep.backend_path))
            expanded[i] = steps
            return steps

        out: list[Pipeline] = []
        for i, p in enumerate(raw):
            steps = expand(i, ())
            if steps is None:
                continue
            paths = [s.endpoint_path for s in steps]
            dup = next((x for x in paths if paths.count(x) > 1), None)
            if dup is not None:
                self.ctx.report(
                    "E-PIPELINE-CYCLE",
                    f"pipeline {p['name']!r} visits {dup} twice; the task manager routes by "
                    "endpoint, so the task would loop",
                    ("pipelines", i, "steps"),
                    "each endpoint may appear once per pipeline",
                )
                continue
            if len(steps) < 2:
                self.ctx.report(
                    "W-PIPELINE-SHORT",
                    f"pipeline {p['name']!r} has a single step; the API itself would do",
                    ("pipelines", i, "steps"),
                    warning=True,
                )
            out.append(
                Pipeline(
                    id=f"{p['name']}-{p['version']}",
                    name=p["name"],
                    version=p["version"],
                    display_name=p.get("displayName", f"{p['name']} {p['version']}"),
                    description=p.get("description", ""),
                    path=(p.get("path") or f"/{p['version']}/{p['name']}").rstrip("/"),
                    steps=tuple(steps),
                    max_body_bytes=byte_size(p.get("maxBodySize", "4Mi")),
                    tasks=_tasks(p.get("tasks")),
                    products=tuple(p.get("products", [])),
                    auth=_auth(p.get("auth")),
                    cors=_cors(p.get("cors")),
                    upstream_status_codes=(p.get("compatibility") or {}).get(
                        "upstreamStatusCodes", False
                    ),
                    json_path=format_path(("pipelines", i)),
                )
            )
        return out

    def _resolve_pipeline(
        self,
        step: dict[str, Any],
        by_name: dict[str, list[int]],
        raw: list[dict[str, Any]],
        path: JsonPath,
    ) -> int | None:
        name, version = step["pipeline"], step.get("version")
        cands = [
            i for i in by_name.get(name, []) if version is None or raw[i]["version"] == version
        ]
        if len(cands) == 1:
            return cands[0]
        if not cands:
            self.ctx.report(
                "E-REF-PIPELINE",
                f"step references unknown pipeline {name!r}",
                (*path, "pipeline"),
                f"defined pipelines: {', '.join(sorted(by_name)) or 'none'}",
            )
        else:
            self.ctx.report(
                "E-AMBIGUOUS-VERSION",
                f"step references pipeline {name!r}, which has several versions",
                (*path, "pipeline"),
                "add `version:`",
            )
        return None

    def _pipeline_index(self) -> dict[str, int]:
        """Pipeline id -> index in the document, for locating its diagnostics."""
        return {f"{r['name']}-{r['version']}": k for k, r in enumerate(self.d.get("pipelines", []))}

    def _link_pipelines(self, apis: list[Api], pipelines: list[Pipeline]) -> list[Api]:
        nxt: dict[str, set[tuple[str, str]]] = {}
        for p in pipelines:
            for cur, following in zip(p.steps, p.steps[1:], strict=False):
                nxt.setdefault(cur.api, set()).add((cur.endpoint_path, following.api))
        if not nxt:
            return apis
        return [replace(a, next_in_pipeline=tuple(sorted(nxt.get(a.id, ())))) for a in apis]

    # -- routes ----------------------------------------------------------------------
    def _check_routes(self, apis: list[Api], pipelines: list[Pipeline]) -> None:
        # Public APIM paths must be unique: one APIM API per API version and pipeline.
        public: dict[str, str] = {}
        for i, a in enumerate(apis):
            prev = public.get(a.base_path)
            if prev == f"API {a.id!r}":
                continue  # the same API defined twice: E-DUPLICATE-NAME says it
            if prev:
                self.ctx.report(
                    "E-DUPLICATE-ROUTE",
                    f"API {a.id!r} uses base path {a.base_path!r}, already used by {prev}",
                    ("apis", i, "basePath") if "basePath" in self.d["apis"][i] else ("apis", i),
                    "give each API version its own base path",
                )
            else:
                public[a.base_path] = f"API {a.id!r}"
        raw_index = self._pipeline_index()
        # Every proper prefix of every public path, to find nesting in O(total depth).
        under: dict[str, str] = {}
        for path_, owner in public.items():
            for ancestor in _ancestors(path_):
                under.setdefault(ancestor, owner)
        for p in pipelines:
            idx = raw_index[p.id]
            clash = public.get(p.path) or under.get(p.path)
            if clash is None:
                clash = next((public[x] for x in _ancestors(p.path) if x in public), None)
            if clash:
                self.ctx.report(
                    "E-DUPLICATE-ROUTE",
                    f"pipeline {p.id!r} path {p.path!r} collides with {clash}",
                    ("pipelines", idx, "path")
                    if "path" in self.d["pipelines"][idx]
                    else ("pipelines", idx),
                    "pick a path no API uses",
                )
            else:
                public[p.path] = f"pipeline {p.id!r}"
        # Nested base paths would make Istio prefix routes shadow each other.
        by_base = {(a.cluster, a.base_path): a for a in apis}
        for i, a in enumerate(apis):
            outer = next(
                (
                    by_base[(a.cluster, x)]
                    for x in _ancestors(a.base_path)
                    if (a.cluster, x) in by_base
                ),
                None,
            )
            if outer is not None:
                self.ctx.report(
                    "E-DUPLICATE-ROUTE",
                    f"API {a.id!r} base path {a.base_path!r} lies under API {outer.id!r} "
                    f"({outer.base_path!r})",
                    ("apis", i),
                    "base paths must not nest; Istio could route to the wrong API",
                )

    # -- products ----------------------------------------------------------------------
    def _products(self, apis: list[Api], pipelines: list[Pipeline]) -> tuple[Product, ...]:
        raw = self.d.get("products", [])
        self._unique([p["name"] for p in raw], ("products",), "product")
        names = {p["name"] for p in raw}
        members_api: dict[str, set[str]] = {n: set() for n in names}
        members_pipe: dict[str, set[str]] = {n: set() for n in names}
        for i, a in enumerate(apis):
            for j, prod in enumerate(a.products):
                if prod not in names:
                    self._unknown_product(prod, ("apis", i, "products", j), names)
                else:
                    members_api[prod].add(a.id)
        raw_pipes = self.d.get("pipelines", [])
        raw_index = self._pipeline_index()
        for p in pipelines:
            idx = raw_index[p.id]
            for j, prod in enumerate(p.products):
                if prod not in names:
                    self._unknown_product(prod, ("pipelines", idx, "products", j), names)
                else:
                    members_pipe[prod].add(p.id)
        pipe_objs = [(p.name, p.version, p.id) for p in pipelines]
        for i, prod in enumerate(raw):
            for j, ref in enumerate(prod.get("apis", [])):
                name, _, version = ref.partition("@")
                if version:
                    api = self._find_api(
                        name, version, apis, ("products", i, "apis", j), f"product {prod['name']!r}"
                    )
                    if api:
                        members_api[prod["name"]].add(api.id)
                    continue
                matched = [a.id for a in apis if a.name == name]
                if not matched:
                    self._find_api(
                        name, None, apis, ("products", i, "apis", j), f"product {prod['name']!r}"
                    )
                members_api[prod["name"]].update(matched)
            for j, ref in enumerate(prod.get("pipelines", [])):
                name, _, version = ref.partition("@")
                matched = [
                    pid for n, v, pid in pipe_objs if n == name and (not version or v == version)
                ]
                if not matched and not any(r["name"] == name for r in raw_pipes):
                    self.ctx.report(
                        "E-REF-PIPELINE",
                        f"product {prod['name']!r} references unknown pipeline {ref!r}",
                        ("products", i, "pipelines", j),
                        "defined pipelines: "
                        + (", ".join(sorted({r["name"] for r in raw_pipes})) or "none"),
                    )
                members_pipe[prod["name"]].update(matched)
        out = []
        for i, prod in enumerate(raw):
            n = prod["name"]
            if not members_api[n] and not members_pipe[n]:
                self.ctx.report(
                    "W-PRODUCT-EMPTY",
                    f"product {n!r} contains no API or pipeline",
                    ("products", i),
                    warning=True,
                )
            out.append(
                Product(
                    name=n,
                    display_name=prod.get("displayName", n),
                    description=prod.get("description", ""),
                    subscription_required=prod.get("subscriptionRequired", True),
                    approval_required=prod.get("approvalRequired", False),
                    subscriptions_limit=prod.get("subscriptionsLimit"),
                    published=prod.get("published", True),
                    rate_limit=_limit(prod.get("rateLimit")),
                    quota=_limit(prod.get("quota")),
                    apis=tuple(sorted(members_api[n])),
                    pipelines=tuple(sorted(members_pipe[n])),
                    json_path=format_path(("products", i)),
                )
            )
        in_product = {m for p in out for m in (*p.apis, *p.pipelines)}
        for i, a in enumerate(apis):
            if a.auth.subscription_key and a.id not in in_product:
                self.ctx.report(
                    "W-API-NO-PRODUCT",
                    f"API {a.id!r} requires a subscription key but is in no product, so no "
                    "caller can get one",
                    ("apis", i),
                    "add it to a product, or set auth.subscriptionKey: false",
                    warning=True,
                )
        return tuple(out)

    def _unknown_product(self, name: str, path: JsonPath, names: set[str]) -> None:
        close = sorted(names)
        self.ctx.report(
            "E-REF-PRODUCT",
            f"unknown product {name!r}",
            path,
            f"defined products: {', '.join(close)}" if close else "define it under `products`",
        )


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``['/a', '/a/b']`` (proper prefixes at segment boundaries)."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _op_name(rel: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", rel.lower()).strip("-")
    return slug or "root"


def _probe(
    raw: dict[str, Any] | None, health: str, delay: int, period: int, timeout: int, failures: int
) -> Probe:
    raw = raw or {}
    return Probe(
        path=raw.get("path", health),
        initial_delay_seconds=raw.get("initialDelaySeconds", delay),
        period_seconds=raw.get("periodSeconds", period),
        timeout_seconds=raw.get("timeoutSeconds", timeout),
        failure_threshold=raw.get("failureThreshold", failures),
    )


def _tasks(raw: dict[str, Any] | None) -> TaskPolicy:
    raw = raw or {}
    retry = raw.get("retry") or {}
    return TaskPolicy(
        ttl_seconds=seconds(raw.get("ttl", "7d")),
        max_attempts=retry.get("maxAttempts", 3),
        backoff_seconds=seconds(retry.get("backoff", "30s")),
    )


def _auth(raw: dict[str, Any] | None) -> Auth:
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


def _cors(raw: dict[str, Any] | None) -> Cors | None:
    if not raw:
        return None
    return Cors(
        allowed_origins=tuple(raw["allowedOrigins"]),
        allowed_methods=tuple(raw.get("allowedMethods", ["GET", "POST"])),
        allowed_headers=tuple(raw.get("allowedHeaders", ["*"])),
        allow_credentials=raw.get("allowCredentials", False),
        max_age_seconds=seconds(raw.get("maxAge", "10m")),
    )


def _limit(raw: dict[str, Any] | None) -> Limit | None:
    if not raw:
        return None
    return Limit(calls=raw["calls"], period_seconds=seconds(raw["period"]))
