"""Kubernetes target: every object a cluster receives.

Helm values per API, Istio routing and security, cluster add-ons, and ``manifests.yaml``.

Per environment and cluster it writes ``k8s/<cluster>/values/<api>.yaml``,
``k8s/<cluster>/istio/*.yaml``, ``k8s/<cluster>/addons/*.yaml`` and
``k8s/<cluster>/manifests.yaml``. The last one is the chart rendered by the real Helm
engine for every release plus the Istio and add-on objects, in apply order; ``apply``
sends exactly this file and ``diff`` compares it.

Views for the templates are built here; the templates only lay them out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import Diagnostic, RenderError
from ..model.types import Api, Cluster, Mode, Platform, Taint
from .artifact import Artifact, RenderContext, SafeLoader, to_yaml
from .env import render_template

MANAGED_BY = "ai4ec"
RUNTIME_SECRET = "ai4ec-runtime"
RUNTIME_SPC = "ai4ec-runtime"
REDIS_AUTH = "ai4ec-redis"
GATEWAY = "ai4ec-gateway"
INGRESS_NAMESPACE = "aks-istio-ingress"
NVIDIA_DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"

#: Kubernetes keys of the runtime Secret, and the Key Vault secrets they come from.
RUNTIME_SECRET_KEYS: tuple[tuple[str, str], ...] = (
    ("appinsights-connection-string", "ai4ec-appinsights-connection-string"),
    ("cache-connector-get-uri", "ai4ec-cache-connector-get-uri"),
    ("cache-connector-upsert-uri", "ai4ec-cache-connector-upsert-uri"),
    ("current-processing-upsert-uri", "ai4ec-current-processing-upsert-uri"),
    ("redis-password", "ai4ec-redis-password"),
)

# Apply order: what others depend on first (as Helm installs kinds).
_KIND_ORDER = [
    "Namespace",
    "SecretProviderClass",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "TriggerAuthentication",
    "Service",
    "DaemonSet",
    "Deployment",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "DestinationRule",
    "Gateway",
    "VirtualService",
]


def azure_output(path: str) -> str:
    """A placeholder that ``apply`` fills from the Azure deployment's outputs."""
    return f"$(azure:{path})"


def labels(platform: Platform, api_id: str | None = None) -> dict[str, str]:
    """The labels every generated object carries (docs/contracts.md)."""
    out = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "ai4ec.io/platform": platform.name,
        "ai4ec.io/environment": platform.environment,
    }
    if api_id:
        out["ai4ec.io/api"] = api_id
    return out


def toleration(taint: Taint) -> dict[str, Any]:
    """The toleration that matches exactly ``taint``."""
    tol: dict[str, Any] = {
        "key": taint.key,
        "operator": "Equal" if taint.value else "Exists",
        "effect": taint.effect,
    }
    if taint.value:
        tol["value"] = taint.value
    return tol


def gateway_workload(cluster: Cluster) -> tuple[str, dict[str, str]]:
    """Service account principal and pod selector of the add-on's ingress gateway."""
    kind = "external" if cluster.ingress.external else "internal"
    name = f"aks-istio-ingressgateway-{kind}"
    return f"cluster.local/ns/{INGRESS_NAMESPACE}/sa/{name}", {"istio": name}


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def _methods_regex(methods: Iterable[str]) -> str:
    return "^(" + "|".join(sorted(methods)) + ")$"


def _service_host(api: Api, namespace: str) -> str:
    return f"{api.id}.{namespace}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class ClusterObjects:
    """Rendered files of one cluster, before assembly into manifests.yaml."""

    files: list[tuple[str, str]]


