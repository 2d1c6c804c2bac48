"""API Management plan: the model turned into the exact APIM objects ai4ec creates.

Model -> plan. Every name, path, limit and message that a policy template or an ARM
resource needs is computed here, once, so templates only lay out text and the ARM
builder only shapes dicts. The plan is a pure function of the :class:`Platform` plus the
OpenAPI documents it names, so the same model always yields the same plan.

Every value that ends up inside APIM policy XML is checked here before it gets there:
API Management expands ``{{name}}`` as a named-value reference anywhere in a policy and
treats a value that starts with ``@(`` or ``@{`` as C# code, so a user-written audience,
origin or path containing either would smuggle a secret or code into the gateway. Such
values are refused with a :class:`~ai4ec.errors.RenderError`; free text that only
appears inside JSON bodies (display names) is escaped instead.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ...model.types import Api, Cors, EntraAuth, Limit, Mode, Pipeline, Platform, Product
from .rules import (
    OpenApiImport,
    checked_header,
    checked_id,
    checked_literal,
    checked_neutral,
    checked_path,
    fail,
    openapi_import,
)

#: Key Vault secret (and APIM named value) holding the task manager's function key.
FUNCTION_KEY_NAMED_VALUE = "ai4ec-function-key"
#: Key Vault secret the named value reads: API Management's own key, no other caller's
#: (``ai4ec apply`` writes it; the Azure target's ``access.APIM_KEY_SECRET``).
APIM_KEY_SECRET = "ai4ec-apim-key"
#: Named value with the Function App base URL (``https://<app>.azurewebsites.net``).
FUNCTIONS_URL_NAMED_VALUE = "ai4ec-functions-url"
#: APIM's own subscription key names; set explicitly on every API so the policies that
#: strip them before the backend call always name the right header and query parameter.
SUBSCRIPTION_KEY_HEADER = "Ocp-Apim-Subscription-Key"
SUBSCRIPTION_KEY_QUERY = "subscription-key"
#: The shared task-status API (upstream's ``taskmanagement`` surface, kept as is).
STATUS_API_NAME = "task-status"
STATUS_API_PATH = "taskmanagement"
STATUS_OPERATION_NAME = "get-task"
STATUS_URL_TEMPLATE = "/task/{taskId}"
#: Operation name of a pipeline's single "create a task" operation.
PIPELINE_OPERATION_NAME = "submit"
#: Policy variable holding the validated Entra ID token (``validate-jwt`` output).
JWT_VARIABLE = "ai4ec-jwt"
#: Policy variable the service-scope ``forward-request`` reads its timeout from.
TIMEOUT_VARIABLE = "ai4ec-timeout-seconds"
#: APIM's forward-request default, used when no ai4ec operation set a timeout.
DEFAULT_FORWARD_TIMEOUT = 300
#: ``rate-limit``/``rate-limit-by-key`` refuse renewal periods above 300 s.
MAX_RATE_LIMIT_PERIOD = 300
#: Tiers without ``rate-limit-by-key``/``quota-by-key``: use the per-subscription forms.
NO_BY_KEY_SKUS = frozenset({"Consumption"})
#: Inputs to ``send-request`` to the task manager.
TASK_MANAGER_TIMEOUT_SECONDS = 20
TASK_MANAGER_RETRIES = 2
#: Seconds a caller is asked to wait before retrying after the task manager failed.
CREATE_FAILED_RETRY_AFTER = 5
#: Policy fragments (``service/policyFragments``): the logic every operation repeats,
#: deployed once per service and included by id. Ids are fixed and prefixed ``ai4ec-``;
#: per-operation values reach them through ``set-variable`` (fragments take no
#: parameters). See docs/apim.md, "Policy fragments".
SIZE_CHECK_FRAGMENT = "ai4ec-size-check"
PROXY_FRAGMENT = "ai4ec-proxy-headers"
CREATE_TASK_FRAGMENT = "ai4ec-create-task"
#: Tiers whose gateway cannot run ``include-fragment``: their policies carry the
#: fragments' text inline. Microsoft documents policy fragments and ``include-fragment``
#: for all tiers (Consumption included), so none today; the plan alone decides
#: (:func:`uses_fragments`), and the inline form stays tested.
INLINE_POLICY_SKUS: frozenset[str] = frozenset()
#: Description prefix marking a fragment as ai4ec's (fragments have no tags), which
#: ``apply --prune`` reads, like the backends' description.
OWNER_DESCRIPTION = "ai4ec:"


def json_text(value: str) -> str:
    """``value`` as a JSON string literal that API Management leaves alone.

    Braces are written as JSON unicode escapes (code points 7B and 7D), so no
    ``{{...}}`` named-value reference can appear, whatever the user wrote.
    """
    return json.dumps(value, ensure_ascii=False).replace("{", "\\u007b").replace("}", "\\u007d")


def json_body(fields: list[tuple[str, str | int]]) -> str:
    """A flat JSON object as text, field order kept, safe inside a policy.

    Flat on purpose: nested objects would end in ``}}``, which API Management would
    take for the end of a named-value reference.
    """
    parts = []
    for key, value in fields:
        text = json_text(value) if isinstance(value, str) else str(int(value))
        parts.append(f"{json_text(key)}: {text}")
    return "{ " + ", ".join(parts) + " }"


def named_value_ref(name: str) -> str:
    """``{{name}}``: how a policy refers to a named value."""
    return "{{" + checked_id(name, "named value") + "}}"


def ingress_named_value(cluster: str) -> str:
    """Named value holding the base URL of a cluster's Istio ingress."""
    return f"ai4ec-ingress-{checked_id(cluster, 'cluster')}"


