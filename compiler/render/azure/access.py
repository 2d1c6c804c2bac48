"""Least privilege on Azure: the keys ``apply`` generates, and one identity per API.

No key comes from ``listKeys()`` of the Functions host any more: that key opened every
function to every holder, and reading it right after a role assignment raced the
assignment (issue 12 item 8). ``ai4ec apply`` generates the access keys once
(``compiler/apply/keys.py``) and writes them as Key Vault secrets; the template only
names them:

* the Function App reads the whole document (:data:`ACCESS_KEYS_SECRET`) through a Key
  Vault reference and checks every call against it (``ai4ec_runtime.auth``);
* API Management reads only its own key (:data:`APIM_KEY_SECRET`) as a named value;
* Event Grid presents only its own key (:data:`EVENT_GRID_KEY_SECRET`), a secret
  delivery header filled from a Key Vault parameter reference;
* each API's pods read only their API's key (:func:`api_key_secret`) with the API's own
  managed identity, federated with its Kubernetes service account.

Grants on single secrets need the secrets to exist, so they are held back by
:data:`PARAM_ACCESS_GRANTS` until ``apply`` has written them (the ``access`` part).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ...model.naming import (
    GATEWAY_CLIENT_CERT,
    GATEWAY_SERVER_CERT,
    GATEWAY_SERVICE_ACCOUNT,
    INGRESS_NAMESPACE,
    RUNTIME_SECRET_KEYS,
    RUNTIME_SERVICE_ACCOUNT,
    env_part,
    results_container,
    service_account_subject,
    workload_name,
)
from ...model.types import Api, Platform
from .aks import ClusterHandle
from .common import LOCATION, TAGS, AzureSpec, new_resource, role_assignment
from .prints import Group
from .spec import Note, Output, Param, Parameter, Resource, camel, to_arm

#: The whole keys document ``{"apim", "eventGrid", "apis": {api id: key}}`` (the runtime's).
ACCESS_KEYS_SECRET = "ai4ec-access-keys"
#: API Management's key: creates tasks and reads their status.
APIM_KEY_SECRET = "ai4ec-apim-key"
#: Event Grid's key: opens BackendWebhook and BackendDeadLetter only.
EVENT_GRID_KEY_SECRET = "ai4ec-eventgrid-delivery-key"
#: Prefix of each API's key: ``ai4ec-api-key-<api id>`` (the API's workload name).
API_KEY_PREFIX = "ai4ec-api-key-"
#: Secrets the runtime identity of each cluster reads, one grant each, never the whole
#: vault: the runtime Secret's values (URLs that carry no key, telemetry, and the Redis
#: password of the KEDA trigger). No API key.
RUNTIME_SECRETS = tuple(kv for _key, kv in RUNTIME_SECRET_KEYS)

#: True once ``apply`` has written the secrets the single-secret grants are scoped to.
PARAM_ACCESS_GRANTS = "deployAccessGrants"
#: Event Grid's delivery key, read from Key Vault by Resource Manager (never a value).
PARAM_EVENT_GRID_KEY = "eventGridDeliveryKey"
#: Audience of a Kubernetes service account token exchanged for an Entra ID token.
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


def api_key_secret(api_id: str) -> str:
    """Key Vault secret of one API's key (API ids are valid secret names by schema)."""
    return API_KEY_PREFIX + api_id


def vault_id(platform: Platform) -> str:
    """The vault's full resource id, as a parameters file's Key Vault reference needs it."""
    az = platform.azure
    return (
        f"/subscriptions/{az.subscription_id}/resourceGroups/{az.resource_group}"
        f"/providers/Microsoft.KeyVault/vaults/{az.key_vault.name}"
    )


def access_parameters(platform: Platform) -> list[Parameter]:
    """The switch for single-secret grants and Event Grid's key reference."""
    return [
        Parameter(
            PARAM_ACCESS_GRANTS,
            "bool",
            False,
            "Grant identities single Key Vault secrets (each API its own key). The secrets "
            "must exist first: `ai4ec apply` deploys with false, writes the access keys and "
            "certificates, then deploys the grants with true.",
        ),
        Parameter(
            PARAM_EVENT_GRID_KEY,
            "string",
            "",
            "Event Grid's key for BackendWebhook (header x-functions-key). The parameters "
            f"file reads it from Key Vault ({EVENT_GRID_KEY_SECRET}); only the Event Grid "
            "subscription uses it.",
            secure=True,
            key_vault=(vault_id(platform), EVENT_GRID_KEY_SECRET),
        ),
    ]


def secret_scope(
    spec: AzureSpec, vault: Resource, name: str, cache: dict[str, Resource]
) -> Resource:
    """A Key Vault secret as a role assignment scope (virtual: never deployed here)."""
    if name not in cache:
        cache[name] = spec.add(
            Resource(
                camel("kvSecret", name.removeprefix("ai4ec-")),
                "Microsoft.KeyVault/vaults/secrets",
                "2026-02-01",
                name,
                vault.module,
                parent=vault,
                virtual=True,
            )
        )
    return cache[name]


