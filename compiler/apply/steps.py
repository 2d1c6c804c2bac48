"""What every apply step shares: the step interface, plan display, confirmation."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

from ..errors import ApplyError
from .context import Context
from .options import Confirm
from .plan import StepPlan


def input_digest(*parts: str | bytes) -> str:
    """SHA-256 of a step's inputs, the value its record tag holds (parts kept apart)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


class Step(ABC):
    """One unit of work: plan it, then (unless planning) do it."""

    key = ""
    title = ""

    @abstractmethod
    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """Plan and (unless --plan) apply; returns the plan."""


def show_plan(ctx: Context, plan: StepPlan) -> None:
    """Print a step's notes and listing, before anything is written."""
    for note in plan.notes:
        ctx.console.say(f"  {note}")
    if plan.changes:
        ctx.console.say(f"  {plan.summary()}")
        for line in plan.lines():
            ctx.console.say(f"    {line}")


def check_saved(ctx: Context, plan: StepPlan) -> None:
    """With --from-plan: refuse the step unless its preview is the saved one."""
    if ctx.saved_plan is None or plan.step in ctx.checked or ctx.options.from_plan is None:
        return
    from .planfile import check_step

    check_step(ctx.saved_plan, plan, ctx.options.from_plan)
    ctx.checked.add(plan.step)


def confirm_step(ctx: Context, plan: StepPlan, confirm: Confirm) -> None:
    """Before a step writes: hold it to a saved plan, and ask before any deletion.

    Raises:
        ApplyError: the saved plan is stale, or a deletion was not confirmed.
    """
    check_saved(ctx, plan)
    gone = plan.destructive
    if not gone or ctx.options.yes:
        return
    question = f"{plan.step}: delete the {len(gone)} object(s) marked '-' above?"
    if not confirm(question):
        raise ApplyError(
            f"{plan.step}: deletion not confirmed; nothing was deleted and the step stopped "
            "(rerun with --yes to confirm non-interactively)"
        )


def object_name(obj: dict[str, Any]) -> str:
    """``namespace/name`` of a Kubernetes object (``name`` for cluster-wide ones)."""
    md = obj.get("metadata") or {}
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else str(md.get("name"))
