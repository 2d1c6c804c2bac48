"""Stage 3: schema-valid data -> :class:`~ai4ec.model.types.Platform`.

:func:`build_model` runs the readers of :mod:`.naming`, :mod:`.clusters`,
:mod:`.apis`, :mod:`.pipelines` and :mod:`.products` in a fixed order (the order of
the diagnostics depends on it), with references resolved by :mod:`.refs` and
cross-entry rules checked by :mod:`.rules`. Every problem becomes a located
:class:`~ai4ec.errors.Diagnostic`; all of them are collected before returning.

Runs only on data that passed the schema, so it may rely on types and required fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, Severity
from ..load import SourceMap
from .apim_rules import check_apim
from .apis import read_api
from .azure_limits import check_azure_limits
from .capacity_rules import check_capacity_rules
from .catalog_rules import check_catalog
from .clusters import read_cluster
from .context import ModelContext
from .naming import check_results_containers, read_azure
from .pipelines import link_pipelines, read_pipelines
from .products import read_products
from .rules import check_api_ids, check_routes, unique
from .types import (
    Platform,
)


def assemble(ctx: ModelContext) -> Platform:
    """Read every section in a fixed order (diagnostic order depends on it)."""
    meta = ctx.data["metadata"]
    azure = read_azure(ctx)
    clusters = tuple(read_cluster(ctx, c, i) for i, c in enumerate(ctx.data["clusters"]))
    unique(ctx, [c["name"] for c in ctx.data["clusters"]], ("clusters",), "cluster")
    check_catalog(ctx)
    apis = [read_api(ctx, a, i, clusters, azure) for i, a in enumerate(ctx.data.get("apis", []))]
    check_api_ids(ctx, apis)
    check_results_containers(ctx, azure, apis)
    pipelines = read_pipelines(ctx, apis)
    apis = link_pipelines(apis, pipelines)
    check_routes(ctx, apis, pipelines)
    products = read_products(ctx, apis, pipelines)
    check_capacity_rules(ctx, clusters, apis, products)
    check_apim(ctx, apis, pipelines, products)
    tags = dict(sorted((meta.get("tags") or {}).items()))
    tags.setdefault("ai4ec-platform", meta["name"])
    tags.setdefault("ai4ec-environment", ctx.environment)
    platform = Platform(
        name=meta["name"],
        description=meta.get("description", ""),
        environment=ctx.environment,
        tags=tuple(sorted(tags.items())),
        azure=azure,
        clusters=clusters,
        apis=tuple(apis),
        pipelines=tuple(pipelines),
        products=products,
        development=bool(ctx.data.get("development", False)),
        source_file=ctx.source.file,
    )
    check_azure_limits(ctx, platform)
    return platform


def build_model(
    data: dict[str, Any],
    source: SourceMap,
    environment: str,
    base_dir: Path | None = None,
    broken: Mapping[str, frozenset[str]] | None = None,
) -> tuple[Platform | None, list[Diagnostic]]:
    """Build the model for one environment.

    Args:
        data: Merged, schema-valid document (no ``environments`` key needed).
        source: Source map of ``data``.
        environment: Environment name (``default`` when the file defines none).
        base_dir: Directory of platform.yaml, for relative file references.
        broken: Section -> names of entries the schema refused and ``data`` leaves out;
            references to them are not reported (their schema error says what is wrong).

    Returns:
        The platform (``None`` when any error was found) and every diagnostic.
    """
    ctx = ModelContext(data, source, environment, base_dir or Path(), broken)
    platform = assemble(ctx)
    has_error = any(d.severity is Severity.ERROR for d in ctx.diagnostics)
    return (None if has_error else platform), ctx.diagnostics