@dataclass(frozen=True, slots=True)
class ApiIdentity:
    """One API's user-assigned identity and the secrets it may read."""

    api: Api
    identity: Resource
    secrets: tuple[str, ...]
    #: The API's own results container (the only one its identity may write).
    container: Resource | None = None
    #: What the identity needs to exist and sign in (its results container, identity,
    #: federated credential, results grant), parents first: deployable once the clusters
    #: exist.
    resources: tuple[Resource, ...] = ()
    #: Its grants on single Key Vault secrets (held back by :data:`PARAM_ACCESS_GRANTS`).
    grants: tuple[Resource, ...] = ()
    #: Digest of everything its resources and grants were built from (see
    #: :func:`_identity_view`): their key in the render cache.
    slice: str = ""


def _federated_identity(
    spec: AzureSpec,
    symbol: tuple[str, ...],
    name: str,
    module: str,
    handle: ClusterHandle,
    subject: str,
    comment: str,
    why: str,
) -> tuple[Resource, Resource]:
    """A user-assigned identity and its federated credential for one ServiceAccount."""
    ident = spec.add(
        new_resource(
            camel("id", *symbol),
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            name,
            module,
            body={"location": LOCATION, "tags": TAGS},
            comment=comment,
        )
    )
    federation = spec.add(
        new_resource(
            camel("id", *symbol, "federation"),
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
            f"aks-{handle.model.name}",
            module,
            parent=ident,
            body={
                "properties": {
                    "issuer": handle.cluster.ref("oidcIssuerProfile", "issuerURL"),
                    "subject": Note(subject, why),
                    "audiences": [TOKEN_EXCHANGE_AUDIENCE],
                }
            },
        )
    )
    return ident, federation


def _identity_prefix(platform: Platform) -> str:
    """``<prefix>[-<env>]``: identity names unique per environment in a resource group."""
    e = env_part(platform.environment, 10)
    return f"{platform.azure.name_prefix}{'-' + e if e else ''}"


def identity_name(platform: Platform, api: Api) -> str:
    """``<prefix>[-<env>]-api-<api id>``: unique per environment in a resource group."""
    return f"{_identity_prefix(platform)}-api-{api.id}"


def api_identities(
    spec: AzureSpec,
    platform: Platform,
    vault: Resource,
    blob: Resource,
    clusters: Sequence[ClusterHandle],
) -> list[ApiIdentity]:
    """Per API: results container, identity, federated credential, data role, secrets' grants.

    Each API writes its results to a container of its own (``blob`` is the storage
    account's blob service), and its identity holds Storage Blob Data Contributor on that
    container alone: no API can read or overwrite another API's results, and none holds
    a data role on the account. The container travels with the identity (in main.json,
    or in the same ``identities-<n>`` split template), so 1,000 APIs split the same way.
    """
    module = "identities"
    apis = sorted(platform.apis, key=lambda a: a.id)
    platform, by_cluster = _identity_view(platform, clusters)  # see _identity_view
    shared = [repr(platform), _resource_identity(vault), _resource_identity(blob)]
    shared += [_resource_identity(h.cluster) for h in by_cluster.values()]
    digest = hashlib.sha256("\0".join(shared).encode("utf-8")).hexdigest()
    scopes: dict[str, Resource] = {}
    grant = Param(PARAM_ACCESS_GRANTS)
    made: list[ApiIdentity] = []
    for api in apis:
        handle = by_cluster.get(api.cluster)
        if handle is None:  # pragma: no cover - the model places every API on a cluster
            continue
        own: list[Resource] = []
        grants: list[Resource] = []
        container = spec.add(
            new_resource(
                camel("results", api.id),
                "Microsoft.Storage/storageAccounts/blobServices/containers",
                results_container(platform.azure, api),
                module,
                parent=blob,
                body={"properties": {"publicAccess": "None"}},
                comment=f"API {api.id}'s results; only its identity may read and write them.",
            )
        )
        own.append(container)
        ident, federation = _federated_identity(
            spec,
            ("api", api.id),
            identity_name(platform, api),
            module,
            handle,
            service_account_subject(handle.model.namespace, workload_name(api)),
            f"Identity of API {api.id}'s pods (workload identity).",
            "Only this API's service account signs in as this identity.",
        )
        own += [ident, federation]
        principal = ident.ref("principalId")
        results_grant = spec.add(
            role_assignment(
                ident,
                principal,
                container,
                "Storage Blob Data Contributor",
                module,
                f"API {api.id} reads and writes its own results container, no other.",
            )
        )
        own.append(results_grant)
        # Its own key and its own apis[].secrets: one grant per API is what keeps the
        # template small (ARM allows 800 resources in one deployment).
        readable = (api_key_secret(api.id), *sorted({r.key_vault_secret for _, r in api.secrets}))
        for name in readable:
            role = role_assignment(
                ident,
                principal,
                secret_scope(spec, vault, name, scopes),
                "Key Vault Secrets User",
                module,
                f"API {api.id} reads the secret {name}, and no other API's key.",
                name,
            )
            role.condition = grant
            grants.append(spec.add(role))
        made.append(
            ApiIdentity(
                api=api,
                identity=ident,
                secrets=readable,
                container=container,
                resources=tuple(own),
                grants=tuple(grants),
                slice=f"{digest}\0{api!r}",
            )
        )
    return made


