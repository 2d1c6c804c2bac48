"""API Management plan -> ARM resources for the Azure target's templates.

The Azure target places these dicts, unchanged, in ``main.json`` (and its Bicep
module). Conventions (docs/apim.md, "Interface with the Azure target"):

* ``name`` is a plain string ``<service>/<child>[/<grandchild>]`` where ``<service>`` is
  ``platform.azure.api_management.name``; no expressions, so names diff cleanly;
* ``dependsOn`` holds ``resourceId(...)`` expressions, including the service itself,
  which the Azure template must declare in the same resource group;
* the ingress URL of each cluster comes from the object parameter
  :data:`INGRESS_PARAMETER` (see :func:`apim_arm_parameters`), because the ingress
  address only exists after the cluster does;
* policy ``properties.value`` is exactly the policy file's content, with
  ``format`` :data:`POLICY_FORMAT`.
"""

from __future__ import annotations

import re
from typing import Any

from ..model.types import Platform
from .apim_plan import (
    FUNCTION_KEY_NAMED_VALUE,
    FUNCTIONS_URL_NAMED_VALUE,
    STATUS_OPERATION_NAME,
    STATUS_URL_TEMPLATE,
    SUBSCRIPTION_KEY_HEADER,
    SUBSCRIPTION_KEY_QUERY,
    ApimPlan,
    ApiPlan,
    build_plan,
    cluster_backends,
)
from .apim_policies import render_policies
from .artifact import Artifact, RenderContext

#: Newest stable API version of every ``Microsoft.ApiManagement/service/*`` type used.
APIM_API_VERSION = "2024-05-01"
#: Policies are well-formed XML with their expressions XML-escaped. That is the
#: ``xml`` format; ``rawxml`` expects unescaped expressions and would double-escape
#: ours (``As&lt;string&gt;``). See docs/apim.md, "Why format xml".
POLICY_FORMAT = "xml"
#: Object parameter: cluster name -> base URL of its Istio ingress (``https://host``).
INGRESS_PARAMETER = "ai4ecIngressUrls"

_PROVIDER = "Microsoft.ApiManagement/service"
_BACKEND_REF = re.compile(r'backend-id="([^"]+)"')
_NAMED_VALUE_REF = re.compile(r"\{\{([^{}]+)\}\}")


def _q(value: str) -> str:
    """``value`` as an ARM expression string literal."""
    return "'" + value.replace("'", "''") + "'"


def _rid(kind: str, *names: str) -> str:
    """``[resourceId('Microsoft.ApiManagement/service/<kind>', ...)]``."""
    rtype = f"{_PROVIDER}/{kind}" if kind else _PROVIDER
    return f"[resourceId({', '.join(_q(x) for x in (rtype, *names))})]"


def _resource(
    kind: str, name: str, properties: dict[str, Any] | None, depends: list[str]
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "type": f"{_PROVIDER}/{kind}",
        "apiVersion": APIM_API_VERSION,
        "name": name,
    }
    if properties is not None:
        res["properties"] = properties
    res["dependsOn"] = sorted(set(depends))
    return res


def _ingress_value(cluster: str) -> str:
    return f"[parameters({_q(INGRESS_PARAMETER)})[{_q(cluster)}]]"


def apim_arm_parameters(platform: Platform) -> dict[str, dict[str, Any]]:
    """Template parameters the resources of :func:`apim_arm_resources` read.

    The default of each cluster is ``<protocol>://<first concrete ingress host>`` or,
    without one, ``<protocol>://<cluster>.ingress.invalid``: deployable, and failing
    loudly until ``apply`` passes the real address.
    """
    return {
        INGRESS_PARAMETER: {
            "type": "object",
            "defaultValue": {b.cluster: b.default_url for b in cluster_backends(platform)},
            "metadata": {
                "description": "Base URL (scheme://host) of each cluster's Istio ingress, "
                "by cluster name; API Management's backends and named values use it."
            },
        }
    }


def _policy_resource(
    kind: str, name: str, artifact: Artifact, parents: list[str], service: str
) -> dict[str, Any]:
    text = artifact.content.decode("utf-8")
    depends = list(parents)
    depends += [_rid("namedValues", service, n) for n in _NAMED_VALUE_REF.findall(text)]
    depends += [_rid("backends", service, b) for b in _BACKEND_REF.findall(text)]
    return _resource(kind, name, {"format": POLICY_FORMAT, "value": text}, depends)


def _named_values(plan: ApimPlan, service_id: str) -> list[dict[str, Any]]:
    s = plan.service
    out = [
        _resource(
            "namedValues",
            f"{s}/{FUNCTION_KEY_NAMED_VALUE}",
            {
                "displayName": FUNCTION_KEY_NAMED_VALUE,
                "secret": True,
                # Unversioned: APIM refreshes the value when the secret rotates. Read with
                # the service's system-assigned identity (identityClientId omitted).
                "keyVault": {
                    "secretIdentifier": f"{plan.key_vault_uri}/secrets/{FUNCTION_KEY_NAMED_VALUE}"
                },
            },
            [service_id],
        ),
        _resource(
            "namedValues",
            f"{s}/{FUNCTIONS_URL_NAMED_VALUE}",
            {
                "displayName": FUNCTIONS_URL_NAMED_VALUE,
                "secret": False,
                "value": plan.functions_url,
            },
            [service_id],
        ),
    ]
    out += [
        _resource(
            "namedValues",
            f"{s}/{b.named_value}",
            {"displayName": b.named_value, "secret": False, "value": _ingress_value(b.cluster)},
            [service_id],
        )
        for b in plan.backends
    ]
    return out


