"""Which changes replace a resource or lose data, as rules kept in one table.

Input: a resource's type, and a field path with its old and new values (or a removal).
Output: a :class:`~ai4ec.diff.records.Risk` and a sentence saying why, which reports
print next to the change. Azure and Kubernetes do not say in advance what an update
will do; these rules encode what their documentation says for the resources ai4ec
generates (AKS node pools cannot change VM size in place, Redis cannot move down a
tier, a deleted storage account takes its blobs with it...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .records import MISSING, RISK_ORDER, Risk

Check = Callable[[Any, Any], bool]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Changing a field of a resource type has this consequence."""

    type: str
    path: re.Pattern[str]
    risk: Risk
    reason: str
    when: Check | None = None
    #: The whole resource is recreated: if it holds data, that data is lost.
    whole: bool = False


def _rule(
    type_: str,
    path: str,
    risk: Risk,
    reason: str,
    when: Check | None = None,
    whole: bool = False,
) -> FieldRule:
    return FieldRule(type_, re.compile(path), risk, reason, when, whole)


_REDIS_TIERS = {"basic": 0, "standard": 1, "premium": 2, "enterprise": 3, "enterpriseflash": 3}


def _lower(old: Any, new: Any) -> bool:
    """A tier downgrade (Premium -> Standard -> Basic)."""
    o = _REDIS_TIERS.get(str(old).lower())
    n = _REDIS_TIERS.get(str(new).lower())
    return o is not None and n is not None and n < o


def _higher(old: Any, new: Any) -> bool:
    return not _lower(old, new) and old is not MISSING and new is not MISSING


def _premium_switch(old: Any, new: Any) -> bool:
    return str(old).startswith("Premium") != str(new).startswith("Premium")


_APIM_CLASSIC = {"developer", "basic", "standard", "premium", "isolated"}


def _apim_family_switch(old: Any, new: Any) -> bool:
    """Classic tiers <-> Consumption or v2 tiers: no in-place migration exists."""
    return (str(old).lower() in _APIM_CLASSIC) != (str(new).lower() in _APIM_CLASSIC)


def _apim_same_family(old: Any, new: Any) -> bool:
    return not _apim_family_switch(old, new)


def _elastic_switch(old: Any, new: Any) -> bool:
    """Function plans cannot move between Consumption (Y1) and Premium (EP)."""
    return str(old)[:1].upper() != str(new)[:1].upper()


_POOL_IMMUTABLE = (
    r"vmSize|osDiskSizeGB|osDiskType|osType|osSKU|availabilityZones|maxPods|scaleSetPriority"
    r"|scaleSetEvictionPolicy|spotMaxPrice|vnetSubnetID|podSubnetID|kubeletDiskType|enableFIPS"
    r"|enableEncryptionAtHost|gpuInstanceProfile|kubeletConfig\..*|linuxOSConfig\..*"
)
_POOL_REASON = (
    "AKS cannot change this on an existing node pool: the pool is recreated and its "
    "pods are rescheduled"
)
_AKS = "microsoft.containerservice/managedclusters"

