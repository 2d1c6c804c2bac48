"""``apply --prune`` in Azure: identities, their grants and node pools the build dropped.

ARM deployments are incremental, so a resource removed from the templates stays in Azure:
remove an API and its workload identity keeps its federated credential and its role
assignments on Key Vault secrets and results; drop a secret from an API's ``secrets`` and
the API's identity can still read it; remove a GPU pool and its nodes keep running. The
last step of ``apply --prune`` (``azure-prune``, after Kubernetes and API Management no
longer use them) lists and deletes exactly these:

* **user-assigned identities** in the resource group tagged with this build's
  ``ai4ec-platform`` and ``ai4ec-environment`` that no template of the build declares
  (their federated credentials are deleted with them);
* **role assignments** whose principal is one of those tagged identities, at a scope
  inside the resource group, that no template declares for that identity, role and scope:
  the grants of a removed identity, and grants a kept API no longer needs;
* **node pools** of the build's clusters tagged as above that the build no longer
  declares; never a ``System`` pool (AKS needs one).

Ownership is the pair of tags every template resource carries, so nothing untagged (made
by hand) or another environment's is listed. Role assignments cannot be tagged: ownership
is their principal, one of this environment's identities. Grants of principals that are
not such identities (the deployer, the Function App's and API Management's own
identities) are never touched, nor is anything holding data or running workloads
(accounts, containers, vaults, caches, clusters): a tagged top-level resource the build no
longer declares gets a note in the plan saying it is kept, with its id.

What is declared is read from the build's ARM templates (the artifact apply deploys), as
the ``keys`` step reads its secrets: a grant to an identity whose scope or role is an
expression cannot be matched, and then prune stops rather than guess.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApplyError
from .builddir import Template
from .context import ENVIRONMENT_TAG, PLATFORM_TAG, Context
from .options import Confirm
from .plan import ApplyAction, PlannedChange, StepPlan
from .steps import Step, confirm_step, show_plan

IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
POOL = "Microsoft.ContainerService/managedClusters/agentPools"
CLUSTER = "Microsoft.ContainerService/managedClusters"
#: The role-assignment API version when no template names one (it always does).
ROLE_API = "2022-04-01"
#: Microsoft.Resources API version of the resource group's tagged-resource listing.
RESOURCES_API = "2025-04-01"

_IDENTITY_REF = re.compile(
    r"resourceId\(\s*'Microsoft\.ManagedIdentity/userAssignedIdentities'\s*,\s*'([^']+)'\s*\)",
    re.IGNORECASE,
)
_ROLE_DEFINITION = re.compile(
    r"^\[subscriptionResourceId\(\s*'Microsoft\.Authorization/roleDefinitions'\s*,"
    r"\s*'([0-9A-Fa-f-]{36})'\s*\)\]$"
)


@dataclass(frozen=True, slots=True)
class Declared:
    """What the build's templates declare, as prune compares it (names lower-cased).

    Attributes:
        identities: Names of the user-assigned identities.
        grants: ``(scope, role definition guid, identity name)`` of each role assignment
            to a user-assigned identity; ``scope`` is the path below the resource group's
            ``/providers/`` (``microsoft.keyvault/vaults/kv/secrets/x``), ``""`` for the
            resource group itself.
        pools: ``(cluster, pool)`` of every node pool, child resources and the pools a
            cluster declares inline (its system pool).
        clusters: The clusters' names as written (their pools are listed).
        api: Resource type (lower) -> the API version the templates use.
    """

    identities: frozenset[str]
    grants: frozenset[tuple[str, str, str]]
    pools: frozenset[tuple[str, str]]
    clusters: tuple[str, ...]
    api: dict[str, str] = field(default_factory=dict)
    #: ``(type, name)`` of every top-level resource with a literal name (lower-cased).
    top: frozenset[tuple[str, str]] = frozenset()


def declared(templates: list[Template]) -> Declared:
    """Read what the templates declare (see :class:`Declared`).

    Raises:
        ApplyError: a role assignment to a user-assigned identity names its scope or
            role with an expression, so which grants the build keeps cannot be known.
    """
    identities: set[str] = set()
    grants: set[tuple[str, str, str]] = set()
    pools: set[tuple[str, str]] = set()
    clusters: list[str] = []
    api: dict[str, str] = {}
    top: set[tuple[str, str]] = set()
    for t in templates:
        for r in t.template.get("resources") or []:
            kind = str(r.get("type", "")).lower()
            name = str(r.get("name", ""))
            api.setdefault(kind, str(r.get("apiVersion", "")))
            if kind.count("/") == 1 and "scope" not in r and not name.startswith("["):
                top.add((kind, name.lower()))
            if kind == IDENTITY.lower() and not name.startswith("["):
                identities.add(name.lower())
            elif kind == CLUSTER.lower() and not name.startswith("["):
                clusters.append(name)
                for profile in (r.get("properties") or {}).get("agentPoolProfiles") or []:
                    pools.add((name.lower(), str(profile.get("name", "")).lower()))
            elif kind == POOL.lower() and not name.startswith("["):
                cluster, _, pool = name.partition("/")
                pools.add((cluster.lower(), pool.lower()))
            elif kind == ROLE_ASSIGNMENT.lower():
                grant = _grant(t.name, r)
                if grant is not None:
                    grants.add(grant)
    return Declared(
        frozenset(identities),
        frozenset(grants),
        frozenset(pools),
        tuple(clusters),
        api,
        frozenset(top),
    )


def _grant(template: str, r: dict[str, Any]) -> tuple[str, str, str] | None:
    """``(scope, role, identity)`` of a role assignment to a user-assigned identity."""
    props = r.get("properties") or {}
    who = _IDENTITY_REF.search(str(props.get("principalId", "")))
    if who is None:
        return None  # another principal (a site's, the deployer's): never pruned
    role = _ROLE_DEFINITION.match(str(props.get("roleDefinitionId", "")))
    scope = str(r.get("scope", ""))
    if role is None or scope.startswith("["):
        raise ApplyError(
            f"{template}: role assignment {r.get('name')!r} of identity {who.group(1)} names "
            "its scope or role with an expression; prune cannot tell which grants the build "
            "keeps"
        )
    return scope.strip("/").lower(), role.group(1).lower(), who.group(1).lower()


@dataclass(frozen=True, slots=True)
class Leftover:
    """One resource the step deletes: its id, API version and plan line."""

    rid: str
    api_version: str
    change: PlannedChange


class AzurePruneStep(Step):
    """Delete this environment's identities, grants and node pools the build dropped."""

    key, title = "azure-prune", "Azure identities, grants and node pools the build dropped"

    def __init__(self, skipped_targets: list[str] | None = None) -> None:
        #: Targets this run leaves out; the step then only says why it does nothing.
        self.skipped_targets = list(skipped_targets or [])

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """List leftovers (every page), then confirm and delete them, grants first."""
        plan = StepPlan(self.key)
        if self.skipped_targets:
            plan.notes.append(
                f"skipped: this run leaves out {', '.join(self.skipped_targets)}, which may "
                "still use what it would delete (a pod pinned to a dropped pool, an API "
                "signing in as a dropped identity); rerun apply --prune with every target"
            )
            show_plan(ctx, plan)
            return plan
        templates = ctx.build.templates()
        if not templates:
            plan.notes.append("the build has no Azure templates")
            show_plan(ctx, plan)
            return plan
        if ctx.resource_group() is None:
            plan.notes.append("the resource group does not exist yet: nothing to prune")
            show_plan(ctx, plan)
            return plan
        found = leftovers(ctx, declared(templates), plan)
        plan.changes.extend(item.change for item in found)
        show_plan(ctx, plan)
        if ctx.options.plan or not found:
            return plan
        confirm_step(ctx, plan, confirm)
        ctx.lock()
        az = ctx.azure()
        for i, item in enumerate(found, 1):
            started = time.monotonic()
            az.delete_resource(item.rid, item.api_version, f"{item.change.kind} {item.change.name}")
            ctx.console.say(
                f"  [{i}/{len(found)}] deleted {item.change.kind} {item.change.name} "
                f"({time.monotonic() - started:.0f}s)"
            )
        return plan


