"""``ai4ec destroy``: remove what ``apply`` created, in the reverse of apply's order.

Order, each layer listed first and deleted only after one confirmation (or ``--yes``):

1. ``k8s:<cluster>`` - Kubernetes objects ai4ec applied: labelled for the platform and
   environment *and* whose ``managedFields`` show ai4ec's field manager (the rule
   ``apply --prune`` uses; the shipped Helm chart sets the same labels, so labels alone
   prove nothing). Never controller-owned objects or CSI-synced Secrets. A Namespace is
   deleted only with ``--delete-namespaces`` (it takes everything in it along).
2. ``dispatch`` - the Event Grid subscription (it calls the Function App).
3. ``apim`` - API Management's objects the build declares (APIs, products, named
   values, backends, policies), before the service itself.
4. ``azure`` - the Azure resources of the build: the ids the templates declare (literal
   names) and the ``outputResources`` of ai4ec's own deployments
   (``ai4ec-<env>-<part>``); never anything else in the resource group, and never the
   resource group itself (apply may have found it there). Extension resources (role
   assignments) first, then top-level resources in reverse template order; children
   (blob containers, secrets, node pools) go with their parents. Then soft-deleted
   Key Vaults are purged when purge protection is off, and the deployment records and
   apply's record tags are removed so that the next ``apply`` creates everything again.

Every read happens before the confirmation; ``--plan`` stops there and writes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApplyError
from . import arm
from .builddir import load_build
from .context import RECORD_PREFIX, Context
from .options import ApplyOptions, Confirm, Console
from .placeholders import object_label
from .plan import ApplyAction, PlannedChange, StepPlan
from .scrub import scrubbed_logging
from .vaults import VAULT_TYPE, VaultRef, deleted_vault, purge_vault, template_vaults

_EVENT_SUBSCRIPTION = "microsoft.eventgrid/topics/eventsubscriptions"
_APIM_CHILD = "microsoft.apimanagement/service/"
#: Delete order of API Management's children by type (others keep reverse template order
#: between): the global policy, then APIs (with theirs) and products, then fragments,
#: backends, and named values last.
_APIM_ORDER = {
    "policies": 0,
    "apis": 1,
    "products": 2,
    "policyfragments": 3,
    "backends": 4,
    "namedvalues": 9,
}
DEPLOYMENTS_API = "2025-04-01"


@dataclass(frozen=True, slots=True)
class AzureItem:
    """One Azure resource destroy removes."""

    rid: str
    kind: str
    name: str
    api_version: str


@dataclass
class DestroyResult:
    """What destroy found (and, unless planning, removed)."""

    plans: list[StepPlan]
    removed: int = 0
    purged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """How many objects and resources are (or would be) deleted."""
        return sum(len(p.destructive) for p in self.plans)


@dataclass
class _Layer:
    plan: StepPlan
    #: Kubernetes: (resource, live object); Azure: AzureItem.
    items: list[Any] = field(default_factory=list)
    cluster: str = ""


def _split_id(rid: str) -> tuple[str, str, bool]:
    """``(type, name, is_extension)`` of a resource id."""
    low = rid.lower()
    head, _, tail = rid.rpartition("/providers/")
    segs = tail.split("/")
    ns, rest = segs[0], segs[1:]
    kind = "/".join([ns, *rest[0::2]])
    name = "/".join(rest[1::2])
    return kind, name, low.count("/providers/") > 1 and bool(head)


def _depth(kind: str) -> int:
    """Type segments after the namespace: 1 for top-level, 2 for a child..."""
    return len(kind.split("/")) - 1


class _Destroy:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.apis: dict[str, str] = {}
        self.vaults: list[VaultRef] = []
        #: Vault name -> location, for vaults that exist now or are soft-deleted.
        self.vault_location: dict[str, str] = {}
        self.to_purge: list[VaultRef] = []

    # --------------------------------------------------------------------- Kubernetes

    def kube_layer(self, cluster: str) -> _Layer:
        from .kube import PRUNE_KINDS, ListRefused, prunable

        ctx = self.ctx
        layer = _Layer(StepPlan(f"k8s:{cluster}"), cluster=cluster)
        kube = ctx.kube(cluster)
        if kube is None:
            layer.plan.notes.append("the AKS cluster does not exist: no Kubernetes objects")
            return layer
        b = ctx.build
        selector = (
            f"app.kubernetes.io/managed-by=ai4ec,ai4ec.io/platform={b.platform},"
            f"ai4ec.io/environment={b.environment}"
        )
        kinds: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        objs = b.manifests(cluster)
        for api_version, kind in [
            *PRUNE_KINDS,
            *((str(o["apiVersion"]), str(o["kind"])) for o in objs),
        ]:
            key = (api_version.rpartition("/")[0], kind)
            if key not in seen:
                seen.add(key)
                kinds.append((api_version, kind))
        found: list[tuple[Any, dict[str, Any]]] = []
        for api_version, kind in kinds:
            res = kube.resource(api_version, kind)
            if res is None:
                continue  # not served: nothing of this kind can exist
            try:
                live = kube.list(res, selector)
            except ListRefused as exc:
                raise ApplyError(
                    f"{exc.message}; destroy cannot tell what ai4ec applied there. Grant list "
                    "on it, or remove those objects yourself"
                ) from None
            for o in live:
                if not prunable(o, set()):
                    continue
                if o.get("kind") == "Namespace" and not ctx.options.prune_namespaces:
                    ctx_name = (o.get("metadata") or {}).get("name")
                    layer.plan.notes.append(
                        f"Namespace {ctx_name} kept (deleting it deletes everything in it, also "
                        "what ai4ec did not create: rerun with --delete-namespaces)"
                    )
                    continue
                found.append((res, o))
        found.reverse()
        layer.items = found
        for _res, o in found:
            note = "and everything in it" if o["kind"] == "Namespace" else ""
            layer.plan.changes.append(
                PlannedChange(ApplyAction.DELETE, o["kind"], _name(o), note=note)
            )
        return layer

    # -------------------------------------------------------------------------- Azure

    def _rg_prefix(self) -> str:
        t = self.ctx.target()
        return f"/subscriptions/{t.subscription_id}/resourceGroups/{t.resource_group}/"

    def _candidates(self) -> list[AzureItem]:
        """Every resource id ai4ec may remove, parents and children, in template order."""
        ctx = self.ctx
        prefix = self._rg_prefix()
        items: dict[str, AzureItem] = {}
        for tpl in ctx.build.templates():
            self.vaults.extend(template_vaults(tpl.template))
            for r in tpl.template.get("resources") or []:
                kind, name = str(r.get("type", "")), str(r.get("name", ""))
                self.apis.setdefault(kind.lower(), str(r.get("apiVersion", "")))
                if "scope" in r or name.startswith("[") or not kind:
                    continue  # expression names and extensions: from outputResources
                ns, *types = kind.split("/")
                names = name.split("/")
                if len(names) != len(types):
                    continue
                path = "/".join([ns, *(p for pair in zip(types, names, strict=True) for p in pair)])
                rid = f"{prefix}providers/{path}"
                items.setdefault(rid.lower(), AzureItem(rid, kind, name, str(r.get("apiVersion"))))
        for rid in self._output_resources():
            if not rid.lower().startswith(prefix.lower()) or rid.lower() in items:
                continue  # another resource group's, or already known
            kind, name, _ext = _split_id(rid)
            api = self.apis.get(kind.lower())
            if not api:
                ctx.console.warn(
                    f"{rid}: deployed by ai4ec, but no template of this build has its type "
                    "(its API version is unknown); remove it yourself"
                )
                continue
            items[rid.lower()] = AzureItem(rid, kind, name, api)
        return list(items.values())

    def _deployment_names(self) -> list[str]:
        env = self.ctx.build.environment
        # every deployment apply makes (arm.PARTS, then the split templates of large
        # platforms: identities-<n>, identity-grants-<n>, apim-apis-<n>, by the names
        # Build.templates() gives them), and ``infra``, the single Azure deployment of
        # builds before the split
        parts = [*arm.PARTS, "infra"]
        parts += [t.name for t in self.ctx.build.templates() if t.name != "main"]
        return [f"ai4ec-{env}-{p}"[:64] for p in parts]

    def _deployment_id(self, name: str) -> str:
        return f"{self._rg_prefix()}providers/Microsoft.Resources/deployments/{name}"

    def _output_resources(self) -> list[str]:
        az = self.ctx.azure()
        out: list[str] = []
        for name in self._deployment_names():
            dep = az.get_resource(self._deployment_id(name), DEPLOYMENTS_API)
            found = ((dep or {}).get("properties") or {}).get("outputResources") or []
            out.extend(str(r["id"]) for r in found if isinstance(r, dict) and r.get("id"))
        return out

    def azure_layers(self) -> tuple[_Layer, _Layer, _Layer]:
        """The dispatch, API Management and Azure-resource layers, each in delete order."""
        ctx = self.ctx
        dispatch = _Layer(StepPlan("dispatch"))
        apim = _Layer(StepPlan("apim"))
        azure = _Layer(StepPlan("azure"))
        t = ctx.target()
        if ctx.resource_group() is None:
            azure.plan.notes.append(
                f"resource group {t.resource_group} does not exist: nothing to remove in Azure"
            )
            return dispatch, apim, azure
        az = ctx.azure()
        extensions: list[AzureItem] = []
        top: list[AzureItem] = []
        for item in self._candidates():
            low = item.kind.lower()
            _k, _n, ext = _split_id(item.rid)
            if low == _EVENT_SUBSCRIPTION:
                target = dispatch.items
            elif low.startswith(_APIM_CHILD) and _depth(item.kind) == 2:
                target = apim.items
            elif ext:
                target = extensions
            elif _depth(item.kind) == 1:
                target = top
            else:
                continue  # a child: deleted with its parent
            live = az.get_resource(item.rid, item.api_version)
            if live is None:
                continue
            if low == VAULT_TYPE:
                self.vault_location[item.name.lower()] = str(live.get("location") or t.location)
                purge_protected = (live.get("properties") or {}).get("enablePurgeProtection")
                vault = next((v for v in self.vaults if v.name.lower() == item.name.lower()), None)
                if vault is not None and purge_protected is not True:
                    self.to_purge.append(vault)
            target.append(item)
        extensions.reverse()
        top.reverse()
        azure.items = [*extensions, *top]
        # API Management refuses to delete a named value a policy still uses, or a
        # fragment a policy includes: policies and what holds them go first.
        apim.items.sort(key=lambda it: _APIM_ORDER.get(it.kind.lower().rpartition("/")[2], 5))
        for layer in (dispatch, apim, azure):
            for item in layer.items:
                layer.plan.changes.append(
                    PlannedChange(ApplyAction.DELETE, item.kind, item.name, note=self._note(item))
                )
        self._already_deleted_vaults(azure)
        return dispatch, apim, azure

    def _note(self, item: AzureItem) -> str:
        if item.kind.lower() != VAULT_TYPE:
            return ""
        if any(v.name.lower() == item.name.lower() for v in self.to_purge):
            return "then purged: purge protection is off"
        return "kept soft-deleted (purge protection); the next apply recovers it"

    def _already_deleted_vaults(self, azure: _Layer) -> None:
        """Vaults an earlier destroy left soft-deleted: purged too when Azure allows it."""
        t = self.ctx.target()
        for vault in self.vaults:
            if vault.name.lower() in self.vault_location:
                continue
            gone = deleted_vault(self.ctx.azure(), t.location, vault.name, vault.api_version)
            if gone is None:
                continue
            self.vault_location[vault.name.lower()] = str(gone.get("location") or t.location)
            if gone.get("purgeProtectionEnabled") is True:
                azure.plan.notes.append(
                    f"Key Vault {vault.name} is soft-deleted with purge protection (until "
                    f"{gone.get('scheduledPurgeDate') or 'its purge date'}); the next apply "
                    "recovers it"
                )
                continue
            self.to_purge.append(vault)
            azure.plan.changes.append(
                PlannedChange(ApplyAction.DELETE, "deleted Key Vault", vault.name, note="purge")
            )

    # ------------------------------------------------------------------------- delete

    def delete_azure(self, layer: _Layer, counter: list[int], total: int) -> None:
        az = self.ctx.azure()
        for item in layer.items:
            started = time.monotonic()
            if item.kind.lower().startswith(_APIM_CHILD):
                # API Management refuses a DELETE without If-Match (the header is required).
                az.delete_child(item.rid, item.api_version)
            else:
                az.delete_resource(item.rid, item.api_version, f"{item.kind} {item.name}")
            counter[0] += 1
            self.ctx.console.say(
                f"  [{counter[0]}/{total}] deleted {item.kind} {item.name} "
                f"({time.monotonic() - started:.0f}s)"
            )

    def purge(self, result: DestroyResult) -> None:
        az = self.ctx.azure()
        t = self.ctx.target()
        for vault in self.to_purge:
            location = self.vault_location.get(vault.name.lower(), t.location)
            gone = deleted_vault(az, location, vault.name, vault.api_version)
            if gone is None:
                continue  # Azure purged it already (soft delete off)
            if gone.get("purgeProtectionEnabled") is True:
                result.kept.append(f"Key Vault {vault.name} (soft-deleted, purge protection)")
                continue
            self.ctx.console.say(f"  purging soft-deleted Key Vault {vault.name} ...")
            purge_vault(az, location, vault.name, vault.api_version)
            result.purged.append(vault.name)
            self.ctx.console.say(f"  purged Key Vault {vault.name}: its name is free again")

    def forget(self) -> None:
        """Remove ai4ec's deployment records and apply's record tags.

        Without this the next apply would trust records of resources that no longer
        exist ("no changes since the last apply") and read outputs of a deleted cluster.
        """
        ctx = self.ctx
        az = ctx.azure()
        t = ctx.target()
        for name in self._deployment_names():
            rid = self._deployment_id(name)
            response = az._send(f"deployment {name}", "DELETE", rid, api=DEPLOYMENTS_API)
            if response.status_code not in (200, 202, 204, 404):
                raise ApplyError(
                    f"delete deployment {name}: HTTP {response.status_code}: "
                    f"{az._response_error(response)}"
                )
        rg = az.resource_group(t.resource_group) or {}
        prefix = f"{RECORD_PREFIX}.{ctx.build.environment}.".lower()
        records = {k: v for k, v in (rg.get("tags") or {}).items() if k.lower().startswith(prefix)}
        if records:
            az.delete_tags(t.resource_group, records)
        ctx.console.say(f"  removed the deployment records and {len(records)} apply record tag(s)")


def _name(obj: dict[str, Any]) -> str:
    md = obj.get("metadata") or {}
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else str(md.get("name"))


def _show(console: Console, plan: StepPlan) -> None:
    for note in plan.notes:
        console.say(f"  {note}")
    for line in plan.lines():
        console.say(f"    {line}")
    if not plan.changes and not plan.notes:
        console.say("  nothing to remove")


def run_destroy(options: ApplyOptions, console: Console, confirm: Confirm) -> DestroyResult:
    """Remove (or, with ``options.plan``, list) what apply created for the build.

    ``options.prune_namespaces`` means ``--delete-namespaces``. Raises ApplyError when a
    read or a deletion fails, or the deletion is not confirmed (nothing is deleted then).
    """
    with scrubbed_logging():
        build = load_build(options.build_dir)
        ctx = Context(options, build, console)
        verb = "plan destroy of" if options.plan else "destroy"
        console.say(
            f"{verb} {build.root} (platform {build.platform}, environment {build.environment})"
        )
        job = _Destroy(ctx)
        try:
            layers: list[_Layer] = []
            titles: list[str] = []
            for cluster in build.clusters:
                layers.append(job.kube_layer(cluster))
                titles.append(f"Kubernetes objects ai4ec applied to cluster {cluster}")
            layers.extend(job.azure_layers())
            titles += [
                "Event Grid subscription",
                "API Management objects of the build",
                "Azure resources of the build",
            ]
            for i, (layer, title) in enumerate(zip(layers, titles, strict=True), 1):
                console.say(f"[{i}/{len(layers)}] {layer.plan.step}: {title}")
                _show(console, layer.plan)
            result = DestroyResult([layer.plan for layer in layers])
            total = sum(len(layer.items) for layer in layers)
            has_rg = ctx.resource_group() is not None
            if options.plan:
                console.say(
                    f"plan: {result.pending} to delete"
                    if result.pending
                    else "plan: nothing to delete"
                )
                return result
            if result.pending and not options.yes:
                question = (
                    f"destroy platform {build.platform}, environment {build.environment}: "
                    f"delete the {result.pending} object(s) and resource(s) marked '-' above?"
                )
                if not confirm(question):
                    raise ApplyError(
                        "destroy not confirmed; nothing was deleted (rerun with --yes to confirm "
                        "non-interactively)"
                    )
            if has_rg:
                ctx.lock()
            counter = [0]
            for layer in layers:
                if not layer.items:
                    continue
                console.say(f"{layer.plan.step}: deleting {len(layer.items)}")
                if layer.cluster:
                    kube = ctx.kube(layer.cluster)
                    for res, o in layer.items:
                        kube.delete(res, o)
                        counter[0] += 1
                        console.say(f"  [{counter[0]}/{total}] deleted {object_label(o)}")
                else:
                    job.delete_azure(layer, counter, total)
            result.removed = counter[0]
            if has_rg:
                job.purge(result)
                job.forget()
                result.kept.append(
                    f"resource group {ctx.target().resource_group} (ai4ec never deletes it: "
                    "it may hold resources ai4ec did not create)"
                )
        finally:
            try:
                ctx.unlock()
            finally:
                ctx.close()
        for layer in layers:
            result.kept.extend(n for n in layer.plan.notes if n.startswith("Namespace "))
        purged = f", {len(result.purged)} Key Vault(s) purged" if result.purged else ""
        console.say(f"destroy complete: {result.removed} removed{purged}")
        for k in result.kept:
            console.say(f"  kept: {k}")
        return result


__all__ = ["DestroyResult", "run_destroy"]