def identity_groups(identities: Sequence[ApiIdentity]) -> list[Group]:
    """Each API's identity resources and grants, as a group the render cache may print."""
    return [Group("identities", i.slice, (*i.resources, *i.grants)) for i in identities]


def _identity_view(
    platform: Platform, clusters: Sequence[ClusterHandle]
) -> tuple[Platform, dict[str, ClusterHandle]]:
    """All the per-API identities may read: the platform but its APIs and node pools.

    :func:`api_identities` builds each API's resources from this view and the API
    alone, so its ``repr`` (frozen dataclasses of plain values) with the API's is the
    exact model slice they depend on: what the render cache keys them by. Node pools
    are left out so that resizing a pool (a common change) keeps every identity cached;
    nothing here reads them.
    """
    narrowed = {h.model.name: replace(h, model=replace(h.model, pools=())) for h in clusters}
    view = replace(
        platform,
        apis=(),
        pipelines=(),
        products=(),
        clusters=tuple(replace(c, pools=()) for c in platform.clusters),
        _index={},
    )
    return view, narrowed


def _resource_identity(res: Resource) -> str:
    """How a resource an identity refers to prints (its symbol, type, version and id)."""
    return f"{res.symbol}\0{res.type}\0{res.api_version}\0{to_arm(res.id())}"


@dataclass(frozen=True, slots=True)
class ClusterIdentities:
    """The two identities of one cluster's secret syncs.

    Output as ``clusters.<name>.runtimeClientId`` and ``gatewayClientId`` (HTTPS only).
    """

    runtime: Resource
    gateway: Resource | None


def cluster_identities(
    spec: AzureSpec,
    platform: Platform,
    vault: Resource,
    clusters: Sequence[ClusterHandle],
) -> dict[str, ClusterIdentities]:
    """Per cluster: who syncs the runtime Secret and the gateway's certificates.

    Each is a user-assigned identity federated with exactly one ServiceAccount (the
    names are shared with the Kubernetes renderer through ``model.naming``) and granted
    exactly its secrets, one role assignment each: the runtime identity the runtime
    Secret's values, the gateway identity the server certificate and the client
    certificate whose public part the gateway trusts. The AKS secrets-provider add-on's
    own identity, which every node could use, is granted nothing.
    """
    module = "identities"
    scopes: dict[str, Resource] = {}
    grant = Param(PARAM_ACCESS_GRANTS)
    prefix = _identity_prefix(platform)
    out: dict[str, ClusterIdentities] = {}
    for handle in clusters:
        c = handle.model
        wanted: list[tuple[str, str, str, tuple[str, ...]]] = [
            ("runtime", c.namespace, RUNTIME_SERVICE_ACCOUNT, RUNTIME_SECRETS)
        ]
        if c.ingress.protocol == "https":
            certs = (c.ingress.certificate or GATEWAY_SERVER_CERT, GATEWAY_CLIENT_CERT)
            wanted.append(("gateway", INGRESS_NAMESPACE, GATEWAY_SERVICE_ACCOUNT, certs))
        made: dict[str, Resource] = {}
        for role_name, namespace, account, secrets in wanted:
            ident, _federation = _federated_identity(
                spec,
                (c.name, role_name),
                f"{prefix}-{c.name}-{role_name}",
                module,
                handle,
                service_account_subject(namespace, account),
                f"Identity of cluster {c.name}'s {role_name} secret sync.",
                f"Only the {role_name} sync's service account signs in.",
            )
            for name in secrets:
                role = role_assignment(
                    ident,
                    ident.ref("principalId"),
                    secret_scope(spec, vault, name, scopes),
                    "Key Vault Secrets User",
                    module,
                    f"Cluster {c.name}'s {role_name} sync reads {name} only.",
                    name,
                )
                role.condition = grant
                spec.add(role)
            made[role_name] = ident
        out[c.name] = ClusterIdentities(runtime=made["runtime"], gateway=made.get("gateway"))
    return out


def identity_outputs(ids: Sequence[ApiIdentity]) -> list[Output]:
    """``apis.<api id>.clientId``: what the API's service account names (an identifier)."""
    value: dict[str, Any] = {
        workload_name(i.api): {"clientId": i.identity.ref("clientId")} for i in ids
    }
    return [
        Output(
            "apis",
            "object",
            value,
            "Per API: client id of its workload identity ($(azure:apis.<api id>.clientId) "
            "in its ServiceAccount).",
        )
    ]


__all__ = [
    "ACCESS_KEYS_SECRET",
    "APIM_KEY_SECRET",
    "EVENT_GRID_KEY_SECRET",
    "GATEWAY_CLIENT_CERT",
    "GATEWAY_SERVER_CERT",
    "ApiIdentity",
    "ClusterIdentities",
    "access_parameters",
    "api_identities",
    "api_key_secret",
    "cluster_identities",
    "identity_groups",
    "identity_outputs",
]