def _backends(plan: ApimPlan, service_id: str) -> list[dict[str, Any]]:
    out = []
    for b in plan.backends:
        props: dict[str, Any] = {
            "title": f"Istio ingress of cluster {b.cluster}",
            "description": f"ai4ec: every sync API on cluster {b.cluster} is proxied here",
            "protocol": "http",
            "url": _ingress_value(b.cluster),
        }
        if b.protocol == "https":
            props["tls"] = {"validateCertificateChain": True, "validateCertificateName": True}
        out.append(_resource("backends", f"{plan.service}/{b.backend_id}", props, [service_id]))
    return out


def _api_resources(
    plan: ApimPlan, api: ApiPlan, files: dict[str, Artifact], service_id: str
) -> list[dict[str, Any]]:
    s = plan.service
    api_id = _rid("apis", s, api.name)
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
    out = [_resource("apis", f"{s}/{api.name}", props, [service_id])]
    out.append(
        _policy_resource(
            "apis/policies", f"{s}/{api.name}/policy", files[api.policy_path], [api_id], s
        )
    )
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
        out.append(_resource("apis/operations", f"{s}/{api.name}/{op.name}", op_props, [api_id]))
        out.append(
            _policy_resource(
                "apis/operations/policies",
                f"{s}/{api.name}/{op.name}/policy",
                files[op.policy_path],
                [_rid("apis/operations", s, api.name, op.name)],
                s,
            )
        )
    return out


def _status_resources(
    plan: ApimPlan, files: dict[str, Artifact], service_id: str
) -> list[dict[str, Any]]:
    status = plan.status
    if status is None:
        return []
    s, name = plan.service, status.api.name
    out = _api_resources(plan, status.api, files, service_id)
    out.append(
        _resource(
            "apis/operations",
            f"{s}/{name}/{STATUS_OPERATION_NAME}",
            {
                "displayName": "GET /task/{taskId}",
                "method": "GET",
                "urlTemplate": STATUS_URL_TEMPLATE,
                "description": "Status of one task (the Location of a task-creating call).",
                "templateParameters": [
                    {"name": "taskId", "type": "string", "required": True, "description": "TaskId"}
                ],
            },
            [_rid("apis", s, name)],
        )
    )
    out.append(
        _policy_resource(
            "apis/operations/policies",
            f"{s}/{name}/{STATUS_OPERATION_NAME}/policy",
            files[status.operation_policy_path],
            [_rid("apis/operations", s, name, STATUS_OPERATION_NAME)],
            s,
        )
    )
    return out


def _products(plan: ApimPlan, files: dict[str, Artifact], service_id: str) -> list[dict[str, Any]]:
    s = plan.service
    out = []
    for p in plan.products:
        props: dict[str, Any] = {
            "displayName": p.display_name,
            "subscriptionRequired": p.subscription_required,
            "state": "published" if p.published else "notPublished",
        }
        if p.description:
            props["description"] = p.description
        if p.subscription_required:
            # APIM rejects both settings on open (subscription-free) products.
            props["approvalRequired"] = p.approval_required
            if p.subscriptions_limit is not None:
                props["subscriptionsLimit"] = p.subscriptions_limit
        product_id = _rid("products", s, p.name)
        out.append(_resource("products", f"{s}/{p.name}", props, [service_id]))
        out.append(
            _policy_resource(
                "products/policies", f"{s}/{p.name}/policy", files[p.policy_path], [product_id], s
            )
        )
        out += [
            _resource(
                "products/apis", f"{s}/{p.name}/{api}", None, [product_id, _rid("apis", s, api)]
            )
            for api in p.apis
        ]
    return out


def apim_arm_resources(platform: Platform, context: RenderContext) -> list[dict[str, Any]]:
    """ARM resources of every API Management object ai4ec manages, in a fixed order.

    Named values, backends, the service-scope policy, then per API (sorted by name)
    the API, its policy, operations and operation policies, then the task-status API,
    then products with their policy and API links.

    Raises:
        RenderError: as :func:`ai4ec.render.apim.render_apim`.
    """
    plan = build_plan(platform, context.source_dir, context.source_name)
    files = {str(a.path): a for a in render_policies(plan)}
    service_id = _rid("", plan.service)
    out = _named_values(plan, service_id)
    out += _backends(plan, service_id)
    out.append(
        _policy_resource(
            "policies",
            f"{plan.service}/policy",
            files[plan.global_policy_path],
            [service_id],
            plan.service,
        )
    )
    for api in plan.apis:
        out += _api_resources(plan, api, files, service_id)
    out += _status_resources(plan, files, service_id)
    out += _products(plan, files, service_id)
    return out