FIELD_RULES: tuple[FieldRule, ...] = (
    # AKS
    _rule(
        f"{_AKS}/agentpools", rf"^properties\.({_POOL_IMMUTABLE})$", Risk.REPLACEMENT, _POOL_REASON
    ),
    _rule(
        f"{_AKS}/agentpools",
        r"^properties\.orchestratorVersion$",
        Risk.DISRUPTION,
        "nodes are upgraded: cordoned, drained and reimaged one by one",
    ),
    _rule(
        _AKS,
        rf"^properties\.agentPoolProfiles\[name=[^]]+\]\.({_POOL_IMMUTABLE})$",
        Risk.REPLACEMENT,
        "AKS cannot change this on an existing system pool: the pool is recreated and "
        "add-ons are rescheduled",
    ),
    _rule(
        _AKS,
        r"^properties\.(kubernetesVersion|agentPoolProfiles\[name=[^]]+\]\.orchestratorVersion)$",
        Risk.DISRUPTION,
        "the control plane and nodes are upgraded; nodes are drained and reimaged one by one",
    ),
    _rule(
        _AKS,
        r"^properties\.(dnsPrefix|fqdnSubdomain|enableRBAC|nodeResourceGroup|networkProfile\."
        r"(networkPlugin|podCidrs?|serviceCidrs?|dnsServiceIP|loadBalancerSku|ipFamilies))$",
        Risk.REPLACEMENT,
        "fixed at cluster creation: the whole cluster is recreated and every workload "
        "on it redeployed",
        whole=True,
    ),
    # Redis
    _rule(
        "microsoft.cache/redis",
        r"^properties\.sku\.family$",
        Risk.DATA_LOSS,
        "Azure Cache for Redis cannot move between the C and P families: the cache is "
        "recreated and its tasks and results are lost",
    ),
    _rule(
        "microsoft.cache/redis",
        r"^properties\.sku\.name$",
        Risk.DATA_LOSS,
        "Azure Cache for Redis cannot scale down a tier: the cache is recreated and its "
        "tasks and results are lost",
        _lower,
    ),
    _rule(
        "microsoft.cache/redis",
        r"^properties\.sku\.(name|capacity)$",
        Risk.DISRUPTION,
        "scaling a cache drops client connections for a short while",
        _higher,
    ),
    _rule(
        "microsoft.cache/redis",
        r"^(zones|properties\.(subnetId|staticIP))$",
        Risk.DATA_LOSS,
        "fixed at creation: the cache is recreated and its data lost",
    ),
    _rule(
        "microsoft.cache/redisenterprise/databases",
        r"^properties\.(clusteringPolicy|port|modules)$",
        Risk.DATA_LOSS,
        "fixed at creation: the database is recreated and its tasks and results are lost",
    ),
    # Storage
    _rule(
        "microsoft.storage/storageaccounts",
        r"^properties\.isHnsEnabled$",
        Risk.DATA_LOSS,
        "fixed at creation: the account is recreated and its blobs lost",
    ),
    _rule(
        "microsoft.storage/storageaccounts",
        r"^sku\.name$",
        Risk.DATA_LOSS,
        "an account cannot convert to or from Premium: it is recreated and its blobs lost",
        _premium_switch,
    ),
    # API Management
    _rule(
        "microsoft.apimanagement/service",
        r"^sku\.name$",
        Risk.DATA_LOSS,
        "no in-place migration between classic and Consumption/v2 tiers: the service is "
        "recreated and its subscriptions and keys lost",
        _apim_family_switch,
    ),
    _rule(
        "microsoft.apimanagement/service",
        r"^(sku\.name|sku\.capacity|properties\.virtualNetworkType)$",
        Risk.DISRUPTION,
        "scaling or changing tier takes 15-45 minutes; the Developer tier has no SLA and "
        "is offline meanwhile",
        _apim_same_family,
    ),
    _rule(
        "microsoft.apimanagement/service/apis",
        r"^properties\.(path|serviceUrl|protocols)$",
        Risk.DISRUPTION,
        "callers must use the new URL; the old one stops answering",
    ),
    # Functions
    _rule(
        "microsoft.web/serverfarms",
        r"^sku\.name$",
        Risk.REPLACEMENT,
        "a plan cannot move between Consumption and Premium: it is recreated",
        _elastic_switch,
    ),
    _rule(
        "microsoft.web/sites",
        r"^kind$",
        Risk.REPLACEMENT,
        "fixed at creation: recreated",
        whole=True,
    ),
    _rule(
        "microsoft.eventgrid/topics",
        r"^properties\.inputSchema$",
        Risk.REPLACEMENT,
        "fixed at creation: the topic is recreated and undelivered events are lost",
        whole=True,
    ),
    # Any ARM resource
    _rule(
        "arm:*",
        r"^location$",
        Risk.REPLACEMENT,
        "resources cannot move between regions: it is recreated",
        whole=True,
    ),
    # Kubernetes
    _rule(
        "k8s:Deployment|k8s:DaemonSet|k8s:StatefulSet|k8s:ReplicaSet",
        r"^spec\.selector\.",
        Risk.REPLACEMENT,
        "spec.selector is immutable: the object is deleted and recreated (pods restart)",
    ),
    _rule(
        "k8s:StatefulSet",
        r"^spec\.(volumeClaimTemplates|serviceName|podManagementPolicy)",
        Risk.REPLACEMENT,
        "immutable field: the StatefulSet is deleted and recreated",
    ),
    _rule("k8s:Job", r"^spec\.template\.", Risk.REPLACEMENT, "a Job's template is immutable"),
    _rule(
        "k8s:Service",
        r"^spec\.(clusterIPs?|ipFamilies|ipFamilyPolicy)$",
        Risk.REPLACEMENT,
        "immutable field: the Service is recreated with a new address",
    ),
    _rule(
        "k8s:PersistentVolumeClaim",
        r"^spec\.(accessModes|storageClassName|volumeName|volumeMode)",
        Risk.DATA_LOSS,
        "immutable field: the claim and its volume are recreated",
    ),
)

