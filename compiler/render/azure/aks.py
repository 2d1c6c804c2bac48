"""AKS clusters: one module per cluster, with its pools and Container Insights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...model.types import Cluster, Platform, Pool
from .common import LOCATION, TAGS, AzureSpec, new_resource
from .spec import Note, Resource, camel


def _pool_profile(pool: Pool, cluster: Cluster, system: bool) -> dict[str, Any]:
    prof: dict[str, Any] = {}
    if system:
        prof["name"] = pool.name
    prof["mode"] = "System" if system else "User"
    prof["vmSize"] = pool.vm_size
    prof["osType"] = "Linux"
    prof["type"] = "VirtualMachineScaleSets"
    prof["orchestratorVersion"] = cluster.kubernetes_version
    if pool.autoscaled:
        prof["enableAutoScaling"] = True
        prof["minCount"] = pool.min_count
        prof["maxCount"] = pool.max_count
        prof["count"] = Note(pool.min_count, "Initial size; the cluster autoscaler owns it after.")
    else:
        prof["enableAutoScaling"] = False
        prof["count"] = pool.count
    if pool.zones:
        prof["availabilityZones"] = list(pool.zones)
    prof["osDiskSizeGB"] = pool.os_disk_size_gb
    prof["maxPods"] = pool.max_pods
    if pool.labels:
        prof["nodeLabels"] = dict(pool.labels)
    taints = [str(t) for t in pool.taints]
    if system and "CriticalAddonsOnly=true:NoSchedule" not in taints:
        taints.append("CriticalAddonsOnly=true:NoSchedule")
    if taints:
        why = (
            "Only add-ons (Istio, KEDA, CSI driver) run here; APIs go to the user pools."
            if system
            else "The APIs placed on this pool tolerate exactly these taints."
        )
        prof["nodeTaints"] = Note(taints, why)
    if pool.spot is not None:
        prof["scaleSetPriority"] = "Spot"
        prof["scaleSetEvictionPolicy"] = pool.spot.eviction_policy
        prof["spotMaxPrice"] = Note(
            pool.spot.max_price, "-1: pay up to the on-demand price, evict only for capacity."
        )
    if pool.gpu:
        prof["gpuProfile"] = Note(
            {"driver": "Install"},
            "AKS installs the NVIDIA driver; the device plugin comes with the Kubernetes target.",
        )
    prof["tags"] = TAGS
    return prof


@dataclass(frozen=True, slots=True)
class ClusterHandle:
    """Handle of one AKS module: the cluster the roles and outputs refer to."""

    model: Cluster
    cluster: Resource


def _cluster_properties(cluster: Cluster, ws: Resource) -> dict[str, Any]:
    """``properties`` of the managed cluster: identity, mesh, KEDA, add-ons, upgrades."""
    mesh_mode = "External" if cluster.ingress.external else "Internal"
    props: dict[str, Any] = {
        "kubernetesVersion": cluster.kubernetes_version,
        "dnsPrefix": cluster.aks_name,
        "enableRBAC": True,
        "aadProfile": Note(
            {"managed": True, "enableAzureRBAC": True},
            "Entra ID sign-in with Azure RBAC for Kubernetes authorization.",
        ),
        "disableLocalAccounts": Note(
            False,
            "`ai4ec apply` still uses the cluster admin credential (see docs/security.md).",
        ),
        "agentPoolProfiles": [_pool_profile(cluster.system_pool, cluster, system=True)],
        "networkProfile": {
            "networkPlugin": "azure",
            "networkPluginMode": "overlay",
            "networkPolicy": "calico",
            "loadBalancerSku": "standard",
            "outboundType": "loadBalancer",
        },
        "oidcIssuerProfile": {"enabled": True},
        "securityProfile": {
            "workloadIdentity": {"enabled": True},
            "imageCleaner": {"enabled": True, "intervalHours": 168},
        },
        "serviceMeshProfile": Note(
            {
                "mode": "Istio",
                "istio": {
                    "revisions": [cluster.istio_revision],
                    "components": {"ingressGateways": [{"enabled": True, "mode": mesh_mode}]},
                },
            },
            f"Istio add-on; the {mesh_mode.lower()} ingress gateway is what API Management "
            "and dispatch call.",
        ),
        "workloadAutoScalerProfile": {"keda": {"enabled": cluster.keda}},
        "addonProfiles": {
            "azureKeyvaultSecretsProvider": Note(
                {
                    "enabled": True,
                    "config": {"enableSecretRotation": "true", "rotationPollInterval": "2m"},
                },
                "The SecretProviderClasses of the Kubernetes target sync Key Vault secrets\n"
                "with this add-on's identity (output clusters.<name>.keyVaultProviderClientId).",
            ),
            "omsagent": Note(
                {
                    "enabled": True,
                    "config": {
                        "logAnalyticsWorkspaceResourceID": ws.id(),
                        "useAADAuth": "true",
                    },
                },
                "Container Insights with managed-identity auth; the data collection rule\n"
                "below says what to collect.",
            ),
        },
        "autoUpgradeProfile": Note(
            {"upgradeChannel": "patch", "nodeOSUpgradeChannel": "NodeImage"},
            "Patch releases of the pinned minor version and node image updates arrive alone.",
        ),
    }
    return props


def _user_pools(spec: AzureSpec, cluster: Cluster, cl: Resource, sym: str, module: str) -> None:
    """One agent pool per platform.yaml pool, each after the one before it."""
    previous: Resource | None = None
    for pool in cluster.pools:
        p = spec.add(
            new_resource(
                camel(sym, "pool", pool.name),
                "Microsoft.ContainerService/managedClusters/agentPools",
                pool.name,
                module,
                parent=cl,
                body={"properties": _pool_profile(pool, cluster, system=False)},
                depends_on=[previous] if previous is not None else [],
                comment=f"User pool {pool.name}"
                + (" (after the previous one: AKS changes one pool at a time)" if previous else ""),
            )
        )
        previous = p


def _container_insights(
    spec: AzureSpec, platform: Platform, cluster: Cluster, cl: Resource, ws: Resource
) -> None:
    """The data collection rule of Container Insights, bound to the cluster."""
    module = f"aks-{cluster.name}"
    sym = camel("aks", cluster.name)
    stream = "Microsoft-ContainerInsights-Group-Default"
    dcr = spec.add(
        new_resource(
            camel(sym, "insights", "rule"),
            "Microsoft.Insights/dataCollectionRules",
            f"MSCI-{platform.azure.location}-{cluster.aks_name}"[:64],
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "kind": "Linux",
                "properties": {
                    "dataSources": {
                        "extensions": [
                            {
                                "name": "ContainerInsightsExtension",
                                "extensionName": "ContainerInsights",
                                "streams": [stream],
                                "extensionSettings": {
                                    "dataCollectionSettings": {
                                        "interval": "1m",
                                        "namespaceFilteringMode": "Off",
                                        "enableContainerLogV2": True,
                                    }
                                },
                            }
                        ]
                    },
                    "destinations": {
                        "logAnalytics": [{"name": "ciworkspace", "workspaceResourceId": ws.id()}]
                    },
                    "dataFlows": [{"streams": [stream], "destinations": ["ciworkspace"]}],
                },
            },
            comment="What Container Insights collects from the cluster, and where it goes.",
        )
    )
    spec.add(
        new_resource(
            camel(sym, "insights", "link"),
            "Microsoft.Insights/dataCollectionRuleAssociations",
            "ContainerInsightsExtension",
            module,
            scope=cl,
            body={
                "properties": {
                    "dataCollectionRuleId": dcr.id(),
                    "description": "Container Insights of this cluster.",
                }
            },
            comment="Binds the rule to the cluster.",
        )
    )


def aks(
    spec: AzureSpec, platform: Platform, cluster: Cluster, workspace: Resource
) -> ClusterHandle:
    """One AKS cluster: identity, mesh, KEDA, Key Vault CSI, Container Insights, pools."""
    module = f"aks-{cluster.name}"
    props = _cluster_properties(cluster, workspace)
    sym = camel("aks", cluster.name)
    cl = spec.add(
        new_resource(
            sym,
            "Microsoft.ContainerService/managedClusters",
            cluster.aks_name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": {"name": "Base", "tier": "Standard"},
                "identity": {"type": "SystemAssigned"},
                "properties": props,
            },
            comment=f"Cluster {cluster.name}: runs the model APIs behind the Istio ingress.",
        )
    )
    _user_pools(spec, cluster, cl, sym, module)
    _container_insights(spec, platform, cluster, cl, workspace)
    return ClusterHandle(model=cluster, cluster=cl)
