"""Azure target, Bicep side: ``main.bicep`` and one file per module.

Every module is laid out by one template (``templates/bicep/module.bicep.j2``); what
differs between modules is data - the resources and the paragraph that says what the
module holds (:data:`MODULE_ABOUT`). Values print themselves as Bicep
(:func:`~.spec.to_bicep`): Bicep is printed from the expression tree, not written in
Jinja, so it says exactly what ``main.json`` says.
"""

from __future__ import annotations

import posixpath
import textwrap
from dataclasses import dataclass, fields
from typing import Any

from ..env import render_template
from .arm import declared, deployment_name, main_resources, split_description
from .spec import (
    Expr,
    Output,
    Param,
    Parameter,
    Resource,
    Symbol,
    camel,
    params_used,
    referenced,
    scan,
    with_loads,
)
from .template import APIM_MODULE, GRANT_SPLIT, IDENTITY_SPLIT, AzureTemplate

#: What each module holds, printed at its top. AKS modules are ``aks-<cluster>``; APIM
#: chunks ``apim-apis-<n>`` say what ``apim-apis`` says, identity chunks ``identities-<n>``
#: and ``identity-grants-<n>`` what ``identities-split`` and ``identity-grants-split`` say.
MODULE_ABOUT: dict[str, str] = {
    "monitoring": (
        "Monitoring: the Log Analytics workspace every component logs to, and the\n"
        "workspace-based Application Insights of the runtime and the API containers."
    ),
    "storage": (
        "Storage: the account of the Function App host (reached with its managed identity),\n"
        "the container APIs write results to, and the container Event Grid dead-letters into.\n"
        "TLS 1.2, HTTPS only, no public blob access, no account keys."
    ),
    "keyvault": (
        "Key Vault: holds every platform secret (modules/secrets.bicep writes them) and the\n"
        "user secrets of apis[].secrets. RBAC authorization, soft delete, purge protection."
    ),
    "registry": (
        "Container registry of the model images. No admin user: each cluster's kubelet\n"
        "identity pulls with AcrPull (modules/roles.bicep)."
    ),
    "redis": (
        "The task store of the runtime, TLS only: Azure Managed Redis (port 10000, OSS\n"
        "cluster policy; the runtime runs with AI4EC_REDIS_MODE=cluster) by default, or the\n"
        "legacy Azure Cache for Redis (port 6380) with azure.cache.kind: legacy."
    ),
    "aks": (
        "AKS cluster with managed identity, OIDC issuer and workload identity, the Istio\n"
        "add-on (with its ingress gateway), KEDA, the Key Vault secrets-store CSI driver and\n"
        "Container Insights; a system pool for add-ons and one user pool per platform.yaml pool."
    ),
    "functions": (
        "Task manager: the Event Grid topic async tasks travel on, and the Linux Python 3.11\n"
        "Function App (with its plan) that runs functions/. Its settings hold no secret: they\n"
        "are Key Vault references resolved with the app's system-assigned identity."
    ),
    "apim": (
        "API Management service: the platform's only public door. Its APIs, products, named\n"
        "values and policies come from the APIM target and live in modules/apim-apis.bicep."
    ),
    "roles": (
        "Role assignments between managed identities and what they use. Names are\n"
        "deterministic GUIDs (guid(scope, principal, role)), so redeploying changes nothing."
    ),
    "secrets": (
        "Key Vault secrets of docs/contracts.md, written from the resources' keys at\n"
        "deployment time (listKeys()/reference()): no key is ever in a file or an output."
    ),
    "identities": (
        "One user-assigned identity per API, federated with its Kubernetes service account\n"
        "(workload identity): it writes the results container and reads its own Key Vault\n"
        "secrets only. Single-secret grants wait for deployAccessGrants (apply writes them)."
    ),
    "dispatch": (
        "Event Grid subscription that delivers tasks to the runtime's BackendWebhook, with\n"
        "the retry policy of platform.yaml and dead-lettering to storage."
    ),
    "identities-split": (
        "Per-API user-assigned identities, each federated with its API's Kubernetes service\n"
        "account and allowed to write the results container (one of several files: a large\n"
        "platform's identities do not fit in one deployment)."
    ),
    "identity-grants-split": (
        "Grants of the per-API identities on single Key Vault secrets (each API its own\n"
        "key and apis[].secrets), held back by deployAccessGrants until apply wrote them."
    ),
    "apim-apis": (
        "API Management APIs, operations, products, named values, backends and policies,\n"
        "exactly as the APIM target produced them (apim/ holds the same policy XML)."
    ),
}


