"""Semantic rules that look across several entries: unique names, unique public routes.

Rules that belong to one entry (a pool's size, an endpoint's timeout) stay with the
reader of that entry; what lives here needs the whole list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..load import JsonPath
from .context import ModelContext
from .refs import (
    pipeline_index,
)
from .types import (
    Api,
    Pipeline,
)


def unique(ctx: ModelContext, names: Iterable[Any], path: JsonPath, what: str) -> None:
    """Report every name in ``names`` that appeared before (E-DUPLICATE-NAME)."""
    seen: dict[Any, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            ctx.report(
                "E-DUPLICATE-NAME",
                f"{what} {name!r} is defined twice (first at index {seen[name]})",
                (*path, i),
                f"give each {what} a unique name",
            )
        else:
            seen[name] = i


def check_api_ids(ctx: ModelContext, apis: list[Api]) -> None:
    """API name + version pairs must be unique."""
    unique(ctx, [a.id for a in apis], ("apis",), "API (name + version)")


def check_routes(ctx: ModelContext, apis: list[Api], pipelines: list[Pipeline]) -> None:
    """Public APIM paths must be unique across APIs and pipelines."""
    # Public APIM paths must be unique: one APIM API per API version and pipeline.
    public: dict[str, str] = {}
    for i, a in enumerate(apis):
        prev = public.get(a.base_path)
        if prev == f"API {a.id!r}":
            continue  # the same API defined twice: E-DUPLICATE-NAME says it
        if prev:
            ctx.report(
                "E-DUPLICATE-ROUTE",
                f"API {a.id!r} uses base path {a.base_path!r}, already used by {prev}",
                ("apis", i, "basePath") if "basePath" in ctx.data["apis"][i] else ("apis", i),
                "give each API version its own base path",
            )
        else:
            public[a.base_path] = f"API {a.id!r}"
    raw_index = pipeline_index(ctx)
    # Every proper prefix of every public path, to find nesting in O(total depth).
    under: dict[str, str] = {}
    for path_, owner in public.items():
        for ancestor in ancestors(path_):
            under.setdefault(ancestor, owner)
    for p in pipelines:
        idx = raw_index[p.id]
        clash = public.get(p.path) or under.get(p.path)
        if clash is None:
            clash = next((public[x] for x in ancestors(p.path) if x in public), None)
        if clash:
            ctx.report(
                "E-DUPLICATE-ROUTE",
                f"pipeline {p.id!r} path {p.path!r} collides with {clash}",
                ("pipelines", idx, "path")
                if "path" in ctx.data["pipelines"][idx]
                else ("pipelines", idx),
                "pick a path no API uses",
            )
        else:
            public[p.path] = f"pipeline {p.id!r}"
    # Nested base paths would make Istio prefix routes shadow each other.
    by_base = {(a.cluster, a.base_path): a for a in apis}
    for i, a in enumerate(apis):
        outer = next(
            (by_base[(a.cluster, x)] for x in ancestors(a.base_path) if (a.cluster, x) in by_base),
            None,
        )
        if outer is not None:
            ctx.report(
                "E-DUPLICATE-ROUTE",
                f"API {a.id!r} base path {a.base_path!r} lies under API {outer.id!r} "
                f"({outer.base_path!r})",
                ("apis", i),
                "base paths must not nest; Istio could route to the wrong API",
            )


def ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``['/a', '/a/b']`` (proper prefixes at segment boundaries)."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


_APIM_CAPACITY: JsonPath = ("azure", "apiManagement", "capacity")


def check_apim_capacity(ctx: ModelContext, sku: str, capacity: int) -> None:
    """APIM capacity units must fit the tier: none on Consumption, exactly 1 on Developer."""
    if sku == "Consumption" and capacity != 0:
        ctx.report(
            "E-APIM-CAPACITY",
            "the Consumption tier has no capacity units",
            _APIM_CAPACITY,
            "remove capacity or set it to 0",
        )
    if sku != "Consumption" and capacity < 1:
        ctx.report(
            "E-APIM-CAPACITY", f"the {sku} tier needs at least 1 capacity unit", _APIM_CAPACITY
        )
    if sku == "Developer" and capacity > 1:
        ctx.report("E-APIM-CAPACITY", "the Developer tier has exactly 1 unit", _APIM_CAPACITY)


#: Azure Managed Redis SKU when ``azure.cache.sku`` is omitted: 1 GB like the legacy
#: default (Basic C1), with high availability (Balanced_B0 is only 0.5 GB).
DEFAULT_MANAGED_CACHE_SKU = "Balanced_B1"
#: Tiers of the legacy Azure Cache for Redis (``kind: legacy``).
LEGACY_CACHE_TIERS = ("Basic", "Standard", "Premium")


def check_managed_cache(ctx: ModelContext, cache: dict[str, Any]) -> None:
    """Azure Managed Redis is sized by its SKU alone; legacy tiers and sizes do not apply.

    Unknown managed SKUs are the catalog rules' (E-AZ-CACHE-SKU, with a did-you-mean).
    """
    sku = cache.get("sku")
    if sku in LEGACY_CACHE_TIERS:
        ctx.report(
            "E-CACHE-SKU",
            f"{sku} is a tier of the legacy Azure Cache for Redis, not of Azure Managed Redis",
            ("azure", "cache", "sku"),
            f"use an Azure Managed Redis SKU such as {DEFAULT_MANAGED_CACHE_SKU}, "
            "or set kind: legacy",
        )
    for field in ("family", "capacity"):
        if field in cache:
            ctx.report(
                "E-CACHE-SKU",
                f"{field} sizes the legacy Azure Cache for Redis only; "
                "Azure Managed Redis is sized by its SKU",
                ("azure", "cache", field),
                f"remove {field} and pick the size with sku (e.g. {DEFAULT_MANAGED_CACHE_SKU}), "
                "or set kind: legacy",
            )


def check_cache_sku(ctx: ModelContext, sku: str, family: str, capacity: int) -> None:
    """Redis family must match the SKU (P for Premium, else C); Premium sizes are P1-P5."""
    if sku not in LEGACY_CACHE_TIERS:
        ctx.report(
            "E-CACHE-SKU",
            f"{sku} is not a tier of the legacy Azure Cache for Redis "
            f"({', '.join(LEGACY_CACHE_TIERS)})",
            ("azure", "cache", "sku"),
            "remove kind: legacy to use Azure Managed Redis with this SKU",
        )
        return
    if (sku == "Premium") != (family == "P"):
        ctx.report(
            "E-CACHE-SKU",
            f"Redis {sku} uses family {'P' if sku == 'Premium' else 'C'}, not {family}",
            ("azure", "cache", "family"),
            "omit family; ai4ec derives it from the SKU",
        )
    elif family == "P" and not 1 <= capacity <= 5:
        ctx.report(
            "E-CACHE-SKU",
            f"Premium Redis sizes are P1-P5, not P{capacity}",
            ("azure", "cache", "capacity"),
        )


def check_event_ttl(ctx: ModelContext, ttl_minutes: int) -> None:
    """Event Grid keeps events at most a day (1440 minutes)."""
    if ttl_minutes > 1440:
        ctx.report(
            "E-SCHEMA-RANGE",
            f"eventTtl is {ttl_minutes} minutes; Event Grid keeps events at most 1440",
            ("azure", "eventGrid", "eventTtl"),
        )
