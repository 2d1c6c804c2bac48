"""What clients see: the public surface of an environment, before and after a change.

A reviewer's first question about a platform.yaml change is rarely "which ARM property
moved" but "does anyone's call break": a public path that disappears or moves, a key or
token now required, a lower limit, a smaller body, a sync answer that becomes a 202. This
module reads both sides' models (never the generated files) into one record per public
route and compares them; :mod:`.formats` prints the result before the resource changes.

Tasks in flight are named where they matter: a removed async route's accepted tasks keep
answering on the task-status route until their TTL, but those not yet delivered are never
run once the API is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.types import Limit, Mode, Platform


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What a client of one public route depends on."""

    owner: str  # "API detector-v1" or "pipeline species-v1"
    mode: str  # "sync" or "async"
    auth: str  # "subscription key", "Entra ID token", "subscription key + Entra ID token", "none"
    products: tuple[str, ...]
    limits: tuple[str, ...]  # "partner: 60 calls/60s, quota 100000/2592000s"
    max_body_bytes: int
    timeout_seconds: int | None
    task_ttl_seconds: int | None


@dataclass(frozen=True, slots=True)
class ClientChange:
    """One public route added, removed or changed, with what a client notices."""

    route: str  # "POST /v1/camera-trap/detector/detect"
    action: str  # "added", "removed" or "changed"
    details: tuple[str, ...]
    #: Calls that worked before may fail after (removed route, stricter auth or limits).
    breaking: bool


def _limit(limit: Limit | None) -> str:
    return f"{limit.calls}/{limit.period_seconds}s" if limit else "none"


def _auth(subscription_key: bool, entra: bool) -> str:
    parts = (["subscription key"] if subscription_key else []) + (
        ["Entra ID token"] if entra else []
    )
    return " + ".join(parts) or "none"


def public_routes(platform: Platform | None) -> dict[str, RouteFacts]:
    """Every public route of ``platform`` (empty for a side that does not exist)."""
    if platform is None:
        return {}
    products = {p.name: p for p in platform.products}

    def limits(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            f"{n}: rate {_limit(products[n].rate_limit)}, quota {_limit(products[n].quota)}"
            for n in sorted(names)
            if n in products
        )

    out: dict[str, RouteFacts] = {}
    for api in platform.apis:
        for ep in api.endpoints:
            facts = RouteFacts(
                owner=f"API {api.id}",
                mode="async" if ep.mode is Mode.ASYNC else "sync",
                auth=_auth(api.auth.subscription_key, api.auth.entra_id is not None),
                products=tuple(sorted(api.products)),
                limits=limits(api.products),
                max_body_bytes=ep.max_body_bytes,
                timeout_seconds=ep.timeout_seconds if ep.mode is Mode.SYNC else None,
                task_ttl_seconds=api.tasks.ttl_seconds if ep.mode is Mode.ASYNC else None,
            )
            for method in ep.methods:
                out[f"{method} {ep.backend_path}"] = facts
    for p in platform.pipelines:
        out[f"POST {p.path.rstrip('/')}/"] = RouteFacts(
            owner=f"pipeline {p.id}",
            mode="async",
            auth=_auth(p.auth.subscription_key, p.auth.entra_id is not None),
            products=tuple(sorted(p.products)),
            limits=limits(p.products),
            max_body_bytes=p.max_body_bytes,
            timeout_seconds=None,
            task_ttl_seconds=p.tasks.ttl_seconds,
        )
    return out


def _removed_details(facts: RouteFacts, moved_to: str | None) -> tuple[str, ...]:
    details = [f"{facts.owner} no longer answers here: clients get 404"]
    if moved_to:
        details.append(f"now served at {moved_to}: clients must change the URL")
    if facts.mode == "async":
        details.append(
            "tasks in flight: accepted tasks keep answering on the task-status route until "
            f"their TTL ({facts.task_ttl_seconds}s); tasks not yet delivered never run if "
            f"{facts.owner} is gone"
        )
    return tuple(details)


def _changed_details(before: RouteFacts, after: RouteFacts) -> tuple[tuple[str, ...], bool]:
    details: list[str] = []
    breaking = False
    if before.owner != after.owner:
        details.append(f"served by {before.owner} -> {after.owner}")
    if before.mode != after.mode:
        details.append(
            f"mode {before.mode} -> {after.mode}: clients now get "
            + (
                "202 + Location instead of the result"
                if after.mode == "async"
                else "the result, not a 202"
            )
        )
        breaking = True
    if before.auth != after.auth:
        details.append(f"auth {before.auth} -> {after.auth}")
        newly_required = set(after.auth.split(" + ")) - set(before.auth.split(" + ")) - {"none"}
        breaking = breaking or bool(newly_required)
    if before.products != after.products:
        lost = sorted(set(before.products) - set(after.products))
        was = ", ".join(before.products) or "none"
        now = ", ".join(after.products) or "none"
        details.append(
            f"products {was} -> {now}"
            + (f": subscribers of {', '.join(lost)} lose access" if lost else "")
        )
        breaking = breaking or bool(lost)
    if before.limits != after.limits:
        details.append(
            f"limits {'; '.join(before.limits) or 'none'} -> {'; '.join(after.limits) or 'none'}"
        )
        breaking = True
    if before.max_body_bytes != after.max_body_bytes:
        details.append(f"max body {before.max_body_bytes} -> {after.max_body_bytes} bytes")
        breaking = breaking or after.max_body_bytes < before.max_body_bytes
    if before.timeout_seconds != after.timeout_seconds and before.mode == after.mode == "sync":
        details.append(f"timeout {before.timeout_seconds}s -> {after.timeout_seconds}s")
        breaking = breaking or (after.timeout_seconds or 0) < (before.timeout_seconds or 0)
    return tuple(details), breaking


def client_changes(base: Platform | None, head: Platform | None) -> tuple[ClientChange, ...]:
    """Public routes added, removed and changed between two sides, removed first."""
    before, after = public_routes(base), public_routes(head)
    # A route whose owner now answers elsewhere (a rename, a new base path): name the move.
    moved: dict[str, str] = {}
    for route, facts in before.items():
        if route in after:
            continue
        method = route.split(" ", 1)[0]
        suffix = route.split("/")[-1]
        for new, new_facts in after.items():
            if new in before or not new.startswith(method + " "):
                continue
            if new.split("/")[-1] == suffix and new_facts.mode == facts.mode:
                moved[route] = new
                break
    out = [
        ClientChange(route, "removed", _removed_details(before[route], moved.get(route)), True)
        for route in sorted(set(before) - set(after))
    ]
    for route in sorted(set(after) - set(before)):
        facts = after[route]
        source = next((old for old, new in moved.items() if new == route), None)
        added = [f"{facts.owner}, {facts.mode}, auth {facts.auth}"]
        if source:
            added.append(f"replaces {source}")
        out.append(ClientChange(route, "added", tuple(added), False))
    for route in sorted(set(before) & set(after)):
        if before[route] != after[route]:
            details, breaking = _changed_details(before[route], after[route])
            if details:
                out.append(ClientChange(route, "changed", details, breaking))
    return tuple(out)
