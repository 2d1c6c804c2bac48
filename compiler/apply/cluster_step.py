"""The Kubernetes step of one cluster: server-side apply, rollouts, prune."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ApplyError
from .context import Context
from .options import Confirm
from .placeholders import object_label, placeholders_in, resolve
from .plan import ApplyAction, PlannedChange, StepPlan
from .prune import prune_candidates
from .steps import Step, confirm_step, object_name, show_plan
from .waiting import wait_rollouts


class ClusterStep(Step):
    """Every object of one cluster, then rollouts, then (--prune) deletions."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.key = f"k8s:{cluster}"
        self.title = f"Kubernetes objects of cluster {cluster}"

    def _objects(self, ctx: Context, plan: StepPlan) -> list[dict[str, Any]] | None:
        objs = ctx.build.manifests(self.cluster)
        if any(placeholders_in(o) for o in objs):
            outputs = ctx.outputs()
            if outputs is None and ctx.options.plan:
                plan.notes.append(
                    "values from Azure ($(azure:...)) are known only after the azure step; "
                    "objects are listed without comparison"
                )
                plan.changes.extend(
                    PlannedChange(ApplyAction.UNKNOWN, o["kind"], object_name(o)) for o in objs
                )
                return None
            return [resolve(o, outputs) for o in objs]
        return objs

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """Dry-run every object, apply the changed ones, wait, prune."""
        from .kube import PRUNE_KINDS, WORKLOADS, compare, identity

        plan = StepPlan(self.key)
        objs = self._objects(ctx, plan)
        if objs is None:
            show_plan(ctx, plan)
            return plan
        ctx.check_contexts()  # all clusters' --context before the first cluster's writes
        kube = ctx.kube(self.cluster)
        if kube is None:
            if not ctx.options.plan:
                raise ApplyError(
                    f"AKS cluster of {self.cluster} does not exist; apply --target azure first"
                )
            plan.notes.append("the AKS cluster does not exist yet: every object will be created")
            plan.changes.extend(
                PlannedChange(ApplyAction.CREATE, o["kind"], object_name(o)) for o in objs
            )
            show_plan(ctx, plan)
            return plan
        force = ctx.options.force_conflicts
        served: list[tuple[Any, dict[str, Any]]] = []
        for obj in objs:  # discovery first, sequentially (it is cached)
            try:
                served.append((kube.resource_for(obj), obj))
            except ApplyError as exc:
                if not ctx.options.plan:
                    raise
                # The add-on serving it may come with the azure step: say so, plan on.
                plan.changes.append(
                    PlannedChange(ApplyAction.UNKNOWN, obj["kind"], object_name(obj), note=str(exc))
                )
        new_namespaces: set[str] = set()
        todo: list[tuple[Any, dict[str, Any], PlannedChange]] = []

        def preview(item: tuple[Any, dict[str, Any]]) -> PlannedChange:
            res, obj = item
            md = obj["metadata"]
            ns = md.get("namespace")
            live = kube.get(res, ns, md["name"])
            if live is None and ns in new_namespaces:
                return PlannedChange(
                    ApplyAction.CREATE, obj["kind"], object_name(obj), note="in a new namespace"
                )
            dry = kube.apply(res, obj, dry_run=True, force=force)
            action, paths = compare(live, dry)
            return PlannedChange(action, obj["kind"], object_name(obj), paths)

        for group in _kind_groups(served):
            for (res, obj), change in zip(group, self._parallel(ctx, preview, group), strict=True):
                if change.action is ApplyAction.CREATE and obj["kind"] == "Namespace":
                    new_namespaces.add(obj["metadata"]["name"])
                plan.changes.append(change)
                if change.action is not ApplyAction.NOOP:
                    todo.append((res, obj, change))
        doomed: list[tuple[Any, dict[str, Any]]] = []
        if ctx.options.prune:
            doomed = prune_candidates(ctx, kube, objs, PRUNE_KINDS, identity, plan)
            for _res, o in doomed:
                note = "prune; deletes everything in it" if o["kind"] == "Namespace" else "prune"
                plan.changes.append(
                    PlannedChange(ApplyAction.DELETE, o["kind"], object_name(o), note=note)
                )
        show_plan(ctx, plan)
        if ctx.options.plan:
            return plan
        confirm_step(ctx, plan, confirm)
        if todo or doomed:
            ctx.lock_for_cluster()
        done = 0
        for batch in _kind_groups(todo):
            self._parallel(ctx, lambda t: kube.apply(t[0], t[1], dry_run=False, force=force), batch)
            for _res, obj, change in batch:
                done += 1
                ctx.console.say(f"  [{done}/{len(todo)}] {change.action.value} {object_label(obj)}")
        if ctx.options.wait:
            # Every workload of the build, not only those changed now: after a rollout
            # timeout, the rerun has nothing to change but must keep waiting.
            wait_rollouts(
                ctx, self.cluster, kube, [(r, o) for r, o in served if o["kind"] in WORKLOADS]
            )
        for res, o in doomed:
            kube.delete(res, o)
            ctx.console.say(f"  deleted {object_label(o)}")
        if not todo and not doomed:
            ctx.console.say("  no changes")
        return plan

    @staticmethod
    def _parallel(ctx: Context, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``fn`` over ``items`` on a few threads, results in order; first error raised.

        Objects of one kind never depend on each other, so a group is sent at once:
        with thousands of objects, one request at a time would make every CI apply
        take minutes even when nothing changed.
        """
        workers = min(ctx.options.parallel, len(items))
        if workers <= 1:
            return [fn(i) for i in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ai4ec-apply") as pool:
            futures = [pool.submit(fn, i) for i in items]
            return [f.result() for f in futures]


_T = TypeVar("_T", bound=tuple[Any, ...])


def _kind_groups(items: list[_T]) -> list[list[_T]]:
    """Consecutive runs of one kind (object at index 1), in manifest (= apply) order."""
    groups: list[list[_T]] = []
    for item in items:
        kind = (item[1].get("apiVersion"), item[1].get("kind"))
        if groups and (groups[-1][0][1].get("apiVersion"), groups[-1][0][1].get("kind")) == kind:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
