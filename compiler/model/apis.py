"""APIs: cluster and pool placement, endpoints, scaling and container environment."""

from __future__ import annotations

from typing import Any

from ..load import JsonPath, format_path
from .context import ModelContext
from .defaults import (
    APIM_MAX_SYNC_TIMEOUT,
    DEFAULT_ASYNC_TIMEOUT,
    DEFAULT_SYNC_TIMEOUT,
    RESERVED_ENV,
    SECRET_LIKE_NAME,
    byte_size,
    default_probe,
    operation_name,
    quantity_text,
    read_auth,
    read_cors,
    read_tasks,
    seconds,
)
from .refs import (
    resolve_cluster,
    resolve_pool,
)
from .types import (
    Api,
    Azure,
    Cluster,
    Endpoint,
    Mode,
    Probes,
    Resources,
    Scaling,
    Schedule,
    SecretRef,
    SecurityContext,
)


def read_api(
    ctx: ModelContext, a: dict[str, Any], index: int, clusters: tuple[Cluster, ...], azure: Azure
) -> Api:
    """One ``apis[index]`` entry -> :class:`Api`, placed on its cluster and pool."""
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

    cluster = resolve_cluster(ctx, a, path, clusters)
    res = a.get("resources") or {}
    gpu = res.get("gpu", 0)
    pool_name = resolve_pool(ctx, a, path, cluster, gpu)

    endpoints = read_endpoints(ctx, a, path, mode, base)
    scaling = read_scaling(ctx, a, path, endpoints)
    env, secrets = read_env(ctx, a, path)
    image = a["image"]
    first = image.split("/", 1)[0]
    if "/" not in image or not ("." in first or ":" in first or first == "localhost"):
        image = f"{azure.registry.login_server}/{image}"
    openapi = a.get("openapi")
    if openapi is not None and not (ctx.base_dir / openapi).is_file():
        ctx.report(
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
            readiness=default_probe(probes.get("readiness"), health, 5, 10, 5, 3),
            liveness=default_probe(probes.get("liveness"), health, 30, 20, 5, 3),
            startup=default_probe(probes.get("startup"), health, 0, 10, 5, 60),
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
        tasks=read_tasks(a.get("tasks")),
        products=tuple(a.get("products", [])),
        auth=read_auth(a.get("auth")),
        cors=read_cors(a.get("cors")),
        upstream_status_codes=(a.get("compatibility") or {}).get("upstreamStatusCodes", False),
        security_context=read_security_context(ctx, a.get("securityContext") or {}, path),
        json_path=format_path(path),
    )