#: Removing (or renaming) a resource of this type has this consequence.
REMOVAL_RULES: dict[str, tuple[Risk, str]] = {
    "microsoft.storage/storageaccounts": (
        Risk.DATA_LOSS,
        "its blobs (task results, dead letters) are deleted with it",
    ),
    "microsoft.storage/storageaccounts/blobservices/containers": (
        Risk.DATA_LOSS,
        "the container's blobs are deleted",
    ),
    "microsoft.containerregistry/registries": (Risk.DATA_LOSS, "the images in it are deleted"),
    "microsoft.keyvault/vaults": (
        Risk.DATA_LOSS,
        "its secrets, keys and certificates go (recoverable only during soft-delete retention)",
    ),
    "microsoft.cache/redis": (Risk.DATA_LOSS, "tasks and results held in Redis are lost"),
    "microsoft.cache/redisenterprise": (
        Risk.DATA_LOSS,
        "tasks and results held in Redis are lost",
    ),
    "microsoft.cache/redisenterprise/databases": (
        Risk.DATA_LOSS,
        "tasks and results held in Redis are lost",
    ),
    "microsoft.apimanagement/service": (
        Risk.DATA_LOSS,
        "API Management's subscriptions, keys and users are deleted",
    ),
    "microsoft.apimanagement/service/products": (
        Risk.DATA_LOSS,
        "subscriptions to the product and their keys are deleted",
    ),
    "microsoft.apimanagement/service/apis": (Risk.DISRUPTION, "callers of this API get 404"),
    "microsoft.apimanagement/service/policyfragments": (
        Risk.DISRUPTION,
        "a policy that still includes it can no longer be saved",
    ),
    _AKS: (Risk.DATA_LOSS, "the cluster and everything running on it are deleted"),
    f"{_AKS}/agentpools": (
        Risk.DISRUPTION,
        "its nodes are drained and deleted; pods move to other pools or stay pending",
    ),
    "microsoft.operationalinsights/workspaces": (Risk.DATA_LOSS, "collected logs are deleted"),
    "microsoft.insights/components": (Risk.DATA_LOSS, "telemetry history is deleted"),
    "microsoft.eventgrid/topics": (Risk.DATA_LOSS, "undelivered task events are lost"),
    "microsoft.web/sites": (Risk.DISRUPTION, "the task manager stops: async requests fail"),
    "k8s:Namespace": (Risk.DATA_LOSS, "every object in the namespace is deleted"),
    "k8s:PersistentVolumeClaim": (Risk.DATA_LOSS, "the volume and its data are deleted"),
    "k8s:Deployment": (Risk.DISRUPTION, "the API's pods stop"),
    "k8s:VirtualService": (Risk.DISRUPTION, "requests for its routes get 404 at the ingress"),
    "functions:routing": (
        Risk.DISRUPTION,
        "tasks still queued for it can no longer be dispatched",
    ),
}


def type_key(layer: str, meta: dict[str, Any]) -> str:
    """The key rules are written against: ARM type, ``k8s:Kind``, or ``layer:thing``."""
    if "arm_type" in meta:
        return str(meta["arm_type"])
    if "k8s_kind" in meta:
        return f"k8s:{meta['k8s_kind']}"
    if "routing" in meta:
        return "functions:routing"
    return f"{layer}:other"


def _type_matches(rule_type: str, key: str) -> bool:
    if rule_type == "arm:*":
        return key.startswith("microsoft.")
    return key in rule_type.split("|")


def field_risk(key: str, path: str, old: Any, new: Any) -> tuple[Risk, str] | None:
    """The worst consequence of changing ``path`` from ``old`` to ``new``, if any."""
    found: list[tuple[Risk, str]] = []
    for rule in FIELD_RULES:
        if not _type_matches(rule.type, key) or not rule.path.search(path):
            continue
        if rule.when is not None and not rule.when(old, new):
            continue
        risk = rule.risk
        removal = REMOVAL_RULES.get(key)
        if rule.whole and risk is Risk.REPLACEMENT and removal and removal[0] is Risk.DATA_LOSS:
            # Recreating something that holds data loses the data.
            risk = Risk.DATA_LOSS
        found.append((risk, rule.reason))
    if not found:
        return None
    return min(found, key=lambda f: RISK_ORDER[f[0]])


def removal_risk(key: str) -> tuple[Risk, str] | None:
    """What deleting a resource of this type costs, if anything beyond the resource."""
    return REMOVAL_RULES.get(key)


def shared_fragment_reason(res: Any) -> tuple[Risk, str] | None:
    """The risk of changing a policy fragment: every operation including it changes too.

    ``res`` is the head side's comparable; its ``included_by`` counts the policies of
    the head build that include the fragment.
    """
    users = res.meta.get("included_by")
    if users is None:
        return None
    return (
        Risk.DISRUPTION,
        f"shared policy fragment included by {users} operation "
        f"polic{'ies' if users != 1 else 'y'}: the change applies to all of them at once",
    )


def worst(risks: list[Risk | None]) -> Risk | None:
    """The most severe of ``risks`` (``None`` when there is none)."""
    present = [r for r in risks if r is not None]
    return min(present, key=RISK_ORDER.__getitem__) if present else None
