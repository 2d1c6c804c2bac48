"""Azure target, stage one: every resource of an environment, in deployment order.

:func:`build_template` calls the builders (one module per concern) in dependency order,
handing each the typed handles of those before it, adds the API Management children
the APIM target built (:class:`ApimChildren`, received as an argument: this room never
imports the APIM room), cuts them into separate templates when ARM's limits demand it,
and derives each resource's dependencies once. :mod:`.arm` and :mod:`.bicep` print the
result.

Two kinds of resources come by the hundred on large platforms and may leave main.json
for templates of their own (the *split* templates), each only when main.json would
otherwise pass ARM's limits, so every ordinary platform stays one template:

* API Management children (``apim-apis-<n>``), deployed last (the public door);
* the per-API workload identities (:func:`~.access.api_identities`), cut in two kinds
  because they are needed at two moments: ``identities-<n>`` (results container,
  identity, federated credential, results grant) can be deployed as soon as the AKS
  clusters exist (the credential reads the cluster's OIDC issuer), while
  ``identity-grants-<n>`` (the grants on single Key Vault secrets) need the secrets
  ``apply`` writes later and carry the ``deployAccessGrants`` condition. Separate
  templates deploy every resource once, in the step it belongs to, and the grants'
  template changes (and is redeployed) only when a grant does; deploying one template
  twice (false, then true) would re-PUT hundreds of unchanged identities in the
  ``access`` step and mix two moments in one digest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ...errors import Diagnostic, RenderError
from ...model.naming import GATEWAY_CLIENT_CERT, mutual_tls
from ...model.types import Mode, Platform
from ..artifact import RenderContext
from .access import (
    ApiIdentity,
    ClusterIdentities,
    access_parameters,
    api_identities,
    cluster_identities,
    identity_groups,
    identity_outputs,
)
from .aks import ClusterHandle, aks
from .apim_service import apim_service
from .common import PARAM_INGRESS_URLS, PARAM_LOCATION, TENANT_ID, AzureSpec
from .data import key_vault, redis, registry, storage
from .dispatch import dispatch
from .functions import functions
from .monitoring import monitoring
from .prints import Group, GroupStore, Printed, print_resources
from .roles import roles
from .secrets import secrets
from .spec import Fn, Output, Param, Parameter, Resource, referenced, to_arm

#: Module of the API Management children (and prefix of their split templates).
APIM_MODULE = "apim-apis"
PARAMS_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"

#: Azure Resource Manager limits one deployment to 800 resources and a 4 MB template.
#: APIM children come by the thousand on large platforms, so when the whole template
#: would pass either limit they move to separate templates (``apim-apis-<n>``), each
#: at most this many resources ...
APIM_CHUNK = 700
#: ... and about this many bytes of compact JSON.
APIM_CHUNK_BYTES = 3_000_000
ARM_MAX_RESOURCES = 800
#: Prefixes of the split templates of per-API identities and of their Key Vault grants.
IDENTITY_SPLIT = "identities"
GRANT_SPLIT = "identity-grants"
#: Most resources in one split identity (or grant) template; an API's resources of one
#: kind never straddle two templates. Well below ARM's limit, like :data:`APIM_CHUNK`.
IDENTITY_CHUNK = 700
#: Compact-JSON size above which main.json would risk ARM's 4 MB request limit.
ARM_TEMPLATE_BUDGET = 3_500_000


class ApimChildren(Protocol):
    """What the Azure target needs from the APIM target (its typed hand-off).

    The pipeline passes the APIM target's result in; the Azure target places the
    service, then asks for the children below it.
    """

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """Template parameters the children read."""
        ...

    def resources(
        self, service: Resource, module: str, key_vault_waits: Sequence[Resource]
    ) -> list[Resource]:
        """Every child of ``service``, parents first, in module ``module``."""
        ...


@runtime_checkable
class GroupedApimChildren(ApimChildren, Protocol):
    """An APIM hand-off that also says which children belong to one API, and what they read.

    The real APIM target is one; a hand-off without it (a test's stand-in) is printed
    without the cache.
    """

    def resource_groups(
        self, service: Resource, module: str, key_vault_waits: Sequence[Resource]
    ) -> tuple[list[Resource], list[tuple[str, tuple[Resource, ...]]]]:
        """The children, and per API (digest of what its children read, the children)."""
        ...


class ArmBodies:
    """Each resource's ARM body (:func:`~.spec.to_arm`), size and print, once per build.

    Cutting the template into split templates weighs every resource (some twice: main's
    core, then the identities), and printing converts every body again; on a 1,000-API
    platform that was about 0.4 s of converting the same bodies. Bodies are complete
    once :func:`build_template` weighs them, and nothing changes them after, so the
    first conversion serves every later one. Keeps each resource alive with its entry,
    so an ``id()`` is never reused within one build.

    Prints (:class:`~.prints.Printed`) of per-API groups may come from the render cache
    (:meth:`seed`); their size is then the cached one, and their body is converted only
    if something asks for it.
    """

    def __init__(self) -> None:
        self._bodies: dict[int, tuple[Resource, Any]] = {}
        self._sizes: dict[int, int] = {}
        self._printed: dict[int, Printed] = {}
        self._ids: dict[int, str] = {}
        self._keep: list[Resource] = []

    def seed(self, res: Resource, printed: Printed) -> None:
        """Take ``res``'s print (and size) from the render cache."""
        self._keep.append(res)
        self._printed[id(res)] = printed
        self._sizes[id(res)] = printed.size

    def seeded(self, res: Resource) -> Printed | None:
        """The print :meth:`seed` gave ``res``, if any."""
        return self._printed.get(id(res))

    def printed(
        self, resources: Sequence[Resource], needs: Callable[[Resource], list[Resource]]
    ) -> list[Printed]:
        """Each resource printed (see :func:`~.prints.print_resources`), on first use."""
        todo = [r for r in resources if id(r) not in self._printed]
        items = [(r, needs(r), self.body(r), self.size(r)) for r in todo]
        for res, printed in zip(todo, print_resources(items), strict=True):
            self._keep.append(res)
            self._printed[id(res)] = printed
        return [self._printed[id(r)] for r in resources]

    def arm_id(self, res: Resource) -> str:
        """``to_arm(res.id())``, once per resource (thousands wait for the same few)."""
        got = self._ids.get(id(res))
        if got is None:
            self._keep.append(res)
            got = self._ids[id(res)] = to_arm(res.id())
        return got

    def all_printed(self) -> dict[int, Printed]:
        """Every print made or seeded so far, by ``id()`` of the resource."""
        return self._printed

    def body(self, res: Resource) -> Any:
        """``to_arm(res.body)``, converted on first use."""
        got = self._bodies.get(id(res))
        if got is None:
            got = self._bodies[id(res)] = (res, to_arm(res.body))
        return got[1]

    def size(self, res: Resource) -> int:
        """Rough compact-JSON size of ``res`` in an ARM template."""
        size = self._sizes.get(id(res))
        if size is None:
            text = json.dumps(self.body(res), separators=(",", ":"))
            size = self._sizes[id(res)] = len(text) + 300
        return size


@dataclass
class AzureTemplate:
    """The built spec plus the module order derived from it."""

    spec: AzureSpec
    modules: list[str]
    source: str
    environment: str
    description: str
    outputs: list[Output] = field(default_factory=list)
    #: dependencies() of every deployed resource, by id(), computed once.
    deps: dict[int, list[Resource]] = field(default_factory=dict)
    #: Modules deployed as templates of their own, in this order, after main.
    split: list[str] = field(default_factory=list)
    #: Each resource's ARM body, converted once (weighing and printing share it).
    arm_bodies: ArmBodies = field(default_factory=ArmBodies)
    #: The per-API groups whose prints the cache did not have (stored once printed).
    groups: GroupStore = field(default_factory=GroupStore)
    #: Every deployed resource by its symbol (unique in a template).
    by_symbol: dict[str, Resource] = field(default_factory=dict)

    def needs(self, res: Resource) -> list[Resource]:
        """What ``res`` must wait for (see :func:`dependencies`)."""
        return self.deps[id(res)]


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


def build_template(
    platform: Platform, context: RenderContext, apim: ApimChildren | None = None
) -> AzureTemplate:
    """Every resource of ``platform`` in deployment order, with its modules.

    Args:
        platform: The validated model of one environment.
        context: Build-wide inputs (the source name for headers).
        apim: The APIM target's children; ``None`` renders the service without them.

    Raises:
        RenderError: an APIM parameter clashes with one of ours (an ai4ec bug).
    """
    spec = AzureSpec()
    spec.params.append(
        Parameter(
            PARAM_LOCATION,
            "string",
            platform.azure.location,
            "Azure region of every resource (platform.yaml azure.location).",
        )
    )
    spec.variables["tags"] = dict(platform.tags)
    mon = monitoring(spec, platform)
    store = storage(spec, platform)
    vault = key_vault(spec, platform)
    acr = registry(spec, platform)
    cache = redis(spec, platform)
    clusters = [aks(spec, platform, c, mon.workspace) for c in platform.clusters]
    ingress_urls = None
    if apim is not None and any(p.name == PARAM_INGRESS_URLS for p in apim.parameters):
        ingress_urls = Fn("string", (Param(PARAM_INGRESS_URLS),))
    fns = functions(spec, platform, store.account, _backend_url_default(platform), ingress_urls)
    service = apim_service(spec, platform, vault)
    grants = roles(spec, vault, store, acr, fns, service, clusters, mutual_tls(platform))
    secrets(spec, vault, cache, fns, mon.app_insights, grants)
    spec.params += access_parameters(platform)
    identities = api_identities(spec, platform, vault, store.blob, clusters)
    syncs = cluster_identities(spec, platform, vault, clusters)
    dispatch(spec, platform, fns, store.account, grants)
    split: list[str] = []
    weights = ArmBodies()
    groups = identity_groups(identities)
    children: list[Resource] = []
    if apim is not None:
        _declare(spec, apim.parameters)
        # The Key Vault named value reads ai4ec-apim-key, which `ai4ec apply` writes
        # before the APIM step; in the template it waits for its role only.
        waits = (grants.apim_key_vault,)
        if isinstance(apim, GroupedApimChildren):
            children, apim_groups = apim.resource_groups(service, APIM_MODULE, waits)
            groups += [Group("apim-api", digest, rs) for digest, rs in apim_groups]
        else:
            children = apim.resources(service, APIM_MODULE, waits)
        for child in children:
            spec.add(child)
    # Per-API prints from the render cache (see .prints) before anything is weighed.
    cached = GroupStore()
    deployed = [r for r in spec.resources if not r.virtual]
    known = {r.symbol: r for r in deployed}
    if len(known) != len(deployed):  # pragma: no cover - a builder bug
        raise AssertionError("two deployed resources share a symbol")
    for res, printed in cached.load(groups, known):
        weights.seed(res, printed)
    if apim is not None:
        split = _chunk(spec, children, weights)
    # Identities go before the APIM chunks: that is the order apply deploys them in.
    split = _chunk_identities(spec, identities, split, weights) + split
    modules: list[str] = []
    for r in spec.resources:
        if not r.virtual and r.module not in modules and r.module not in split:
            modules.append(r.module)
    # Split templates after main's modules, in deployment order (an identity chunk's
    # grants are in a later chunk kind, whatever the APIs they start at).
    modules += split
    deps: dict[int, list[Resource]] = {}
    for r in deployed:
        seeded = weights.seeded(r)
        deps[id(r)] = dependencies(r) if seeded is None else [known[s] for s in seeded.deps]
    _check_module_order(spec, modules, deps)
    description = platform.description or f"ai4ec platform {platform.name}"
    return AzureTemplate(
        spec=spec,
        modules=modules,
        source=" ".join(context.source_name.splitlines()),
        environment=platform.environment,
        description=f"{description} (environment {platform.environment})",
        outputs=[
            *_outputs(clusters, syncs),
            *identity_outputs(identities),
            Output(
                "gatewayClientCertificate",
                "string",
                GATEWAY_CLIENT_CERT if mutual_tls(platform) else "",
                "Key Vault certificate `ai4ec apply` creates for mutual TLS at the gateways "
                "(API Management and dispatch present it); empty when no gateway asks.",
            ),
        ],
        deps=deps,
        split=split,
        arm_bodies=weights,
        groups=cached,
        by_symbol=known,
    )


_PARAMETER_TYPES = ("string", "object", "bool", "int", "array")


def _declare(spec: AzureSpec, params: Sequence[Parameter]) -> None:
    """Declare the APIM target's template parameters next to ours (sorted by name).

    Raises:
        RenderError: a parameter clashes with one of ours or has an unsupported type.
    """
    taken = {p.name for p in spec.params}
    for p in sorted(params, key=lambda p: p.name):
        if p.name in taken:
            raise _apim_bug(f"APIM parameter {p.name!r} clashes with an Azure target parameter")
        if p.type not in _PARAMETER_TYPES:
            raise _apim_bug(f"APIM parameter {p.name!r} has unsupported type {p.type!r}")
        spec.params.append(p)


def _apim_bug(message: str) -> RenderError:
    return RenderError(
        message,
        (
            Diagnostic(
                code="E-RENDER-APIM",
                message=message,
                hint="this is an ai4ec bug; please report it with your platform.yaml",
            ),
        ),
    )


def _chunk(spec: AzureSpec, children: list[Resource], weights: ArmBodies) -> list[str]:
    """Keep APIM children in main, or cut them into separate templates (returned).

    Below ARM's limits everything stays one deployment (module ``apim-apis``). Above,
    children are cut, in the APIM target's order (parents first), into chunks of at
    most :data:`APIM_CHUNK` resources and :data:`APIM_CHUNK_BYTES`; each chunk is its
    own template, deployed after main and after the chunks before it.
    """
    core = [r for r in spec.resources if not r.virtual and r.module != APIM_MODULE]
    sizes = [weights.size(r) for r in children]
    total = sum(weights.size(r) for r in core) + sum(sizes)
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


def _chunk_identities(
    spec: AzureSpec, identities: Sequence[ApiIdentity], split: Sequence[str], weights: ArmBodies
) -> list[str]:
    """Keep the per-API identities in main, or cut them into split templates (returned).

    Only when main.json, without the modules already in ``split``, passes ARM's
    resource limit or :data:`ARM_TEMPLATE_BUDGET`. Then every API identity moves: its
    results container, identity, federated credential and results grant to
    ``identities-<n>``, its grants on single secrets to ``identity-grants-<n>`` (see the
    module docstring for why two kinds). Chunks hold whole APIs, at most
    :data:`IDENTITY_CHUNK` resources and :data:`APIM_CHUNK_BYTES` each. Cluster
    identities stay in main: there are two per cluster, and the clusters' outputs need
    them.
    """
    core = [r for r in spec.resources if not r.virtual and r.module not in split]
    total = sum(weights.size(r) for r in core)
    if len(core) <= ARM_MAX_RESOURCES and total <= ARM_TEMPLATE_BUDGET:
        return []
    own = _cut([i.resources for i in identities], IDENTITY_SPLIT, weights)
    grants = _cut([i.grants for i in identities], GRANT_SPLIT, weights)
    return own + grants


def _cut(groups: Sequence[Sequence[Resource]], prefix: str, weights: ArmBodies) -> list[str]:
    """Put each group (one API's resources) whole into modules ``<prefix>-<n>``."""
    chunks: list[str] = []
    count = weight = 0
    for group in groups:
        if not group:
            continue
        sizes = [weights.size(r) for r in group]
        full = count + len(group) > IDENTITY_CHUNK or weight + sum(sizes) > APIM_CHUNK_BYTES
        if not chunks or full:
            chunks.append(f"{prefix}-{len(chunks) + 1}")
            count = weight = 0
        for res in group:
            res.module = chunks[-1]
        count += len(group)
        weight += sum(sizes)
    return chunks


def _outputs(
    clusters: Sequence[ClusterHandle], syncs: dict[str, ClusterIdentities]
) -> list[Output]:
    """Values ``apply`` needs from Azure: never a secret (docs/contracts.md)."""
    per_cluster: dict[str, dict[str, Any]] = {}
    for handle in clusters:
        hosts = [h for h in handle.model.ingress.hosts if "*" not in h]
        ids = syncs[handle.model.name]
        per_cluster[handle.model.name] = {
            "keyVaultProviderClientId": handle.cluster.ref(
                "addonProfiles", "azureKeyvaultSecretsProvider", "identity", "clientId"
            ),
            "runtimeClientId": ids.runtime.ref("clientId"),
            "ingressHost": hosts[0] if hosts else "",
            "apiServerFqdn": handle.cluster.ref("fqdn"),
        }
        if ids.gateway is not None:
            per_cluster[handle.model.name]["gatewayClientId"] = ids.gateway.ref("clientId")
    return [
        Output(
            "tenantId",
            "string",
            TENANT_ID,
            "Tenant of the subscription ($(azure:tenantId) in Kubernetes objects).",
        ),
        Output(
            "clusters",
            "object",
            per_cluster,
            "Per cluster: client id of the Key Vault secrets-provider identity, the "
            "ingress host name when platform.yaml names one ($(azure:clusters.<name>.*)), "
            "and the API server host apply checks a --context against.",
        ),
    ]


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
    spec: AzureSpec, modules: list[str], deps: dict[int, list[Resource]]
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