def _owned(tags: Any, ctx: Context) -> bool:
    t = tags if isinstance(tags, dict) else {}
    b = ctx.build
    return t.get(PLATFORM_TAG) == b.platform and t.get(ENVIRONMENT_TAG) == b.environment


def leftovers(ctx: Context, want: Declared, plan: StepPlan) -> list[Leftover]:
    """This environment's identities, grants and pools that ``want`` does not declare.

    In delete order: role assignments, identities, node pools; each group sorted.

    Raises:
        ApplyError: a listing failed (prune never reads a refused list as empty).
    """
    az = ctx.azure()
    t = ctx.target()
    rg_path = f"/subscriptions/{t.subscription_id}/resourceGroups/{t.resource_group}"
    identity_api = want.api.get(IDENTITY.lower()) or ""
    role_api = want.api.get(ROLE_ASSIGNMENT.lower()) or ROLE_API
    grants: list[Leftover] = []
    identities: list[Leftover] = []
    pools: list[Leftover] = []
    principals: dict[str, str] = {}
    if identity_api:
        listed = az.list_children(f"{rg_path}/providers/{IDENTITY}", identity_api) or []
        for ident in listed:
            name = str(ident.get("name", ""))
            if not _owned(ident.get("tags"), ctx):
                continue
            principal = str((ident.get("properties") or {}).get("principalId") or "")
            if principal:
                principals[principal.lower()] = name
            if name.lower() not in want.identities:
                change = PlannedChange(
                    ApplyAction.DELETE, IDENTITY, name, note="with its federated credentials"
                )
                identities.append(Leftover(str(ident["id"]), identity_api, change))
    if principals:
        inside = (rg_path + "/providers/").lower()
        listed = az.list_children(f"{rg_path}/providers/{ROLE_ASSIGNMENT}", role_api) or []
        for ra in listed:
            props = ra.get("properties") or {}
            holder = principals.get(str(props.get("principalId", "")).lower())
            scope = str(props.get("scope", ""))
            if holder is None:
                continue
            if scope.lower() == rg_path.lower():
                rel = ""
            elif scope.lower().startswith(inside):
                rel = scope[len(inside) :].strip("/")
            else:
                continue  # above the resource group: not ai4ec's to remove here
            role = str(props.get("roleDefinitionId", "")).rstrip("/").rpartition("/")[2]
            if (rel.lower(), role.lower(), holder.lower()) in want.grants:
                continue
            where = rel or "the resource group"
            change = PlannedChange(
                ApplyAction.DELETE, ROLE_ASSIGNMENT, f"{holder} on {where}", note=f"role {role}"
            )
            grants.append(Leftover(str(ra["id"]), role_api, change))
    pool_api = want.api.get(POOL.lower()) or want.api.get(CLUSTER.lower()) or ""
    for cluster in want.clusters if pool_api else ():
        path = f"{rg_path}/providers/{CLUSTER}/{cluster}/agentPools"
        for pool in az.list_children(path, pool_api) or []:
            props = pool.get("properties") or {}
            name = str(pool.get("name", ""))
            if (cluster.lower(), name.lower()) in want.pools or not _owned(props.get("tags"), ctx):
                continue
            if str(props.get("mode", "")).lower() == "system":
                plan.notes.append(
                    f"node pool {cluster}/{name} is no longer in the build but is a System "
                    "pool; kept (AKS needs one: remove it yourself once another exists)"
                )
                continue
            change = PlannedChange(
                ApplyAction.DELETE, POOL, f"{cluster}/{name}", note="its nodes are drained"
            )
            pools.append(Leftover(str(pool["id"]), pool_api, change))
    _kept_notes(ctx, want, rg_path, plan)
    order = [sorted(g, key=lambda x: (x.change.name, x.rid)) for g in (grants, identities, pools)]
    return [item for group in order for item in group]


