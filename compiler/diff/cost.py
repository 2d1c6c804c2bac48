"""Monthly cost of the Azure resources in an ARM template, from a shipped price table.

Input: ARM resource dicts (as in ``azure/main.json``) and the price table
(``compiler/data/prices.json``, VM prices from ``vm_sizes.json``, both overridable with
``--prices``). Output: a :class:`~ai4ec.diff.records.Cost` per priced resource: a range
when something autoscales (node pools min..max nodes, Premium function plans
always-ready..maximum instances), flagged when the price is a spot price or depends on
usage. Costs are read from what would be deployed, not from platform.yaml, so the
estimate follows every default the compiler fills in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, DiffError
from ..resources import load_table
from .records import Cost, Totals

Prices = dict[str, Any]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_prices(override: Path | None = None) -> Prices:
    """The shipped price table, with ``override`` (a partial JSON table) merged over it.

    Raises:
        DiffError: the override cannot be read or is not a JSON object.
    """
    table = _merge(load_table("prices"), {})
    vm = {name: info.get("usdPerHour") for name, info in load_table("vm_sizes")["sizes"].items()}
    table["vmSizes"] = {**vm, **(table.get("vmSizes") or {})}
    if override is None:
        return table
    try:
        extra = json.loads(Path(override).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DiffError(
            f"cannot read price table {override}: {exc}",
            (
                Diagnostic(
                    code="E-DIFF-PRICES",
                    message=f"cannot read price table: {exc}",
                    file=str(override),
                    hint="pass a JSON file with the layout of compiler/data/prices.json",
                ),
            ),
        ) from None
    if not isinstance(extra, dict):
        raise DiffError(
            f"price table {override} is not a JSON object",
            (Diagnostic(code="E-DIFF-PRICES", message="not a JSON object", file=str(override)),),
        )
    return _merge(table, extra)


def _hours(prices: Prices) -> float:
    return float(prices.get("hoursPerMonth", 730))


def _money(value: float) -> str:
    return f"${value:,.3f}".rstrip("0").rstrip(".") if value < 1 else f"${value:,.2f}"


def _nodes(profile: dict[str, Any]) -> tuple[int, int]:
    """(min, max) node count of an AKS pool profile."""
    if profile.get("enableAutoScaling"):
        lo = int(profile.get("minCount") or 0)
        hi = int(profile.get("maxCount") or lo)
        return lo, hi
    n = int(profile.get("count") or 0)
    return n, n


def pool_cost(profile: dict[str, Any], prices: Prices) -> Cost:
    """A node pool: nodes x VM price x hours, spot as a range (see prices.json ``spot``)."""
    size = str(profile.get("vmSize", ""))
    per_hour = (prices.get("vmSizes") or {}).get(size)
    lo, hi = _nodes(profile)
    count = f"{lo}" if lo == hi else f"{lo}-{hi}"
    if per_hour is None:
        return Cost(0.0, 0.0, f"{count} x {size}: no price for this VM size", known=False)
    hours = _hours(prices)
    if str(profile.get("scaleSetPriority", "")).lower() == "spot":
        discount = float((prices.get("spot") or {}).get("maxDiscount", 0.9))
        cap = profile.get("spotMaxPrice")
        top = per_hour if cap in (None, -1) or float(cap) <= 0 else min(per_hour, float(cap))
        return Cost(
            lo * per_hour * (1 - discount) * hours,
            hi * top * hours,
            f"{count} x {size} spot (list {_money(per_hour)}/h; price varies)",
            spot=True,
        )
    return Cost(
        lo * per_hour * hours, hi * per_hour * hours, f"{count} x {size} @ {_money(per_hour)}/h"
    )


def _aks(res: dict[str, Any], prices: Prices) -> Cost:
    tier = str((res.get("sku") or {}).get("tier", "Free"))
    per_hour = ((prices.get("aks") or {}).get("tierPerHour") or {}).get(tier)
    hours = _hours(prices)
    parts = []
    total = Cost(0.0, 0.0)
    if per_hour is None:
        parts.append(f"{tier} tier: no price")
        known = False
    else:
        total = Cost(per_hour * hours, per_hour * hours)
        parts.append(f"{tier} control plane @ {_money(per_hour)}/h")
        known = True
    spot = False
    for profile in (res.get("properties") or {}).get("agentPoolProfiles") or []:
        c = pool_cost(profile, prices)
        total = total + c
        known = known and c.known
        spot = spot or c.spot
        parts.append(f"pool {profile.get('name')}: {c.detail}")
    return Cost(total.low, total.high, "; ".join(parts), spot=spot, known=known)


def _agent_pool(res: dict[str, Any], prices: Prices) -> Cost:
    return pool_cost(res.get("properties") or {}, prices)


def _redis(res: dict[str, Any], prices: Prices) -> Cost:
    sku = (res.get("properties") or {}).get("sku") or res.get("sku") or {}
    name = str(sku.get("name", ""))
    size = f"{sku.get('family', '')}{sku.get('capacity', '')}"
    per_hour = (((prices.get("redis") or {}).get("perHour") or {}).get(name) or {}).get(size)
    if per_hour is None:
        return Cost(0.0, 0.0, f"{name} {size}: no price", known=False)
    monthly = per_hour * _hours(prices)
    return Cost(monthly, monthly, f"{name} {size} @ {_money(per_hour)}/h")


def _registry(res: dict[str, Any], prices: Prices) -> Cost:
    name = str((res.get("sku") or {}).get("name", ""))
    per_day = ((prices.get("containerRegistry") or {}).get("perDay") or {}).get(name)
    if per_day is None:
        return Cost(0.0, 0.0, f"{name}: no price", known=False)
    monthly = per_day * _hours(prices) / 24
    return Cost(monthly, monthly, f"{name} @ {_money(per_day)}/day")


def _apim(res: dict[str, Any], prices: Prices) -> Cost:
    sku = res.get("sku") or {}
    name = str(sku.get("name", ""))
    units = int(sku.get("capacity") or 1)
    table = prices.get("apiManagement") or {}
    per_hour = (table.get("perUnitHour") or {}).get(name)
    if per_hour is None:
        return Cost(0.0, 0.0, f"{name}: no price", known=False)
    monthly = units * per_hour * _hours(prices)
    if name == "Consumption":
        return Cost(0.0, 0.0, str(table.get("usageNote", "per call")), usage_based=True)
    return Cost(monthly, monthly, f"{units} x {name} unit @ {_money(per_hour)}/h")


def _plan(res: dict[str, Any], prices: Prices) -> Cost:
    sku = res.get("sku") or {}
    name = str(sku.get("name", ""))
    table = prices.get("functions") or {}
    premium = table.get("premium") or {}
    shape = (premium.get("plans") or {}).get(name)
    if shape is None:
        if name.upper().startswith(("Y", "FC")):
            return Cost(0.0, 0.0, str(table.get("usageNote", "per execution")), usage_based=True)
        return Cost(0.0, 0.0, f"plan {name}: no price", known=False)
    per_instance = (
        shape["vcpus"] * premium["perVcpuHour"] + shape["memoryGB"] * premium["perGbHour"]
    )
    lo = int(sku.get("capacity") or 1)
    hi = int((res.get("properties") or {}).get("maximumElasticWorkerCount") or lo)
    hours = _hours(prices)
    count = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return Cost(
        lo * per_instance * hours,
        max(lo, hi) * per_instance * hours,
        f"{count} x {name} instance @ {_money(per_instance)}/h",
    )


def _workspace(res: dict[str, Any], prices: Prices) -> Cost:
    table = prices.get("logAnalytics") or {}
    cap = ((res.get("properties") or {}).get("workspaceCapping") or {}).get("dailyQuotaGb")
    per_gb = float(table.get("perGbIngested", 0))
    note = str(table.get("usageNote", "per GB ingested"))
    if isinstance(cap, int | float) and cap > 0:
        days = _hours(prices) / 24
        return Cost(0.0, cap * days * per_gb, f"{note}; capped at {cap:g} GB/day", usage_based=True)
    return Cost(0.0, 0.0, note, usage_based=True)


_PRICERS: dict[str, Callable[[dict[str, Any], Prices], Cost]] = {
    "microsoft.containerservice/managedclusters": _aks,
    "microsoft.containerservice/managedclusters/agentpools": _agent_pool,
    "microsoft.cache/redis": _redis,
    "microsoft.containerregistry/registries": _registry,
    "microsoft.apimanagement/service": _apim,
    "microsoft.web/serverfarms": _plan,
    "microsoft.operationalinsights/workspaces": _workspace,
}


def resource_cost(res: dict[str, Any], prices: Prices) -> Cost | None:
    """The monthly cost of one ARM resource, or ``None`` for resources without a price.

    Expressions the template resolves at deployment (``[parameters('x')]``) cannot be
    priced; such a resource is reported as unpriced rather than guessed.
    """
    t = str(res.get("type", "")).lower()
    pricer = _PRICERS.get(t)
    if pricer is not None:
        try:
            return pricer(res, prices)
        except (TypeError, ValueError, KeyError):
            return Cost(0.0, 0.0, "a priced field is an expression or malformed", known=False)
    usage = (prices.get("usageBased") or {}).get(t)
    if usage is not None:
        return Cost(0.0, 0.0, str(usage), usage_based=True)
    return None


def totals(resources: list[dict[str, Any]], prices: Prices) -> Totals:
    """Summed cost of every priced resource (unknown prices are named, not summed)."""
    low = high = 0.0
    unpriced: list[str] = []
    usage: list[str] = []
    for res in resources:
        c = resource_cost(res, prices)
        if c is None:
            continue
        label = f"{res.get('type')} {res.get('name')}"
        if not c.known:
            unpriced.append(label)
            continue
        if c.usage_based:
            usage.append(label)
        low += c.low
        high += c.high
    return Totals(Cost(low, high), tuple(unpriced), tuple(usage))


def format_money(value: float, signed: bool = False) -> str:
    """``$1,234.56``; with ``signed`` a leading ``+``/``-`` (``+$0.00`` for zero)."""
    sign = ""
    if signed:
        sign = "-" if value < -0.005 else "+"
    return f"{sign}${abs(value):,.2f}"


def format_cost(cost: Cost, signed: bool = False) -> str:
    """``$73.00`` or a range ``$0.00-$1,460.00``."""
    if round(cost.low, 2) == round(cost.high, 2):
        return format_money(cost.low, signed)
    return f"{format_money(cost.low, signed)}..{format_money(cost.high, signed)}"
