"""API Management plan -> Azure resources (the shared expression tree) for the Azure target.

The Azure target places the service itself (module ``apim``); everything below it -
named values, backends, policies, APIs, operations, products - comes from here, as
:class:`~ai4ec.render.azure.spec.Resource` objects whose parents are real resources, so
``main.json`` and ``modules/apim-apis.bicep`` print them like every other resource.
Conventions (docs/apim.md, "Interface with the Azure target"):

* names are plain ids below ``<service>`` (``platform.azure.api_management.name``);
* the ingress URL of each cluster comes from the object parameter
  :data:`INGRESS_PARAMETER`, because the ingress address only exists after the
  cluster does;
* policy ``properties.value`` is exactly the policy file's content, with ``format``
  :data:`POLICY_FORMAT` - a :class:`~ai4ec.render.azure.spec.FileText`, which ARM JSON
  inlines and Bicep loads from the file (``loadTextContent``); the named values,
  backends and fragments a policy uses come from the plan (:func:`policy_needs`), not
  from reading the XML back;
* policy fragments (``service/policyFragments``, ``apim/fragments/<id>.xml``) come after
  the named values and backends and before every policy, each policy depending on the
  fragments it includes.

Named values that read Key Vault additionally wait for API Management's Key Vault role
and for the secrets themselves: API Management checks both when a named value is saved.
The Azure target passes those resources in (:meth:`ApimInfrastructure.resources`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ...model.naming import GATEWAY_CLIENT_CERT
from ...model.types import Platform
from ..azure.spec import FileText, Member, Param, Parameter, Resource, camel
from .plan import (
    APIM_KEY_SECRET,
    CREATE_TASK_FRAGMENT,
    FUNCTION_KEY_NAMED_VALUE,
    FUNCTIONS_URL_NAMED_VALUE,
    STATUS_OPERATION_NAME,
    STATUS_URL_TEMPLATE,
    SUBSCRIPTION_KEY_HEADER,
    SUBSCRIPTION_KEY_QUERY,
    ApimPlan,
    ApiPlan,
    FragmentPlan,
    OperationPlan,
    cluster_backends,
    operation_fragments,
)

#: Newest stable API version of every ``Microsoft.ApiManagement/service/*`` type used.
APIM_API_VERSION = "2024-05-01"
#: Policies are well-formed XML with their expressions XML-escaped. That is the
#: ``xml`` format; ``rawxml`` expects unescaped expressions and would double-escape
#: ours (``As&lt;string&gt;``). See docs/apim.md, "Why format xml".
POLICY_FORMAT = "xml"
#: Object parameter: cluster name -> base URL of its Istio ingress (``https://host``).
INGRESS_PARAMETER = "ai4ecIngressUrls"
#: Ownership marker: an API Management tag linked to every API and product ai4ec
#: creates, and a tag of every named value it creates. ``apply --prune`` deletes only
#: objects that carry it, so an API made by hand in the same service is never touched.
OWNER_TAG = "ai4ec"

_SERVICE_TYPE = "Microsoft.ApiManagement/service"


@dataclass(frozen=True, slots=True)
class PolicyNeeds:
    """What one policy refers to, which API Management must hold before the policy."""

    named_values: frozenset[str] = frozenset()
    backends: frozenset[str] = frozenset()
    #: Policy fragments it includes (APIM refuses an include of a missing fragment).
    fragments: frozenset[str] = frozenset()

    def __or__(self, other: PolicyNeeds) -> PolicyNeeds:
        return PolicyNeeds(
            self.named_values | other.named_values,
            self.backends | other.backends,
            self.fragments | other.fragments,
        )


_TASK_MANAGER = PolicyNeeds(
    named_values=frozenset({FUNCTION_KEY_NAMED_VALUE, FUNCTIONS_URL_NAMED_VALUE})
)


#: What each fragment's own text uses (only the task creation calls the task manager).
_FRAGMENT_NEEDS = {CREATE_TASK_FRAGMENT: _TASK_MANAGER}


def operation_needs(op: OperationPlan, plan: ApimPlan) -> PolicyNeeds:
    """What an operation's policy uses.

    An async operation calls the task manager and records its ingress; a sync one
    proxies through its cluster's backend entity. What a deployed fragment uses is the
    fragment's need, not the including policy's; an inlined fragment's is the policy's.
    """
    if op.is_async:
        needs = PolicyNeeds(named_values=frozenset({op.ingress_named_value}))
    else:
        needs = PolicyNeeds(backends=frozenset({op.backend_id}))
    for fragment_id in operation_fragments(op):
        if plan.fragment(fragment_id) is not None:
            needs = needs | PolicyNeeds(fragments=frozenset({fragment_id}))
        else:
            needs = needs | _FRAGMENT_NEEDS.get(fragment_id, PolicyNeeds())
    return needs


def api_needs(api: ApiPlan, plan: ApimPlan) -> PolicyNeeds:
    """An API policy routes its operations itself only when they come from OpenAPI."""
    needs = PolicyNeeds()
    if api.openapi is not None:
        for op in api.operations:
            needs = needs | operation_needs(op, plan)
    return needs


def policy_needs(plan: ApimPlan) -> dict[str, PolicyNeeds]:
    """Policy (and fragment) file path -> what it uses, from the plan alone."""
    out = {plan.global_policy_path: PolicyNeeds()}
    for f in plan.fragments:
        out[f.path] = _FRAGMENT_NEEDS.get(f.id, PolicyNeeds())
    apis = list(plan.apis) + ([plan.status.api] if plan.status is not None else [])
    for api in apis:
        out[api.policy_path] = api_needs(api, plan)
        for op in api.operations:
            if op.policy_path is not None:
                out[op.policy_path] = operation_needs(op, plan)
    if plan.status is not None:
        out[plan.status.operation_policy_path] = _TASK_MANAGER
    for p in plan.products:
        out[p.policy_path] = PolicyNeeds()
    return out


def ingress_parameter(platform: Platform) -> Parameter:
    """The template parameter the backends and ingress named values read.

    The default of each cluster is ``<protocol>://<first concrete ingress host>`` or,
    without one, ``<protocol>://<cluster>.ingress.invalid``: deployable, and failing
    loudly until ``apply`` passes the real address.
    """
    return Parameter(
        INGRESS_PARAMETER,
        "object",
        {b.cluster: b.default_url for b in cluster_backends(platform)},
        "Base URL (scheme://host) of each cluster's Istio ingress, by cluster name; "
        "API Management's backends and named values use it.",
    )


def _ingress_value(cluster: str) -> Member:
    return Member(Param(INGRESS_PARAMETER), (cluster,))


@dataclass
class _Builder:
    """Creates the children of one service, each once, parents before children."""

    plan: ApimPlan
    policies: Mapping[str, str]
    needs: Mapping[str, PolicyNeeds]
    service: Resource
    module: str
    key_vault_waits: Sequence[Resource]
    out: list[Resource] = field(default_factory=list)
    named_values: dict[str, Resource] = field(default_factory=dict)
    backends: dict[str, Resource] = field(default_factory=dict)
    apis: dict[str, Resource] = field(default_factory=dict)
    fragments: dict[str, Resource] = field(default_factory=dict)
    owner: Resource | None = None
    #: Each API of ``plan.apis`` and the children :meth:`api` made for it.
    groups: list[tuple[ApiPlan, tuple[Resource, ...]]] = field(default_factory=list)

    def add(
        self,
        kind: str,
        name: str,
        parent: Resource,
        properties: dict[str, Any] | None,
        waits: Sequence[Resource] = (),
    ) -> Resource:
        segments = _names(parent)[1:]  # below the service
        res = Resource(
            symbol=camel("apim", kind, *segments, name),
            type=f"{parent.type}/{kind}",
            api_version=APIM_API_VERSION,
            name=name,
            module=self.module,
            body={"properties": properties} if properties is not None else {},
            parent=parent,
        )
        for w in sorted(waits, key=_sort_key):
            if w is not parent and w not in res.depends_on:
                res.depends_on.append(w)
        self.out.append(res)
        return res

    def policy(self, parent: Resource, path: str, kind: str = "policies") -> Resource:
        needs = self.needs[path]
        waits = [self.named_values[n] for n in needs.named_values]
        waits += [self.backends[b] for b in needs.backends]
        waits += [self.fragments[f] for f in needs.fragments]
        props = {"format": POLICY_FORMAT, "value": FileText(self.policies[path], path)}
        return self.add(kind, "policy", parent, props, waits)

    def fragment(self, fragment: FragmentPlan) -> None:
        """A policy fragment: before every policy that includes it (their ``dependsOn``)."""
        needs = self.needs[fragment.path]
        props = {
            "description": fragment.description,
            "format": POLICY_FORMAT,
            "value": FileText(self.policies[fragment.path], fragment.path),
        }
        waits = [self.named_values[n] for n in needs.named_values]
        self.fragments[fragment.id] = self.add(
            "policyFragments", fragment.id, self.service, props, waits
        )

    def named_value(self, name: str, props: dict[str, Any]) -> None:
        props = {**props, "tags": [OWNER_TAG]}
        self.named_values[name] = self.add("namedValues", name, self.service, props)

    def mark(self, res: Resource) -> None:
        """Link the ownership tag to an API or product (what ``apply --prune`` reads)."""
        if self.owner is None:  # pragma: no cover - build() creates it before any API
            raise RuntimeError("the ownership tag is created first")
        self.add("tags", OWNER_TAG, res, None, [self.owner])

    def build(self) -> list[Resource]:
        plan = self.plan
        self.owner = self.add("tags", OWNER_TAG, self.service, {"displayName": OWNER_TAG})
        self.named_value(
            FUNCTION_KEY_NAMED_VALUE,
            {
                "displayName": FUNCTION_KEY_NAMED_VALUE,
                "secret": True,
                # Unversioned: APIM refreshes the value when the secret rotates. Read with
                # the service's system-assigned identity (identityClientId omitted).
                "keyVault": {"secretIdentifier": f"{plan.key_vault_uri}/secrets/{APIM_KEY_SECRET}"},
            },
        )
        for w in self.key_vault_waits:
            self.named_values[FUNCTION_KEY_NAMED_VALUE].depends_on.append(w)
        self.named_value(
            FUNCTIONS_URL_NAMED_VALUE,
            {
                "displayName": FUNCTIONS_URL_NAMED_VALUE,
                "secret": False,
                "value": plan.functions_url,
            },
        )
        for b in plan.backends:
            self.named_value(
                b.named_value,
                {
                    "displayName": b.named_value,
                    "secret": False,
                    "value": _ingress_value(b.cluster),
                },
            )
        certificate: Resource | None = None
        if any(b.client_certificate for b in plan.backends):
            # Read from Key Vault with the service's identity, unversioned so that a
            # renewed certificate is picked up; `ai4ec apply` creates it before this step.
            certificate = self.add(
                "certificates",
                GATEWAY_CLIENT_CERT,
                self.service,
                {
                    "keyVault": {
                        "secretIdentifier": f"{plan.key_vault_uri}/secrets/{GATEWAY_CLIENT_CERT}"
                    }
                },
                list(self.key_vault_waits),
            )
        for b in plan.backends:
            props: dict[str, Any] = {
                "title": f"Istio ingress of cluster {b.cluster}",
                "description": f"ai4ec: every sync API on cluster {b.cluster} is proxied here",
                "protocol": "http",
                "url": _ingress_value(b.cluster),
            }
            if b.protocol == "https":
                props["tls"] = {"validateCertificateChain": True, "validateCertificateName": True}
            waits: list[Resource] = []
            if b.client_certificate and certificate is not None:
                # Mutual TLS: every call to this ingress presents the client certificate.
                props["credentials"] = {"certificateIds": [certificate.id()]}
                waits.append(certificate)
            self.backends[b.backend_id] = self.add(
                "backends", b.backend_id, self.service, props, waits
            )
        for fragment in plan.fragments:
            self.fragment(fragment)
        self.policy(self.service, plan.global_policy_path)
        for api in plan.apis:
            start = len(self.out)
            self.api(api)
            self.groups.append((api, tuple(self.out[start:])))
        if plan.status is not None:
            status = plan.status
            api_res = self.api(status.api)
            op = self.add(
                "operations",
                STATUS_OPERATION_NAME,
                api_res,
                {
                    "displayName": "GET /task/{taskId}",
                    "method": "GET",
                    "urlTemplate": STATUS_URL_TEMPLATE,
                    "description": "Status of one task (the Location of a task-creating call).",
                    "templateParameters": [
                        {
                            "name": "taskId",
                            "type": "string",
                            "required": True,
                            "description": "TaskId",
                        }
                    ],
                },
            )
            self.policy(op, status.operation_policy_path)
        for p in plan.products:
            product_props: dict[str, Any] = {
                "displayName": p.display_name,
                "subscriptionRequired": p.subscription_required,
                "state": "published" if p.published else "notPublished",
            }
            if p.description:
                product_props["description"] = p.description
            if p.subscription_required:
                # APIM rejects both settings on open (subscription-free) products.
                product_props["approvalRequired"] = p.approval_required
                if p.subscriptions_limit is not None:
                    product_props["subscriptionsLimit"] = p.subscriptions_limit
            product = self.add("products", p.name, self.service, product_props)
            self.mark(product)
            self.policy(product, p.policy_path)
            for api_name in p.apis:
                self.add("apis", api_name, product, None, [self.apis[api_name]])
            for group in p.groups:
                # A portal group sees the product and may subscribe (built-in groups:
                # administrators, developers, guests).
                self.add("groups", group, product, None)
        return self.out

    def api(self, api: ApiPlan) -> Resource:
        props: dict[str, Any] = {
            "displayName": api.display_name,
            "description": api.description,
            "path": api.path,
            "protocols": ["https"],
            "type": "http",
            "subscriptionRequired": api.subscription_required,
            "subscriptionKeyParameterNames": {
                "header": SUBSCRIPTION_KEY_HEADER,
                "query": SUBSCRIPTION_KEY_QUERY,
            },
        }
        if api.openapi is not None:
            props["format"] = api.openapi.format
            props["value"] = api.openapi.value
        res = self.apis[api.name] = self.add("apis", api.name, self.service, props)
        self.mark(res)
        self.policy(res, api.policy_path)
        for op in api.operations:
            if op.policy_path is None:  # imported from OpenAPI, routed by the API policy
                continue
            op_props: dict[str, Any] = {
                "displayName": op.display_name,
                "method": op.method,
                "urlTemplate": op.url_template,
                "templateParameters": [],
            }
            if op.description:
                op_props["description"] = op.description
            op_res = self.add("operations", op.name, res, op_props)
            self.policy(op_res, op.policy_path)
        return res


def _names(res: Resource) -> list[str]:
    head = _names(res.parent) if res.parent is not None else []
    return [*head, str(res.name)]


def _sort_key(res: Resource) -> tuple[str, ...]:
    """Dependencies in a stable order: by resource type, then by name segments."""
    return (res.type, *_names(res))


@dataclass(frozen=True, slots=True)
class ApimInfrastructure:
    """What the APIM target hands to the Azure target (rendered once per environment).

    Attributes:
        plan: The APIM plan of the environment.
        policies: Policy file path -> its exact text (what ``apim/`` holds).
        parameters: Template parameters the resources read.
    """

    plan: ApimPlan
    policies: Mapping[str, str]
    parameters: tuple[Parameter, ...]

    def resources(
        self, service: Resource, module: str, key_vault_waits: Sequence[Resource]
    ) -> list[Resource]:
        """Every API Management child ai4ec manages, in a fixed order, below ``service``.

        Named values, backends, the service-scope policy, then per API (sorted by name)
        the API, its policy, operations and operation policies, then the task-status
        API, then products with their policy and API links.

        Args:
            service: The ``Microsoft.ApiManagement/service`` resource of the template.
            module: The template module the children belong to.
            key_vault_waits: What the Key Vault named value waits for (the service's Key
                Vault role and the secrets).
        """
        return self.resource_groups(service, module, key_vault_waits)[0]

    def resource_groups(
        self, service: Resource, module: str, key_vault_waits: Sequence[Resource]
    ) -> tuple[list[Resource], list[tuple[str, tuple[Resource, ...]]]]:
        """:meth:`resources`, and each API's children with the digest of what they read.

        An API's children (the API, its ownership tag link, policy, operations and
        their policies) read its plan, its policy texts and plan-wide values (the
        service, named values, backends and fragments they wait for), nothing of the
        other APIs: the digest hashes exactly those, so the Azure target may keep
        their printed form in the render cache (:mod:`ai4ec.render.azure.prints`).
        """
        if service.type != _SERVICE_TYPE or service.name != self.plan.service:
            raise ValueError(f"{service.symbol} is not API Management service {self.plan.service}")
        builder = _Builder(
            plan=self.plan,
            policies=self.policies,
            needs=policy_needs(self.plan),
            service=service,
            module=module,
            key_vault_waits=key_vault_waits,
        )
        children = builder.build()
        wide = repr(replace(self.plan, apis=(), products=(), status=None))
        shared = hashlib.sha256(f"{service.symbol}\0{wide}".encode()).hexdigest()
        groups: list[tuple[str, tuple[Resource, ...]]] = []
        for api, resources in builder.groups:
            paths = [api.policy_path, *(op.policy_path for op in api.operations)]
            texts = [self.policies.get(p, "") for p in paths if p is not None]
            digest = hashlib.sha256(repr((shared, api, texts)).encode()).hexdigest()
            groups.append((digest, resources))
        return children, groups
