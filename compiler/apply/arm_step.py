"""The Azure steps: ARM what-if, then deployments of the parts with changes.

Deployments that fail only for reasons that go away by themselves (a busy AKS, an
identity not yet replicated, the Event Grid handshake while the Functions host
restarts) are deployed again with backoff until ``--ready-timeout``.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ApplyError
from . import arm
from .context import Context
from .options import Confirm
from .plan import ApplyAction, PlannedChange, StepPlan
from .prune import APIM_API, apim_prune_candidates
from .steps import Step, confirm_step, input_digest, show_plan

#: ARM error codes that go away on their own: retried with backoff until the deadline.
TRANSIENT_ARM = frozenset(
    {
        "AnotherOperationInProgress",
        "DeploymentActive",
        "PrincipalNotFound",
        "RetryableError",
        "ServiceUnavailable",
        "InternalServerError",
        "GatewayTimeout",
        "TooManyRequests",
        "ResourceNotReady",
        # Event Grid could not complete the webhook handshake: the host is restarting.
        "Url validation",
    }
)
#: Failure texts that are transient whatever their code (``listKeys`` of a new site).
TRANSIENT_TEXT = ("from host runtime", "validation handshake failed")


class ArmStep(Step):
    """Deployments of one group of :func:`ai4ec.apply.arm.build_parts`."""

    def __init__(self, key: str, title: str, group: str) -> None:
        self.key, self.title, self._group = key, title, group

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """What-if each deployment, then deploy those with changes, in order, then record.

        A part that reads an ingress address (``functions``) is looked at again after
        the parts before it were deployed: on a first run the clusters exist only then,
        and the address found is deployed with that part, once.
        """
        plan = StepPlan(self.key)
        parts = list(ctx.parts()[self._group])
        if not parts:
            plan.notes.append("nothing to deploy (the build has no such resources)")
            return plan
        t = ctx.target()
        digest = input_digest(t.subscription_id, t.resource_group, *(p.digest() for p in parts))
        pruning = ctx.options.prune and self._group == "apim"
        # With --prune the step always looks: leftovers of a run without --prune (or
        # made outside ai4ec) are found only by listing the service.
        if not ctx.options.refresh and not pruning and ctx.recorded(self.key) == digest:
            plan.notes.append(f"no changes since the last apply (record {digest[:12]})")
            show_plan(ctx, plan)
            return plan
        rg = ctx.resource_group()
        env = ctx.build.environment
        todo: set[str] = set()
        for part in parts:
            name = part.deployment_name(env)
            if rg is None:
                changes = arm.template_changes(part)
            else:
                ctx.console.say(f"  what-if {name} in {t.resource_group}")
                changes = arm.whatif_changes(
                    ctx.azure().what_if(t.resource_group, name, part.payload())
                )
            if any(c.action is not ApplyAction.NOOP for c in changes):
                todo.add(part.name)
            elif "outputs" in part.template and rg is not None and ctx.outputs() is None:
                todo.add(part.name)  # unchanged, but its outputs are needed and not recorded
            plan.changes.extend(changes)
        doomed = apim_prune_candidates(ctx, parts, plan) if pruning else []
        plan.changes.extend(
            PlannedChange(ApplyAction.DELETE, d.type, d.name, note="prune") for d in doomed
        )
        if rg is None:
            plan.notes.append(
                f"resource group {t.resource_group} does not exist yet: created in {t.location}"
            )
        show_plan(ctx, plan)
        if ctx.options.plan:
            return plan
        confirm_step(ctx, plan, confirm)
        if todo or doomed:
            # The lock (and a missing group) only before a real write: a run with
            # nothing to deploy or delete writes nothing, not even the lock tag.
            ctx.ensure_resource_group()
        deployed = False
        for i in range(len(parts)):
            if deployed and _reads_ingress(parts[i]) and ctx.rediscover():
                parts[i:] = self._refreshed(ctx, parts[i:], todo)
            part = parts[i]
            if part.name not in todo:
                continue
            name = part.deployment_name(env)
            ctx.console.say(f"  deploying {name} ...")
            started = time.monotonic()
            outputs = _deploy(ctx, t.resource_group, name, part.payload())
            ctx.console.say(f"  deployed {name} in {time.monotonic() - started:.0f}s")
            deployed = True
            if "outputs" in part.template:
                ctx.set_outputs(outputs)
        for d in doomed:
            ctx.azure().delete_child(d.path, APIM_API)
            ctx.console.say(f"  deleted {d.type} {d.name}")
        if not todo and not doomed:
            ctx.console.say("  no changes")
        final = input_digest(t.subscription_id, t.resource_group, *(p.digest() for p in parts))
        ctx.record(self.key, final)
        return plan

    def _refreshed(self, ctx: Context, rest: list[arm.Part], todo: set[str]) -> list[arm.Part]:
        """``rest`` with the ingress address just found; a part it changes is deployed."""
        fresh = {p.name: p for p in ctx.parts()[self._group]}
        out = []
        for old in rest:
            new = fresh.get(old.name, old)
            if new.digest() != old.digest() and old.name not in todo:
                ctx.console.say(f"  ingress address now known: {old.name} is deployed with it")
                todo.add(old.name)
            out.append(new)
        return out


def _reads_ingress(part: arm.Part) -> bool:
    """Whether ``part`` declares a parameter that holds an ingress address."""
    declared = part.template.get("parameters") or {}
    return arm.PARAM_BACKEND_URL in declared or arm.PARAM_INGRESS_URLS in declared


def _transient(exc: ApplyError) -> bool:
    """Whether a failed deployment failed only for reasons that go away by themselves."""
    codes = tuple(getattr(exc, "codes", ()) or ())
    text = exc.message.lower()
    if any(t in text for t in TRANSIENT_TEXT):
        return True
    return bool(codes) and all(c in TRANSIENT_ARM for c in codes)


def _deploy(ctx: Context, rg: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Deploy, first waiting out a running deployment of the name, retrying transients.

    ``AnotherOperationInProgress`` (AKS busy), ``PrincipalNotFound`` (a new identity not
    yet replicated), a ``listKeys`` of a site whose host is starting, the Event Grid
    handshake while the Functions host restarts: each fails a first real run and
    succeeds minutes later. They are retried with backoff until ``--ready-timeout``;
    anything else stops at once.
    """
    from .azure import DeploymentFailed

    az = ctx.azure()
    o = ctx.options
    deadline = time.monotonic() + o.ready_timeout
    attempt = 0
    while True:
        attempt += 1
        az.wait_until_idle(rg, name, max(0.0, deadline - time.monotonic()))
        try:
            return dict(az.deploy(rg, name, payload))
        except DeploymentFailed as exc:
            if not _transient(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                # Say that apply gave up on purpose, and how to go on: the bare ARM
                # message reads like a permanent failure.
                raise DeploymentFailed(
                    f"deployment {name}: gave up after {attempt} attempt(s): Azure kept "
                    f"answering a transient failure for --ready-timeout "
                    f"({o.ready_timeout:g}s); rerun apply (or raise --ready-timeout) "
                    f"to keep trying. Last failure:\n{exc.message}",
                    codes=exc.codes,
                ) from None
            wait = min(o.retry.delay(attempt, None), left)
            first = exc.message.splitlines()[0]
            ctx.console.say(
                f"  {name}: transient failure ({', '.join(exc.codes) or first}); "
                f"deploying again in {wait:.1f}s"
            )
            o.retry.sleep(wait)
