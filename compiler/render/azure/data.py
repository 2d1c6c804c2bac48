"""Data services: storage, Key Vault, the container registry and Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...model.types import Platform
from .common import (
    DEAD_LETTER_CONTAINER,
    LOCATION,
    PACKAGE_BLOB,
    PACKAGE_CONTAINER,
    TAGS,
    TENANT_ID,
    AzureSpec,
    new_resource,
)
from .spec import Note, Param, Parameter, Resource

#: Contract with ``ai4ec apply`` (ai4ec.apply.vaults.PARAM_CREATE_MODE): ``recover`` when a
#: vault of this name is soft-deleted (after ``ai4ec destroy``), else ``default``.
PARAM_VAULT_CREATE_MODE = "vaultCreateMode"
KEY_VAULT_CREATE_MODE = Parameter(
    PARAM_VAULT_CREATE_MODE,
    "string",
    "default",
    "createMode of the Key Vault: 'recover' restores a soft-deleted vault of the same name "
    "(ai4ec apply sets it after ai4ec destroy; vault names are deterministic and stay taken "
    "while soft-deleted), 'default' creates or updates it.",
    allowed=("default", "recover"),
)


@dataclass(frozen=True, slots=True)
class Storage:
    """Handle of the storage module.

    Attributes:
        account: The storage account (Function App host storage, results, dead letters).
        blob: Its blob service.
        dead_letter: The container Event Grid dead-letters into.

    Each API's results container is made with its identity
    (:func:`~.access.api_identities`), as a child of ``blob``.
    """

    account: Resource
    blob: Resource
    dead_letter: Resource


def storage(spec: AzureSpec, platform: Platform) -> Storage:
    """The storage account of the Function App host, the results and the dead letters."""
    st = platform.azure.storage
    account = spec.add(
        new_resource(
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
            comment="Host storage of the Function App (identity-based), each API's results\n"
            "container and the Event Grid dead-letter container.",
        )
    )
    blob = spec.add(
        new_resource(
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
    made: dict[str, Resource] = {}
    for symbol, name, why in containers:
        made[symbol] = spec.add(
            new_resource(
                symbol,
                "Microsoft.Storage/storageAccounts/blobServices/containers",
                name,
                "storage",
                parent=blob,
                body={"properties": {"publicAccess": "None"}},
                comment=why,
            )
        )
    return Storage(
        account=account,
        blob=blob,
        dead_letter=made["deadLetterContainer"],
    )


def key_vault(spec: AzureSpec, platform: Platform) -> Resource:
    """The vault every secret lives in, with RBAC, soft delete and purge protection."""
    kv = platform.azure.key_vault
    spec.params.append(KEY_VAULT_CREATE_MODE)
    props: dict[str, Any] = {
        "createMode": Param(PARAM_VAULT_CREATE_MODE),
        "tenantId": TENANT_ID,
        "sku": {"family": "A", "name": kv.sku},
        "enableRbacAuthorization": Note(
            True, "Access is granted by role assignments (modules/roles.bicep), never by policies."
        ),
        "enabledForTemplateDeployment": Note(
            True,
            "Lets a deployment read Event Grid's key as a Key Vault parameter reference\n"
            "(the deployer needs vaults/deploy/action on it as well).",
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
    return spec.add(
        new_resource(
            "keyVault",
            "Microsoft.KeyVault/vaults",
            kv.name,
            "keyvault",
            body={"location": LOCATION, "tags": TAGS, "properties": props},
            comment="Every platform secret; the other modules write keys into it at deployment.",
        )
    )


def registry(spec: AzureSpec, platform: Platform) -> Resource:
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
    return spec.add(
        new_resource(
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


@dataclass(frozen=True, slots=True)
class Redis:
    """Handle of the redis module.

    Attributes:
        server: The resource whose ``hostName`` clients connect to (the cache, or the
            Azure Managed Redis cluster).
        keys_from: The resource ``listKeys()`` reads the access keys of (the cache, or
            the Azure Managed Redis database).
        port: The TLS port (6380, or 10000 on Azure Managed Redis).
    """

    server: Resource
    keys_from: Resource
    port: int


def redis(spec: AzureSpec, platform: Platform) -> Redis:
    """The task store: Azure Managed Redis by default, the legacy cache when chosen."""
    cache = platform.azure.cache
    if cache.managed:
        return _managed_redis(spec, platform)
    legacy = spec.add(
        new_resource(
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
            comment="Task store of the runtime (docs/contracts.md, Redis layout): the legacy\n"
            "Azure Cache for Redis (azure.cache.kind: legacy), one node, AI4EC_REDIS_MODE=single.",
        )
    )
    return Redis(server=legacy, keys_from=legacy, port=cache.port)


def _managed_redis(spec: AzureSpec, platform: Platform) -> Redis:
    """Azure Managed Redis: the cluster and its one database, OSS cluster policy."""
    cache = platform.azure.cache
    database: dict[str, Any] = {
        "clientProtocol": Note("Encrypted", f"TLS only, on port {cache.port}."),
        "port": cache.port,
        "clusteringPolicy": Note(
            "OSSCluster",
            "Clients see the shards (CLUSTER SLOTS) and talk to each directly. The runtime\n"
            "supports it today: AI4EC_REDIS_MODE=cluster, keys hash-tagged per shard so each\n"
            "script touches one slot; KEDA reads it with its redis-cluster trigger.",
        ),
        "evictionPolicy": Note(
            "NoEviction",
            "A task store must not silently drop tasks when memory runs out;\n"
            "writes fail instead, and the runtime reports the error.",
        ),
        "accessKeysAuthentication": Note(
            "Enabled",
            "The runtime and KEDA sign in with the database key from Key Vault\n"
            "(modules/secrets.bicep); new databases have keys switched off otherwise.",
        ),
    }
    if not cache.sku.startswith("FlashOptimized_"):
        database["persistence"] = Note(
            {"aofEnabled": True, "aofFrequency": "1s"},
            "An acknowledged task survives a node restart (Flash tiers have no persistence).",
        )
    server = spec.add(
        new_resource(
            "redis",
            "Microsoft.Cache/redisEnterprise",
            cache.name,
            "redis",
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": {"name": cache.sku},
                "properties": {
                    "minimumTlsVersion": "1.2",
                    "highAvailability": Note(
                        "Enabled", "A replica per shard: a node failure loses no task."
                    ),
                    "publicNetworkAccess": Note(
                        "Enabled",
                        "The Function App and the clusters reach it over its public endpoint\n"
                        "(see docs/security.md).",
                    ),
                },
            },
            comment="Task store of the runtime (docs/contracts.md, Redis layout): Azure Managed\n"
            "Redis, the successor of the retiring Azure Cache for Redis.",
        )
    )
    db = spec.add(
        new_resource(
            "redisDatabase",
            "Microsoft.Cache/redisEnterprise/databases",
            "default",
            "redis",
            parent=server,
            body={"properties": database},
            comment="The one database of the cluster; its keys are the runtime's password.",
        )
    )
    return Redis(server=server, keys_from=db, port=cache.port)