@dataclass(frozen=True, slots=True)
class ResourceDecl:
    """One ``resource`` declaration of a Bicep file (a new resource or an ``existing`` one).

    Attributes:
        symbol: Bicep symbolic name.
        type: Full resource type.
        api_version: Its API version.
        body: The object after ``=`` (printed by the ``bicep_value`` filter).
        comment: Lines printed above it.
        condition: ``if (...)`` of a conditional resource.
    """

    symbol: str
    type: str
    api_version: str
    body: dict[str, Any]
    comment: tuple[str, ...] = ()
    condition: Expr | None = None


@dataclass(frozen=True, slots=True)
class Variable:
    """A ``var`` of a module (the shared tags)."""

    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class ModuleView:
    """Everything ``module.bicep.j2`` lays out for one module file."""

    source: str
    about: tuple[str, ...]
    notes: tuple[str, ...]
    params: tuple[Parameter, ...]
    #: Split modules are top-level files: their parameters carry main's defaults.
    params_have_defaults: bool
    variables: tuple[Variable, ...]
    existing: tuple[ResourceDecl, ...]
    resources: tuple[ResourceDecl, ...]


@dataclass(frozen=True, slots=True)
class ModuleCall:
    """A ``module`` statement of ``main.bicep``."""

    symbol: str
    path: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MainView:
    """Everything ``main.bicep.j2`` lays out."""

    source: str
    description: str
    params: tuple[Parameter, ...]
    modules: tuple[ModuleCall, ...]
    existing: tuple[ResourceDecl, ...]
    outputs: tuple[Output, ...]


def _about(module: str) -> tuple[str, ...]:
    if module.startswith("aks-"):
        key = "aks"
    elif module.startswith(f"{APIM_MODULE}-"):
        key = APIM_MODULE
    elif module.rpartition("-")[0] in (IDENTITY_SPLIT, GRANT_SPLIT):
        key = f"{module.rpartition('-')[0]}-split"
    else:
        key = module
    return tuple(MODULE_ABOUT[key].splitlines())


#: Directory of the Azure target's files below ``out/<env>/``.
OUTPUT_DIR = "azure"


def module_file(module: str) -> str:
    """File of a module below ``azure/``."""
    return f"modules/{module}.bicep"


def _module_symbol(module: str) -> str:
    return camel(module, "module")


def _comment_lines(text: str) -> tuple[str, ...]:
    return tuple(text.splitlines()) if text else ()


def _bicep_body(res: Resource, module: str, bicep_dir: str) -> dict[str, Any]:
    """The object after ``resource x '...' =``: parent/scope as symbols, then the body.

    Bicep orders resources by the symbols they mention, so ``dependsOn`` lists only the
    explicit dependencies no expression implies, within the module (modules are
    ordered by main.bicep). Text ai4ec also writes to a file (the APIM policies) is
    loaded from that file, relative to ``bicep_dir`` (:func:`~.spec.with_loads`).
    """
    body: dict[str, Any] = {}
    if res.parent is not None:
        body["parent"] = Symbol(res.parent)
    body["name"] = res.name
    if res.scope is not None:
        body["scope"] = Symbol(res.scope)
    body.update(with_loads(res.body, bicep_dir))
    implied = {id(r) for r in referenced([res.name, res.body, res.condition])}
    deps = [
        Symbol(d)
        for d in res.depends_on
        if d.module == module and id(d) not in implied and d is not res.parent
    ]
    if deps:
        body["dependsOn"] = deps
    return body


def _existing(res: Resource) -> ResourceDecl:
    """An ``existing`` declaration: how a module names a resource made elsewhere."""
    body: dict[str, Any] = {"parent": Symbol(res.parent)} if res.parent is not None else {}
    body["name"] = res.name
    return ResourceDecl(res.symbol, res.type, res.api_version, body)


def _existing_for(used: list[Resource], defined: set[int], order: dict[int, int]) -> list[Resource]:
    """Resources to declare ``existing``: the used ones not defined here, and their parents."""
    need: dict[int, Resource] = {}
    stack = [r for r in used if id(r) not in defined]
    while stack:
        r = stack.pop()
        if id(r) in need or id(r) in defined:
            continue
        need[id(r)] = r
        if r.parent is not None:
            stack.append(r.parent)
    return sorted(need.values(), key=lambda r: order[id(r)])


