"""The apply run: steps in order, each previewed, confirmed when destructive, recorded.

Steps, in the order the platform needs them:

1. ``azure`` - the resource group (created when missing) and the ``data``, ``clusters``,
   ``functions`` and ``apim-service`` deployments, each only when what-if shows changes;
2. ``functions`` - the Functions bundle (zip deploy, or a package blob on Consumption);
3. ``dispatch`` - the Event Grid subscription, which needs the running bundle;
4. ``k8s:<cluster>`` - every object of the cluster by server-side apply, then rollouts,
   then (``--prune``) deletions;
5. ``apim`` - API Management's objects and policies: the public door opens last;
6. ``azure-prune`` (``--prune`` only) - this environment's identities, their grants and
   node pools the build dropped (leftovers.py), once nothing above uses them.

Each step first works out what it would change (ARM what-if, Kubernetes dry-run), prints
it, and writes only what differs. Azure steps also keep a record: after a step succeeds,
the SHA-256 of its inputs is stored as a tag on the resource group
(``ai4ec-apply.<env>.<step>``); a later run whose inputs hash the same skips the step
without asking Azure anything (``--refresh`` ignores records). Kubernetes steps need no
record: the dry-run comparison is exact and cheap, and it also repairs drift. Together
this makes a rerun after an interruption continue where the last one stopped.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ApplyError
from .arm_step import ArmStep
from .builddir import Build, load_build
from .cluster_step import ClusterStep
from .context import Context
from .functions_step import PACKAGE_PATH, FunctionsStep
from .keys_step import KeysStep, has_access_keys
from .leftovers import AzurePruneStep
from .options import TARGETS, ApplyOptions, ApplyResult, Confirm, Console
from .plan import StepPlan
from .scrub import scrubbed_logging
from .steps import Step


def steps_for(build: Build, targets: tuple[str, ...], prune: bool = False) -> list[Step]:
    """The steps of ``targets`` (all when empty), in order; ``prune`` adds ``azure-prune``."""
    wanted = set(targets or TARGETS)
    unknown = wanted - set(TARGETS)
    if unknown:
        raise ApplyError(
            f"unknown target(s) {', '.join(sorted(unknown))}; choose {', '.join(TARGETS)}"
        )
    steps: list[Step] = []
    if "azure" in wanted:
        steps.append(ArmStep("azure", "Azure infrastructure", "azure"))
        if has_access_keys(build):
            # The vault exists now: write the access keys, then grant single secrets.
            steps.append(KeysStep())
            steps.append(ArmStep("access", "Grants on single Key Vault secrets", "access"))
    if "functions" in wanted:
        steps.append(FunctionsStep())
        steps.append(ArmStep("dispatch", "Event Grid subscription to the Functions", "dispatch"))
    if "k8s" in wanted:
        steps.extend(ClusterStep(c) for c in build.clusters)
    # API Management is the public door: it opens last, once the clusters it routes to
    # run the build's workloads.
    if "apim" in wanted:
        steps.append(ArmStep("apim", "API Management objects and policies", "apim"))
    if prune and "azure" in wanted:
        # Last: once no pod, API or grant of the build needs what it deletes. Only when
        # the Kubernetes and API Management steps ran too: a pod of a moved API still
        # pinned to a dropped pool would be evicted with nowhere to go.
        skipped = sorted(set(TARGETS) - wanted)
        steps.append(AzurePruneStep(skipped))
    return steps


def run_apply(options: ApplyOptions, console: Console, confirm: Confirm) -> ApplyResult:
    """Apply (or, with ``options.plan``, preview) the build at ``options.build_dir``.

    Raises:
        ApplyError: a step failed permanently; steps before it are complete (and
            recorded), so running again continues from the failed step.
    """
    with scrubbed_logging():
        build = load_build(options.build_dir)
        saved = None
        if options.from_plan is not None:
            from . import planfile

            if options.plan:
                raise ApplyError("--from-plan applies a saved plan; it cannot go with --plan")
            saved = planfile.load(options.from_plan, build)
            # The plan's own scope: the same steps, the same prune decision.
            options.targets = tuple(saved.get("targets") or ())
            options.prune = bool(saved.get("prune"))
        steps = steps_for(build, options.targets, options.prune)
        if not build.templates() and any(isinstance(s, ArmStep) for s in steps):
            console.warn(
                f"{build.root} has no azure/main.json: the Azure, dispatch and API Management "
                "steps have nothing to deploy"
            )
        ctx = Context(options, build, console)
        ctx.saved_plan = saved
        verb = "plan" if options.plan else "apply"
        console.say(
            f"{verb} {build.root} (platform {build.platform}, environment {build.environment})"
        )
        plans: list[StepPlan] = []
        try:
            for i, step in enumerate(steps, 1):
                console.say(f"[{i}/{len(steps)}] {step.key}: {step.title}")
                plans.append(step.run(ctx, confirm))
        finally:
            try:
                ctx.unlock()
            finally:
                ctx.close()
        result = ApplyResult(plans, build_root=Path(build.root), environment=build.environment)
        if options.plan and options.plan_output is not None:
            from . import planfile

            planfile.save(options.plan_output, build, options.targets, options.prune, plans)
            console.say(f"plan saved to {options.plan_output} (apply it with --from-plan)")
        pending = sum(len(p.pending) for p in plans)
        if options.plan:
            console.say(f"plan: {pending} change(s)" if pending else "plan: no changes")
        else:
            console.say(
                f"apply complete: {pending} change(s)" if pending else "apply complete: no changes"
            )
        return result


__all__ = [
    "PACKAGE_PATH",
    "TARGETS",
    "ApplyOptions",
    "ApplyResult",
    "Console",
    "run_apply",
    "steps_for",
]
