"""Role assignments between the managed identities and what they use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .aks import ClusterHandle
from .common import (
    PARAM_DEPLOYER,
    PARAM_DEPLOYER_TYPE,
    AzureSpec,
    deployer_role_assignment,
    group_role_assignment,
    role_assignment,
)
from .data import Storage
from .functions import Functions
from .spec import Param, Parameter, Resource

#: Role the deployer gets on each cluster: the clusters authorize Kubernetes calls with
#: Azure RBAC, and ``ai4ec apply`` creates namespaces, CRD-backed objects and
#: cluster-wide objects, which only the cluster-admin role covers.
DEPLOYER_ROLE = "Azure Kubernetes Service RBAC Cluster Admin"

DEPLOYER_PRINCIPAL_ID = Parameter(
    PARAM_DEPLOYER,
    "string",
    "",
    "Object id of the identity that deploys (ai4ec apply fills it from its Azure token); "
    "it gets the AKS RBAC Cluster Admin role on each cluster and writes the platform's "
    "keys in the Key Vault. Empty: no role is assigned.",
)
DEPLOYER_PRINCIPAL_TYPE = Parameter(
    PARAM_DEPLOYER_TYPE,
    "string",
    "ServicePrincipal",
    "Kind of the deployerPrincipalId identity (Azure needs it to assign a role to a "
    "principal that was created moments ago).",
    allowed=("User", "Group", "ServicePrincipal"),
)


@dataclass(frozen=True, slots=True)
class Grants:
    """Handle of the roles module: the grants other resources must wait for.

    Attributes:
        site_blob_owner: The Function App's Storage Blob Data Owner (its host keys live
            in blob storage).
        site_queue_contributor: The Function App's Storage Queue Data Contributor.
        apim_key_vault: API Management's Key Vault Secrets User (named values).
        topic_dead_letter: Event Grid's Storage Blob Data Contributor (dead letters).
    """

    site_blob_owner: Resource
    site_queue_contributor: Resource
    apim_key_vault: Resource
    topic_dead_letter: Resource


def roles(
    spec: AzureSpec,
    vault: Resource,
    storage: Storage,
    registry: Resource,
    functions: Functions,
    apim: Resource,
    clusters: Sequence[ClusterHandle],
    gateway_certificate: bool = False,
) -> Grants:
    """Every grant between managed identities and the resources they use.

    The deployer also gets what ``ai4ec apply``'s keys step writes in the vault (the
    access keys; the gateway client certificate when a gateway wants one), so a first
    run needs no role granted by hand. Secrets Officer on the vault lets the deployer
    read every secret in it, which it could grant itself anyway: whoever may create
    role assignments (the template does) already holds that power.
    """
    account, site, topic = storage.account, functions.site, functions.topic
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
            "The runtime publishes tasks with its identity: the topic takes no key.",
        ),
        role_assignment(
            apim,
            apim.ref("identity", "principalId", full=True),
            vault,
            "Key Vault Secrets User",
            "roles",
            "API Management named values read Key Vault secrets.",
        ),
    ]
    spec.params += [DEPLOYER_PRINCIPAL_ID, DEPLOYER_PRINCIPAL_TYPE]
    deployer, deployer_type = Param(DEPLOYER_PRINCIPAL_ID.name), Param(DEPLOYER_PRINCIPAL_TYPE.name)
    for handle in clusters:
        cluster, cl = handle.model, handle.cluster
        grants.append(
            role_assignment(
                cl,
                cl.ref("identityProfile", "kubeletidentity", "objectId"),
                registry,
                "AcrPull",
                "roles",
                f"Nodes of cluster {cluster.name} pull images.",
                "kubelet",
            )
        )
        # The Key Vault add-on runs with the node identity, which any pod can borrow from
        # the metadata endpoint: it gets single secrets (access.py), never the vault.
        grants.append(
            deployer_role_assignment(
                cl,
                deployer,
                deployer_type,
                DEPLOYER_ROLE,
                "roles",
                f"The deployer (ai4ec apply) manages Kubernetes objects of cluster {cluster.name}.",
            )
        )
        grants.extend(
            group_role_assignment(
                cl,
                group,
                DEPLOYER_ROLE,
                "roles",
                f"Admin group of cluster {cluster.name} (clusters[].adminGroupObjectIds).",
            )
            for group in cluster.admin_groups
        )
    vault_roles = ["Key Vault Secrets Officer"]
    if gateway_certificate:
        vault_roles.append("Key Vault Certificates Officer")
    grants.extend(
        deployer_role_assignment(
            vault,
            deployer,
            deployer_type,
            role,
            "roles",
            f"The deployer (ai4ec apply) writes the platform's keys ({role}).",
        )
        for role in vault_roles
    )
    grants.append(
        role_assignment(
            topic,
            topic.ref("identity", "principalId", full=True),
            storage.dead_letter,
            "Storage Blob Data Contributor",
            "roles",
            "Event Grid writes undeliverable events (dead letters).",
        )
    )
    for g in grants:
        spec.add(g)
    # The list's order is the template's; the handle names the four others wait for.
    _site_vault, site_blob_owner, site_queue, _site_sender, apim_vault = grants[:5]
    return Grants(
        site_blob_owner=site_blob_owner,
        site_queue_contributor=site_queue,
        apim_key_vault=apim_vault,
        topic_dead_letter=grants[-1],
    )
