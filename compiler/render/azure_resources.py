"""The Azure resources of one environment, one builder per concern, as :class:`Resource` specs.

Each builder reads only the typed model and returns specs; :mod:`ai4ec.render.azure`
turns the list into ``main.json`` and the Bicep modules. Where Azure needs an order
that no expression implies (a key read through a host that must first reach its
storage, node pools that AKS refuses to create in parallel), the spec says so in
``depends_on`` and the comment tells why.

Deployment order of the concerns (modules), which the dependencies produce:
monitoring, storage, keyvault, registry, redis -> aks-<cluster>, functions, apim ->
roles -> secrets -> dispatch, apim-apis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..model.types import Cluster, Platform, Pool
from .azure_spec import Expr, Fn, Interp, Member, Note, Param, Resource, Var, referenced
from .runtime import app_settings

#: One published, current (newest stable) API version per resource type.
API_VERSIONS: dict[str, str] = {
    "Microsoft.OperationalInsights/workspaces": "2026-03-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Insights/dataCollectionRules": "2024-03-11",
    "Microsoft.Insights/dataCollectionRuleAssociations": "2024-03-11",
    "Microsoft.Storage/storageAccounts": "2026-04-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2026-04-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2026-04-01",
    "Microsoft.KeyVault/vaults": "2026-02-01",
    "Microsoft.KeyVault/vaults/secrets": "2026-02-01",
    "Microsoft.ContainerRegistry/registries": "2025-11-01",
    "Microsoft.ContainerService/managedClusters": "2026-05-01",
    "Microsoft.ContainerService/managedClusters/agentPools": "2026-05-01",
    "Microsoft.Cache/redis": "2024-11-01",
    "Microsoft.EventGrid/topics": "2025-02-15",
    "Microsoft.EventGrid/topics/eventSubscriptions": "2025-02-15",
    "Microsoft.Web/serverfarms": "2025-03-01",
    "Microsoft.Web/sites": "2025-03-01",
    "Microsoft.Web/sites/host": "2025-03-01",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": "2025-03-01",
    "Microsoft.ApiManagement/service": "2024-05-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2024-11-30",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
}

#: Built-in role definition ids (the same GUID in every Azure tenant).
ROLES: dict[str, str] = {
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
}

#: Blob container Event Grid dead-letters to; the runtime's blob trigger reads it
#: (``ai4ec_runtime.app.DEAD_LETTER_CONTAINER``; a test pins the two together).
DEAD_LETTER_CONTAINER = "ai4ec-deadletter"
#: Container a Consumption (Y1) Function App runs its package from (Linux Consumption
#: only runs from a package URL; ``apply`` uploads ``functions.zip`` there).
PACKAGE_CONTAINER = "ai4ec-packages"
PACKAGE_BLOB = "functions.zip"
#: Name of the Event Grid subscription that dispatches tasks (upstream called it webhook).
EVENT_SUBSCRIPTION = "ai4ec-dispatch"
#: Parameters of the template: (name, Bicep type, description).
PARAM_LOCATION = "location"
PARAM_BACKEND_URL = "backendBaseUrl"
PARAM_EVENT_SUBSCRIPTION = "deployEventSubscription"

#: Key Vault secrets of docs/contracts.md, in the order they are written.
SECRET_NAMES = (
    "ai4ec-redis-url",
    "ai4ec-redis-password",
    "ai4ec-eventgrid-key",
    "ai4ec-function-key",
    "ai4ec-cache-connector-upsert-uri",
    "ai4ec-cache-connector-get-uri",
    "ai4ec-current-processing-upsert-uri",
    "ai4ec-appinsights-connection-string",
    "ai4ec-appinsights-instrumentation-key",
)

_TLS_OFF = "False"
#: Gateway protocol switches of API Management (classic tiers): TLS 1.2+ only, no 3DES.
APIM_SECURITY: dict[str, str] = {
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10": _TLS_OFF,
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11": _TLS_OFF,
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Ssl30": _TLS_OFF,
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10": _TLS_OFF,
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11": _TLS_OFF,
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30": _TLS_OFF,
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Ciphers.TripleDes168": _TLS_OFF,
    "Microsoft.WindowsAzure.ApiManagement.Gateway.Protocols.Server.Http2": "True",
}

LOCATION = Param(PARAM_LOCATION)
TAGS = Var("tags")
TENANT_ID = Member(Fn("subscription"), ("tenantId",))


def camel(*parts: str) -> str:
    """``camel('aks', 'my-cluster')`` -> ``aksMyCluster`` (a Bicep identifier)."""
    words = [w for p in parts for w in re.split(r"[^A-Za-z0-9]+", p) if w]
    if not words:  # pragma: no cover - callers always pass a word
        raise ValueError("no identifier characters")
    head, *rest = words
    out = head[0].lower() + head[1:] + "".join(w[0].upper() + w[1:] for w in rest)
    return out if out[0].isalpha() else "r" + out


@dataclass
class AzureSpec:
    """Every resource of an environment plus what the template around them needs."""

    resources: list[Resource] = field(default_factory=list)
    #: (name, Bicep type, default value, description), in declaration order.
    params: list[tuple[str, str, Any, str]] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    #: Output name -> (Bicep type, value, description).
    outputs: dict[str, tuple[str, Any, str]] = field(default_factory=dict)
    #: Handles the later builders (and the APIM merge) need.
    handles: dict[str, Resource] = field(default_factory=dict)
    _symbols: set[str] = field(default_factory=set, repr=False)

    def add(self, res: Resource) -> Resource:
        """Register a resource; symbols stay unique so Bicep and tests can key on them."""
        base, n = res.symbol, 2
        while res.symbol in self._symbols:
            res.symbol = f"{base}{n}"
            n += 1
        self._symbols.add(res.symbol)
        self.resources.append(res)
        return res


def _v(type_: str) -> str:
    return API_VERSIONS[type_]


def _res(symbol: str, type_: str, name: str | Expr, module: str, **kwargs: Any) -> Resource:
    return Resource(symbol, type_, _v(type_), name, module, **kwargs)


# ---------------------------------------------------------------------------------- builders


def monitoring(spec: AzureSpec, platform: Platform) -> None:
    """Log Analytics workspace and the workspace-based Application Insights on it."""
    mon = platform.azure.monitoring
    props: dict[str, Any] = {
        "sku": {"name": "PerGB2018"},
        "retentionInDays": mon.retention_days,
        "features": {"enableLogAccessUsingOnlyResourcePermissions": True},
        "publicNetworkAccessForIngestion": "Enabled",
        "publicNetworkAccessForQuery": "Enabled",
    }
    if mon.daily_cap_gb is not None:
        props["workspaceCapping"] = {"dailyQuotaGb": mon.daily_cap_gb}
    ws = spec.add(
        _res(
            "workspace",
            "Microsoft.OperationalInsights/workspaces",
            mon.workspace_name,
            "monitoring",
            body={"location": LOCATION, "tags": TAGS, "properties": props},
            comment="Logs of every component: Functions, API containers, AKS (Container Insights).",
        )
    )
    appi = spec.add(
        _res(
            "appInsights",
            "Microsoft.Insights/components",
            mon.app_insights_name,
            "monitoring",
            body={
                "location": LOCATION,
                "tags": TAGS,
                "kind": "web",
                "properties": {
                    "Application_Type": "web",
                    "WorkspaceResourceId": ws.id(),
                    "IngestionMode": "LogAnalytics",
                    "publicNetworkAccessForIngestion": "Enabled",
                    "publicNetworkAccessForQuery": "Enabled",
                    "DisableLocalAuth": Note(
                        False,
                        "The API containers send telemetry with the connection string "
                        "(Key Vault secret ai4ec-appinsights-connection-string).",
                    ),
                },
            },
            comment="Workspace-based Application Insights: telemetry lands in the workspace.",
        )
    )
    spec.handles.update(workspace=ws, appInsights=appi)


def storage(spec: AzureSpec, platform: Platform) -> None:
    """The storage account of the Function App host, the results and the dead letters."""
    st = platform.azure.storage
    account = spec.add(
        _res(
            "storage",
            "Microsoft.Storage/storageAccounts",
            st.name,
            "storage",
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": {"name": st.sku},
                "kind": "StorageV2",
                "properties": {
                    "accessTier": "Hot",
                    "minimumTlsVersion": "TLS1_2",
                    "supportsHttpsTrafficOnly": True,
                    "allowBlobPublicAccess": False,
                    "allowSharedKeyAccess": Note(
                        False,
                        "Everything ai4ec runs signs in with a managed identity (the Functions\n"
                        "host, Event Grid dead-lettering), so account keys stay switched off.",
                    ),
                    "defaultToOAuthAuthentication": True,
                    "allowCrossTenantReplication": False,
                    "publicNetworkAccess": "Enabled",
                    "networkAcls": Note(
                        {"defaultAction": "Allow", "bypass": "AzureServices"},
                        "Reachable from the public network: the Function App is not in a VNet "
                        "(see docs/security.md).",
                    ),
                },
            },
            comment="Host storage of the Function App (identity-based), API results and the\n"
            "Event Grid dead-letter container.",
        )
    )
    blob = spec.add(
        _res(
            "storageBlob",
            "Microsoft.Storage/storageAccounts/blobServices",
            "default",
            "storage",
            parent=account,
            body={
                "properties": {
                    "deleteRetentionPolicy": {"enabled": True, "days": 7},
                    "containerDeleteRetentionPolicy": {"enabled": True, "days": 7},
                }
            },
            comment="Soft delete keeps results and dead letters recoverable for a week.",
        )
    )
    containers = [
        ("resultsContainer", st.results_container, "Where APIs write their results."),
        (
            "deadLetterContainer",
            DEAD_LETTER_CONTAINER,
            "Events Event Grid gave up on; the runtime's blob trigger fails their tasks.",
        ),
    ]
    if platform.azure.functions.plan_sku == "Y1":
        containers.append(
            (
                "packagesContainer",
                PACKAGE_CONTAINER,
                f"Linux Consumption runs the Function App from {PACKAGE_BLOB} in here.",
            )
        )
    for symbol, name, why in containers:
        c = spec.add(
            _res(
                symbol,
                "Microsoft.Storage/storageAccounts/blobServices/containers",
                name,
                "storage",
                parent=blob,
                body={"properties": {"publicAccess": "None"}},
                comment=why,
            )
        )
        spec.handles[symbol] = c
    spec.handles.update(storage=account, storageBlob=blob)


def key_vault(spec: AzureSpec, platform: Platform) -> None:
    """The vault every secret lives in, with RBAC, soft delete and purge protection."""
    kv = platform.azure.key_vault
    props: dict[str, Any] = {
        "tenantId": TENANT_ID,
        "sku": {"family": "A", "name": kv.sku},
        "enableRbacAuthorization": Note(
            True, "Access is granted by role assignments (modules/roles.bicep), never by policies."
        ),
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": kv.soft_delete_retention_days,
    }
    if kv.purge_protection:
        props["enablePurgeProtection"] = Note(
            True, "Azure accepts only true here: purge protection cannot be turned off again."
        )
    props["publicNetworkAccess"] = "Enabled"
    props["networkAcls"] = Note(
        {"defaultAction": "Allow", "bypass": "AzureServices"},
        "Functions, API Management and AKS read it over the public endpoint "
        "(see docs/security.md).",
    )
    vault = spec.add(
        _res(
            "keyVault",
            "Microsoft.KeyVault/vaults",
            kv.name,
            "keyvault",
            body={"location": LOCATION, "tags": TAGS, "properties": props},
            comment="Every platform secret; the other modules write keys into it at deployment.",
        )
    )
    spec.handles["keyVault"] = vault


def registry(spec: AzureSpec, platform: Platform) -> None:
    """The container registry the clusters pull from (kubelet identity, no admin user)."""
    reg = platform.azure.registry
    props: dict[str, Any] = {
        "adminUserEnabled": Note(False, "Clusters pull with their kubelet identity (AcrPull)."),
        "anonymousPullEnabled": False,
        "publicNetworkAccess": "Enabled",
        "networkRuleBypassOptions": "AzureServices",
    }
    if reg.sku == "Premium":
        props["policies"] = {
            "retentionPolicy": Note(
                {"days": 7, "status": "enabled"}, "Delete untagged manifests after a week."
            )
        }
        props["zoneRedundancy"] = "Enabled"
    spec.handles["registry"] = spec.add(
        _res(
            "registry",
            "Microsoft.ContainerRegistry/registries",
            reg.name,
            "registry",
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": {"name": reg.sku},
                "properties": props,
            },
            comment="Images of the model APIs.",
        )
    )


def redis(spec: AzureSpec, platform: Platform) -> None:
    """The task store: TLS only, sized from the model."""
    cache = platform.azure.cache
    spec.handles["redis"] = spec.add(
        _res(
            "redis",
            "Microsoft.Cache/redis",
            cache.name,
            "redis",
            body={
                "location": LOCATION,
                "tags": TAGS,
                "properties": {
                    "sku": {"name": cache.sku, "family": cache.family, "capacity": cache.capacity},
                    "enableNonSslPort": Note(False, "TLS only: clients use port 6380."),
                    "minimumTlsVersion": "1.2",
                    "publicNetworkAccess": "Enabled",
                    "redisVersion": "6",
                    "redisConfiguration": {
                        "maxmemory-policy": Note(
                            "noeviction",
                            "A task store must not silently drop tasks when memory runs out;\n"
                            "writes fail instead, and the runtime reports the error.",
                        )
                    },
                },
            },
            comment="Task store of the runtime (docs/contracts.md, Redis layout).",
        )
    )


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


def aks(spec: AzureSpec, platform: Platform, cluster: Cluster) -> None:
    """One AKS cluster: identity, mesh, KEDA, Key Vault CSI, Container Insights, pools."""
    module = f"aks-{cluster.name}"
    ws = spec.handles["workspace"]
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
    sym = camel("aks", cluster.name)
    cl = spec.add(
        _res(
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
    spec.handles[f"aks:{cluster.name}"] = cl
    previous: Resource | None = None
    for pool in cluster.pools:
        p = spec.add(
            _res(
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
    stream = "Microsoft-ContainerInsights-Group-Default"
    dcr = spec.add(
        _res(
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
        _res(
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


def functions(spec: AzureSpec, platform: Platform, backend_url_default: str) -> None:
    """Event Grid topic, plan and Function App of the task manager (runtime)."""
    az = platform.azure
    fn = az.functions
    module = "functions"
    topic = spec.add(
        _res(
            "topic",
            "Microsoft.EventGrid/topics",
            az.event_grid.topic_name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "identity": Note(
                    {"type": "SystemAssigned"}, "Writes dead letters to storage with this identity."
                ),
                "properties": {
                    "inputSchema": "EventGridSchema",
                    "publicNetworkAccess": "Enabled",
                    "minimumTlsVersionAllowed": "1.2",
                    "disableLocalAuth": Note(
                        False,
                        "The runtime publishes with the topic key from Key Vault (EVENT_GRID_KEY).",
                    ),
                },
            },
            comment="Carries async tasks from the runtime to the cluster (via BackendWebhook).",
        )
    )
    consumption = fn.plan_sku == "Y1"
    plan_props: dict[str, Any] = {"reserved": Note(True, "Linux.")}
    if consumption:
        sku: dict[str, Any] = {"name": "Y1", "tier": "Dynamic"}
        kind = "functionapp"
    else:
        sku = {
            "name": fn.plan_sku,
            "tier": "ElasticPremium",
            "family": "EP",
            "capacity": Note(fn.minimum_instances, "Minimum instances of the plan."),
        }
        kind = "elastic"
        plan_props["maximumElasticWorkerCount"] = max(20, fn.minimum_instances)
    plan = spec.add(
        _res(
            "plan",
            "Microsoft.Web/serverfarms",
            fn.plan_name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": sku,
                "kind": kind,
                "properties": plan_props,
            },
            comment=f"{'Consumption' if consumption else 'Elastic Premium'} plan of the runtime.",
        )
    )
    account = spec.handles["storage"]
    vault_uri = f"https://{az.key_vault.name}.vault.azure.net/secrets"
    settings: dict[str, Any] = dict(app_settings(platform))
    # The real endpoint, not a guess of its host name: Azure reports it after creation.
    settings["EVENT_GRID_TOPIC_URI"] = topic.ref("endpoint")
    settings.setdefault(
        "AI4EC_EVENT_MAX_DELIVERY_ATTEMPTS", str(az.event_grid.max_delivery_attempts)
    )
    settings.update(
        {
            "FUNCTIONS_EXTENSION_VERSION": "~4",
            "AzureWebJobsStorage__accountName": account.name,
            "APPLICATIONINSIGHTS_CONNECTION_STRING": (
                f"@Microsoft.KeyVault(SecretUri={vault_uri}/ai4ec-appinsights-connection-string/)"
            ),
            "AI4EC_BACKEND_BASE_URL": Param(PARAM_BACKEND_URL),
        }
    )
    if consumption:
        settings["WEBSITE_RUN_FROM_PACKAGE"] = Interp(
            (account.ref("primaryEndpoints", "blob"), f"{PACKAGE_CONTAINER}/{PACKAGE_BLOB}")
        )
        settings["WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID"] = "SystemAssigned"
    else:
        settings["WEBSITE_RUN_FROM_PACKAGE"] = "1"
    site_config: dict[str, Any] = {
        "linuxFxVersion": "Python|3.11",
        "ftpsState": "Disabled",
        "minTlsVersion": "1.2",
        "scmMinTlsVersion": "1.2",
        "http20Enabled": True,
        "use32BitWorkerProcess": False,
    }
    if not consumption:
        site_config["minimumElasticInstanceCount"] = Note(
            fn.minimum_instances, "Always-ready instances: no cold start for APIM's calls."
        )
    site_config["appSettings"] = Note(
        [{"name": k, "value": settings[k]} for k in sorted(settings)],
        "Secrets are Key Vault references resolved with the app's identity; storage is\n"
        "identity-based (AzureWebJobsStorage__accountName), so no key is written anywhere.",
    )
    site = spec.add(
        _res(
            "site",
            "Microsoft.Web/sites",
            fn.app_name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "kind": "functionapp,linux",
                "identity": {"type": "SystemAssigned"},
                "properties": {
                    "serverFarmId": plan.id(),
                    "reserved": True,
                    "httpsOnly": True,
                    "publicNetworkAccess": "Enabled",
                    "keyVaultReferenceIdentity": "SystemAssigned",
                    "siteConfig": site_config,
                },
            },
            comment="The runtime (functions/): task store API, dispatch webhook, timers.",
        )
    )
    for policy in ("ftp", "scm"):
        spec.add(
            _res(
                camel("site", policy, "basic", "auth"),
                "Microsoft.Web/sites/basicPublishingCredentialsPolicies",
                policy,
                module,
                parent=site,
                body={"properties": {"allow": False}},
                comment=f"No {policy.upper()} password: deployments sign in with Entra ID.",
            )
        )
    host = spec.add(
        _res("siteHost", "Microsoft.Web/sites/host", "default", module, parent=site, virtual=True)
    )
    spec.handles.update(topic=topic, plan=plan, site=site, siteHost=host)
    spec.params.append(
        (
            PARAM_BACKEND_URL,
            "string",
            backend_url_default,
            "Scheme and host of the cluster's Istio ingress that dispatch posts tasks to "
            "(AI4EC_BACKEND_BASE_URL), e.g. https://ingress.example.org or http://20.1.2.3. "
            "The ingress address exists only once the cluster and its gateway run, so "
            "`ai4ec apply` reads it from the cluster and deploys again with it.",
        )
    )


def apim(spec: AzureSpec, platform: Platform) -> None:
    """The API Management service (its APIs come from the APIM target, in apim-apis)."""
    svc = platform.azure.api_management
    module = "apim"
    props: dict[str, Any] = {
        "publisherName": svc.publisher_name,
        "publisherEmail": svc.publisher_email,
        "publicNetworkAccess": "Enabled",
        "virtualNetworkType": "None",
        "apiVersionConstraint": Note(
            {"minApiVersion": "2021-08-01"}, "Refuse management calls with retired API versions."
        ),
    }
    if svc.sku != "Consumption":
        props["customProperties"] = Note(
            dict(APIM_SECURITY), "Gateway and backends speak TLS 1.2+ only; no 3DES; HTTP/2 on."
        )
    identity: dict[str, Any] = {"type": "SystemAssigned"}
    if svc.custom_domain is not None:
        cd = svc.custom_domain
        vault = spec.handles["keyVault"]
        uai = spec.add(
            _res(
                "apimCertIdentity",
                "Microsoft.ManagedIdentity/userAssignedIdentities",
                f"{svc.name}-cert",
                module,
                body={"location": LOCATION, "tags": TAGS},
                comment="Reads the custom-domain certificate while the service is being created,\n"
                "when its system identity does not exist yet.",
            )
        )
        grant = spec.add(
            role_assignment(
                uai,
                uai.ref("principalId"),
                vault,
                "Key Vault Secrets User",
                module,
                "API Management reads its gateway certificate.",
            )
        )
        identity = {
            "type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": {uai.id(): {}},
        }
        props["hostnameConfigurations"] = [
            {
                "type": "Proxy",
                "hostName": cd.host_name,
                "certificateSource": "KeyVault",
                "keyVaultId": Interp(
                    (vault.ref("vaultUri"), f"secrets/{cd.key_vault_certificate}")
                ),
                "identityClientId": uai.ref("clientId"),
                "defaultSslBinding": True,
                "negotiateClientCertificate": False,
            }
        ]
        deps = [grant]
    else:
        deps = []
    spec.handles["apim"] = spec.add(
        _res(
            "apim",
            "Microsoft.ApiManagement/service",
            svc.name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": {"name": svc.sku, "capacity": svc.capacity},
                "identity": identity,
                "properties": props,
            },
            depends_on=deps,
            comment="The platform's only public door (APIs, products, task status).",
        )
    )


def role_assignment(
    principal: Resource,
    principal_id: Expr,
    scope: Resource,
    role: str,
    module: str,
    description: str,
    discriminator: str = "",
) -> Resource:
    """A role assignment with a deterministic name: ``guid(scope, principal, role)``.

    The name may use only values known when the deployment starts (resource ids), never
    the principal id Azure assigns later; ``discriminator`` separates two identities of
    one resource (an AKS cluster's kubelet and its Key Vault add-on).
    """
    role_id = ROLES[role]
    seeds: tuple[Any, ...] = (scope.id(), principal.id())
    if discriminator:
        seeds += (discriminator,)
    symbol = camel("role", principal.symbol, discriminator or "", role)
    return _res(
        symbol,
        "Microsoft.Authorization/roleAssignments",
        Fn("guid", (*seeds, role_id)),
        module,
        scope=scope,
        body={
            "properties": {
                "roleDefinitionId": Note(
                    Fn(
                        "subscriptionResourceId",
                        ("Microsoft.Authorization/roleDefinitions", role_id),
                    ),
                    role,
                ),
                "principalId": principal_id,
                "principalType": "ServicePrincipal",
                "description": description,
            }
        },
    )


def roles(spec: AzureSpec, platform: Platform) -> None:
    """Every grant between managed identities and the resources they use."""
    h = spec.handles
    vault, account, site, topic = h["keyVault"], h["storage"], h["site"], h["topic"]
    site_principal = site.ref("identity", "principalId", full=True)
    grants = [
        role_assignment(
            site,
            site_principal,
            vault,
            "Key Vault Secrets User",
            "roles",
            "Function App resolves its Key Vault references.",
        ),
        role_assignment(
            site,
            site_principal,
            account,
            "Storage Blob Data Owner",
            "roles",
            "Functions host storage (identity-based AzureWebJobsStorage).",
        ),
        role_assignment(
            site,
            site_principal,
            account,
            "Storage Queue Data Contributor",
            "roles",
            "Blob trigger of the dead-letter container keeps its receipts in queues.",
        ),
        role_assignment(
            site,
            site_principal,
            topic,
            "EventGrid Data Sender",
            "roles",
            "Runtime publishes tasks with its identity when no key is configured.",
        ),
        role_assignment(
            h["apim"],
            h["apim"].ref("identity", "principalId", full=True),
            vault,
            "Key Vault Secrets User",
            "roles",
            "API Management named values read Key Vault secrets.",
        ),
    ]
    for cluster in platform.clusters:
        cl = h[f"aks:{cluster.name}"]
        grants.append(
            role_assignment(
                cl,
                cl.ref("identityProfile", "kubeletidentity", "objectId"),
                h["registry"],
                "AcrPull",
                "roles",
                f"Nodes of cluster {cluster.name} pull images.",
                "kubelet",
            )
        )
        grants.append(
            role_assignment(
                cl,
                cl.ref("addonProfiles", "azureKeyvaultSecretsProvider", "identity", "objectId"),
                vault,
                "Key Vault Secrets User",
                "roles",
                f"Secrets-store CSI driver of cluster {cluster.name} syncs secrets.",
                "keyvault-provider",
            )
        )
    grants.append(
        role_assignment(
            topic,
            topic.ref("identity", "principalId", full=True),
            h["deadLetterContainer"],
            "Storage Blob Data Contributor",
            "roles",
            "Event Grid writes undeliverable events (dead letters).",
        )
    )
    for g in grants:
        spec.add(g)
        h[f"grant:{g.symbol}"] = g


def secrets(spec: AzureSpec) -> None:
    """The Key Vault secrets of docs/contracts.md, written from keys at deployment time."""
    h = spec.handles
    vault, cache, topic, site, host, appi = (
        h["keyVault"],
        h["redis"],
        h["topic"],
        h["site"],
        h["siteHost"],
        h["appInsights"],
    )
    host_key = host.keys("functionKeys", "default")
    app_host = site.ref("defaultHostName")

    def fn_uri(function: str) -> Interp:
        return Interp(
            ("https://", app_host, f"/api/{function}?code=", Fn("uriComponent", (host_key,)))
        )

    redis_key = cache.keys("primaryKey")
    values: dict[str, tuple[Any, str]] = {
        "ai4ec-redis-url": (
            Interp(
                (
                    "rediss://:",
                    Fn("uriComponent", (redis_key,)),
                    "@",
                    cache.ref("hostName"),
                    ":6380/0",
                )
            ),
            "The key is URL-encoded: Redis keys may contain / and +.",
        ),
        "ai4ec-redis-password": (redis_key, ""),
        "ai4ec-eventgrid-key": (topic.keys("key1"), ""),
        "ai4ec-function-key": (host_key, "The Function App's default host key."),
        "ai4ec-cache-connector-upsert-uri": (fn_uri("CacheConnectorUpsert"), ""),
        "ai4ec-cache-connector-get-uri": (fn_uri("CacheConnectorGet"), ""),
        "ai4ec-current-processing-upsert-uri": (fn_uri("CurrentProcessingUpsert"), ""),
        "ai4ec-appinsights-connection-string": (appi.ref("ConnectionString"), ""),
        "ai4ec-appinsights-instrumentation-key": (
            appi.ref("InstrumentationKey"),
            "For upstream-style containers that read APPINSIGHTS_INSTRUMENTATIONKEY.",
        ),
    }
    # The host keeps its keys in blob storage, reached with its identity: reading them
    # before that identity has its storage roles fails.
    host_deps = [
        h["grant:roleSiteStorageBlobDataOwner"],
        h["grant:roleSiteStorageQueueDataContributor"],
    ]
    for name in SECRET_NAMES:
        value, why = values[name]
        uses_host = any(n is host for n in referenced(value))
        spec.add(
            _res(
                camel("secret", name.removeprefix("ai4ec-")),
                "Microsoft.KeyVault/vaults/secrets",
                name,
                "secrets",
                parent=vault,
                body={
                    "tags": TAGS,
                    "properties": {
                        "value": Note(value, why) if why else value,
                        "contentType": "text/plain",
                        "attributes": {"enabled": True},
                    },
                },
                depends_on=list(host_deps) if uses_host else [],
            )
        )
        h[f"secret:{name}"] = spec.resources[-1]


def dispatch(spec: AzureSpec, platform: Platform) -> None:
    """The Event Grid subscription that delivers tasks to the runtime's BackendWebhook."""
    h = spec.handles
    eg = platform.azure.event_grid
    topic, site, host = h["topic"], h["site"], h["siteHost"]
    url = Interp(
        (
            "https://",
            site.ref("defaultHostName"),
            "/api/BackendWebhook?code=",
            Fn("uriComponent", (host.keys("functionKeys", "default"),)),
        )
    )
    spec.add(
        _res(
            "eventSubscription",
            "Microsoft.EventGrid/topics/eventSubscriptions",
            EVENT_SUBSCRIPTION,
            "dispatch",
            parent=topic,
            condition=Param(PARAM_EVENT_SUBSCRIPTION),
            body={
                "properties": {
                    "destination": {
                        "endpointType": "WebHook",
                        "properties": {
                            "endpointUrl": Note(
                                url, "Holds the function key: an expression, never a value."
                            ),
                            "maxEventsPerBatch": 1,
                            "preferredBatchSizeInKilobytes": 64,
                        },
                    },
                    "eventDeliverySchema": "EventGridSchema",
                    "retryPolicy": {
                        "maxDeliveryAttempts": eg.max_delivery_attempts,
                        "eventTimeToLiveInMinutes": eg.event_ttl_minutes,
                    },
                    "deadLetterWithResourceIdentity": Note(
                        {
                            "identity": {"type": "SystemAssigned"},
                            "deadLetterDestination": {
                                "endpointType": "StorageBlob",
                                "properties": {
                                    "resourceId": h["storage"].id(),
                                    "blobContainerName": DEAD_LETTER_CONTAINER,
                                },
                            },
                        },
                        "Undeliverable events go to storage with the topic's identity (no key).",
                    ),
                }
            },
            depends_on=[h["grant:roleTopicStorageBlobDataContributor"]],
            comment="Event Grid validates a webhook when the subscription is created, so\n"
            "BackendWebhook must already run: deployed only with deployEventSubscription=true.",
        )
    )
    spec.params.append(
        (
            PARAM_EVENT_SUBSCRIPTION,
            "bool",
            False,
            "Create the Event Grid subscription to BackendWebhook. Event Grid calls the webhook "
            "to validate it, so the Function App package must already run: `ai4ec apply` "
            "deploys with false, publishes the package, then deploys again with true.",
        )
    )
