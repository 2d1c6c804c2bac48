"""Prune: what the build no longer has, and only what ai4ec itself created.

Kubernetes objects (ai4ec's labels and its server-side-apply field manager) and API
Management children (ai4ec's ownership tag); both are deleted only with ``--prune``,
after the confirmation of the step that lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


#: API version of the API Management children apply lists and deletes.
APIM_API = "2024-05-01"
#: The APIM target's ownership marker (ai4ec.render.apim.resources.OWNER_TAG): an API
#: Management tag linked to every API and product ai4ec creates, and a tag of every
#: named value. A test pins that the two agree.
OWNER_TAG = "ai4ec"
#: Description prefix of the backends ai4ec creates (backends have no tags).
OWNER_DESCRIPTION = "ai4ec:"
_APIM_CHILD = "microsoft.apimanagement/service/"


@dataclass(frozen=True, slots=True)
class ApimObject:
    """An API Management child to delete: its ARM type, name and resource path."""

    type: str
    name: str
    path: str


def apim_prune_candidates(ctx: Context, parts: list[Any], plan: StepPlan) -> list[ApimObject]:
    """API Management children ai4ec created that the build no longer has.

    Only objects with ai4ec's marker: APIs and products linked to the ``ai4ec`` tag,
    named values tagged ``ai4ec``, backends and policy fragments described
    ``ai4ec: ...``; a fragment that a kept policy (the build's, or a hand-made API's)
    still includes is kept, with a note; operations of an
    API the build keeps, and API links of a product it keeps, belong to ai4ec through
    their parent. An API, product or named value made by hand carries no marker and is
    never listed. Returned in the order they can be deleted: operations and product
    links, then APIs (with their policies), products, fragments, backends, and named values last
    (APIM refuses to delete a named value a policy still uses).

    Raises:
        ApplyError: a collection could not be listed (prune must not read it as empty).
    """
    desired: set[tuple[str, str]] = set()
    service: str | None = None
    #: Policy texts of the build: a fragment one of them includes is never deleted.
    kept_policies: list[str] = []
    for part in parts:
        for r in part.template.get("resources") or []:
            kind, name = str(r.get("type", "")), str(r.get("name", ""))
            if not kind.lower().startswith(_APIM_CHILD):
                continue
            if kind.lower().endswith("/policies"):
                kept_policies.append(str((r.get("properties") or {}).get("value") or ""))
            if name.startswith("["):
                plan.notes.append(
                    f"API Management prune skipped: {kind} has a computed name ({name[:40]})"
                )
                return []
            desired.add((kind.lower(), name.lower()))
            service = service or name.split("/", 1)[0]
    if service is None or ctx.resource_group() is None:
        return []
    az = ctx.azure()
    t = ctx.target()
    base = (
        f"/subscriptions/{az.subscription_id}/resourceGroups/{t.resource_group}"
        f"/providers/Microsoft.ApiManagement/service/{service}"
    )

    def listed(rel: str) -> list[dict[str, Any]]:
        return az.list_children(f"{base}/{rel}", APIM_API) or []

    def owned(rel: str) -> bool:
        return any(str(x.get("name")) == OWNER_TAG for x in listed(f"{rel}/tags"))

    def wanted(kind: str, *names: str) -> bool:
        full = f"Microsoft.ApiManagement/service/{kind}".lower()
        return (full, "/".join([service or "", *names]).lower()) in desired

    def obj(kind: str, rel: str, *names: str) -> ApimObject:
        return ApimObject(
            f"Microsoft.ApiManagement/service/{kind}",
            "/".join([service or "", *names]),
            f"{base}/{rel}",
        )

    apis = az.list_children(f"{base}/apis", APIM_API)
    if apis is None:
        return []  # the service does not exist yet
    first: list[ApimObject] = []
    gone_apis: list[ApimObject] = []
    foreign_apis: list[str] = []
    for a in apis:
        n = str(a.get("name"))
        if wanted("apis", n):
            for op in listed(f"apis/{n}/operations"):
                o = str(op.get("name"))
                if not wanted("apis/operations", n, o):
                    first.append(obj("apis/operations", f"apis/{n}/operations/{o}", n, o))
        elif owned(f"apis/{n}"):
            gone_apis.append(obj("apis", f"apis/{n}", n))
        else:
            foreign_apis.append(n)
    gone_products: list[ApimObject] = []
    for p in listed("products"):
        n = str(p.get("name"))
        if wanted("products", n):
            for link in listed(f"products/{n}/apis"):
                a = str(link.get("name"))
                if not wanted("products/apis", n, a):
                    first.append(obj("products/apis", f"products/{n}/apis/{a}", n, a))
        elif owned(f"products/{n}"):
            gone_products.append(obj("products", f"products/{n}", n))
    gone_backends = [
        obj("backends", f"backends/{b.get('name')}", str(b.get("name")))
        for b in listed("backends")
        if not wanted("backends", str(b.get("name")))
        and str((b.get("properties") or {}).get("description") or "").startswith(OWNER_DESCRIPTION)
    ]
    gone_values = [
        obj("namedValues", f"namedValues/{v.get('name')}", str(v.get("name")))
        for v in listed("namedValues")
        if not wanted("namedValues", str(v.get("name")))
        and OWNER_TAG in ((v.get("properties") or {}).get("tags") or [])
    ]
    doomed_fragments = _gone_fragments(listed, wanted, obj, kept_policies, foreign_apis, plan)
    return [
        *first,
        *gone_apis,
        *gone_products,
        *doomed_fragments,
        *gone_backends,
        *gone_values,
    ]


def _gone_fragments(
    listed: Callable[[str], list[dict[str, Any]]],
    wanted: Callable[..., bool],
    obj: Callable[..., ApimObject],
    kept_policies: list[str],
    foreign_apis: list[str],
    plan: StepPlan,
) -> list[ApimObject]:
    """ai4ec's policy fragments the build no longer has and no kept policy includes."""
    gone_fragments = [
        f
        for f in listed("policyFragments")
        if not wanted("policyFragments", str(f.get("name")))
        and str((f.get("properties") or {}).get("description") or "").startswith(OWNER_DESCRIPTION)
    ]
    if gone_fragments:
        # A policy that stays (the build's, or one made by hand) may still include one:
        # APIM would refuse the delete, and the policy would break if it did not.
        for rel in ("policies", *(f"apis/{n}/policies" for n in foreign_apis)):
            kept_policies += [_policy_value(x) for x in listed(rel)]
        for n in foreign_apis:
            for op in listed(f"apis/{n}/operations"):
                o = str(op.get("name"))
                kept_policies += [
                    _policy_value(x) for x in listed(f"apis/{n}/operations/{o}/policies")
                ]
    doomed: list[ApimObject] = []
    for f in gone_fragments:
        n = str(f.get("name"))
        if any(f'fragment-id="{n}"' in text for text in kept_policies):
            plan.notes.append(f"policy fragment {n} is no longer built but still included: kept")
            continue
        doomed.append(obj("policyFragments", f"policyFragments/{n}", n))
    return doomed


def _policy_value(listed: dict[str, Any]) -> str:
    return str((listed.get("properties") or {}).get("value") or "")