def _istio(
    platform: Platform, cluster: Cluster, apis: list[Api], source: str
) -> list[tuple[str, str]]:
    ns = cluster.namespace
    files: list[tuple[str, str]] = []
    https = cluster.ingress.protocol == "https"
    _, selector = gateway_workload(cluster)
    gw = {
        "name": GATEWAY,
        "namespace": ns,
        "labels": labels(platform),
        "selector": selector,
        "servers": [
            {
                "number": 443 if https else 80,
                "name": "https" if https else "http",
                "protocol": "HTTPS" if https else "HTTP",
                "hosts": list(cluster.ingress.hosts),
                "credential_name": "ai4ec-ingress-tls" if https else "",
            }
        ],
    }
    files.append(
        ("istio/gateway.yaml", render_template("k8s/istio/gateway.yaml.j2", source=source, gw=gw))
    )
    for api in apis:
        routes = []
        for e in api.endpoints:
            target = api.api_prefix.rstrip("/") + e.path if e.path != "/" else api.api_prefix
            routes.append(
                {
                    "name": e.name,
                    "path": e.backend_path,
                    "methods_regex": _methods_regex(e.methods),
                    "rewrite": target if target != e.backend_path else "",
                    # Async endpoints only accept the task and answer at once.
                    "timeout": _duration(e.timeout_seconds if e.mode is Mode.SYNC else 30),
                    "retry": e.mode is Mode.SYNC,
                }
            )
        vs = {
            "api_id": api.id,
            "name": api.id,
            "namespace": ns,
            "labels": labels(platform, api.id),
            "hosts": list(cluster.ingress.hosts),
            "gateways": [GATEWAY],
            "host": _service_host(api, ns),
            "port": 80,
            "routes": routes,
        }
        files.append(
            (
                f"istio/virtualservice-{api.id}.yaml",
                render_template("k8s/istio/virtualservice.yaml.j2", source=source, vs=vs),
            )
        )
        limit = api.concurrency * api.scaling.max_replicas
        dr = {
            "name": api.id,
            "namespace": ns,
            "labels": labels(platform, api.id),
            "host": _service_host(api, ns),
            "max_requests": limit,
            "max_pending": limit,
        }
        files.append(
            (
                f"istio/destinationrule-{api.id}.yaml",
                render_template("k8s/istio/destinationrule.yaml.j2", source=source, dr=dr),
            )
        )
    principal, selector = gateway_workload(cluster)
    gateway_paths = sorted({e.backend_path for a in apis for e in a.endpoints})
    workload_paths = sorted(
        {
            (a.api_prefix.rstrip("/") + e.path if e.path != "/" else a.api_prefix)
            for a in apis
            for e in a.endpoints
        }
    )
    sec = {
        "namespace": ns,
        "labels": labels(platform),
        "gateway_principals": [principal],
        "workload_paths": workload_paths or ["/__ai4ec_no_routes__"],
        "gateway_paths": gateway_paths or ["/__ai4ec_no_routes__"],
        "gateway_namespace": INGRESS_NAMESPACE,
        "gateway_policy_name": f"ai4ec-{platform.name}-{platform.environment}-routes",
        "gateway_selector": selector,
        "allowed_source_ranges": list(cluster.ingress.allowed_source_ranges),
    }
    files.append(
        (
            "istio/security.yaml",
            render_template("k8s/istio/security.yaml.j2", source=source, sec=sec),
        )
    )
    return files


def _addons(
    platform: Platform, cluster: Cluster, apis: list[Api], source: str
) -> list[tuple[str, str]]:
    ns = cluster.namespace
    files: list[tuple[str, str]] = []
    ns_labels = {**labels(platform), "istio.io/rev": cluster.istio_revision}
    files.append(
        (
            "addons/namespace.yaml",
            render_template(
                "k8s/addons/namespace.yaml.j2", source=source, ns={"name": ns, "labels": ns_labels}
            ),
        )
    )
    tenant = platform.azure.tenant_id or azure_output("tenantId")
    client_id = azure_output(f"clusters.{cluster.name}.keyVaultProviderClientId")
    spc = {
        "name": RUNTIME_SPC,
        "namespace": ns,
        "labels": labels(platform),
        "client_id": client_id,
        "key_vault": platform.azure.key_vault.name,
        "tenant_id": tenant,
        "secret_name": RUNTIME_SECRET,
        "objects": [{"object_name": kv, "key": key} for key, kv in RUNTIME_SECRET_KEYS],
    }
    files.append(
        (
            "addons/runtime-secrets.yaml",
            render_template("k8s/addons/runtime-secrets.yaml.j2", source=source, spc=spc),
        )
    )
    if cluster.keda and any(a.has_async for a in apis):
        ta = {
            "name": REDIS_AUTH,
            "namespace": ns,
            "labels": labels(platform),
            "secret_name": RUNTIME_SECRET,
            "secret_key": "redis-password",
        }
        files.append(
            ("addons/keda.yaml", render_template("k8s/addons/keda.yaml.j2", source=source, ta=ta))
        )
    if cluster.nvidia_device_plugin:
        gpu_pools = cluster.gpu_pools
        taints = dict.fromkeys(t for pool in gpu_pools for t in pool.taints)
        tolerations = [toleration(t) for t in taints]
        dp = {
            "pools": [p.name for p in gpu_pools],
            "labels": labels(platform),
            "tolerations": tolerations,
            "image": NVIDIA_DEVICE_PLUGIN_IMAGE,
        }
        files.append(
            (
                "addons/nvidia-device-plugin.yaml",
                render_template("k8s/addons/nvidia-device-plugin.yaml.j2", source=source, dp=dp),
            )
        )
    if cluster.ingress.protocol == "https" and cluster.ingress.certificate:
        tls = {
            "name": "ai4ec-ingress-tls",
            "namespace": INGRESS_NAMESPACE,
            "labels": labels(platform),
            "client_id": client_id,
            "key_vault": platform.azure.key_vault.name,
            "tenant_id": tenant,
            "certificate": cluster.ingress.certificate,
            "secret_name": "ai4ec-ingress-tls",
        }
        files.append(
            (
                "addons/ingress-tls.yaml",
                render_template("k8s/addons/ingress-tls.yaml.j2", source=source, tls=tls),
            )
        )
    return files


