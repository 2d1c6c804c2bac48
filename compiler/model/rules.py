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
