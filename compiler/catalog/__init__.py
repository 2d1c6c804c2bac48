"""The dated Azure catalog: what Azure offers, until when, and what a node really holds.

``data`` parses ``compiler/data/azure-catalog.json``; ``rules`` and ``capacity`` are the
pure checks that model rules and ``apply --plan`` call; ``live`` talks to a subscription
(``ai4ec catalog refresh`` and the live quota check).
"""

from __future__ import annotations

from .capacity import (
    Allocatable,
    FamilyUsage,
    PoolDemand,
    QuotaNeed,
    allocatable,
    check_quota,
    required_cores,
)
from .data import (
    CacheOffer,
    Catalog,
    CatalogError,
    KubernetesVersion,
    MeshRevision,
    NodeReservations,
    Region,
    Source,
    VmSize,
    load_catalog,
    parse_catalog,
    read_catalog,
)
from .rules import (
    WARN_DAYS,
    Finding,
    check_cache_sku,
    check_kubernetes_version,
    check_mesh_revision,
    check_region,
    check_vm_size,
    current_replacement,
    find_vm_size,
)

__all__ = [
    "WARN_DAYS",
    "Allocatable",
    "CacheOffer",
    "Catalog",
    "CatalogError",
    "FamilyUsage",
    "Finding",
    "KubernetesVersion",
    "MeshRevision",
    "NodeReservations",
    "PoolDemand",
    "QuotaNeed",
    "Region",
    "Source",
    "VmSize",
    "allocatable",
    "check_cache_sku",
    "check_kubernetes_version",
    "check_mesh_revision",
    "check_quota",
    "check_region",
    "check_vm_size",
    "current_replacement",
    "find_vm_size",
    "load_catalog",
    "parse_catalog",
    "read_catalog",
    "required_cores",
]
