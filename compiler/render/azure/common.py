"""What every Azure builder shares: API versions, role ids, names and the resource list.

The builders (one module per concern: :mod:`.monitoring`, :mod:`.data`, :mod:`.aks`,
:mod:`.functions`, :mod:`.apim_service`, :mod:`.roles`, :mod:`.secrets`,
:mod:`.dispatch`) each read the typed model and the typed handles of the builders before
them, add their resources to :class:`AzureSpec` and return a handle of their own.
Nothing is looked up by a string key: what a builder needs arrives as an argument, so
the order of the calls in :func:`ai4ec.render.azure.template.build_template` is checked
by the type checker rather than by a ``KeyError`` at render time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .spec import Expr, Fn, Member, Note, Op, Param, Parameter, Resource, Var, camel

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
    "Microsoft.Cache/redisEnterprise": "2025-07-01",
    "Microsoft.Cache/redisEnterprise/databases": "2025-07-01",
    "Microsoft.EventGrid/topics": "2025-02-15",
    "Microsoft.EventGrid/topics/eventSubscriptions": "2025-02-15",
    "Microsoft.Web/serverfarms": "2025-03-01",
    "Microsoft.Web/sites": "2025-03-01",
    "Microsoft.Web/sites/host": "2025-03-01",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": "2025-03-01",
    "Microsoft.ApiManagement/service": "2024-05-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2024-11-30",
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials": "2024-11-30",
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
    "Azure Kubernetes Service RBAC Cluster Admin": "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Key Vault Certificates Officer": "a4417e6f-fecd-4de8-b567-7b0420556985",
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
#: Object parameter cluster name -> ingress base URL. The APIM room declares it (its
#: backends read it) and ``apply`` fills it; the Function App reads it too, so dispatch
#: reaches every cluster (``AI4EC_BACKEND_BASE_URLS``).
PARAM_INGRESS_URLS = "ai4ecIngressUrls"
PARAM_EVENT_SUBSCRIPTION = "deployEventSubscription"
#: Object id and kind of whoever deploys (``ai4ec apply`` fills both from its token):
#: the clusters have Azure RBAC for Kubernetes, so without a role the deployer's own
#: Kubernetes step would be refused on the cluster this same run created.
PARAM_DEPLOYER = "deployerPrincipalId"
PARAM_DEPLOYER_TYPE = "deployerPrincipalType"

#: Key Vault secrets of docs/contracts.md, in the order they are written.
SECRET_NAMES = (
    "ai4ec-redis-url",
    "ai4ec-redis-password",
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


@dataclass
class AzureSpec:
    """Every resource of an environment plus what the template around them needs.

    Builders append to it (symbols stay unique); they never read it back.
    """

    resources: list[Resource] = field(default_factory=list)
    #: Template parameters, in declaration order.
    params: list[Parameter] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
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


def new_resource(symbol: str, type_: str, name: str | Expr, module: str, **kwargs: Any) -> Resource:
    """A resource of ``type_`` at the one API version ai4ec uses for it."""
    return Resource(symbol, type_, API_VERSIONS[type_], name, module, **kwargs)


def _role_definition(role: str) -> Note:
    """``subscriptionResourceId(roleDefinitions, <id>)``, annotated with the role's name."""
    return Note(
        Fn("subscriptionResourceId", ("Microsoft.Authorization/roleDefinitions", ROLES[role])),
        role,
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
    return new_resource(
        symbol,
        "Microsoft.Authorization/roleAssignments",
        Fn("guid", (*seeds, role_id)),
        module,
        scope=scope,
        body={
            "properties": {
                "roleDefinitionId": _role_definition(role),
                "principalId": principal_id,
                "principalType": "ServicePrincipal",
                "description": description,
            }
        },
    )


def deployer_role_assignment(
    scope: Resource,
    principal_id: Param,
    principal_type: Param,
    role: str,
    module: str,
    description: str,
) -> Resource:
    """A role for the deploying principal, deployed only when its object id is given.

    The name is ``guid(scope, principal id, role)``: the principal id is a parameter,
    known when the deployment starts, so a rerun by the same principal finds the same
    assignment and another deployer gets one of their own. An empty id (``az deployment``
    without the parameter) leaves the assignment out rather than failing.
    """
    role_id = ROLES[role]
    return new_resource(
        camel("role", "deployer", scope.symbol, role),
        "Microsoft.Authorization/roleAssignments",
        Fn("guid", (scope.id(), principal_id, role_id)),
        module,
        scope=scope,
        condition=Op("!", "not", (Fn("empty", (principal_id,)),)),
        body={
            "properties": {
                "roleDefinitionId": _role_definition(role),
                "principalId": principal_id,
                "principalType": principal_type,
                "description": description,
            }
        },
    )


def group_role_assignment(
    scope: Resource, group_id: str, role: str, module: str, description: str
) -> Resource:
    """A role for an Entra ID group named in platform.yaml (a literal object id).

    The name is ``guid(scope, group id, role)``, so each group gets its own assignment
    and a rerun finds the same one.
    """
    role_id = ROLES[role]
    return new_resource(
        camel("role", "group", scope.symbol, group_id[:8], role),
        "Microsoft.Authorization/roleAssignments",
        Fn("guid", (scope.id(), group_id, role_id)),
        module,
        scope=scope,
        body={
            "properties": {
                "roleDefinitionId": _role_definition(role),
                "principalId": group_id,
                "principalType": "Group",
                "description": description,
            }
        },
    )


__all__ = [
    "AzureSpec",
    "camel",
    "deployer_role_assignment",
    "group_role_assignment",
    "new_resource",
    "role_assignment",
]
