"""Azure target, ARM side: ``main.json``, the split templates and parameter files.

Classic ARM form (``resources`` array, full types and names, ``dependsOn`` ids), which
``ai4ec apply`` deploys with azure-mgmt-resource. Printed from the same
:class:`~.template.AzureTemplate` as the Bicep files, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from .access import PARAM_ACCESS_GRANTS
from .prints import arm_resource, document_text
from .spec import Parameter, Resource, scan, to_arm
from .template import ARM_MAX_RESOURCES, GRANT_SPLIT, IDENTITY_SPLIT, AzureTemplate

ARM_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
PARAMS_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"


def deployment_name(tpl: AzureTemplate, module: str) -> str:
    """Name of a module's nested deployment (Azure allows 64 characters)."""
    return f"ai4ec-{tpl.environment}-{module}"[:64]


def main_resources(tpl: AzureTemplate) -> list[Resource]:
    """The resources ``main.json``/``main.bicep`` deploy (all but the split chunks)."""
    return [r for r in tpl.spec.resources if not r.virtual and r.module not in tpl.split]


def declared(
    tpl: AzureTemplate, rs: list[Resource], outputs: bool = False
) -> tuple[list[Parameter], list[str]]:
    """Parameters and variable names the resources ``rs`` (and the outputs) use.

    Parameters keep their declaration order; a template declares no parameter it does
    not read, so a split template and main each get exactly their own.
    """
    values: list[Any] = [[r.name, r.body, r.condition] for r in rs]
    if outputs:
        values.append([o.value for o in tpl.outputs])
    _refs, names, var_names = scan(values)
    return [p for p in tpl.spec.params if p.name in names], sorted(var_names)


def _arm_parameter(p: Parameter) -> dict[str, Any]:
    """One ``parameters`` entry: type, default, allowed values when restricted, why."""
    kind = "securestring" if p.secure and p.type == "string" else p.type
    out: dict[str, Any] = {"type": kind, "defaultValue": to_arm(p.default)}
    if p.allowed:
        out["allowedValues"] = list(p.allowed)
    out["metadata"] = {"description": p.description}
    return out


def _arm_outputs(tpl: AzureTemplate) -> dict[str, Any]:
    """The template's outputs as ARM declares them."""
    return {
        o.name: {
            "type": o.type,
            "value": to_arm(o.value),
            "metadata": {"description": o.description},
        }
        for o in tpl.outputs
    }


def _arm_document(
    tpl: AzureTemplate, rs: list[Resource], description: str, outputs: bool
) -> dict[str, Any]:
    """One ARM template holding ``rs`` (dependsOn limited to what it deploys itself)."""
    params, variables = declared(tpl, rs, outputs)
    inside = {id(r) for r in rs}
    doc: dict[str, Any] = {
        "$schema": ARM_SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {"description": to_arm(description)},
        "parameters": {p.name: _arm_parameter(p) for p in params},
        "variables": to_arm({v: tpl.spec.variables[v] for v in variables}),
        "resources": [
            arm_resource(r, [d for d in tpl.needs(r) if id(d) in inside], tpl.arm_bodies.body(r))
            for r in rs
        ],
    }
    if outputs:
        doc["outputs"] = _arm_outputs(tpl)
    return doc


def _document_text(
    tpl: AzureTemplate, rs: list[Resource], description: str, outputs: bool
) -> tuple[str, dict[str, Any]]:
    """:func:`_arm_document` as the JSON text an artifact holds, and the rest of it.

    The same bytes as printing :func:`_arm_document`'s result whole, assembled from
    each resource's print (:mod:`.prints`), which per-API groups take from the render
    cache. The returned document lacks ``resources`` (parameters files read the rest).
    """
    inside = {r.symbol for r in rs}
    prints = tpl.arm_bodies.printed(rs, tpl.needs)
    names: set[str] = set()
    var_names: set[str] = set()
    for p in prints:
        names |= p.params
        var_names |= p.variables
    if outputs:
        _refs, used, used_vars = scan([[o.value for o in tpl.outputs]])
        names |= used
        var_names |= used_vars
    doc: dict[str, Any] = {
        "$schema": ARM_SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {"description": to_arm(description)},
        "parameters": {p.name: _arm_parameter(p) for p in tpl.spec.params if p.name in names},
        "variables": to_arm({v: tpl.spec.variables[v] for v in sorted(var_names)}),
    }
    if outputs:
        doc["outputs"] = _arm_outputs(tpl)
    symbols = tpl.by_symbol or {r.symbol: r for r in tpl.spec.resources if not r.virtual}

    def arm_id(symbol: str) -> str:
        return tpl.arm_bodies.arm_id(symbols[symbol])

    return document_text(doc, [p.resolved(inside, arm_id) for p in prints]), doc