def read_endpoints(
    ctx: ModelContext, a: dict[str, Any], path: JsonPath, mode: Mode, base: str
) -> tuple[Endpoint, ...]:
    """An API's endpoints with defaults filled and timeout/method/route rules checked."""
    out = []
    seen_names: dict[str, int] = {}
    for i, e in enumerate(a["endpoints"]):
        epath: JsonPath = (*path, "endpoints", i)
        emode = Mode(e.get("mode", mode))
        methods = tuple(e.get("methods", ["POST"]))
        if emode is Mode.ASYNC and "POST" not in methods:
            ctx.report(
                "E-ASYNC-METHOD",
                f"async endpoint {e['path']!r} must accept POST (the task body is JSON)",
                (*epath, "methods"),
            )
        default_timeout = DEFAULT_ASYNC_TIMEOUT if emode is Mode.ASYNC else DEFAULT_SYNC_TIMEOUT
        timeout = seconds(e.get("timeout", default_timeout))
        if emode is Mode.SYNC and timeout > APIM_MAX_SYNC_TIMEOUT:
            ctx.report(
                "W-SYNC-TIMEOUT",
                f"sync endpoint {e['path']!r} waits {timeout}s; API Management gives up "
                f"after {APIM_MAX_SYNC_TIMEOUT}s",
                (*epath, "timeout"),
                "make long-running work async",
                warning=True,
            )
        rel = e["path"].rstrip("/") or "/"
        name = e.get("name") or operation_name(rel)
        if name in seen_names:
            ctx.report(
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


def read_scaling(
    ctx: ModelContext, a: dict[str, Any], path: JsonPath, endpoints: tuple[Endpoint, ...]
) -> Scaling:
    """An API's autoscaling settings, checked against its mode and endpoints."""
    s = a.get("scaling") or {}
    spath: JsonPath = (*path, "scaling")
    mn = s.get("minReplicas", 1)
    mx = s.get("maxReplicas", max(3, mn))
    all_async = all(e.mode is Mode.ASYNC for e in endpoints)
    if mn > mx:
        ctx.report(
            "E-MIN-MAX",
            f"minReplicas ({mn}) is greater than maxReplicas ({mx})",
            (*spath, "minReplicas"),
        )
    if mn == 0 and not all_async:
        ctx.report(
            "E-SCALE-ZERO-SYNC",
            f"API {a['name']!r} cannot scale to zero: it has sync endpoints",
            (*spath, "minReplicas"),
            "sync callers would wait for a cold start; keep minReplicas >= 1 or make "
            "every endpoint async",
        )
    pending = s.get("pendingTasksPerReplica")
    if pending is not None and not any(e.mode is Mode.ASYNC for e in endpoints):
        ctx.report(
            "E-SCALING-RULE",
            f"API {a['name']!r} has no async endpoint, so there are no pending tasks to scale on",
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
            ctx.report(
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


def read_env(
    ctx: ModelContext, a: dict[str, Any], path: JsonPath
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, SecretRef], ...]]:
    """An API's plain and secret environment variables; reserved names are refused."""
    env: dict[str, str] = {}
    for k, v in (a.get("env") or {}).items():
        if k in RESERVED_ENV:
            ctx.report(
                "E-ENV-RESERVED",
                f"{k} is set by the platform and cannot be overridden",
                (*path, "env", k),
                prefer_key=True,
            )
            continue
        text = ("true" if v else "false") if isinstance(v, bool) else str(v)
        if SECRET_LIKE_NAME.search(k) and text:
            ctx.report(
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
            ctx.report(
                "E-ENV-RESERVED",
                f"{k} is set by the platform and cannot be overridden",
                (*path, "secrets", k),
                prefer_key=True,
            )
            continue
        if k in env:
            ctx.report(
                "E-DUPLICATE-NAME",
                f"{k} is both a plain env value and a secret",
                (*path, "secrets", k),
                prefer_key=True,
            )
        secrets[k] = SecretRef(key_vault_secret=ref["keyVaultSecret"], version=ref.get("version"))
    return tuple(sorted(env.items())), tuple(sorted(secrets.items()))


def read_security_context(ctx: ModelContext, sc: dict[str, Any], path: JsonPath) -> SecurityContext:
    """``apis[].securityContext`` with the non-root defaults filled.

    ``runAsNonRoot`` with user 0 is refused here: the kubelet would refuse to start every
    pod (CreateContainerConfigError), far from platform.yaml.
    """
    out = SecurityContext(
        run_as_non_root=sc.get("runAsNonRoot", True),
        run_as_user=sc.get("runAsUser", 1000),
        run_as_group=sc.get("runAsGroup", 1000),
        fs_group=sc.get("fsGroup", 1000),
        read_only_root_filesystem=sc.get("readOnlyRootFilesystem", False),
    )
    if out.run_as_non_root and out.run_as_user == 0:
        ctx.report(
            "E-SECURITY-CONTEXT",
            "runAsUser 0 is root, but runAsNonRoot is true: no pod of this API would start",
            (*path, "securityContext", "runAsUser"),
            "set runAsNonRoot: false to run as root (upstream Framework images need it), "
            "or pick a non-zero user",
        )
    return out
