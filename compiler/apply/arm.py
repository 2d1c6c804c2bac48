"""The build's ARM templates cut into the deployments ``apply`` runs, in order.

``azure/main.json`` holds every Azure resource of the environment (one template, for
``az deployment group create`` and Bicep users). ``apply`` deploys it as separate
deployments, so that what-if decides *what* to deploy, not only *whether*: a change to
one part re-PUTs that part alone, and a first run deploys each part once.

* ``data`` - monitoring, storage, Key Vault, registry, cache, and the secrets and role
  assignments that need nothing later;
* ``clusters`` - the AKS clusters, their pools, monitoring rules and role assignments
  (the deployer's and the admin groups'); carries the template's outputs;
* ``functions`` - the Event Grid topic and the Function App with its plan, and what
  needs them (function-key secrets, their roles). It reads the ingress address, which
  ``apply`` can only look up once the clusters exist, so it comes after them;
* ``apim-service`` - the API Management service (its identity's Key Vault role);
* ``access`` - grants on single Key Vault secrets (resources whose ``condition`` is the
  ``deployAccessGrants`` parameter): a role assignment on a secret needs the secret, which
  the ``keys`` step writes after the vault exists, so they wait for it;
* ``dispatch`` - the Event Grid subscription (``Microsoft.EventGrid/topics/
  eventSubscriptions``). Event Grid validates the webhook when the subscription is
  created, so it must wait until the Functions bundle is published (the template says
  so with its ``deployEventSubscription`` parameter, which this deployment sets true);
* ``apim`` - API Management's child objects and policies (``Microsoft.ApiManagement/
  service/*``), deployed after the runtime they call, as the platform's public door
  opens last.

Very large platforms come with split templates (``azure/<kind>-<n>.json``; the Azure
target writes them only when main.json would pass ARM's 800 resources or 4 MB), each
its own deployment ``ai4ec-<env>-<kind>-<n>``, in the step its resources belong to:

* ``identities-<n>`` - per-API identities, their federated credentials and results
  grants: in the ``azure`` step right after ``clusters``, as a federated credential reads
  its cluster's OIDC issuer with ``reference()``;
* ``identity-grants-<n>`` - their grants on single Key Vault secrets: in the ``access``
  step after ``access``, with ``deployAccessGrants`` true like it (the secrets exist then);
* ``apim-apis-<n>`` - more API Management children: in the ``apim`` step after ``apim``.

main.json's outputs (``apis.<api>.clientId``) then read identities main does not deploy,
by ``reference(resourceId(...), apiVersion)``, which ARM resolves against the resource
group whatever deployment made them. So the outputs ride on the first part deployed after
the identity chunks (``functions``) instead of ``clusters`` (:func:`outputs_part`).

A resource goes to the part of its type, or to a later part when it depends on a
resource there: main.json's ``dependsOn`` lists every resource a resource references
(the renderer derives it from the references), so the cut never leaves a resource
before what it needs. The parts together are exactly the resources of main.json (a test
pins this on the real renderer's output). Resources of other parts are referenced by
``resourceId`` with an API version, which ARM resolves against the resource group, so
no value has to travel between parts; ``dependsOn`` entries naming a resource of an
earlier part are dropped (ARM rejects a dependency on a resource not in the template).
Each part declares only the parameters it reads, so a value one part uses (the ingress
address) does not change another part's digest. All deployments are incremental: ARM
never deletes a resource here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ApplyError
from .builddir import SecretReference, Template
from .plan import ApplyAction, PlannedChange

DATA, CLUSTERS, FUNCTIONS, APIM_SERVICE = "data", "clusters", "functions", "apim-service"
ACCESS, DISPATCH, APIM = "access", "dispatch", "apim"
#: Every part, in deployment order; the first four are the ``azure`` step, ``access``
#: (grants on single Key Vault secrets) follows the ``keys`` step that writes them.
PARTS = (DATA, CLUSTERS, FUNCTIONS, APIM_SERVICE, ACCESS, DISPATCH, APIM)
AZURE_PARTS = (DATA, CLUSTERS, FUNCTIONS, APIM_SERVICE)
#: Kinds of split templates (``<kind>-<n>``, see the module docstring).
IDENTITIES, IDENTITY_GRANTS, APIM_APIS = "identities", "identity-grants", "apim-apis"
#: Parameter holding back grants on single Key Vault secrets until apply wrote them.
PARAM_ACCESS_GRANTS = "deployAccessGrants"
_ACCESS_CONDITION = f"[parameters('{PARAM_ACCESS_GRANTS}')]"
#: Parameter the template uses to hold the Event Grid subscription back.
PARAM_EVENT_SUBSCRIPTION = "deployEventSubscription"
PARAM_BACKEND_URL = "backendBaseUrl"
PARAM_INGRESS_URLS = "ai4ecIngressUrls"
#: Contract with the Azure template: the object id (and principal type) of whoever runs
#: apply, granted an AKS RBAC role on each cluster the template creates.
PARAM_DEPLOYER = "deployerPrincipalId"
PARAM_DEPLOYER_TYPE = "deployerPrincipalType"
#: Host suffix of an ingress address the template could not know at build time.
UNKNOWN_INGRESS_SUFFIX = ".ingress.invalid"

_APIM_CHILD = "microsoft.apimanagement/service/"
_EVENT_SUBSCRIPTION = "microsoft.eventgrid/topics/eventsubscriptions"
_SPACE = re.compile(r"\s+")
#: ``resourceId('T', 'name')`` with literal arguments, spaces removed (as outputs read).
_RESOURCE_ID_CALL = re.compile(r"(?<![A-Za-z])resourceId\('[^()]*'\)")
_PARAMETER = re.compile(r"parameters\(\s*'([^']+)'\s*\)")
_VARIABLE = re.compile(r"variables\(\s*'([^']+)'\s*\)")
#: Part of a resource type before its dependencies are considered (anything not named
#: here, role assignments and secrets included, starts in ``data``).
_TYPE_PARTS = {
    "microsoft.containerservice/managedclusters": CLUSTERS,
    "microsoft.containerservice/managedclusters/agentpools": CLUSTERS,
    "microsoft.eventgrid/topics": FUNCTIONS,
    "microsoft.web/serverfarms": FUNCTIONS,
    "microsoft.web/sites": FUNCTIONS,
    "microsoft.apimanagement/service": APIM_SERVICE,
}


@dataclass(frozen=True, slots=True)
class Part:
    """One deployment ``apply`` makes: a name, its template and parameter values."""

    #: One of :data:`PARTS`, or a split template's ``<kind>-<n>``.
    name: str
    template: dict[str, Any]
    #: ``{name: value}`` for the parameters this template declares.
    parameters: dict[str, Any]

    def deployment_name(self, environment: str) -> str:
        """ARM deployment name: ``ai4ec-<env>-<part>`` (at most 64 characters)."""
        return f"ai4ec-{environment}-{self.name}"[:64]

    def payload(self) -> dict[str, Any]:
        """The ``properties`` of the deployment (and of its what-if)."""
        return {
            "mode": "Incremental",
            "template": self.template,
            "parameters": {
                k: {"reference": v.reference} if isinstance(v, SecretReference) else {"value": v}
                for k, v in self.parameters.items()
            },
        }

    def digest(self) -> str:
        """SHA-256 of what is deployed: the same digest means the same deployment."""
        text = json.dumps(self.payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _base_part(resource: dict[str, Any]) -> str:
    if str(resource.get("condition", "")).replace(" ", "") == _ACCESS_CONDITION.replace(" ", ""):
        return ACCESS
    kind = str(resource.get("type", "")).lower()
    if kind.startswith(_APIM_CHILD):
        return APIM
    if kind == _EVENT_SUBSCRIPTION:
        return DISPATCH
    if kind in _TYPE_PARTS:
        return _TYPE_PARTS[kind]
    if kind.startswith("microsoft.web/sites/"):
        return FUNCTIONS
    return DATA


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _unbracket(value: str) -> str | None:
    """The expression inside ``[...]``, or None for a literal."""
    if value.startswith("[") and value.endswith("]") and not value.startswith("[["):
        return value[1:-1]
    return None


def _resource_id_expr(kind: str, name: str) -> str | None:
    """``resourceId('T', 'a', 'b')`` for a literal ``a/b`` name, else None."""
    if _unbracket(name) is not None:
        return None
    return "resourceId(" + ", ".join(_quote(p) for p in [kind, *name.split("/")]) + ")"


def _scope_expr(scope: str) -> str | None:
    """``Microsoft.KeyVault/vaults/kv`` (an ARM ``scope``) as a resourceId expression."""
    inner = _unbracket(scope)
    if inner is not None:
        return inner
    ns, *rest = scope.split("/")
    if len(rest) < 2 or len(rest) % 2:
        return None
    types, names = rest[0::2], rest[1::2]
    return _resource_id_expr("/".join([ns, *types]), "/".join(names))


def reference_forms(resource: dict[str, Any]) -> set[str]:
    """Every string by which a ``dependsOn`` entry may name ``resource`` (spaces removed)."""
    kind = str(resource.get("type", ""))
    name = str(resource.get("name", ""))
    forms: set[str] = set()
    if _unbracket(name) is None:
        forms.update({name, f"{kind}/{name}"})
        rid = _resource_id_expr(kind, name)
        if rid:
            forms.add(f"[{rid}]")
    scope = resource.get("scope")
    if isinstance(scope, str):
        scope_id = _scope_expr(scope)
        inner = _unbracket(name)
        name_args = inner if inner is not None else ", ".join(_quote(p) for p in name.split("/"))
        if scope_id:
            forms.add(f"[extensionResourceId({scope_id}, {_quote(kind)}, {name_args})]")
    return {_SPACE.sub("", f) for f in forms}


def _used(doc: dict[str, Any], pattern: re.Pattern[str]) -> set[str]:
    return set(pattern.findall(json.dumps(doc)))


def _subset(
    template: dict[str, Any],
    resources: list[dict[str, Any]],
    elsewhere: list[dict[str, Any]],
    outputs: bool,
) -> dict[str, Any]:
    """A template with ``resources`` only; dependencies on ``elsewhere`` are dropped.

    It declares only the parameters and variables it reads, so its digest (and
    whether it is deployed) depends on its own inputs alone.
    """
    gone: set[str] = set()
    for r in elsewhere:
        gone |= reference_forms(r)
    kept = []
    for r in resources:
        r = copy.deepcopy(r)
        if "dependsOn" in r:
            deps = [d for d in r["dependsOn"] if _SPACE.sub("", str(d)) not in gone]
            if deps:
                r["dependsOn"] = deps
            else:
                del r["dependsOn"]
        kept.append(r)
    body: dict[str, Any] = {"resources": kept}
    if outputs and "outputs" in template:
        body["outputs"] = copy.deepcopy(template["outputs"])
    variables = template.get("variables") or {}
    var_names = _used(body, _VARIABLE)
    used_vars = {k: copy.deepcopy(v) for k, v in variables.items() if k in var_names}
    param_names = _used(body, _PARAMETER) | _used(used_vars, _PARAMETER)
    doc: dict[str, Any] = {}
    for k, v in template.items():
        if k == "parameters":
            doc[k] = {n: copy.deepcopy(p) for n, p in v.items() if n in param_names}
        elif k == "variables":
            doc[k] = used_vars
        elif k not in ("resources", "outputs"):
            doc[k] = copy.deepcopy(v)
    doc.update(body)
    return doc


def _declared(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    declared = template.get("parameters") or {}
    return {k: v for k, v in values.items() if k in declared}


def _placement(resources: list[dict[str, Any]]) -> list[str]:
    """The part of each resource: its type's, or the latest part of what it needs.

    main.json lists resources after their dependencies, so one pass in order sees every
    dependency placed before the resource that names it.
    """
    order = {p: i for i, p in enumerate(PARTS)}
    where: dict[str, str] = {}
    out: list[str] = []
    for r in resources:
        part = _base_part(r)
        for d in r.get("dependsOn") or []:
            dep = where.get(_SPACE.sub("", str(d)))
            if dep is not None and order[dep] > order[part]:
                part = dep
        out.append(part)
        for form in reference_forms(r):
            where[form] = part
    return out


def _outputs_part(
    template: dict[str, Any], resources: list[dict[str, Any]], placed: list[str]
) -> str:
    """The part that carries the outputs: the latest part of a resource they read.

    When they also read a resource main.json does not deploy (an identity of a split
    ``identities-<n>`` template, deployed right after ``clusters``), the first part after
    ``clusters``, so that ARM evaluates them once that resource exists.
    """
    text = _SPACE.sub("", json.dumps(template.get("outputs") or {}, ensure_ascii=False))
    order = {p: i for i, p in enumerate(PARTS)}
    best = DATA
    here: set[str] = set()
    for r, part in zip(resources, placed, strict=True):
        forms = {f.strip("[]") for f in reference_forms(r) if f.startswith("[")}
        here |= forms
        if part in AZURE_PARTS and order[part] > order[best]:
            if any(f in text for f in forms):
                best = part
    if set(_RESOURCE_ID_CALL.findall(text)) - here and order[best] <= order[CLUSTERS]:
        later = [p for p in AZURE_PARTS[AZURE_PARTS.index(CLUSTERS) + 1 :] if p in placed]
        if later:
            best = later[0]
    return best


def outputs_part(template: dict[str, Any]) -> str:
    """Name of the part of ``template`` (main.json) whose deployment holds the outputs."""
    resources = [r for r in template.get("resources") or [] if isinstance(r, dict)]
    return _outputs_part(template, resources, _placement(resources))


def split_main(main: Template) -> dict[str, dict[str, Any]]:
    """main.json as one template per part of :data:`PARTS` (empty parts left out)."""
    resources = main.template["resources"]
    if not all(isinstance(r, dict) for r in resources):
        raise ApplyError("azure/main.json: a resource is not an object")
    placed = _placement(resources)
    groups: dict[str, list[dict[str, Any]]] = {p: [] for p in PARTS}
    for r, part in zip(resources, placed, strict=True):
        groups[part].append(r)
    with_outputs = _outputs_part(main.template, resources, placed)
    out: dict[str, dict[str, Any]] = {}
    for name, rs in groups.items():
        if not rs and name != with_outputs:
            continue
        others = [r for n, group in groups.items() if n != name for r in group]
        out[name] = _subset(main.template, rs, others, outputs=name == with_outputs)
    return out


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` options: VALUE as JSON when it parses, else as a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ApplyError(f"--parameter {pair!r}: expected NAME=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[name.strip()] = value
    return out


def build_parts(
    templates: list[Template], overrides: dict[str, Any], discovered: dict[str, Any]
) -> dict[str, list[Part]]:
    """The deployments per step: ``{"azure": [...], "dispatch": [...], "apim": [...]}``.

    ``azure`` holds the parts of :data:`AZURE_PARTS` that have resources, in order, the
    ``identities-<n>`` templates right after ``clusters``; ``access`` the ``access`` part
    then the ``identity-grants-<n>`` templates, with ``deployAccessGrants`` true; ``apim``
    the ``apim`` part then the ``apim-apis-<n>`` templates.

    Args:
        templates: ``main`` first, then the split templates (:meth:`Build.templates`).
        overrides: ``--parameter`` values (win over everything).
        discovered: values ``apply`` found out (ingress addresses); they replace the
            parameter file's value only where that one is a stand-in (see
            :func:`needs_discovery`).

    Raises:
        ApplyError: an override names a parameter no template declares, or a split
            template is of a kind this apply does not know.
    """
    if not templates:
        return {"azure": [], "access": [], "dispatch": [], "apim": []}
    declared = {k for t in templates for k in (t.template.get("parameters") or {})}
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise ApplyError(
            f"--parameter {', '.join(unknown)}: no such template parameter "
            f"(declared: {', '.join(sorted(declared)) or 'none'})"
        )

    def values(t: dict[str, Any], file_values: dict[str, Any]) -> dict[str, Any]:
        merged = {k: (p or {}).get("defaultValue") for k, p in (t.get("parameters") or {}).items()}
        merged.update(_declared(t, file_values))
        for k, v in discovered.items():
            if k in merged and needs_discovery(k, merged[k]):
                merged[k] = merge_discovered(k, merged[k], v)
        merged.update(_declared(t, overrides))
        return {k: v for k, v in merged.items() if v is not None}

    def plain(v: dict[str, Any]) -> dict[str, Any]:
        # A Key Vault reference is resolved by ARM even where unused, and the secret may
        # not exist yet: only the part that uses it (dispatch) passes it.
        return {k: x for k, x in v.items() if not isinstance(x, SecretReference)}

    def azure_part(name: str, template: dict[str, Any], file_values: dict[str, Any]) -> Part:
        infra = plain(values(template, file_values))
        for flag in (PARAM_EVENT_SUBSCRIPTION, PARAM_ACCESS_GRANTS):
            if flag in infra:
                infra[flag] = False
        return Part(name, template, infra)

    def access_part(name: str, template: dict[str, Any], file_values: dict[str, Any]) -> Part:
        access = plain(values(template, file_values))
        if PARAM_ACCESS_GRANTS in access and PARAM_ACCESS_GRANTS not in overrides:
            access[PARAM_ACCESS_GRANTS] = True
        if PARAM_EVENT_SUBSCRIPTION in access:
            access[PARAM_EVENT_SUBSCRIPTION] = False
        return Part(name, template, access)

    main, *split = templates
    kinds: dict[str, list[Template]] = {IDENTITIES: [], IDENTITY_GRANTS: [], APIM_APIS: []}
    for t in split:
        kind = t.name.rpartition("-")[0]
        if kind not in kinds:
            raise ApplyError(f"azure/{t.name}.json: not a template kind apply knows")
        kinds[kind].append(t)
    parts = split_main(main)
    out: dict[str, list[Part]] = {"azure": [], "access": [], "dispatch": [], "apim": []}
    for name in AZURE_PARTS:
        if name in parts:
            out["azure"].append(azure_part(name, parts[name], main.parameters))
        if name == CLUSTERS:  # identities federate with the clusters' OIDC issuers
            out["azure"] += [
                azure_part(t.name, t.template, t.parameters) for t in kinds[IDENTITIES]
            ]
    if ACCESS in parts:
        out["access"].append(access_part(ACCESS, parts[ACCESS], main.parameters))
    out["access"] += [access_part(t.name, t.template, t.parameters) for t in kinds[IDENTITY_GRANTS]]
    if DISPATCH in parts:
        dispatch = values(parts[DISPATCH], main.parameters)
        if PARAM_EVENT_SUBSCRIPTION in dispatch and PARAM_EVENT_SUBSCRIPTION not in overrides:
            dispatch[PARAM_EVENT_SUBSCRIPTION] = True
        out["dispatch"].append(Part(DISPATCH, parts[DISPATCH], dispatch))
    if APIM in parts:
        out["apim"].append(Part(APIM, parts[APIM], plain(values(parts[APIM], main.parameters))))
    for t in kinds[APIM_APIS]:
        out["apim"].append(Part(t.name, t.template, plain(values(t.template, t.parameters))))
    return out


def needs_discovery(name: str, value: Any) -> bool:
    """Whether parameter ``name`` holds a stand-in for an address only a cluster knows."""
    if name == PARAM_BACKEND_URL:
        return not value
    if name == PARAM_INGRESS_URLS and isinstance(value, dict):
        return any(str(v).endswith(UNKNOWN_INGRESS_SUFFIX) or not v for v in value.values())
    return False


def merge_discovered(name: str, value: Any, found: Any) -> Any:
    """The parameter value with the discovered addresses put where stand-ins were."""
    if name == PARAM_INGRESS_URLS and isinstance(value, dict) and isinstance(found, dict):
        merged = dict(value)
        for cluster, url in found.items():
            old = merged.get(cluster)
            if cluster in merged and (not old or str(old).endswith(UNKNOWN_INGRESS_SUFFIX)):
                merged[cluster] = url
        return merged
    return found


# ---------------------------------------------------------------------------- what-if


def _type_and_name(resource_id: str) -> tuple[str, str]:
    """``Microsoft.Web/sites``, ``app`` from a full resource id (extension ids too)."""
    _, _, tail = resource_id.rpartition("/providers/")
    parts = [p for p in tail.split("/") if p]
    if len(parts) < 3:
        return "resource", resource_id
    ns, rest = parts[0], parts[1:]
    return "/".join([ns, *rest[0::2]]), "/".join(rest[1::2])


_WHATIF_ACTIONS = {
    "create": ApplyAction.CREATE,
    "delete": ApplyAction.DELETE,
    "modify": ApplyAction.UPDATE,
    "deploy": ApplyAction.UNKNOWN,
    "unsupported": ApplyAction.UNKNOWN,
    "nochange": ApplyAction.NOOP,
    "noeffect": ApplyAction.NOOP,
    "ignore": None,
}


def _delta_paths(delta: list[dict[str, Any]], prefix: str = "") -> list[str]:
    out: list[str] = []
    for d in delta or []:
        if str(d.get("propertyChangeType", "")).lower() == "noeffect":
            continue  # what-if noise: read-only or server-set values, never deployed
        path = f"{prefix}.{d.get('path')}" if prefix else str(d.get("path"))
        children = d.get("children")
        if children and d.get("propertyChangeType") in ("Array", "Modify"):
            sub = _delta_paths(children, path)
            out.extend(sub or [path])
        else:
            out.append(path)
    return out


def whatif_changes(result: dict[str, Any]) -> list[PlannedChange]:
    """Changes of an ARM what-if result; ``Ignore`` (not in the template) is left out."""
    props = result.get("properties") or result
    out: list[PlannedChange] = []
    for c in props.get("changes") or []:
        action = _WHATIF_ACTIONS.get(str(c.get("changeType", "")).lower(), ApplyAction.UNKNOWN)
        if action is None:
            continue
        kind, name = _type_and_name(str(c.get("resourceId", "")))
        paths = tuple(_delta_paths(c.get("delta") or [])) if action is ApplyAction.UPDATE else ()
        if action is ApplyAction.UPDATE and c.get("delta") and not paths:
            action = ApplyAction.NOOP  # only NoEffect properties: nothing would change
        note = "ARM cannot preview it; redeployed" if action is ApplyAction.UNKNOWN else ""
        out.append(PlannedChange(action, kind, name, paths, note))
    return out


def template_changes(part: Part) -> list[PlannedChange]:
    """Every resource of ``part`` as a creation (what a missing resource group means)."""
    out = []
    for r in part.template["resources"]:
        name = str(r.get("name", ""))
        if _unbracket(name) is not None:
            name = name if len(name) <= 60 else name[:57] + "...]"
        out.append(PlannedChange(ApplyAction.CREATE, str(r.get("type", "")), name))
    return out