def backend_id(cluster: str) -> str:
    """APIM backend entity of a cluster's Istio ingress (same name as its named value)."""
    return ingress_named_value(cluster)


def operation_name(endpoint_name: str, method: str) -> str:
    """APIM operation name of one endpoint method, e.g. ``detect-post``.

    Always suffixed with the method, so adding a method to an endpoint never renames
    the operations that already exist.
    """
    return f"{checked_id(endpoint_name, 'endpoint')}-{method.lower()}"


def retry_after_seconds(timeout_seconds: int) -> int:
    """Polling interval suggested to async callers: 1/30 of the work's timeout, 2-30 s."""
    return max(2, min(30, timeout_seconds // 30))


# -- plan records ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CorsPlan:
    """The ``cors`` policy of one API."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    allow_credentials: bool
    max_age_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtPlan:
    """The ``validate-jwt`` policy for Entra ID tokens."""

    openid_configs: tuple[str, ...]
    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    roles: tuple[str, ...]
    variable: str = JWT_VARIABLE


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationPlan:
    """One APIM operation and everything its policy needs.

    ``mode`` decides the template: sync operations proxy to the cluster ingress through
    the backend entity, async ones create a task in the task manager and answer at once.
    """

    api: str
    name: str
    display_name: str
    description: str
    method: str
    url_template: str
    mode: Mode
    #: Path on the cluster ingress (what Istio matches and the task stores).
    backend_path: str
    backend_id: str
    ingress_named_value: str
    timeout_seconds: int
    max_body_bytes: int
    #: Pipeline id for pipeline tasks (adds ``"Pipeline"`` to the upsert body).
    pipeline: str | None
    #: 202 Accepted, or 200 when the API keeps upstream's status codes.
    accepted_status: int
    retry_after_seconds: int
    location_prefix: str
    #: The answers the fragments build (:data:`ERROR_ANSWERS`), for the local gateway.
    too_large_body: str
    bad_json_body: str
    create_failed_body: str
    #: What the operation policy carries of them: :func:`message_prefix` of its label.
    message_prefix: str
    create_failed_retry_after: int
    policy_path: str | None

    @property
    def is_async(self) -> bool:
        """Whether the operation creates a task instead of proxying."""
        return self.mode is Mode.ASYNC

    @property
    def ingress_ref(self) -> str:
        """``{{ai4ec-ingress-<cluster>}}``: the ingress base URL, filled in by APIM."""
        return named_value_ref(self.ingress_named_value)

    @property
    def accepted_reason(self) -> str:
        """Reason phrase of the task-created answer."""
        return "Accepted" if self.accepted_status == 202 else "OK"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiPlan:
    """One APIM API: a platform API version, a pipeline, or the task-status API."""

    name: str
    kind: str
    path: str
    display_name: str
    description: str
    subscription_required: bool
    cors: CorsPlan | None
    jwt: JwtPlan | None
    operations: tuple[OperationPlan, ...]
    #: Set when operations come from an OpenAPI document; routing then lives in the
    #: API policy, which dispatches on the operation's URL template and method.
    openapi: OpenApiImport | None
    not_routed_body: str
    policy_path: str
    json_path: str
    #: Calls without a subscription key have no product context, so the product's
    #: limits cannot count them: the API itself limits them, per token subject (or per
    #: client address without Entra ID), with the strictest limits of its products.
    keyless_rate_limit: Limit | None = None
    keyless_quota: Limit | None = None
    #: Policy expression naming one keyless caller: the token's subject, else the address.
    keyless_counter_key: str = ""

    @property
    def proxies(self) -> bool:
        """Whether any operation forwards to the cluster (its answers pass through)."""
        return any(not op.is_async for op in self.operations)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusPlan:
    """The shared ``GET /task/{taskId}`` API (see docs/apim.md for the rules)."""

    api: ApiPlan
    #: 204 for unknown ids (upstream) instead of 404: platform-wide, see docs/apim.md.
    upstream_status_codes: bool
    operation_policy_path: str
    unavailable_body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductPlan:
    """An APIM product: its settings, limits and member APIs."""

    name: str
    display_name: str
    description: str
    subscription_required: bool
    approval_required: bool
    subscriptions_limit: int | None
    published: bool
    rate_limit: Limit | None
    quota: Limit | None
    #: ``rate-limit-by-key``/``quota-by-key`` keyed on the subscription, or the
    #: per-subscription ``rate-limit``/``quota`` on tiers without the by-key forms.
    by_key: bool
    apis: tuple[str, ...]
    policy_path: str
    #: Developer-portal groups linked to the product (none on Consumption: no portal).
    groups: tuple[str, ...] = ()
    #: ``products[].entraId``: callers of the product also present this token.
    jwt: JwtPlan | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterBackend:
    """The APIM backend entity and named value of one cluster ingress."""

    cluster: str
    backend_id: str
    named_value: str
    protocol: str
    default_url: str
    #: The gateway asks for the gateway client certificate (mutual TLS): the backend
    #: presents API Management's certificate of that name.
    client_certificate: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FragmentPlan:
    """One policy fragment ai4ec owns, and the policies that include it."""

    id: str
    #: ``ai4ec: ...``: the ownership marker ``apply --prune`` reads, and what it does.
    description: str
    #: Template of the fragment's policies (``templates/apim-policies/``).
    template: str
    path: str
    #: Policy files with an ``include-fragment`` of it (sorted).
    included_by: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApimPlan:
    """Everything ai4ec creates in one API Management service."""

    service: str
    source: str
    by_key: bool
    functions_url: str
    key_vault_uri: str
    backends: tuple[ClusterBackend, ...]
    apis: tuple[ApiPlan, ...]
    status: StatusPlan | None
    products: tuple[ProductPlan, ...]
    global_policy_path: str
    #: The fragments the policies include, by id order; empty when the tier cannot
    #: include fragments (:data:`INLINE_POLICY_SKUS`): the policies then inline them.
    fragments: tuple[FragmentPlan, ...] = ()

    def fragment(self, fragment_id: str) -> FragmentPlan | None:
        """The fragment ``fragment_id`` when the policies include it, else None (inline)."""
        return next((f for f in self.fragments if f.id == fragment_id), None)


# -- building ----------------------------------------------------------------------------


def _cors(cors: Cors | None, json_path: str) -> CorsPlan | None:
    if cors is None:
        return None
    where = f"{json_path}.cors"
    for origin in cors.allowed_origins:
        checked_literal(origin, "CORS origin", where)
    for header in cors.allowed_headers:
        checked_header(header, "CORS header", where)
    if cors.allow_credentials and "*" in cors.allowed_origins:
        raise fail(
            "E-APIM-CORS",
            "CORS cannot allow credentials for any origin ('*')",
            where,
            "list the origins, or set allowCredentials: false",
        )
    return CorsPlan(
        origins=cors.allowed_origins,
        methods=cors.allowed_methods,
        headers=cors.allowed_headers,
        # Async answers carry these; browsers hide them unless exposed.
        expose_headers=("Location", "Retry-After"),
        allow_credentials=cors.allow_credentials,
        max_age_seconds=cors.max_age_seconds,
    )


def _jwt(entras: list[EntraAuth], roles: bool, json_path: str) -> JwtPlan | None:
    if not entras:
        return None
    tenants = sorted({e.tenant_id for e in entras})
    for tenant in tenants:
        checked_literal(tenant, "Entra tenant", json_path)
    audiences = sorted({a for e in entras for a in e.audiences})
    required = sorted({r for e in entras for r in e.required_roles}) if roles else []
    for text in (*audiences, *required):
        checked_literal(text, "Entra audience or role", f"{json_path}.auth.entraId")
    return JwtPlan(
        openid_configs=tuple(
            f"https://login.microsoftonline.com/{t}/v2.0/.well-known/openid-configuration"
            for t in tenants
        ),
        # v2 tokens carry the first issuer, v1 tokens (accessTokenAcceptedVersion 1) the second.
        issuers=tuple(
            i
            for t in tenants
            for i in (
                f"https://login.microsoftonline.com/{t}/v2.0",
                f"https://sts.windows.net/{t}/",
            )
        ),
        audiences=tuple(audiences),
        roles=tuple(required),
    )


#: The answers the fragments give themselves, by body field: error code and the message
#: after ``"<label>: "`` (the API's or pipeline's display name). ``{limit}`` is the
#: operation's byte limit, which the body also carries as ``limitBytes``. The operation
#: policy sets only the label (:func:`message_prefix`) and the limit; the fragments build
#: the JSON (:func:`error_body_code`) and the local gateway the same text (:func:`error_body`).
ERROR_ANSWERS: dict[str, tuple[str, str]] = {
    "too_large_body": ("payload_too_large", "request bodies are limited to {limit} bytes"),
    "bad_json_body": ("bad_request", "the request body must be a JSON object or array"),
    "create_failed_body": (
        "task_create_failed",
        "the task manager did not create the task; retry with the same Idempotency-Key to "
        "avoid a duplicate",
    ),
}
#: Variable holding :func:`message_prefix` for the fragments.
MESSAGE_PREFIX_VARIABLE = "ai4ec-message-prefix"
#: Variable holding the operation's byte limit (a long) for the size-check fragment.
MAX_BODY_VARIABLE = "ai4ec-max-body-bytes"
_LIMIT = "LIMIT"


def error_body(kind: str, label: str, limit: int) -> str:
    """The JSON answer ``kind`` of :data:`ERROR_ANSWERS` for an operation, as callers get it."""
    code, message = ERROR_ANSWERS[kind]
    fields: list[tuple[str, str | int]] = [
        ("error", code),
        ("message", f"{label}: {message.format(limit=limit)}"),
    ]
    if "{limit}" in message:
        fields.append(("limitBytes", limit))
    return json_body(fields)


def message_prefix(label: str) -> str:
    """``"<label>: `` as JSON text: an opened string literal the fragments complete.

    Escaped for JSON (braces too, see :func:`json_text`) once, here; it starts with a quote,
    so as a ``set-variable`` value it is never read as a policy expression.
    """
    return json_text(f"{label}: ")[:-1]


def cs_string(text: str) -> str:
    """``text`` as a C# string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def error_body_code(kind: str) -> str:
    """Policy expression building :func:`error_body` from the operation's variables.

    The fixed text is C# string literals; the label comes from
    :data:`MESSAGE_PREFIX_VARIABLE` (JSON already) and the limit from
    :data:`MAX_BODY_VARIABLE`. Shaped like :func:`json_body`, which a test compares.
    """
    code, message = ERROR_ANSWERS[kind]
    head = "{ " + json_text("error") + ": " + json_text(code) + ", " + json_text("message") + ": "
    tail = json_text(message.replace("{limit}", _LIMIT))[1:]
    if "{limit}" in message:
        tail += ", " + json_text("limitBytes") + ": " + _LIMIT
    tail += " }"
    limit = f'((long)context.Variables["{MAX_BODY_VARIABLE}"]).ToString()'
    parts = [cs_string(head), f'(string)context.Variables["{MESSAGE_PREFIX_VARIABLE}"]']
    for i, piece in enumerate(tail.split(_LIMIT)):
        if i:
            parts.append(limit)
        parts.append(cs_string(piece))
    return "@(" + " + ".join(parts) + ")"


def _error_bodies(display_name: str, max_body_bytes: int) -> dict[str, Any]:
    bodies: dict[str, Any] = {
        kind: error_body(kind, display_name, max_body_bytes) for kind in ERROR_ANSWERS
    }
    bodies["message_prefix"] = message_prefix(display_name)
    return bodies


def _api_operations(platform: Platform, api: Api, routed_by_api: bool) -> list[OperationPlan]:
    api_name = checked_id(api.id, "API id", api.json_path)
    cluster = platform.cluster(api.cluster)
    ops = []
    for ep in api.endpoints:
        checked_path(ep.path, "endpoint path", ep.json_path)
        checked_path(ep.backend_path, "backend path", ep.json_path)
        if routed_by_api:
            # The API policy compares the imported operation's URL template in C#.
            checked_neutral(ep.path, "endpoint path", ep.json_path)
        for method in ep.methods:
            name = operation_name(ep.name, method)
            ops.append(
                OperationPlan(
                    api=api_name,
                    name=name,
                    display_name=f"{method} {ep.path}",
                    description=ep.description,
                    method=method,
                    url_template=ep.path,
                    mode=ep.mode,
                    backend_path=ep.backend_path,
                    backend_id=backend_id(cluster.name),
                    ingress_named_value=ingress_named_value(cluster.name),
                    timeout_seconds=ep.timeout_seconds,
                    max_body_bytes=ep.max_body_bytes,
                    pipeline=None,
                    accepted_status=200 if api.upstream_status_codes else 202,
                    retry_after_seconds=retry_after_seconds(ep.timeout_seconds),
                    location_prefix=f"/{STATUS_API_PATH}/task/",
                    create_failed_retry_after=CREATE_FAILED_RETRY_AFTER,
                    policy_path=None if routed_by_api else f"apim/policies/{api_name}/{name}.xml",
                    **_error_bodies(api.display_name, ep.max_body_bytes),
                )
            )
    return ops


def _api_plan(platform: Platform, api: Api, source_dir: str) -> ApiPlan:
    name = checked_id(api.id, "API id", api.json_path)
    operations = tuple(_api_operations(platform, api, api.openapi is not None))
    openapi = openapi_import(api, source_dir)
    return ApiPlan(
        name=name,
        kind="api",
        path=checked_path(api.base_path, "base path", api.json_path).lstrip("/"),
        display_name=api.display_name,
        description=api.description,
        subscription_required=api.auth.subscription_key,
        cors=_cors(api.cors, api.json_path),
        jwt=_jwt([api.auth.entra_id] if api.auth.entra_id else [], True, api.json_path),
        operations=operations,
        openapi=openapi,
        not_routed_body=json_body(
            [
                ("error", "not_found"),
                ("message", f"{api.display_name}: this operation has no endpoint in platform.yaml"),
            ]
        ),
        policy_path=f"apim/policies/{name}/api.xml",
        json_path=api.json_path,
    )


def _pipeline_timeout(platform: Platform, pipeline: Pipeline) -> int:
    total = 0
    for step in pipeline.steps:
        api = platform.api(step.api)
        total += next(
            e.timeout_seconds for e in api.endpoints if e.backend_path == step.endpoint_path
        )
    return total


def _pipeline_plan(platform: Platform, pipeline: Pipeline) -> ApiPlan:
    name = checked_id(pipeline.id, "pipeline id", pipeline.json_path)
    first = pipeline.steps[0]
    cluster = platform.cluster(platform.api(first.api).cluster)
    timeout = _pipeline_timeout(platform, pipeline)
    op = OperationPlan(
        api=name,
        name=PIPELINE_OPERATION_NAME,
        display_name=f"POST {pipeline.path}",
        description=pipeline.description,
        method="POST",
        url_template="/",
        mode=Mode.ASYNC,
        backend_path=checked_path(first.endpoint_path, "pipeline step", pipeline.json_path),
        backend_id=backend_id(cluster.name),
        ingress_named_value=ingress_named_value(cluster.name),
        timeout_seconds=timeout,
        max_body_bytes=pipeline.max_body_bytes,
        pipeline=name,
        accepted_status=200 if pipeline.upstream_status_codes else 202,
        retry_after_seconds=retry_after_seconds(timeout),
        location_prefix=f"/{STATUS_API_PATH}/task/",
        create_failed_retry_after=CREATE_FAILED_RETRY_AFTER,
        policy_path=f"apim/policies/{name}/{PIPELINE_OPERATION_NAME}.xml",
        **_error_bodies(pipeline.display_name, pipeline.max_body_bytes),
    )
    return ApiPlan(
        name=name,
        kind="pipeline",
        path=checked_path(pipeline.path, "pipeline path", pipeline.json_path).lstrip("/"),
        display_name=pipeline.display_name,
        description=pipeline.description,
        subscription_required=pipeline.auth.subscription_key,
        cors=_cors(pipeline.cors, pipeline.json_path),
        jwt=_jwt(
            [pipeline.auth.entra_id] if pipeline.auth.entra_id else [], True, pipeline.json_path
        ),
        operations=(op,),
        openapi=None,
        not_routed_body=json_body([("error", "not_found")]),
        policy_path=f"apim/policies/{name}/api.xml",
        json_path=pipeline.json_path,
    )


def _status_plan(platform: Platform) -> StatusPlan | None:
    """The shared task-status API, or None when nothing on the platform is async.

    The API is shared by every async API and pipeline, so its settings are the
    platform-wide combination of theirs (docs/apim.md, "Task status"):

    * unknown ids answer 204 if any async member keeps upstream status codes;
    * a subscription key is required if any async member requires one;
    * a JWT is required only if every async member requires one (any of their tenants
      and audiences; roles are per API and not checked when polling).
    """
    members: list[tuple[bool, bool, EntraAuth | None]] = [
        (a.upstream_status_codes, a.auth.subscription_key, a.auth.entra_id)
        for a in platform.apis
        if a.has_async
    ]
    members += [
        (p.upstream_status_codes, p.auth.subscription_key, p.auth.entra_id)
        for p in platform.pipelines
    ]
    if not members:
        return None
    upstream = any(m[0] for m in members)
    entras = [m[2] for m in members if m[2] is not None]
    jwt = _jwt(entras, False, "$") if len(entras) == len(members) else None
    api = ApiPlan(
        name=STATUS_API_NAME,
        kind="status",
        path=STATUS_API_PATH,
        display_name="Task status",
        description="Status of asynchronous tasks created by the platform's async APIs and "
        "pipelines. Poll the Location returned when the task was created.",
        subscription_required=any(m[1] for m in members),
        cors=None,
        jwt=jwt,
        operations=(),
        openapi=None,
        not_routed_body=json_body([("error", "not_found")]),
        policy_path=f"apim/policies/{STATUS_API_NAME}/api.xml",
        json_path="$",
    )
    return StatusPlan(
        api=api,
        upstream_status_codes=upstream,
        operation_policy_path=f"apim/policies/{STATUS_API_NAME}/{STATUS_OPERATION_NAME}.xml",
        unavailable_body=json_body(
            [
                ("error", "task_status_unavailable"),
                ("message", "the task manager did not answer; retry shortly"),
            ]
        ),
    )


def _limit(limit: Limit | None, what: str, json_path: str, rate: bool) -> Limit | None:
    if limit is None:
        return None
    if rate and limit.period_seconds > MAX_RATE_LIMIT_PERIOD:
        raise fail(
            "E-APIM-RATE-PERIOD",
            f"{what} period is {limit.period_seconds}s; API Management rate limits renew "
            f"within at most {MAX_RATE_LIMIT_PERIOD}s",
            json_path,
            "use a period of 5m or less, and a quota for longer periods",
        )
    return limit


def _product_plan(
    product: Product,
    by_key: bool,
    status: StatusPlan | None,
    async_members: set[str],
    portal: bool = True,
) -> ProductPlan:
    name = checked_id(product.name, "product", product.json_path)
    members = [*product.apis, *product.pipelines]
    if status is not None and async_members.intersection(members):
        # Subscribers must be able to poll the tasks their product lets them create.
        members.append(STATUS_API_NAME)
    return ProductPlan(
        name=name,
        display_name=product.display_name,
        description=product.description,
        subscription_required=product.subscription_required,
        approval_required=product.approval_required,
        subscriptions_limit=product.subscriptions_limit,
        published=product.published,
        rate_limit=_limit(
            product.rate_limit,
            f"product {name!r} rate limit",
            f"{product.json_path}.rateLimit",
            True,
        ),
        quota=_limit(product.quota, f"product {name!r} quota", f"{product.json_path}.quota", False),
        by_key=by_key,
        apis=tuple(sorted(members)),
        policy_path=f"apim/products/{name}.xml",
        groups=product.groups if portal else (),
        jwt=_jwt([product.entra_id] if product.entra_id else [], True, product.json_path),
    )


def strictest(limits: list[Limit]) -> Limit | None:
    """The limit allowing the fewest calls per second (the longer period on a tie)."""
    if not limits:
        return None
    return min(limits, key=lambda x: (x.calls / x.period_seconds, -x.period_seconds))


def _keyless(api: ApiPlan, products: tuple[Product, ...], by_key: bool) -> ApiPlan:
    """``api`` with the limits of its keyless callers (see :attr:`ApiPlan.keyless_rate_limit`)."""
    if api.subscription_required or not by_key or api.kind not in ("api", "pipeline"):
        return api
    mine = [p for p in products if api.name in (*p.apis, *p.pipelines)]
    if api.jwt is not None:
        key = f'@("sub:" + ((Jwt)context.Variables["{api.jwt.variable}"]).Subject)'
    else:
        key = '@("ip:" + context.Request.IpAddress)'
    return dataclasses.replace(
        api,
        keyless_counter_key=key,
        keyless_rate_limit=strictest([p.rate_limit for p in mine if p.rate_limit]),
        keyless_quota=strictest([p.quota for p in mine if p.quota]),
    )


def _backend(platform: Platform, name: str) -> ClusterBackend:
    cluster = platform.cluster(name)
    ingress = cluster.ingress
    host = next((h for h in ingress.hosts if h != "*" and not h.startswith("*.")), None)
    # Without a concrete host the address is only known after deployment; until the
    # ingress parameter is set, '.invalid' (RFC 2606) makes calls fail loudly.
    default = f"{ingress.protocol}://{host or f'{name}.ingress.invalid'}"
    return ClusterBackend(
        cluster=name,
        backend_id=backend_id(name),
        named_value=ingress_named_value(name),
        protocol=ingress.protocol,
        default_url=default,
        client_certificate=ingress.protocol == "https" and ingress.client_certificate,
    )


def cluster_backends(platform: Platform) -> tuple[ClusterBackend, ...]:
    """One ingress backend (and named value) per cluster, sorted by cluster name."""
    return tuple(_backend(platform, c) for c in sorted(c.name for c in platform.clusters))


def uses_fragments(sku: str) -> bool:
    """Whether policies of an API Management tier include fragments (else inline them)."""
    return sku not in INLINE_POLICY_SKUS


#: Fragment id -> (template of its policies, description). The description starts with
#: :data:`OWNER_DESCRIPTION`.
FRAGMENT_SPECS: dict[str, tuple[str, str]] = {
    SIZE_CHECK_FRAGMENT: (
        "_size-check.xml.j2",
        "ai4ec: answers 413 when the request body is over the operation's limit "
        "(variables ai4ec-max-body-bytes, ai4ec-message-prefix)",
    ),
    PROXY_FRAGMENT: (
        "_proxy-headers.xml.j2",
        "ai4ec: removes the subscription key, taskId and forwarding headers before a "
        "sync call reaches the cluster ingress",
    ),
    CREATE_TASK_FRAGMENT: (
        "_create-task.xml.j2",
        "ai4ec: creates the task in the task manager (idempotent retries); answers "
        "400, 422 or 503, else the task-created answer with its Location",
    ),
}


def operation_fragments(op: OperationPlan) -> tuple[str, ...]:
    """The fragments an operation's steps consist of, in the order they run."""
    if op.is_async:
        return (SIZE_CHECK_FRAGMENT, CREATE_TASK_FRAGMENT)
    return (SIZE_CHECK_FRAGMENT, PROXY_FRAGMENT)


def _fragments(apis: list[ApiPlan]) -> tuple[FragmentPlan, ...]:
    users: dict[str, set[str]] = {}
    for api in apis:
        for op in api.operations:
            # OpenAPI-imported operations run inside the API policy.
            path = op.policy_path or api.policy_path
            for fragment_id in operation_fragments(op):
                users.setdefault(fragment_id, set()).add(path)
    return tuple(
        FragmentPlan(
            id=fragment_id,
            description=FRAGMENT_SPECS[fragment_id][1],
            template=FRAGMENT_SPECS[fragment_id][0],
            path=f"apim/fragments/{fragment_id}.xml",
            included_by=tuple(sorted(users[fragment_id])),
        )
        for fragment_id in sorted(users)
    )


def build_plan(platform: Platform, source_dir: str, source_name: str) -> ApimPlan:
    """The APIM plan of one environment.

    Args:
        platform: the validated model.
        source_dir: directory of platform.yaml (OpenAPI files are relative to it).
        source_name: platform.yaml as the user named it, for "generated from" headers.

    Raises:
        RenderError: a value cannot be expressed safely in API Management (see the
            module docstring), or an OpenAPI document does not match the endpoints.
    """
    az = platform.azure
    by_key = az.api_management.sku not in NO_BY_KEY_SKUS
    apis = [_api_plan(platform, a, source_dir) for a in platform.apis]
    apis += [_pipeline_plan(platform, p) for p in platform.pipelines]
    apis = [_keyless(a, platform.products, by_key) for a in apis]
    status = _status_plan(platform)
    async_members = {a.id for a in platform.apis if a.has_async} | {
        p.id for p in platform.pipelines
    }
    portal = az.api_management.sku != "Consumption"  # no developer portal, no groups
    products = tuple(
        _product_plan(p, by_key, status, async_members, portal) for p in platform.products
    )
    return ApimPlan(
        service=az.api_management.name,
        source=source_name,
        by_key=by_key,
        functions_url=f"https://{az.functions.app_name}.azurewebsites.net",
        key_vault_uri=f"https://{az.key_vault.name}.vault.azure.net",
        backends=cluster_backends(platform),
        apis=tuple(sorted(apis, key=lambda a: a.name)),
        status=status,
        products=products,
        global_policy_path="apim/policies/global.xml",
        fragments=_fragments(apis) if uses_fragments(az.api_management.sku) else (),
    )
