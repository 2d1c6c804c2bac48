"""The apply run: steps in order, each previewed, confirmed when destructive, recorded.

Steps, in the order the platform needs them:

1. ``azure`` - the resource group (created when missing) and the ``infra`` deployment;
2. ``functions`` - the Functions bundle (zip deploy, or a package blob on Consumption);
3. ``dispatch`` - the Event Grid subscription, which needs the running bundle;
4. ``k8s:<cluster>`` - every object of the cluster by server-side apply, then rollouts,
   then (``--prune``) deletions;
5. ``apim`` - API Management's objects and policies: the public door opens last.

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
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ApplyError
from . import arm
from .builddir import BUNDLE, Build, load_build
from .bundle import function_names
from .placeholders import normalize_outputs, object_label, placeholders_in, resolve
from .plan import ApplyAction, PlannedChange, StepPlan
from .retry import RetrySettings
from .scrub import scrub, scrubbed_logging
from .target import Target, load_target

TARGETS = ("azure", "functions", "apim", "k8s")
RECORD_PREFIX = "ai4ec-apply"
#: Resource-group tag holding the lease of the apply that runs now.
LOCK_TAG = "ai4ec-apply-lock"
#: Seconds a lock stays valid when its run vanished without releasing it.
LOCK_LEASE = 4 * 3600
#: Tags naming the platform and environment a resource group belongs to.
PLATFORM_TAG, ENVIRONMENT_TAG = "ai4ec-platform", "ai4ec-environment"
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
#: Blob a Consumption (Y1) Function App runs from; the Azure template points
#: WEBSITE_RUN_FROM_PACKAGE at it (ai4ec.render.azure_resources.PACKAGE_CONTAINER/BLOB).
PACKAGE_PATH = "ai4ec-packages/functions.zip"
INGRESS_SERVICE_HINT = "Service aks-istio-ingress/aks-istio-ingressgateway-*"


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
    #: ``--prune-skip-forbidden``: a kind the cluster will not list is skipped (named),
    #: instead of stopping the run.
    prune_skip_forbidden: bool = False
    #: ``--prune-namespaces``: pruning may delete a Namespace (and everything in it).
    prune_namespaces: bool = False
    #: ``--deployer-principal-id``: object id for the template's ``deployerPrincipalId``
    #: (default: the ``oid`` claim of the Resource Manager token).
    deployer_principal_id: str | None = None
    #: Seconds to wait for what Azure finishes on its own: the Functions host indexing a
    #: new bundle, the Event Grid handshake, RBAC propagation, a deployment of the same
    #: name still running, transient ARM errors (``--ready-timeout``).
    ready_timeout: float = 900.0
    #: ``--no-context-check``: use a ``--context`` without checking that its server is
    #: the build's AKS cluster (a kind or minikube cluster in tests).
    check_contexts: bool = True
    #: Key Vault data-plane base URL instead of ``https://<vault>.vault.azure.net``
    #: (another cloud, or a local stand-in in tests).
    key_vault_endpoint: str | None = None
    #: ``--break-lock``: take the resource group's apply lock even if another run holds it.
    break_lock: bool = False
    #: ``--plan -o FILE``: save the plan, bound to the build and the live state it saw.
    plan_output: Path | None = None
    #: ``--from-plan FILE``: apply exactly that plan, or refuse it as stale.
    from_plan: Path | None = None
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
        self._lock: str | None = None
        #: The saved plan of --from-plan (checked before each step writes).
        self.saved_plan: dict[str, Any] | None = None
        #: Steps already checked against it (a second pass of a step is not re-checked).
        self.checked: set[str] = set()
        self.run_id = f"{os.getpid()}-{int(time.time())}"

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
            if self._rg is not None:
                self._check_owner(self._rg)
        return self._rg

    def _check_owner(self, rg: dict[str, Any]) -> None:
        """Refuse a resource group tagged for another platform or environment."""
        tags = {k.lower(): v for k, v in (rg.get("tags") or {}).items()}
        name = self.target().resource_group
        for tag, want in (
            (PLATFORM_TAG, self.build.platform),
            (ENVIRONMENT_TAG, self.build.environment),
        ):
            have = tags.get(tag)
            if have is not None and have != want:
                raise ApplyError(
                    f"resource group {name} is tagged {tag}={have}, but this build is "
                    f"{want}: refusing to deploy into another platform's or environment's "
                    "resource group (check -g/--resource-group and platform.yaml)"
                )

    def lock(self) -> None:
        """Take the resource group's apply lock before the first write (once per run).

        The lock is a tag ``ai4ec-apply-lock = <run> <expiry>``, so it needs nothing but
        the Contributor role apply already has. A lock another run holds and that has not
        expired stops this run; ``--break-lock`` takes it anyway (a runner that vanished).
        The resource group also gets its platform and environment tags if it lacks them.
        """
        if self._lock is not None or self.options.plan:
            return
        t = self.target()
        az = self.azure()
        live = az.resource_group(t.resource_group)
        if live is None:
            return
        self._check_owner(live)
        tags = {k.lower(): v for k, v in (live.get("tags") or {}).items()}
        held = str(tags.get(LOCK_TAG) or "")
        run_id, _, expiry = held.partition(" ")
        now = time.time()
        if held and run_id != self.run_id and not self.options.break_lock:
            try:
                alive = float(expiry) > now
            except ValueError:
                alive = True
            if alive:
                raise ApplyError(
                    f"resource group {t.resource_group} is locked by another apply "
                    f"(tag {LOCK_TAG}={held}); wait for it to finish, or, if no apply runs, "
                    "rerun with --break-lock"
                )
        value = f"{self.run_id} {int(now + LOCK_LEASE)}"
        new = {LOCK_TAG: value}
        if PLATFORM_TAG not in tags:
            new[PLATFORM_TAG] = self.build.platform
        if ENVIRONMENT_TAG not in tags:
            new[ENVIRONMENT_TAG] = self.build.environment
        az.merge_tags(t.resource_group, new)
        again = az.resource_group(t.resource_group) or {}
        got = {k.lower(): v for k, v in (again.get("tags") or {}).items()}.get(LOCK_TAG)
        if got != value:
            raise ApplyError(
                f"resource group {t.resource_group}: another apply took the lock at the same "
                f"time ({LOCK_TAG}={got}); rerun when it has finished"
            )
        self._lock = value
        if self._rg is not None:
            self._rg.setdefault("tags", {}).update(new)

    def lock_for_cluster(self) -> None:
        """The lock before Kubernetes writes, unless this run never talks to Azure."""
        o = self.options
        if o.outputs_file is not None and (o.contexts or o.kubeconfig):
            return  # offline: --context and --outputs, no resource group to lock
        self.lock()

    def unlock(self) -> None:
        """Release the lock this run holds (on success, failure and Ctrl-C alike)."""
        if self._lock is None:
            return
        value, self._lock = self._lock, None
        try:
            self.azure().delete_tags(self.target().resource_group, {LOCK_TAG: value})
        except ApplyError as exc:
            self.console.warn(f"could not release the apply lock ({exc}); --break-lock next time")

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
            self.lock()
            return
        t = self.target()
        tags = {PLATFORM_TAG: self.build.platform, ENVIRONMENT_TAG: self.build.environment}
        self.console.say(f"  creating resource group {t.resource_group} in {t.location}")
        self.azure().create_resource_group(t.resource_group, t.location, tags)
        self._rg, self._rg_read = {"location": t.location, "tags": dict(tags)}, True
        self.lock()

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
            overrides = arm.parse_overrides(self.options.parameters)
            overrides.update(self._deployer(templates, overrides))
            self._parts = arm.build_parts(templates, overrides, self._discovered)
        return self._parts

    def _deployer(self, templates: list[Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """``deployerPrincipalId``/``Type`` for a template that grants the deployer access.

        The template gives this principal an AKS RBAC role on the cluster it creates, so
        the Kubernetes step of the same run is allowed in (docs/apply.md, Access).
        """
        main = templates[0]
        declared = main.template.get("parameters") or {}
        if arm.PARAM_DEPLOYER not in declared or arm.PARAM_DEPLOYER in overrides:
            return {}
        if main.parameters.get(arm.PARAM_DEPLOYER):
            return {}
        found: dict[str, Any] = {}
        pid = self.options.deployer_principal_id
        kind = "ServicePrincipal"
        if not pid:
            who = self.azure().principal()
            if who is None:
                raise ApplyError(
                    "the template grants the deploying principal access to the cluster "
                    f"({arm.PARAM_DEPLOYER}), but the Azure token does not say who that is; "
                    "pass --deployer-principal-id OBJECT_ID"
                )
            pid, kind = who
        found[arm.PARAM_DEPLOYER] = pid
        if arm.PARAM_DEPLOYER_TYPE in declared and arm.PARAM_DEPLOYER_TYPE not in overrides:
            found[arm.PARAM_DEPLOYER_TYPE] = kind
        return found

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
            except ApplyError as exc:
                # The Kubernetes step would fail the same way a minute later, after API
                # Management and dispatch were deployed with a stand-in: stop now.
                raise ApplyError(
                    f"cluster {name}: cannot read the ingress address "
                    f"({INGRESS_SERVICE_HINT}): {exc}"
                ) from None
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
            extra = {"access_timeout": o.ready_timeout, "poll_interval": o.poll_interval}
            if o.contexts or o.kubeconfig:
                ctx = o.contexts.get(cluster, o.contexts.get(""))
                kube = Kube.from_context(cluster, ctx, o.kubeconfig, o.retry, notify, **extra)
                try:
                    self._check_context(cluster, ctx, kube)
                except ApplyError:
                    kube.close()
                    raise
                self._kubes[cluster] = kube
            else:
                t = self.target()
                c = t.clusters.get(cluster)
                if c is None:
                    raise ApplyError(f"cluster {cluster} of the build is not in the platform file")
                config = self.azure().kubeconfig(t.resource_group, c.aks_name, o.admin_credentials)
                if config is None:
                    return None  # not remembered: the azure step may create it
                self._kubes[cluster] = Kube.from_kubeconfig(
                    cluster, config, self.azure().token, o.retry, notify, **extra
                )
        return self._kubes[cluster]

    def _check_context(self, cluster: str, context: str | None, kube: Any) -> None:
        """Refuse a ``--context`` whose API server is not the build's AKS cluster.

        A context is only a name in someone's kubeconfig; on a multi-cluster build a
        wrong one would send another cluster's objects (and prunes) to it.
        """
        if not self.options.check_contexts:
            return
        from urllib.parse import urlparse

        host = (urlparse(kube.server).hostname or "").lower()
        label = f"--context {context or '(current)'} for cluster {cluster}"
        if self.options.outputs_file is not None:
            outputs = self.outputs() or {}
            known = ((outputs.get("clusters") or {}).get(cluster) or {}).get("apiServerFqdn")
            if not known:
                raise ApplyError(
                    f"{label}: cannot check that {host} is the build's AKS cluster: the "
                    f"--outputs file has no clusters.{cluster}.apiServerFqdn (or pass "
                    "--no-context-check for a cluster that is not AKS)"
                )
            hosts = {str(known).lower()}
        else:
            t = self.target()
            c = t.clusters.get(cluster)
            if c is None:
                raise ApplyError(f"cluster {cluster} of the build is not in the platform file")
            found = self.azure().aks_hosts(t.resource_group, c.aks_name)
            if found is None:
                raise ApplyError(
                    f"{label}: AKS cluster {c.aks_name} does not exist in {t.resource_group} "
                    "(apply --target azure first)"
                )
            hosts = found
        if host not in hosts:
            raise ApplyError(
                f"{label}: its server {host} is not the AKS cluster of the build "
                f"({', '.join(sorted(hosts)) or 'no address'}); refusing to apply there"
            )

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


def _check_saved(ctx: Context, plan: StepPlan) -> None:
    """With --from-plan: refuse the step unless its preview is the saved one."""
    if ctx.saved_plan is None or plan.step in ctx.checked or ctx.options.from_plan is None:
        return
    from .planfile import check_step

    check_step(ctx.saved_plan, plan, ctx.options.from_plan)
    ctx.checked.add(plan.step)


def _confirm(ctx: Context, plan: StepPlan, confirm: Confirm) -> None:
    _check_saved(ctx, plan)
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
            outputs = _deploy(ctx, t.resource_group, name, part.payload())
            ctx.console.say(f"  deployed {name} in {time.monotonic() - started:.0f}s")
            if "outputs" in part.template:
                ctx.set_outputs(outputs)
        if not todo:
            ctx.console.say("  no changes")
        ctx.record(self.key, digest)
        return plan


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
            if not _transient(exc) or time.monotonic() >= deadline:
                raise
            wait = o.retry.delay(attempt, None)
            first = exc.message.splitlines()[0]
            ctx.console.say(
                f"  {name}: transient failure ({', '.join(exc.codes) or first}); "
                f"deploying again in {wait:.1f}s"
            )
            o.retry.sleep(wait)


class KeysStep(Step):
    """Generate the platform's access keys once and keep them in Key Vault (keys.py)."""

    key, title = "keys", "Access keys in Key Vault"

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """Write what is missing; never print a key, only secret names."""
        del confirm  # creates secrets, deletes nothing
        from . import keys

        plan = StepPlan(self.key)
        main = ctx.build.templates()[0].template
        if arm.PARAM_ACCESS_GRANTS not in (main.get("parameters") or {}):
            plan.notes.append("the build's template predates per-caller access keys")
            _show(ctx, plan)
            return plan
        vault = next(
            (
                str(r["name"])
                for r in main["resources"]
                if str(r.get("type", "")).lower() == "microsoft.keyvault/vaults"
            ),
            None,
        )
        apis = sorted(((main.get("outputs") or {}).get("apis") or {}).get("value") or {})
        if vault is None:
            plan.notes.append("the build has no Key Vault")
            _show(ctx, plan)
            return plan
        if ctx.options.plan or ctx.resource_group() is None:
            plan.notes.append(f"keys of APIM, Event Grid and {len(apis)} API(s) in {vault}")
            _show(ctx, plan)
            return plan
        o = ctx.options
        endpoint = o.key_vault_endpoint or f"https://{vault}.vault.azure.net"
        options: dict[str, Any] = {"connection_verify": o.connection_verify}
        if o.key_vault_endpoint:
            # The challenge names the cloud's vault audience, not the stand-in's host.
            options["verify_challenge_resource"] = False
        store = keys.KeyVaultSecrets(endpoint, ctx.azure().credential, options)
        try:
            written = keys.ensure_access_keys(store, apis)
        finally:
            store.close()
        for name in written:
            plan.changes.append(PlannedChange(ApplyAction.CREATE, "Key Vault secret", name))
        if not written:
            plan.notes.append("access keys already in place")
        _show(ctx, plan)
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
        _check_saved(ctx, plan)
        az = ctx.azure()
        ctx.lock()
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
            az.site_action(t.resource_group, t.function_app, "syncfunctiontriggers")
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
        self._wait_indexed(ctx, function_names(data))
        ctx.record(self.key, digest)
        return plan

    @staticmethod
    def _wait_indexed(ctx: Context, expected: list[str]) -> None:
        """Wait until the host lists every function of the bundle (or fail clearly).

        The host restarts after a publish and indexes the new code; until it lists
        ``BackendWebhook``, Event Grid's validation handshake would fail, and a bundle
        the host cannot import never lists anything.
        """
        if not expected:
            return
        t = ctx.target()
        o = ctx.options
        az = ctx.azure()
        deadline = time.monotonic() + o.ready_timeout
        ctx.console.say(f"  waiting for the Functions host to index {len(expected)} function(s)")
        while True:
            listed = az.list_functions(t.resource_group, t.function_app)
            missing = [f for f in expected if f not in listed]
            if not missing:
                ctx.console.say(f"  Functions host lists all {len(expected)} function(s)")
                return
            if time.monotonic() >= deadline:
                raise ApplyError(
                    f"Function App {t.function_app}: after {o.ready_timeout:.0f}s the host lists "
                    f"{len(listed)} of {len(expected)} functions (missing: {', '.join(missing)}); "
                    "the host could not load the bundle (a missing dependency or an import "
                    "error): see the app's logs (Application Insights, 'Diagnose and solve')"
                )
            o.retry.sleep(o.poll_interval)


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
        from .kube import PRUNE_KINDS, WORKLOADS, compare, identity

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
            doomed = self._prune_candidates(ctx, kube, objs, PRUNE_KINDS, identity, plan)
            for _res, o in doomed:
                note = "prune; deletes everything in it" if o["kind"] == "Namespace" else "prune"
                plan.changes.append(
                    PlannedChange(ApplyAction.DELETE, o["kind"], _name(o), note=note)
                )
        _show(ctx, plan)
        if ctx.options.plan:
            return plan
        _confirm(ctx, plan, confirm)
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
            self._wait(ctx, kube, [(r, o) for r, o in served if o["kind"] in WORKLOADS])
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
                        f"Namespace {_name(o)} is no longer in the build; kept (deleting it "
                        "deletes everything in it: rerun with --prune-namespaces)"
                    )
                    continue
                found.append((res, o))
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


def _has_access_keys(build: Build) -> bool:
    """Whether the build's template expects per-caller access keys (issue 13)."""
    try:
        templates = build.templates()
    except ApplyError:
        return False
    main = templates[0].template if templates else {}
    return arm.PARAM_ACCESS_GRANTS in (main.get("parameters") or {})


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
        if _has_access_keys(build):
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
        steps = steps_for(build, options.targets)
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
