"""Rules that hold platform.yaml against the dated Azure catalog (issue 12: valid means deployable).

The pure checks live in :mod:`ai4ec.catalog.rules`; this module finds each value in the
document (VM sizes of every pool, Kubernetes versions, Istio revisions, the region and the
cache SKU) and turns a finding into a diagnostic located at the field that holds it.

The day the checks judge by is today, unless ``AI4EC_TODAY`` (``YYYY-MM-DD``) says
otherwise: tests and goldens pin it, because a retirement date passing must not change the
output of a test, and a user can ask "will this still deploy on 2027-03-01?".
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from typing import Any

from ..catalog import (
    Catalog,
    Finding,
    check_cache_sku,
    check_kubernetes_version,
    check_mesh_revision,
    check_region,
    check_vm_size,
    load_catalog,
)
from ..errors import Severity
from ..load import JsonPath, format_path
from .context import ModelContext

#: The environment variable that overrides the day the catalog checks judge by.
TODAY_ENV = "AI4EC_TODAY"


class TodayError(ValueError):
    """``AI4EC_TODAY`` is set but is not a ``YYYY-MM-DD`` date."""


def today() -> dt.date:
    """The day to judge retirements by: ``AI4EC_TODAY`` when set, else the local date.

    Raises:
        TodayError: ``AI4EC_TODAY`` is not an ISO date.
    """
    raw = os.environ.get(TODAY_ENV, "").strip()
    if not raw:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise TodayError(f"{TODAY_ENV}={raw!r} is not a date (expected YYYY-MM-DD)") from None


@functools.cache
def catalog() -> Catalog:
    """The shipped catalog, parsed once per process: validate runs once per environment."""
    return load_catalog()


def _report(ctx: ModelContext, finding: Finding | None, path: JsonPath) -> None:
    if finding is None:
        return
    pos = ctx.source.locate(path)
    ctx.diagnostics.append(
        finding.at(
            ctx.source.file,
            pos.line if pos else None,
            pos.col if pos else None,
            format_path(path),
        )
    )


def _pool_paths(cluster: dict[str, Any], index: int) -> list[tuple[str, JsonPath]]:
    """``(vmSize, path)`` of every pool that names a size (the system pool included)."""
    out: list[tuple[str, JsonPath]] = []
    system = cluster.get("systemPool") or {}
    if "vmSize" in system:
        out.append((system["vmSize"], ("clusters", index, "systemPool", "vmSize")))
    for i, pool in enumerate(cluster.get("pools", [])):
        if "vmSize" in pool:
            out.append((pool["vmSize"], ("clusters", index, "pools", i, "vmSize")))
    return out


def _check_cache(ctx: ModelContext, cat: Catalog, cache: dict[str, Any], day: dt.date) -> None:
    """The cache SKU against the catalog's offers (see :func:`check_catalog`)."""
    if any(d.code == "E-CACHE-SKU" for d in ctx.diagnostics):
        return  # read_azure said what is wrong; a catalog finding on top would repeat it
    if cache.get("kind") == "legacy":
        tier = cache.get("sku", "Basic")
        family = cache.get("family", "P" if tier == "Premium" else "C")
        finding = check_cache_sku(cat, f"{tier}_{family}{cache.get('capacity', 1)}", day)
        if finding is not None and finding.severity is Severity.ERROR:
            where = "sku" if "sku" in cache else "capacity" if "capacity" in cache else "kind"
            _report(ctx, finding, ("azure", "cache", where))
        else:
            _report(ctx, finding, ("azure", "cache", "kind"))
    elif "sku" in cache:
        _report(ctx, check_cache_sku(cat, str(cache["sku"]), day), ("azure", "cache", "sku"))


def check_catalog(ctx: ModelContext, on: dt.date | None = None) -> None:
    """Report every size, version, revision, region and cache SKU Azure would refuse.

    Only values written in platform.yaml are checked: ai4ec's own defaults are kept current
    by the samples' test, and a finding the user cannot locate would be no help.

    The cache: Azure Managed Redis is the default, so choosing the legacy Azure Cache for
    Redis (``kind: legacy``) is a warning (W-AZ-CACHE-LEGACY, at ``kind``) while Azure
    still sells it - it is legal, and the only choice in clouds without Azure Managed
    Redis - and an error once retired. An unknown managed SKU is an error.
    """
    if on is None:
        try:
            on = today()
        except TodayError as exc:
            ctx.report("E-TODAY", str(exc), (), f"unset {TODAY_ENV} to judge by today's date")
            return
    day = on
    cat = catalog()
    azure = ctx.data["azure"]
    _report(ctx, check_region(cat, azure["location"]), ("azure", "location"))
    _check_cache(ctx, cat, azure.get("cache") or {}, day)
    for i, c in enumerate(ctx.data["clusters"]):
        for size, path in _pool_paths(c, i):
            _report(ctx, check_vm_size(cat, size, day), path)
        _report(
            ctx,
            check_kubernetes_version(cat, str(c["kubernetesVersion"]), day),
            ("clusters", i, "kubernetesVersion"),
        )
        istio = c.get("istio") or {}
        if "revision" in istio:
            _report(
                ctx,
                check_mesh_revision(cat, istio["revision"], day),
                ("clusters", i, "istio", "revision"),
            )
