"""Shared, lazily opened connections and facts of one apply run.

The resource group with its owner tags, apply lock and step records; the Azure outputs
the Kubernetes placeholders read; the deployments of each Azure step with their
parameters (ingress addresses discovered from the clusters, the deployer's identity);
and one Kubernetes client per cluster, each ``--context`` checked against the build.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..errors import ApplyError
from . import arm
from .builddir import Build
from .options import ApplyOptions, Console
from .placeholders import normalize_outputs
from .target import Target, load_target

RECORD_PREFIX = "ai4ec-apply"
#: Resource-group tag holding the lease of the apply that runs now.
LOCK_TAG = "ai4ec-apply-lock"
#: Seconds a lock stays valid when its run vanished without releasing it.
LOCK_LEASE = 4 * 3600
#: Tags naming the platform and environment a resource group belongs to.
PLATFORM_TAG, ENVIRONMENT_TAG = "ai4ec-platform", "ai4ec-environment"
INGRESS_SERVICE_HINT = "Service aks-istio-ingress/aks-istio-ingressgateway-*"


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
        self.lock()  # a record is a write: the first of a step that deployed nothing
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

    def outputs_deployment(self) -> str:
        """Name of the deployment that carries the outputs (the clusters' part)."""
        templates = self.build.templates()
        part = arm.outputs_part(templates[0].template) if templates else arm.CLUSTERS
        return arm.Part(part, {}, {}).deployment_name(self.build.environment)

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
                    self.target().resource_group, self.outputs_deployment()
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
            if templates:  # a vault a destroy left soft-deleted is recovered (vaults.py)
                from .vaults import create_mode_overrides

                modes, lines = create_mode_overrides(
                    self.azure(), templates[0].template, self.target().location, overrides
                )
                overrides.update(modes)
                for line in lines:
                    self.console.say(f"  {line}")
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

        On a first apply the clusters only exist once their deployment is done, so
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

    def check_contexts(self) -> None:
        """With ``--context``/``--kubeconfig``: open, and so check, every cluster's context.

        Each cluster's step opens its own client. Checked one step at a time, a
        multi-cluster run where ``--context main=X`` leaves ``west`` on the current
        context (main's server) would apply all of main before west is refused; checked
        together, a wrong context stops the run before any Kubernetes write.
        """
        o = self.options
        if not (o.contexts or o.kubeconfig):
            return  # the clients come from AKS itself: nothing to check
        for cluster in self.build.clusters:
            self.kube(cluster)

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
            hint = (
                f" (name its context with --context {cluster}=CONTEXT)"
                if context is None and self.options.contexts
                else ""
            )
            raise ApplyError(
                f"{label}: its server {host} is not the AKS cluster of the build "
                f"({', '.join(sorted(hosts)) or 'no address'}); refusing to apply there{hint}"
            )

    def close(self) -> None:
        """Release every connection."""
        for k in self._kubes.values():
            if k is not None:
                k.close()
        if self._azure is not None:
            self._azure.close()
