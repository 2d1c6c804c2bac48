"""The apply run: steps in order, each previewed, confirmed when destructive, recorded.

Steps, in the order the platform needs them:

1. ``azure`` - the resource group (created when missing) and the ``infra`` deployment;
2. ``functions`` - the Functions bundle (zip deploy, or a package blob on Consumption);
3. ``dispatch`` - the Event Grid subscription, which needs the running bundle;
4. ``apim`` - API Management's objects and policies;
5. ``k8s:<cluster>`` - every object of the cluster by server-side apply, then rollouts,
   then (``--prune``) deletions.

Each step first works out what it would change (ARM what-if, Kubernetes dry-run), prints
it, and writes only what differs. Azure steps also keep a record: after a step succeeds,
the SHA-256 of its inputs is stored as a tag on the resource group
(``ai4ec-apply.<env>.<step>``); a later run whose inputs hash the same skips the step
without asking Azure anything (``--refresh`` ignores records). Kubernetes steps need no
record: the dry-run comparison is exact and cheap, and it also repairs drift. Together
this makes a rerun after an interruption continue where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ApplyError
from . import arm
from .builddir import BUNDLE, Build, load_build
from .placeholders import normalize_outputs, object_label, placeholders_in, resolve
from .plan import ApplyAction, PlannedChange, StepPlan
from .retry import RetrySettings
from .scrub import scrub, scrubbed_logging
from .target import Target, load_target

TARGETS = ("azure", "functions", "apim", "k8s")
RECORD_PREFIX = "ai4ec-apply"
#: Blob a Consumption (Y1) Function App runs from; the Azure template points
#: WEBSITE_RUN_FROM_PACKAGE at it (ai4ec.render.azure_resources.PACKAGE_CONTAINER/BLOB).
PACKAGE_PATH = "ai4ec-packages/functions.zip"


@dataclass
class ApplyOptions:
    """Everything ``ai4ec apply`` was asked to do (see ``ai4ec apply --help``)."""

    build_dir: Path
    plan: bool = False
    targets: tuple[str, ...] = ()
    yes: bool = False
    prune: bool = False
    force_conflicts: bool = False
    #: Cluster name -> kubeconfig context; key "" applies to every cluster, value None
    #: means the kubeconfig's current context.
    contexts: dict[str, str | None] = field(default_factory=dict)
    kubeconfig: str | None = None
    admin_credentials: bool = False
    cloud: str = "AzureCloud"
    arm_endpoint: str | None = None
    subscription: str | None = None
    resource_group: str | None = None
    platform_file: Path | None = None
    outputs_file: Path | None = None
    parameters: tuple[str, ...] = ()
    refresh: bool = False
    wait: bool = True
    timeout: float = 600.0
    #: Kubernetes requests in flight at once (objects of one kind are independent).
    parallel: int = 8
    # Knobs for tests and unusual setups (not command-line options).
    retry: RetrySettings = field(default_factory=RetrySettings)
    poll_interval: float = 5.0
    credential: Any = None
    connection_verify: bool | str = True


@dataclass
class ApplyResult:
    """What the run found (and, unless planning, did)."""

    plans: list[StepPlan]
    #: The build's root and environment (for reports).
    build_root: Path = Path()
    environment: str = ""

    @property
    def changed(self) -> bool:
        """Whether anything was (or, with --plan, would be) written."""
        return any(p.pending for p in self.plans)


class Console:
    """Progress and plan output, always scrubbed; JSON mode moves text to stderr."""

    def __init__(self, echo: Callable[[str, bool], None], json_mode: bool = False) -> None:
        self._echo = echo
        self.json_mode = json_mode

    def say(self, text: str) -> None:
        """A line of progress or plan."""
        self._echo(scrub(text), self.json_mode)

    def warn(self, text: str) -> None:
        """A warning (stderr)."""
        self._echo(scrub(f"warning: {text}"), True)


Confirm = Callable[[str], bool]


class Context:
    """Shared, lazily opened connections and facts of one run."""

    def __init__(self, options: ApplyOptions, build: Build, console: Console) -> None:
        self.options = options
        self.build = build
        self.console = console
        self._target: Target | None = None
        self._azure: Any = None
        self._rg: dict[str, Any] | None = None
        self._rg_read = False
        self._outputs: dict[str, Any] | None = None
        self._outputs_read = False
        self._kubes: dict[str, Any] = {}
        self._parts: dict[str, list[arm.Part]] | None = None
        self._discovered: dict[str, Any] | None = None

    # ------------------------------------------------------------------------ Azure

    def target(self) -> Target:
        """Subscription, resource group and names (from the platform file)."""
        if self._target is None:
            o = self.options
            self._target = load_target(
                self.build, o.platform_file, o.subscription, o.resource_group
            )
        return self._target

    def azure(self) -> Any:
        """The Azure client of the target subscription."""
        if self._azure is None:
            from .azure import Azure

            o = self.options
            self._azure = Azure(
                self.target().subscription_id,
                cloud=o.cloud,
                arm_endpoint=o.arm_endpoint,
                credential=o.credential,
                connection_verify=o.connection_verify,
                retry=o.retry,
                poll_interval=o.poll_interval,
                notify=lambda m: self.console.say(f"  {m}"),
            )
        return self._azure

    def resource_group(self) -> dict[str, Any] | None:
        """The target resource group, or None while it does not exist."""
        if not self._rg_read:
            self._rg = self.azure().resource_group(self.target().resource_group)
            self._rg_read = True
        return self._rg

    def _record_tag(self, key: str) -> str:
        return f"{RECORD_PREFIX}.{self.build.environment}.{key}"

    def recorded(self, key: str) -> str | None:
        """The input digest recorded for step ``key``, if any."""
        rg = self.resource_group()
        if rg is None:
            return None
        tags = {k.lower(): v for k, v in (rg.get("tags") or {}).items()}
        return tags.get(self._record_tag(key).lower())

    def record(self, key: str, digest: str) -> None:
        """Remember that step ``key`` completed with inputs ``digest``."""
        if self.recorded(key) == digest:
            return
        tag = {self._record_tag(key): digest}
        self.azure().merge_tags(self.target().resource_group, tag)
        if self._rg is not None:
            self._rg.setdefault("tags", {}).update(tag)

    def ensure_resource_group(self) -> None:
        """Create the resource group when missing (tagged with platform and environment)."""
        if self.resource_group() is not None:
            return
        t = self.target()
        tags = {"ai4ec-platform": self.build.platform, "ai4ec-environment": self.build.environment}
        self.console.say(f"  creating resource group {t.resource_group} in {t.location}")
        self.azure().create_resource_group(t.resource_group, t.location, tags)
        self._rg, self._rg_read = {"location": t.location, "tags": dict(tags)}, True

    def infra_deployment(self) -> str:
        """Name of the deployment that carries the outputs."""
        return arm.Part(arm.INFRA, {}, {}).deployment_name(self.build.environment)

    def outputs(self) -> dict[str, Any] | None:
        """Plain Azure outputs: --outputs, this run's deployment, or the live deployment."""
        if not self._outputs_read:
            o = self.options
            if o.outputs_file is not None:
                try:
                    raw = json.loads(o.outputs_file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise ApplyError(f"--outputs {o.outputs_file}: {exc}") from None
                if isinstance(raw, dict) and isinstance(raw.get("properties"), dict):
                    raw = raw["properties"].get("outputs") or {}
                self._outputs = normalize_outputs(raw)
            elif self.resource_group() is not None:
                found = self.azure().deployment_outputs(
                    self.target().resource_group, self.infra_deployment()
                )
                self._outputs = None if found is None else normalize_outputs(found)
            self._outputs_read = True
        return self._outputs

    def set_outputs(self, outputs: dict[str, Any]) -> None:
        """Outputs of the deployment this run just made (unless --outputs overrides)."""
        if self.options.outputs_file is None:
            self._outputs, self._outputs_read = normalize_outputs(outputs), True

    def parts(self) -> dict[str, list[arm.Part]]:
        """The deployments of each Azure step, parameters resolved."""
        if self._parts is None:
            templates = self.build.templates()
            if self._discovered is None:
                self._discovered = self._discover_ingress() if self._wants_discovery() else {}
            self._parts = arm.build_parts(
                templates, arm.parse_overrides(self.options.parameters), self._discovered
            )
        return self._parts

    def _wants_discovery(self) -> bool:
        """Whether main.json's parameters hold stand-ins for ingress addresses."""
        templates = self.build.templates()
        if not templates:
            return False
        main = templates[0]
        declared = main.template.get("parameters") or {}
        values = {k: (v or {}).get("defaultValue") for k, v in declared.items()}
        values.update(main.parameters)
        return any(
            n in values and arm.needs_discovery(n, values[n])
            for n in (arm.PARAM_BACKEND_URL, arm.PARAM_INGRESS_URLS)
        )

    def rediscover(self) -> bool:
        """Look again for ingress addresses still missing; True when one was found.

        On a first apply the clusters only exist once the infra deployment is done, so
        the addresses are looked up again then, and the parameters that use them change.
        """
        if not self._wants_discovery() or self._discovered is None:
            return False
        missing = set(self.target().clusters) - set(
            self._discovered.get(arm.PARAM_INGRESS_URLS) or {}
        )
        if not missing:
            return False
        found = self._discover_ingress(warn=True)
        if found == self._discovered:
            return False
        self._discovered, self._parts = found, None
        return True

    def _discover_ingress(self, warn: bool = False) -> dict[str, Any]:
        """Ingress addresses of the running clusters, for parameters the build left open."""
        t = self.target()
        urls: dict[str, str] = {}
        for name, c in t.clusters.items():
            try:
                kube = self.kube(name)
                addr = kube.ingress_address(c.external) if kube is not None else None
            except ApplyError as exc:  # best effort: the stand-in still deploys
                self.console.warn(f"cluster {name}: cannot read the ingress address: {exc}")
                continue
            if kube is None:
                continue  # created by the azure step; looked up again after it
            if not addr:
                if warn:
                    self.console.warn(
                        f"cluster {name}: the ingress gateway has no address yet; API "
                        "Management and dispatch keep the build's stand-in until a later apply"
                    )
            elif c.protocol == "https":
                if warn:
                    self.console.warn(
                        f"cluster {name}: https ingress at {addr} has no host name in "
                        "platform.yaml (clusters[].istio.ingress.hosts); TLS cannot be "
                        "validated against an address, so the build's stand-in is kept"
                    )
            else:
                urls[name] = f"{c.protocol}://{addr}"
                self.console.say(f"  cluster {name}: ingress at {urls[name]}")
        found: dict[str, Any] = {}
        if urls:
            found[arm.PARAM_INGRESS_URLS] = urls
        if t.dispatch_cluster in urls:
            found[arm.PARAM_BACKEND_URL] = urls[t.dispatch_cluster]
        return found

    # ------------------------------------------------------------------- Kubernetes

    def kube(self, cluster: str) -> Any:
        """The cluster's API client, or None when the AKS cluster does not exist."""
        if cluster not in self._kubes:
            from .kube import Kube

            o = self.options
            notify = lambda m: self.console.say(f"  {m}")  # noqa: E731
            if o.contexts or o.kubeconfig:
                ctx = o.contexts.get(cluster, o.contexts.get(""))
                self._kubes[cluster] = Kube.from_context(
                    cluster, ctx, o.kubeconfig, o.retry, notify
                )
            else:
                t = self.target()
                c = t.clusters.get(cluster)
                if c is None:
                    raise ApplyError(f"cluster {cluster} of the build is not in the platform file")
                config = self.azure().kubeconfig(t.resource_group, c.aks_name, o.admin_credentials)
                if config is None:
                    return None  # not remembered: the azure step may create it
                self._kubes[cluster] = Kube.from_kubeconfig(
                    cluster, config, self.azure().token, o.retry, notify
                )
        return self._kubes[cluster]

    def close(self) -> None:
        """Release every connection."""
        for k in self._kubes.values():
            if k is not None:
                k.close()
        if self._azure is not None:
            self._azure.close()


def _digest(*parts: str | bytes) -> str:
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


def _show(ctx: Context, plan: StepPlan) -> None:
    for note in plan.notes:
        ctx.console.say(f"  {note}")
    if plan.changes:
        ctx.console.say(f"  {plan.summary()}")
        for line in plan.lines():
            ctx.console.say(f"    {line}")


def _confirm(ctx: Context, plan: StepPlan, confirm: Confirm) -> None:
    gone = plan.destructive
    if not gone or ctx.options.yes:
        return
    question = f"{plan.step}: delete the {len(gone)} object(s) marked '-' above?"
    if not confirm(question):
        raise ApplyError(
            f"{plan.step}: deletion not confirmed; nothing was deleted and the step stopped "
            "(rerun with --yes to confirm non-interactively)"
        )


class ArmStep(Step):
    """Deployments of one group of :func:`ai4ec.apply.arm.build_parts`."""

    def __init__(self, key: str, title: str, group: str) -> None:
        self.key, self.title, self._group = key, title, group

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """What-if each deployment, then deploy those with changes, then record."""
        plan = self._run(ctx, confirm)
        if self._group == "azure" and not ctx.options.plan and ctx.rediscover():
            ctx.console.say("  ingress address now known: deploying again with it")
            again = self._run(ctx, confirm)
            plan.changes.extend(again.pending)
        return plan

    def _run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        plan = StepPlan(self.key)
        parts = ctx.parts()[self._group]
        if not parts:
            plan.notes.append("nothing to deploy (the build has no such resources)")
            return plan
        t = ctx.target()
        digest = _digest(t.subscription_id, t.resource_group, *(p.digest() for p in parts))
        if not ctx.options.refresh and ctx.recorded(self.key) == digest:
            plan.notes.append(f"no changes since the last apply (record {digest[:12]})")
            _show(ctx, plan)
            return plan
        rg = ctx.resource_group()
        env = ctx.build.environment
        todo: list[arm.Part] = []
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
                todo.append(part)
            elif "outputs" in part.template and rg is not None and ctx.outputs() is None:
                todo.append(part)  # unchanged, but its outputs are needed and not recorded
            plan.changes.extend(changes)
        if rg is None:
            plan.notes.append(
                f"resource group {t.resource_group} does not exist yet: created in {t.location}"
            )
        _show(ctx, plan)
        if ctx.options.plan:
            return plan
        _confirm(ctx, plan, confirm)
        ctx.ensure_resource_group()
        for part in todo:
            name = part.deployment_name(env)
            ctx.console.say(f"  deploying {name} ...")
            started = time.monotonic()
            outputs = ctx.azure().deploy(t.resource_group, name, part.payload())
            ctx.console.say(f"  deployed {name} in {time.monotonic() - started:.0f}s")
            if "outputs" in part.template:
                ctx.set_outputs(outputs)
        if not todo:
            ctx.console.say("  no changes")
        ctx.record(self.key, digest)
        return plan


class FunctionsStep(Step):
    """Publish ``functions/bundle.zip`` to the Function App."""

    key, title = "functions", "Functions bundle"

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """Zip deploy (Elastic Premium) or package blob + restart (Consumption)."""
        del confirm  # publishing replaces code, it deletes nothing
        plan = StepPlan(self.key)
        if not ctx.build.has(BUNDLE):
            plan.notes.append("the build has no functions/bundle.zip")
            _show(ctx, plan)
            return plan
        data = ctx.build.read(BUNDLE)
        t = ctx.target()
        method = "package blob" if t.functions_consumption else "zip deploy"
        digest = _digest(t.subscription_id, t.resource_group, t.function_app, method, data)
        recorded = ctx.recorded(self.key)
        sha = hashlib.sha256(data).hexdigest()[:12]
        if recorded == digest and not ctx.options.refresh:
            plan.notes.append(f"no changes since the last apply (bundle {sha})")
            _show(ctx, plan)
            return plan
        action = ApplyAction.UPDATE if recorded else ApplyAction.CREATE
        plan.changes.append(
            PlannedChange(
                action, "Functions bundle", t.function_app, note=f"bundle.zip {sha}, {method}"
            )
        )
        _show(ctx, plan)
        if ctx.options.plan:
            return plan
        az = ctx.azure()
        started = time.monotonic()
        if t.functions_consumption:
            url = (
                az.blob_endpoint(t.resource_group, t.storage_account).rstrip("/")
                + "/"
                + PACKAGE_PATH
            )
            ctx.console.say(f"  uploading bundle.zip ({len(data)} bytes) to {url}")
            az.upload_blob(url, data)
            az.site_action(t.resource_group, t.function_app, "restart")
            az.site_action(t.resource_group, t.function_app, "syncfunctions")
        else:
            host = az.scm_host(t.resource_group, t.function_app)
            if host is None:
                raise ApplyError(
                    f"Function App {t.function_app} does not exist in {t.resource_group}; "
                    "apply --target azure first"
                )
            ctx.console.say(f"  zip deploy of bundle.zip ({len(data)} bytes) to {host}")
            az.zip_deploy(host, data)
        ctx.console.say(f"  published in {time.monotonic() - started:.0f}s")
        ctx.record(self.key, digest)
        return plan


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
                    PlannedChange(ApplyAction.UNKNOWN, o["kind"], _name(o)) for o in objs
                )
                return None
            return [resolve(o, outputs) for o in objs]
        return objs

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """Dry-run every object, apply the changed ones, wait, prune."""
        from .kube import PRUNE_KINDS, WORKLOADS, compare, identity, prunable

        plan = StepPlan(self.key)
        objs = self._objects(ctx, plan)
        if objs is None:
            _show(ctx, plan)
            return plan
        kube = ctx.kube(self.cluster)
        if kube is None:
            if not ctx.options.plan:
                raise ApplyError(
                    f"AKS cluster of {self.cluster} does not exist; apply --target azure first"
                )
            plan.notes.append("the AKS cluster does not exist yet: every object will be created")
            plan.changes.extend(
                PlannedChange(ApplyAction.CREATE, o["kind"], _name(o)) for o in objs
            )
            _show(ctx, plan)
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
                    PlannedChange(ApplyAction.UNKNOWN, obj["kind"], _name(obj), note=str(exc))
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
                    ApplyAction.CREATE, obj["kind"], _name(obj), note="in a new namespace"
                )
            dry = kube.apply(res, obj, dry_run=True, force=force)
            action, paths = compare(live, dry)
            return PlannedChange(action, obj["kind"], _name(obj), paths)

        for group in _kind_groups(served):
            for (res, obj), change in zip(group, self._parallel(ctx, preview, group), strict=True):
                if change.action is ApplyAction.CREATE and obj["kind"] == "Namespace":
                    new_namespaces.add(obj["metadata"]["name"])
                plan.changes.append(change)
                if change.action is not ApplyAction.NOOP:
                    todo.append((res, obj, change))
        doomed: list[tuple[Any, dict[str, Any]]] = []
        if ctx.options.prune:
            doomed = self._prune_candidates(ctx, kube, objs, PRUNE_KINDS, identity, prunable)
            for _res, o in doomed:
                note = "prune; deletes everything in it" if o["kind"] == "Namespace" else "prune"
                plan.changes.append(
                    PlannedChange(ApplyAction.DELETE, o["kind"], _name(o), note=note)
                )
        _show(ctx, plan)
        if ctx.options.plan:
            return plan
        _confirm(ctx, plan, confirm)
        done = 0
        for batch in _kind_groups(todo):
            self._parallel(ctx, lambda t: kube.apply(t[0], t[1], dry_run=False, force=force), batch)
            for _res, obj, change in batch:
                done += 1
                ctx.console.say(f"  [{done}/{len(todo)}] {change.action.value} {object_label(obj)}")
        if ctx.options.wait:
            self._wait(ctx, kube, [(r, o) for r, o, c in todo if o["kind"] in WORKLOADS])
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

    def _prune_candidates(
        self,
        ctx: Context,
        kube: Any,
        objs: list[dict[str, Any]],
        kinds: tuple[tuple[str, str], ...],
        identity: Callable[[dict[str, Any]], tuple[str, str, str, str]],
        prunable: Callable[[dict[str, Any], set[tuple[str, str, str, str]]], bool],
    ) -> list[tuple[Any, dict[str, Any]]]:
        """Labelled live objects the build no longer has, in reverse apply order."""
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
            found.extend((res, o) for o in kube.list(res, selector) if prunable(o, desired))
        found.reverse()
        return found

    def _wait(self, ctx: Context, kube: Any, workloads: list[tuple[Any, dict[str, Any]]]) -> None:
        """Poll the changed workloads until they are rolled out (or fail, or time out)."""
        from .kube import rollout_status

        if not workloads:
            return
        o = ctx.options
        ctx.console.say(f"  waiting for {len(workloads)} rollout(s) (timeout {o.timeout:.0f}s)")
        deadline = time.monotonic() + o.timeout
        pending = list(workloads)
        last: dict[str, str] = {}
        while pending:
            still = []
            for res, obj in pending:
                md = obj["metadata"]
                live = kube.get(res, md.get("namespace"), md["name"]) or {}
                ready, failed, words = rollout_status(live)
                label = object_label(obj)
                if failed:
                    raise ApplyError(f"cluster {self.cluster}: {label} rollout failed: {words}")
                if ready:
                    ctx.console.say(f"  {label} ready ({words})")
                    continue
                if last.get(label) != words:
                    ctx.console.say(f"  {label}: {words}")
                    last[label] = words
                still.append((res, obj))
            pending = still
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(
                    f"{object_label(obj)} ({last.get(object_label(obj), '')})"
                    for _r, obj in pending
                )
                raise ApplyError(
                    f"cluster {self.cluster}: not rolled out after {o.timeout:.0f}s: {names} "
                    "(rerun apply to keep waiting, or raise --timeout)"
                )
            o.retry.sleep(o.poll_interval)


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


