"""Cluster add-ons the APIs rely on: namespace, runtime secrets, KEDA auth, GPU plugin, TLS.

Every SecretProviderClass here signs in to Key Vault with a workload identity of its own
ServiceAccount: the node's identity is not used by any pod, and the namespace's
NetworkPolicy keeps pods away from the instance metadata endpoint that serves it.

The views are decided here from the model; the templates under ``templates/k8s/addons``
only lay them out.
"""

from __future__ import annotations

from ...model.naming import (
    GATEWAY_CLIENT_CERT,
    GATEWAY_SERVER_CERT,
    INGRESS_NAMESPACE,
    RUNTIME_SECRET_KEYS,
)
from ...model.types import Api, Cluster, Platform
from ..env import render_template
from .objects import (
    GATEWAY_CREDENTIAL,
    METADATA_ENDPOINT,
    NVIDIA_DEVICE_PLUGIN_IMAGE,
    REDIS_AUTH,
    RUNTIME_SECRET,
    RUNTIME_SPC,
    RenderedFile,
    gateway_client_id,
    labels,
    runtime_client_id,
    tenant_id,
    toleration,
)


def render_addons(
    platform: Platform, cluster: Cluster, apis: list[Api], source: str
) -> list[RenderedFile]:
    """The ``addons/*.yaml`` files of ``cluster`` serving ``apis``."""
    files = [
        _namespace(platform, cluster, source),
        _network_policy(platform, cluster, source),
        _runtime_secrets(platform, cluster, source),
    ]
    if cluster.keda and any(a.has_async for a in apis):
        files.append(_keda(platform, cluster, source))
    if cluster.nvidia_device_plugin:
        files.append(_nvidia_device_plugin(platform, cluster, source))
    if cluster.ingress.protocol == "https":
        files.append(_gateway_credential(platform, cluster, source))
    return files


def _namespace(platform: Platform, cluster: Cluster, source: str) -> RenderedFile:
    ns = {
        "name": cluster.namespace,
        "labels": {**labels(platform), "istio.io/rev": cluster.istio_revision},
    }
    text = render_template("k8s/addons/namespace.yaml.j2", source=source, ns=ns)
    return RenderedFile("addons/namespace.yaml", text)


def _runtime_secrets(platform: Platform, cluster: Cluster, source: str) -> RenderedFile:
    spc = {
        "name": RUNTIME_SPC,
        "namespace": cluster.namespace,
        "labels": labels(platform),
        "client_id": runtime_client_id(cluster),
        "key_vault": platform.azure.key_vault.name,
        "tenant_id": tenant_id(platform),
        "secret_name": RUNTIME_SECRET,
        "objects": [{"object_name": kv, "key": key} for key, kv in RUNTIME_SECRET_KEYS],
    }
    text = render_template("k8s/addons/runtime-secrets.yaml.j2", source=source, spc=spc)
    return RenderedFile("addons/runtime-secrets.yaml", text)


def _keda(platform: Platform, cluster: Cluster, source: str) -> RenderedFile:
    ta = {
        "name": REDIS_AUTH,
        "namespace": cluster.namespace,
        "labels": labels(platform),
        "secret_name": RUNTIME_SECRET,
        "secret_key": "redis-password",
    }
    text = render_template("k8s/addons/keda.yaml.j2", source=source, ta=ta)
    return RenderedFile("addons/keda.yaml", text)


def _nvidia_device_plugin(platform: Platform, cluster: Cluster, source: str) -> RenderedFile:
    gpu_pools = cluster.gpu_pools
    taints = dict.fromkeys(t for pool in gpu_pools for t in pool.taints)
    dp = {
        "pools": [p.name for p in gpu_pools],
        "labels": labels(platform),
        "tolerations": [toleration(t) for t in taints],
        "image": NVIDIA_DEVICE_PLUGIN_IMAGE,
    }
    text = render_template("k8s/addons/nvidia-device-plugin.yaml.j2", source=source, dp=dp)
    return RenderedFile("addons/nvidia-device-plugin.yaml", text)


def _network_policy(platform: Platform, cluster: Cluster, source: str) -> RenderedFile:
    np = {
        "name": "ai4ec-deny-instance-metadata",
        "namespace": cluster.namespace,
        "labels": labels(platform),
        "blocked": [METADATA_ENDPOINT],
    }
    text = render_template("k8s/addons/network-policy.yaml.j2", source=source, np=np)
    return RenderedFile("addons/network-policy.yaml", text)


def _gateway_credential(platform: Platform, cluster: Cluster, source: str) -> RenderedFile:
    tls = {
        "name": GATEWAY_CREDENTIAL,
        "namespace": INGRESS_NAMESPACE,
        "labels": labels(platform),
        "client_id": gateway_client_id(cluster),
        "key_vault": platform.azure.key_vault.name,
        "tenant_id": tenant_id(platform),
        "server_cert": cluster.ingress.certificate or GATEWAY_SERVER_CERT,
        "client_cert": GATEWAY_CLIENT_CERT,
        "secret_name": GATEWAY_CREDENTIAL,
    }
    text = render_template("k8s/addons/gateway-credential.yaml.j2", source=source, tls=tls)
    return RenderedFile("addons/gateway-credential.yaml", text)
