"""Prune: what the build no longer has, and only what ai4ec itself created."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ApplyError
from .context import Context
from .plan import StepPlan
from .steps import object_name


def prune_candidates(
    ctx: Context,
    kube: Any,
    objs: list[dict[str, Any]],
    kinds: tuple[tuple[str, str], ...],
    identity: Callable[[dict[str, Any]], tuple[str, str, str, str]],
    plan: StepPlan,
) -> list[tuple[Any, dict[str, Any]]]:
    """Live objects ai4ec applied that the build no longer has, in reverse apply order.

    A kind the API server will not list (403/404/405) stops the run: reading it as
    empty would silently keep what should go. ``--prune-skip-forbidden`` turns that
    into a named skip. Namespaces are deleted only with ``--prune-namespaces``.
    """
    from .kube import ListRefused, prunable

    b = ctx.build
    selector = (
        f"app.kubernetes.io/managed-by=ai4ec,ai4ec.io/platform={b.platform},"
        f"ai4ec.io/environment={b.environment}"
    )
    desired = {identity(o) for o in objs}
    order: list[tuple[str, str]] = []
    seen_kinds: set[tuple[str, str]] = set()
    for api_version, kind in [*kinds, *((str(o["apiVersion"]), str(o["kind"])) for o in objs)]:
        key = (api_version.rpartition("/")[0], kind)
        if key not in seen_kinds:
            seen_kinds.add(key)
            order.append((api_version, kind))
    found: list[tuple[Any, dict[str, Any]]] = []
    for api_version, kind in order:
        res = kube.resource(api_version, kind)
        if res is None:
            continue
        try:
            live = kube.list(res, selector)
        except ListRefused as exc:
            if not ctx.options.prune_skip_forbidden:
                raise ApplyError(
                    f"{exc.message}; prune cannot tell what to delete. Grant list on it, "
                    "or rerun with --prune-skip-forbidden to skip this kind"
                ) from None
            plan.notes.append(f"prune skips {kind} ({api_version}): {exc.message}")
            continue
        for o in live:
            if not prunable(o, desired):
                continue
            if o.get("kind") == "Namespace" and not ctx.options.prune_namespaces:
                plan.notes.append(
                    f"Namespace {object_name(o)} is no longer in the build; kept (deleting it "
                    "deletes everything in it: rerun with --prune-namespaces)"
                )
                continue
            found.append((res, o))
    found.reverse()
    return found