_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.M)
_KIND = re.compile(r"^kind:[ \t]*\"?([A-Za-z]+)\"?[ \t]*$", re.M)
_META = re.compile(r"^metadata:[ \t]*\n((?:[ \t]+.*\n?|[ \t]*#.*\n?)*)", re.M)
_FIELD = re.compile(r"^  (name|namespace):[ \t]*\"?([^\"\n]*?)\"?[ \t]*$", re.M)


def _documents(name: str, text: str) -> list[tuple[tuple[int, str, str], str]]:
    """Split YAML text into documents keyed for apply order, without building objects.

    Every piece was rendered by a template or the chart and is parsed back by the write
    stage; here only ``kind``, ``metadata.name`` and ``metadata.namespace`` are needed,
    and building and re-dumping 10,000 objects in Python took most of a large build.
    """
    out: list[tuple[tuple[int, str, str], str]] = []
    for doc in _DOC_SPLIT.split(text):
        body = "\n".join(line for line in doc.splitlines() if not line.startswith("#")).strip()
        if not body:
            continue
        kind = _KIND.search(body)
        meta = _META.search(body + "\n")
        if not kind or not meta:
            # Not in the block layout our templates and the chart emit: parse it.
            objs = _parse(name, body)
            out.extend((_kind_rank(o), to_yaml(o).rstrip("\n")) for o in objs)
            continue
        fields = dict(_FIELD.findall(meta.group(1)))
        rank = (
            _KIND_ORDER.index(kind.group(1)) if kind.group(1) in _KIND_ORDER else len(_KIND_ORDER)
        )
        out.append(((rank, fields.get("namespace", ""), fields.get("name", "")), body))
    return out


def _kind_rank(obj: dict[str, Any]) -> tuple[int, str, str]:
    kind = str(obj.get("kind", ""))
    rank = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
    meta = obj.get("metadata") or {}
    return rank, str(meta.get("namespace", "")), str(meta.get("name", ""))


def _parse(name: str, text: str) -> list[dict[str, Any]]:
    try:
        return [o for o in yaml.load_all(text, Loader=SafeLoader) if o]
    except yaml.YAMLError as exc:
        raise RenderError(
            f"generated {name} does not parse: {exc}",
            (
                Diagnostic(
                    code="E-RENDER-PARSE",
                    message=f"generated {name} does not parse back: {exc}",
                    hint="this is an ai4ec bug; please report it with your platform.yaml",
                ),
            ),
        ) from exc


def assemble_manifests(named_texts: Iterable[tuple[str, str]], header: str) -> str:
    """Every document from ``named_texts`` as one multi-document YAML file, in apply order."""
    docs = [d for name, t in named_texts for d in _documents(name, t)]
    docs.sort(key=lambda d: d[0])
    return header + "".join(f"---\n{body}\n" for _, body in docs)


def render_k8s(platform: Platform, context: RenderContext) -> list[Artifact]:
    """All Kubernetes artifacts of one environment."""
    from pathlib import PurePosixPath

    from .k8s_chart import render_releases

    artifacts: list[Artifact] = []
    for cluster in platform.clusters:
        apis = [a for a in platform.apis if a.cluster == cluster.name]
        files = _addons(platform, cluster, apis, context.source_name)
        files += _istio(platform, cluster, apis, context.source_name)
        values_files, rendered = render_releases(platform, cluster, apis, context)
        base = f"k8s/{cluster.name}"
        for rel, text in [*values_files, *files]:
            artifacts.append(Artifact(PurePosixPath(f"{base}/{rel}"), text.encode("utf-8")))
        header = (
            f"# generated by ai4ec from {context.source_name} - do not edit\n"
            f"# Every object cluster {cluster.name!r} receives for environment "
            f"{platform.environment!r}, in apply order.\n"
        )
        manifests = assemble_manifests([*files, *(("chart", t) for t in rendered)], header)
        artifacts.append(
            Artifact(PurePosixPath(f"{base}/manifests.yaml"), manifests.encode("utf-8"))
        )
    return artifacts