def _name(obj: dict[str, Any]) -> str:
    md = obj.get("metadata") or {}
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else str(md.get("name"))


def steps_for(build: Build, targets: tuple[str, ...]) -> list[Step]:
    """The steps of ``targets`` (all when empty), in order."""
    wanted = set(targets or TARGETS)
    unknown = wanted - set(TARGETS)
    if unknown:
        raise ApplyError(
            f"unknown target(s) {', '.join(sorted(unknown))}; choose {', '.join(TARGETS)}"
        )
    steps: list[Step] = []
    if "azure" in wanted:
        steps.append(ArmStep("azure", "Azure infrastructure", "azure"))
    if "functions" in wanted:
        steps.append(FunctionsStep())
        steps.append(ArmStep("dispatch", "Event Grid subscription to the Functions", "dispatch"))
    if "apim" in wanted:
        steps.append(ArmStep("apim", "API Management objects and policies", "apim"))
    if "k8s" in wanted:
        steps.extend(ClusterStep(c) for c in build.clusters)
    return steps


def run_apply(options: ApplyOptions, console: Console, confirm: Confirm) -> ApplyResult:
    """Apply (or, with ``options.plan``, preview) the build at ``options.build_dir``.

    Raises:
        ApplyError: a step failed permanently; steps before it are complete (and
            recorded), so running again continues from the failed step.
    """
    with scrubbed_logging():
        build = load_build(options.build_dir)
        steps = steps_for(build, options.targets)
        if not build.templates() and any(isinstance(s, ArmStep) for s in steps):
            console.warn(
                f"{build.root} has no azure/main.json: the Azure, dispatch and API Management "
                "steps have nothing to deploy"
            )
        ctx = Context(options, build, console)
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
            ctx.close()
        result = ApplyResult(plans, build_root=Path(build.root), environment=build.environment)
        pending = sum(len(p.pending) for p in plans)
        if options.plan:
            console.say(f"plan: {pending} change(s)" if pending else "plan: no changes")
        else:
            console.say(
                f"apply complete: {pending} change(s)" if pending else "apply complete: no changes"
            )
        return result