def _kept_notes(ctx: Context, want: Declared, rg_path: str, plan: StepPlan) -> None:
    """A note for each other resource of this environment the build no longer declares.

    Storage accounts, vaults, caches, clusters, registries and the like hold data or run
    workloads: prune never deletes them, but says they are left, so that a cluster or a
    cache nobody uses any more does not keep costing money unseen.
    """
    # Unfiltered: ARM leaves the tags out of a listing filtered by tag, and both owner
    # tags must match.
    listed = ctx.azure().list_children(f"{rg_path}/resources", RESOURCES_API) or []
    for r in sorted(listed, key=lambda x: (str(x.get("type")), str(x.get("name")))):
        kind, name = str(r.get("type", "")), str(r.get("name", ""))
        if kind.count("/") != 1 or kind.lower() == IDENTITY.lower():
            continue  # children come with their parents; identities are pruned above
        if not _owned(r.get("tags"), ctx):
            continue
        if (kind.lower(), name.lower()) in want.top:
            continue
        plan.notes.append(
            f"{kind} {name} is no longer in the build; kept (it may hold data or run "
            f"workloads): delete it yourself once you are sure (az resource delete --ids "
            f"{r.get('id')})"
        )


__all__ = ["AzurePruneStep", "Declared", "Leftover", "declared", "leftovers"]