def split_description(tpl: AzureTemplate, module: str) -> str:
    """What a separate template is and when to deploy it (apply orders them so)."""
    kind = module.rpartition("-")[0]
    same = [m for m in tpl.split if m.rpartition("-")[0] == kind]
    n = same.index(module)
    part = f"part {n + 1} of {len(same)}, of {tpl.description}"
    limits = f"(Azure Resource Manager limits: {ARM_MAX_RESOURCES} resources, 4 MB)"
    if kind == IDENTITY_SPLIT:
        return (
            f"Per-API workload identities, {part}. Deploy after main's AKS clusters (each "
            "federated credential reads its cluster's OIDC issuer) and before main's outputs "
            f"are read (apis.*.clientId reads these identities): one deployment cannot hold "
            f"them all {limits}. `ai4ec apply` deploys them right after the clusters."
        )
    if kind == GRANT_SPLIT:
        return (
            f"Grants of the per-API identities on single Key Vault secrets, {part}. Deploy "
            f"with {PARAM_ACCESS_GRANTS}=true after the {IDENTITY_SPLIT}-<n> templates and "
            f"after the access keys are in Key Vault (`ai4ec apply`'s access step): one "
            f"deployment cannot hold them all {limits}."
        )
    after = "main" if n == 0 else f"main and {same[n - 1]}"
    return (
        f"API Management objects, {part}. Deploy after {after}: one deployment cannot "
        f"hold them all {limits}."
    )


def split_template(tpl: AzureTemplate, module: str) -> dict[str, Any]:
    """``<module>.json``: one chunk (APIM children, identities, grants) as its own template."""
    rs = [r for r in tpl.spec.resources if r.module == module]
    return _arm_document(tpl, rs, split_description(tpl, module), outputs=False)


def arm_template(tpl: AzureTemplate) -> dict[str, Any]:
    """``main.json``: parameters, the shared variables, every resource, the outputs."""
    return _arm_document(tpl, main_resources(tpl), tpl.description, outputs=True)


def main_text(tpl: AzureTemplate) -> tuple[str, dict[str, Any]]:
    """:func:`arm_template` as text (see :func:`_document_text`), and its non-resources."""
    return _document_text(tpl, main_resources(tpl), tpl.description, outputs=True)


def split_text(tpl: AzureTemplate, module: str) -> tuple[str, dict[str, Any]]:
    """:func:`split_template` as text (see :func:`_document_text`), and its non-resources."""
    rs = [r for r in tpl.spec.resources if r.module == module]
    return _document_text(tpl, rs, split_description(tpl, module), outputs=False)


def parameters_file(
    template: dict[str, Any], references: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """``*.parameters.json`` of a template: its defaults, for ``az deployment group create``.

    A secure parameter with a Key Vault home (``references``: name -> vault id, secret)
    is written as an ARM Key Vault reference, never as a value.
    """
    refs = references or {}

    def entry(name: str, p: dict[str, Any]) -> dict[str, Any]:
        if name in refs:
            vault, secret = refs[name]
            return {"reference": {"keyVault": {"id": vault}, "secretName": secret}}
        return {"value": p["defaultValue"]}

    return {
        "$schema": PARAMS_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {name: entry(name, p) for name, p in template["parameters"].items()},
    }
