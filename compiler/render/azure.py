"""Azure target: the platform's infrastructure as Bicep modules and an equivalent ARM template.

Writes, below ``out/<env>/``:

* ``azure/main.bicep`` and ``azure/modules/<concern>.bicep`` - readable Bicep for
  ``az deployment group create``; laid out by the Jinja templates in
  ``templates/bicep/``;
* ``azure/main.json`` - the same resources as one ARM template (classic ``resources``
  array), which ``ai4ec apply`` deploys with azure-mgmt-resource;
* ``azure/main.parameters.json`` - the parameters (no secrets: there are none);
* for large platforms only, ``azure/apim-apis-<n>.{bicep,json,parameters.json}`` -
  API Management objects that no longer fit one deployment (see :func:`_chunk`).

Both formats are printed from one list of resource specs
(:mod:`ai4ec.render.azure_resources`, :mod:`ai4ec.render.azure_apim`), whose values and
expressions know how to print themselves in each language
(:mod:`ai4ec.render.azure_spec`). Keys and connection strings are written into Key Vault
by ``listKeys()``/``reference()`` expressions at deployment time, so no generated file
holds a secret.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..errors import Diagnostic, RenderError
from ..model.types import Mode, Platform
from . import azure_resources as build
from .artifact import Artifact, RenderContext, json_artifact
from .azure_apim import MODULE as APIM_MODULE
from .azure_apim import apim_parameters, apim_provider, merge_apim, merge_parameters
from .azure_spec import (
    Expr,
    Param,
    Resource,
    Symbol,
    params_used,
    referenced,
    scan,
    to_arm,
)
from .env import render_template

ARM_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
PARAMS_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"

#: Azure Resource Manager limits one deployment to 800 resources and a 4 MB template.
#: APIM children come by the thousand on large platforms, so when the whole template
#: would pass either limit they move to separate templates (``apim-apis-<n>``), each
#: at most this many resources ...
APIM_CHUNK = 700
#: ... and about this many bytes of compact JSON.
APIM_CHUNK_BYTES = 3_000_000
ARM_MAX_RESOURCES = 800
#: Compact-JSON size above which main.json would risk ARM's 4 MB request limit.
ARM_TEMPLATE_BUDGET = 3_500_000

#: Concern -> template under templates/bicep/modules/. AKS modules are
#: ``aks-<cluster>`` and share ``aks.bicep.j2``; APIM chunks ``apim-apis-<n>`` share
#: ``apim-apis.bicep.j2``.
MODULE_TEMPLATES: dict[str, str] = {
    "monitoring": "monitoring",
    "storage": "storage",
    "keyvault": "keyvault",
    "registry": "registry",
    "redis": "redis",
    "functions": "functions",
    "apim": "apim",
    "roles": "roles",
    "secrets": "secrets",
    "dispatch": "dispatch",
    APIM_MODULE: "apim-apis",
}


@dataclass
class AzureTemplate:
    """The built spec plus the module order derived from it."""

    spec: build.AzureSpec
    modules: list[str]
    source: str
    environment: str
    description: str
    #: dependencies() of every deployed resource, by id(), computed once.
    deps: dict[int, list[Resource]] = field(default_factory=dict)
    #: Modules deployed as templates of their own, in this order, after main.
    split: list[str] = field(default_factory=list)

    def needs(self, res: Resource) -> list[Resource]:
        """What ``res`` must wait for (see :func:`dependencies`)."""
        return self.deps[id(res)]


# ----------------------------------------------------------------------------------- build


def _backend_url_default(platform: Platform) -> str:
    """``https://<host>`` when the ingress has a real host name, else empty.

    Dispatch targets one ingress: the first cluster running an async API. A wildcard
    host says nothing about the address, which then comes from ``apply``.
    """
    clusters = [
        c
        for c in platform.clusters
        if any(
            a.cluster == c.name and any(e.mode is Mode.ASYNC for e in a.endpoints)
            for a in platform.apis
        )
    ] or list(platform.clusters)
    if not clusters:
        return ""
    ingress = clusters[0].ingress
    hosts = [h for h in ingress.hosts if "*" not in h]
    return f"{ingress.protocol}://{hosts[0]}" if hosts else ""


def build_template(platform: Platform, context: RenderContext) -> AzureTemplate:
    """Every resource of ``platform`` in deployment order, with its modules."""
    spec = build.AzureSpec()
    spec.params.append(
        (
            build.PARAM_LOCATION,
            "string",
            platform.azure.location,
            "Azure region of every resource (platform.yaml azure.location).",
        )
    )
    spec.variables["tags"] = dict(platform.tags)
    build.monitoring(spec, platform)
    build.storage(spec, platform)
    build.key_vault(spec, platform)
    build.registry(spec, platform)
    build.redis(spec, platform)
    for cluster in platform.clusters:
        build.aks(spec, platform, cluster)
    build.functions(spec, platform, _backend_url_default(platform))
    build.apim(spec, platform)
    build.roles(spec, platform)
    build.secrets(spec)
    build.dispatch(spec, platform)
    provider = apim_provider()
    if provider is not None:
        params = apim_parameters()
        if params is not None:
            merge_parameters(spec, params(platform))
        split = _chunk(spec, merge_apim(spec, provider(platform, context)))
    else:
        split = []
    _outputs(spec, platform)
    modules: list[str] = []
    for r in spec.resources:
        if not r.virtual and r.module not in modules:
            modules.append(r.module)
    deps = {id(r): dependencies(r) for r in spec.resources if not r.virtual}
    _check_module_order(spec, modules, deps)
    description = platform.description or f"ai4ec platform {platform.name}"
    return AzureTemplate(
        spec=spec,
        modules=modules,
        source=" ".join(context.source_name.splitlines()),
        environment=platform.environment,
        description=f"{description} (environment {platform.environment})",
        deps=deps,
        split=split,
    )


def _size(res: Resource) -> int:
    """Rough compact-JSON size of a resource in main.json."""
    return len(json.dumps(to_arm(res.body), separators=(",", ":"))) + 300


def _chunk(spec: build.AzureSpec, children: list[Resource]) -> list[str]:
    """Keep APIM children in main, or cut them into separate templates (returned).

    Below ARM's limits everything stays one deployment (module ``apim-apis``). Above,
    children are cut, in the APIM target's order (parents first), into chunks of at
    most :data:`APIM_CHUNK` resources and :data:`APIM_CHUNK_BYTES`; each chunk is its
    own template, deployed after main and after the chunks before it.
    """
    core = [r for r in spec.resources if not r.virtual and r.module != APIM_MODULE]
    sizes = [_size(r) for r in children]
    total = sum(_size(r) for r in core) + sum(sizes)
    if len(core) + len(children) <= ARM_MAX_RESOURCES and total <= ARM_TEMPLATE_BUDGET:
        return []
    chunks: list[str] = []
    count = weight = 0
    for res, size in zip(children, sizes, strict=True):
        if not chunks or count == APIM_CHUNK or weight + size > APIM_CHUNK_BYTES:
            chunks.append(f"{APIM_MODULE}-{len(chunks) + 1}")
            count = weight = 0
        res.module = chunks[-1]
        count += 1
        weight += size
    return chunks


def _outputs(spec: build.AzureSpec, platform: Platform) -> None:
    """Values ``apply`` needs from Azure: never a secret (docs/contracts.md)."""
    spec.outputs["tenantId"] = (
        "string",
        build.TENANT_ID,
        "Tenant of the subscription ($(azure:tenantId) in Kubernetes objects).",
    )
    clusters: dict[str, Any] = {}
    for cluster in platform.clusters:
        cl = spec.handles[f"aks:{cluster.name}"]
        hosts = [h for h in cluster.ingress.hosts if "*" not in h]
        clusters[cluster.name] = {
            "keyVaultProviderClientId": cl.ref(
                "addonProfiles", "azureKeyvaultSecretsProvider", "identity", "clientId"
            ),
            "ingressHost": hosts[0] if hosts else "",
        }
    spec.outputs["clusters"] = (
        "object",
        clusters,
        "Per cluster: client id of the Key Vault secrets-provider identity, and the ingress "
        "host name when platform.yaml names one ($(azure:clusters.<name>.*)).",
    )


def _deployed(res: Resource) -> Resource:
    """The resource that really exists for a reference (a virtual one's parent)."""
    while res.virtual and res.parent is not None:
        res = res.parent
    return res


def dependencies(res: Resource) -> list[Resource]:
    """Everything ``res`` must wait for: parent, scope, explicit and referenced resources."""
    found: list[Resource] = []
    candidates = [res.parent, res.scope, *res.depends_on]
    candidates += referenced([res.name, res.body, res.condition])
    for c in candidates:
        if c is None:
            continue
        d = _deployed(c)
        if d is not res and not d.virtual and d not in found:
            found.append(d)
    return found


def _check_module_order(
    spec: build.AzureSpec, modules: list[str], deps: dict[int, list[Resource]]
) -> None:
    """Modules must be listed after everything they depend on (no cycles)."""
    pos = {m: i for i, m in enumerate(modules)}
    for r in spec.resources:
        if r.virtual:
            continue
        for d in deps[id(r)]:
            if pos[d.module] > pos[r.module]:  # pragma: no cover - a builder bug
                raise RenderError(
                    f"module {r.module} ({r.symbol}) depends on later module {d.module}",
                    (
                        Diagnostic(
                            code="E-RENDER-ORDER",
                            message=f"{r.symbol} depends on {d.symbol} of a later module",
                            hint="this is an ai4ec bug; please report it",
                        ),
                    ),
                )


# ------------------------------------------------------------------------------------ ARM


def arm_resource(res: Resource, deps: list[Resource]) -> dict[str, Any]:
    """One resource of ``main.json`` (classic form: full type, full name, dependsOn ids)."""
    if all(isinstance(s, str) for s in res.segments):
        name: Any = "/".join(str(s) for s in res.segments)
    elif res.parent is None:
        name = res.name
    else:  # pragma: no cover - expression names only occur on top-level resources
        raise TypeError(f"{res.symbol}: expression name below a parent")
    out: dict[str, Any] = {"type": res.type, "apiVersion": res.api_version, "name": to_arm(name)}
    if res.scope is not None:
        out["scope"] = res.scope.scope_path()
    if res.condition is not None:
        out["condition"] = to_arm(res.condition)
    out.update(to_arm(res.body))
    if deps:
        out["dependsOn"] = [to_arm(d.id()) for d in deps]
    return out


def _deployment_name(tpl: AzureTemplate, module: str) -> str:
    return f"ai4ec-{tpl.environment}-{module}"[:64]


def _main_resources(tpl: AzureTemplate) -> list[Resource]:
    return [r for r in tpl.spec.resources if not r.virtual and r.module not in tpl.split]


def _declared(
    tpl: AzureTemplate, rs: list[Resource], outputs: bool = False
) -> tuple[list[Any], list[str]]:
    """Parameters and variable names the resources ``rs`` (and the outputs) use.

    Parameters keep their declaration order; a template declares no parameter it does
    not read, so a split template and main each get exactly their own.
    """
    values: list[Any] = [[r.name, r.body, r.condition] for r in rs]
    if outputs:
        values.append([v for _t, v, _d in tpl.spec.outputs.values()])
    _refs, names, var_names = scan(values)
    return [p for p in tpl.spec.params if p[0] in names], sorted(var_names)


def _arm_document(
    tpl: AzureTemplate, rs: list[Resource], description: str, outputs: bool
) -> dict[str, Any]:
    """One ARM template holding ``rs`` (dependsOn limited to what it deploys itself)."""
    params, variables = _declared(tpl, rs, outputs)
    inside = {id(r) for r in rs}
    doc: dict[str, Any] = {
        "$schema": ARM_SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {"description": to_arm(description)},
        "parameters": {
            name: {
                "type": type_,
                "defaultValue": to_arm(default),
                "metadata": {"description": why},
            }
            for name, type_, default, why in params
        },
        "variables": to_arm({v: tpl.spec.variables[v] for v in variables}),
        "resources": [arm_resource(r, [d for d in tpl.needs(r) if id(d) in inside]) for r in rs],
    }
    if outputs:
        doc["outputs"] = {
            name: {"type": type_, "value": to_arm(value), "metadata": {"description": why}}
            for name, (type_, value, why) in tpl.spec.outputs.items()
        }
    return doc


def split_description(tpl: AzureTemplate, module: str) -> str:
    """What a separate APIM template is and when to deploy it."""
    n = tpl.split.index(module)
    after = "main" if n == 0 else f"main and {tpl.split[n - 1]}"
    return (
        f"API Management objects, part {n + 1} of {len(tpl.split)}, of "
        f"{tpl.description}. Deploy after {after}: one deployment cannot hold them all "
        f"(Azure Resource Manager limits: {ARM_MAX_RESOURCES} resources, 4 MB)."
    )


def split_template(tpl: AzureTemplate, module: str) -> dict[str, Any]:
    """``apim-apis-<n>.json``: one chunk of APIM children as a template of its own."""
    rs = [r for r in tpl.spec.resources if r.module == module]
    return _arm_document(tpl, rs, split_description(tpl, module), outputs=False)


def arm_template(tpl: AzureTemplate) -> dict[str, Any]:
    """``main.json``: parameters, the shared variables, every resource, the outputs."""
    return _arm_document(tpl, _main_resources(tpl), tpl.description, outputs=True)


def parameters_file(template: dict[str, Any]) -> dict[str, Any]:
    """``*.parameters.json`` of a template: its defaults, for ``az deployment group create``."""
    return {
        "$schema": PARAMS_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {
            name: {"value": p["defaultValue"]} for name, p in template["parameters"].items()
        },
    }


# ---------------------------------------------------------------------------------- Bicep


def module_file(module: str) -> str:
    """File of a module below ``azure/``."""
    return f"modules/{module}.bicep"


def _module_symbol(module: str) -> str:
    return build.camel(module, "module")


def _comment_lines(text: str) -> list[str]:
    return text.splitlines() if text else []


def _bicep_body(res: Resource, module: str) -> dict[str, Any]:
    """The object after ``resource x '...' =``: parent/scope as symbols, then the body.

    Bicep orders resources by the symbols they mention, so ``dependsOn`` lists only the
    explicit dependencies no expression implies, within the module (modules are
    ordered by main.bicep).
    """
    body: dict[str, Any] = {}
    if res.parent is not None:
        body["parent"] = Symbol(res.parent)
    body["name"] = res.name
    if res.scope is not None:
        body["scope"] = Symbol(res.scope)
    body.update(res.body)
    implied = {id(r) for r in referenced([res.name, res.body, res.condition])}
    deps = [
        Symbol(d)
        for d in res.depends_on
        if d.module == module and id(d) not in implied and d is not res.parent
    ]
    if deps:
        body["dependsOn"] = deps
    return body


def _existing(res: Resource) -> dict[str, Any]:
    """An ``existing`` declaration: how a module names a resource made elsewhere."""
    body: dict[str, Any] = {"parent": Symbol(res.parent)} if res.parent is not None else {}
    body["name"] = res.name
    return {
        "symbol": res.symbol,
        "type": res.type,
        "api_version": res.api_version,
        "body": body,
    }


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


def module_view(tpl: AzureTemplate, module: str) -> dict[str, Any]:
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
    params = [p for p in spec.params if p[0] in names]
    variables = sorted(var_names)
    standalone = module in tpl.split
    return {
        "source": tpl.source,
        "notes": textwrap.wrap(split_description(tpl, module), 86) if standalone else [],
        "params": [
            {"name": n, "type": t, "description": d, "has_default": standalone, "default": v}
            for n, t, v, d in params
        ],
        "variables": [{"name": v, "value": spec.variables[v]} for v in variables],
        "existing": [_existing(r) for r in _existing_for(used, defined, order)],
        "resources": [
            {
                "symbol": r.symbol,
                "type": r.type,
                "api_version": r.api_version,
                "comment": _comment_lines(r.comment),
                "condition": r.condition,
                "body": _bicep_body(r, module),
            }
            for r in mine
        ],
    }


def main_view(tpl: AzureTemplate) -> dict[str, Any]:
    """What ``main.bicep`` lays out: parameters, modules in order, outputs."""
    spec = tpl.spec
    by_module: dict[str, list[Resource]] = {m: [] for m in tpl.modules}
    for r in spec.resources:
        if not r.virtual:
            by_module[r.module].append(r)
    modules = []
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
        params = {p[0]: Param(p[0]) for p in spec.params if p[0] in used}
        body: dict[str, Any] = {"name": _deployment_name(tpl, m)}
        if params:
            body["params"] = params
        if needs:
            body["dependsOn"] = [_ModuleRef(n) for n in needs]
        modules.append({"symbol": _module_symbol(m), "path": module_file(m), "body": body})
    order = {id(r): i for i, r in enumerate(spec.resources)}
    out_used = referenced([v for _t, v, _d in spec.outputs.values()])
    return {
        "source": tpl.source,
        "description": tpl.description,
        "params": [
            {"name": n, "type": t, "default": v, "description": d}
            for n, t, v, d in _declared(tpl, _main_resources(tpl), outputs=True)[0]
        ],
        "modules": modules,
        "existing": [_existing(r) for r in _existing_for(out_used, set(), order)],
        "outputs": [
            {"name": n, "type": t, "value": v, "description": d}
            for n, (t, v, d) in spec.outputs.items()
        ],
    }


@dataclass(frozen=True, slots=True)
class _ModuleRef(Expr):
    """A module's symbolic name in ``main.bicep`` (module ``dependsOn``)."""

    module: str

    def _arm(self) -> str:  # pragma: no cover - main.json has no modules
        raise TypeError("modules exist only in Bicep")

    def _bicep(self) -> str:
        return _module_symbol(self.module)


def bicep_files(tpl: AzureTemplate) -> dict[str, str]:
    """``main.bicep``, every module, and the split APIM files, from ``templates/bicep/``."""
    files = {"main.bicep": render_template("bicep/main.bicep.j2", **main_view(tpl))}
    for m in tpl.modules:
        if m.startswith("aks-"):
            template = "aks"
        elif m.startswith(f"{APIM_MODULE}-"):
            template = MODULE_TEMPLATES[APIM_MODULE]
        else:
            template = MODULE_TEMPLATES[m]
        path = f"{m}.bicep" if m in tpl.split else module_file(m)
        files[path] = render_template(f"bicep/modules/{template}.bicep.j2", **module_view(tpl, m))
    return files


# ------------------------------------------------------------------------------- renderer


def render_azure(platform: Platform, context: RenderContext) -> list[Artifact]:
    """The Azure target: ``azure/main.bicep``, its modules, ``main.json`` and parameters."""
    tpl = build_template(platform, context)
    artifacts = [
        Artifact(PurePosixPath("azure") / name, text.encode("utf-8"))
        for name, text in bicep_files(tpl).items()
    ]
    main = arm_template(tpl)
    artifacts.append(json_artifact("azure/main.json", main))
    artifacts.append(json_artifact("azure/main.parameters.json", parameters_file(main)))
    for m in tpl.split:
        doc = split_template(tpl, m)
        artifacts.append(json_artifact(f"azure/{m}.json", doc))
        artifacts.append(json_artifact(f"azure/{m}.parameters.json", parameters_file(doc)))
    return artifacts


__all__ = ["AzureTemplate", "arm_template", "build_template", "render_azure"]
