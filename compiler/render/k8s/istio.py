"""Istio routing and security of one cluster: Gateway, VirtualServices, DestinationRules.

The views are decided here from the model; the templates under ``templates/k8s/istio``
only lay them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ...cache import DiskCache, code_fingerprint, key_of
from ...model.naming import INGRESS_NAMESPACE, workload_name
from ...model.types import Api, Cluster, Endpoint, Mode, Platform
from ..env import render_template
from .objects import (
    GATEWAY,
    GATEWAY_CREDENTIAL,
    KubeObject,
    RenderedFile,
    gateway_workload,
    labels,
    objects_of_payload,
    objects_payload,
    parse_objects,
)

#: The path an AuthorizationPolicy allows when a cluster serves no route: an empty list
#: would allow everything.
NO_ROUTES = "/__ai4ec_no_routes__"


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def _methods_regex(methods: Iterable[str]) -> str:
    return "^(" + "|".join(sorted(methods)) + ")$"


def _service_host(api: Api, namespace: str) -> str:
    return f"{api.id}.{namespace}.svc.cluster.local"


def workload_path(api: Api, endpoint: Endpoint) -> str:
    """The path the container serves ``endpoint`` on (below the API's prefix)."""
    return api.api_prefix.rstrip("/") + endpoint.path if endpoint.path != "/" else api.api_prefix


def render_istio(
    platform: Platform, cluster: Cluster, apis: list[Api], source: str
) -> list[RenderedFile]:
    """The ``istio/*.yaml`` texts of ``cluster`` serving ``apis`` (uncached; tests read them)."""
    ns = cluster.namespace
    hosts = list(cluster.ingress.hosts)
    files = [_gateway(platform, cluster, source)]
    for api in apis:
        files.append(_virtual_service(platform, api, ns, hosts, source))
        files.append(_destination_rule(platform, api, ns, source))
    files.append(_security(platform, cluster, apis, source))
    return files


#: Bumped when what an API's Istio cache entry holds changes shape.
#: 2: every object's text was parsed back in full and checked free of document markers.
_ENTRY_FORMAT = "istio-api/2"


def istio_objects(
    platform: Platform, cluster: Cluster, apis: list[Api], source: str
) -> list[KubeObject]:
    """The Istio objects of ``cluster`` serving ``apis``, as :func:`render_istio` renders them.

    Each API's VirtualService and DestinationRule come from the ``k8s`` cache when their
    views (and ai4ec's code and templates) are unchanged: with 1,000 APIs, rendering and
    parsing back their 2,000 templates was a second and a half of every build.
    """
    ns = cluster.namespace
    hosts = list(cluster.ingress.hosts)
    store = DiskCache("k8s")
    code = code_fingerprint()
    objects = parse_objects("istio/gateway.yaml", _gateway(platform, cluster, source).text)
    for api in apis:
        views = (_vs_view(platform, api, ns, hosts), _dr_view(platform, api, ns))
        key = key_of(_ENTRY_FORMAT, code, json.dumps(views, sort_keys=True))
        hit = store.get(key)
        found = objects_of_payload(hit) if hit is not None else None
        if found is None:
            vs = RenderedFile(
                f"istio/virtualservice-{api.id}.yaml",
                render_template("k8s/istio/virtualservice.yaml.j2", source=source, vs=views[0]),
            )
            dr = RenderedFile(
                f"istio/destinationrule-{api.id}.yaml",
                render_template("k8s/istio/destinationrule.yaml.j2", source=source, dr=views[1]),
            )
            found = [o for f in (vs, dr) for o in parse_objects(f.path, f.text)]
            store.put(key, objects_payload(found))
        objects.extend(found)
    security = _security(platform, cluster, apis, source)
    objects.extend(parse_objects(security.path, security.text))
    return objects


def _gateway(platform: Platform, cluster: Cluster, source: str) -> RenderedFile:
    """The ingress Gateway: HTTPS with mutual TLS unless platform.yaml says otherwise.

    ``clientCertificate: disabled`` (server TLS only) passes validation only on an
    internal load balancer, plain HTTP only in a development environment.
    """
    https = cluster.ingress.protocol == "https"
    gw = {
        "name": GATEWAY,
        "namespace": cluster.namespace,
        "labels": labels(platform),
        "selector": gateway_workload(cluster).selector,
        "servers": [
            {
                "number": 443 if https else 80,
                "name": "https" if https else "http",
                "protocol": "HTTPS" if https else "HTTP",
                "hosts": list(cluster.ingress.hosts),
                "credential_name": GATEWAY_CREDENTIAL if https else "",
                "tls_mode": "MUTUAL" if cluster.ingress.client_certificate else "SIMPLE",
            }
        ],
    }
    text = render_template("k8s/istio/gateway.yaml.j2", source=source, gw=gw)
    return RenderedFile("istio/gateway.yaml", text)


def _virtual_service(
    platform: Platform, api: Api, ns: str, hosts: list[str], source: str
) -> RenderedFile:
    vs = _vs_view(platform, api, ns, hosts)
    text = render_template("k8s/istio/virtualservice.yaml.j2", source=source, vs=vs)
    return RenderedFile(f"istio/virtualservice-{api.id}.yaml", text)


def _vs_view(platform: Platform, api: Api, ns: str, hosts: list[str]) -> dict[str, Any]:
    routes = []
    for e in api.endpoints:
        target = workload_path(api, e)
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
        "hosts": hosts,
        "gateways": [GATEWAY],
        "host": _service_host(api, ns),
        "port": 80,
        "routes": routes,
    }
    return vs


def _destination_rule(platform: Platform, api: Api, ns: str, source: str) -> RenderedFile:
    dr = _dr_view(platform, api, ns)
    text = render_template("k8s/istio/destinationrule.yaml.j2", source=source, dr=dr)
    return RenderedFile(f"istio/destinationrule-{api.id}.yaml", text)


def _dr_view(platform: Platform, api: Api, ns: str) -> dict[str, Any]:
    limit = api.concurrency * api.scaling.max_replicas
    return {
        "name": api.id,
        "namespace": ns,
        "labels": labels(platform, api.id),
        "host": _service_host(api, ns),
        "max_requests": limit,
        "max_pending": limit,
    }


def _security(platform: Platform, cluster: Cluster, apis: list[Api], source: str) -> RenderedFile:
    gateway = gateway_workload(cluster)
    gateway_paths = sorted({e.backend_path for a in apis for e in a.endpoints})
    api_policies = [
        {
            "name": workload_name(a),
            "labels": labels(platform, a.id),
            # The chart's selector labels: exactly this API's pods.
            "selector": {"app.kubernetes.io/name": workload_name(a), "ai4ec.io/api": a.id},
            # Dispatch of pipeline steps and async tasks comes through the gateway too.
            "principals": [gateway.principal],
            "paths": sorted({workload_path(a, e) for e in a.endpoints}),
        }
        for a in sorted(apis, key=lambda a: a.id)
    ]
    sec = {
        "namespace": cluster.namespace,
        "labels": labels(platform),
        "api_policies": api_policies,
        "gateway_paths": gateway_paths or [NO_ROUTES],
        "gateway_namespace": INGRESS_NAMESPACE,
        "gateway_policy_name": f"ai4ec-{platform.name}-{platform.environment}-routes",
        "gateway_selector": gateway.selector,
        "allowed_source_ranges": list(cluster.ingress.allowed_source_ranges),
    }
    text = render_template("k8s/istio/security.yaml.j2", source=source, sec=sec)
    return RenderedFile("istio/security.yaml", text)