def module_view(tpl: AzureTemplate, module: str) -> ModuleView:
    """What a module template lays out: params, variables, existing and new resources.

    A split module (its own deployment, see :func:`_chunk`) is a top-level file, so its
    parameters carry main's defaults and the file says when to deploy it.
    """
    spec = tpl.spec
    order = {id(r): i for i, r in enumerate(spec.resources)}
    mine = [r for r in spec.resources if r.module == module and not r.virtual]
    defined = {id(r) for r in mine}
    used: list[Resource] = []
    for r in mine:
        used += [x for x in (r.parent, r.scope) if x is not None]
        used += [d for d in r.depends_on if d.module == module]
    refs, names, var_names = scan([[r.name, r.body, r.condition] for r in mine])
    used += refs
    params = [p for p in spec.params if p.name in names]
    variables = sorted(var_names)
    standalone = module in tpl.split
    bicep_dir = posixpath.dirname(f"{OUTPUT_DIR}/{module_path(tpl, module)}")
    return ModuleView(
        source=tpl.source,
        about=_about(module),
        notes=tuple(textwrap.wrap(split_description(tpl, module), 86)) if standalone else (),
        params=tuple(params),
        params_have_defaults=standalone,
        variables=tuple(Variable(v, spec.variables[v]) for v in variables),
        existing=tuple(_existing(r) for r in _existing_for(used, defined, order)),
        resources=tuple(
            ResourceDecl(
                r.symbol,
                r.type,
                r.api_version,
                _bicep_body(r, module, bicep_dir),
                _comment_lines(r.comment),
                r.condition,
            )
            for r in mine
        ),
    )


def main_view(tpl: AzureTemplate) -> MainView:
    """What ``main.bicep`` lays out: parameters, modules in order, outputs."""
    spec = tpl.spec
    by_module: dict[str, list[Resource]] = {m: [] for m in tpl.modules}
    for r in spec.resources:
        if not r.virtual:
            by_module[r.module].append(r)
    modules: list[ModuleCall] = []
    main_modules = [m for m in tpl.modules if m not in tpl.split]
    for m in main_modules:
        rs = by_module[m]
        needs: list[str] = []
        for r in rs:
            for d in tpl.needs(r):
                if d.module != m and d.module not in needs:
                    needs.append(d.module)
        needs.sort(key=tpl.modules.index)
        used = params_used([[r.name, r.body, r.condition] for r in rs])
        params = {p.name: Param(p.name) for p in spec.params if p.name in used}
        body: dict[str, Any] = {"name": deployment_name(tpl, m)}
        if params:
            body["params"] = params
        if needs:
            body["dependsOn"] = [_ModuleRef(n) for n in needs]
        modules.append(ModuleCall(_module_symbol(m), module_file(m), body))
    order = {id(r): i for i, r in enumerate(spec.resources)}
    out_used = referenced([o.value for o in tpl.outputs])
    return MainView(
        source=tpl.source,
        description=tpl.description,
        params=tuple(declared(tpl, main_resources(tpl), outputs=True)[0]),
        modules=tuple(modules),
        existing=tuple(_existing(r) for r in _existing_for(out_used, set(), order)),
        outputs=tuple(tpl.outputs),
    )


@dataclass(frozen=True, slots=True)
class _ModuleRef(Expr):
    """A module's symbolic name in ``main.bicep`` (module ``dependsOn``)."""

    module: str

    def _arm(self) -> str:  # pragma: no cover - main.json has no modules
        raise TypeError("modules exist only in Bicep")

    def _bicep(self) -> str:
        return _module_symbol(self.module)


def module_path(tpl: AzureTemplate, module: str) -> str:
    """File of a module below ``azure/``: split templates are top-level files."""
    return f"{module}.bicep" if module in tpl.split else module_file(module)


def bicep_files(tpl: AzureTemplate) -> dict[str, str]:
    """``main.bicep``, every module, and the split APIM files, from ``templates/bicep/``."""
    files = {"main.bicep": render_template("bicep/main.bicep.j2", **_fields(main_view(tpl)))}
    for m in tpl.modules:
        files[module_path(tpl, m)] = render_template(
            "bicep/module.bicep.j2", **_fields(module_view(tpl, m))
        )
    return files


def _fields(view: MainView | ModuleView) -> dict[str, object]:
    """A view's fields as template variables (shallow: values stay what they are)."""
    return {f.name: getattr(view, f.name) for f in fields(view)}
