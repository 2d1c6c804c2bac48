"""The local gateway: the platform's public routes answered as API Management answers them.

It reads the same :class:`~ai4ec.render.apim.plan.ApimPlan` that renders the APIM
policies, so paths, products, limits, body sizes, status codes, bodies and headers come
from one place; this module only carries out what the policy templates say, in the same
order as APIM's scopes: subscription key (APIM itself), product (``rate-limit-by-key``,
``quota-by-key``), API (``cors``, ``validate-jwt``), operation (size check, then the async
task creation or the sync proxy).

Where the local gateway cannot be APIM it says so here:

* Entra ID tokens are checked against a local issuer (:class:`LocalIssuer`) whose token
  ``ai4ec dev`` prints, not against Entra's OpenID configuration (offline).
* Rate limits use a sliding window and quotas a fixed one from the first call; APIM's
  counters are distributed and approximate, so both answer 429/403 at the same count.
* A CORS preflight is answered before the subscription check (a browser never sends a
  key on a preflight).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ..model.types import Limit
from ..render.apim.plan import (
    CREATE_FAILED_RETRY_AFTER,
    STATUS_URL_TEMPLATE,
    SUBSCRIPTION_KEY_HEADER,
    SUBSCRIPTION_KEY_QUERY,
    TASK_MANAGER_RETRIES,
    TASK_MANAGER_TIMEOUT_SECONDS,
    ApimPlan,
    ApiPlan,
    CorsPlan,
    JwtPlan,
    OperationPlan,
    ProductPlan,
)

log = logging.getLogger("ai4ec.dev.gateway")

#: APIM's own answers (not from the policies): the gateway's built-in error bodies.
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
INVALID_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an "
    "active subscription."
)
NOT_FOUND = "Resource not found"
#: ``validate-jwt``'s failed-validation-error-message in templates/apim-policies.
JWT_FAILED = "Unauthorized: a valid Entra ID access token is required"
#: Request headers the sync proxy removes (``_sync-inbound.xml.j2``).
STRIPPED_REQUEST_HEADERS = (
    SUBSCRIPTION_KEY_HEADER,
    "taskId",
    "Forwarded",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Proto",
)
#: Response headers the API policy removes from proxied answers (``api.xml.j2``).
STRIPPED_RESPONSE_HEADERS = ("x-envoy-upstream-service-time", "x-envoy-decorator-operation")
#: Hop-by-hop headers a proxy never forwards (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def catch_all_app(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    on_startup: Callable[[web.Application], Awaitable[None]],
    on_cleanup: Callable[[web.Application], Awaitable[None]],
) -> web.Application:
    """An app sending every method and path to ``handler`` (the dev servers route themselves)."""
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", handler)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def apim_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """APIM's built-in error shape: ``{"statusCode": N, "message": "..."}``."""
    return web.json_response(
        {"statusCode": status, "message": message}, status=status, headers=dict(headers or {})
    )


def _policy_body(status: int, body: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A ``return-response`` of a policy: its JSON body exactly as the plan wrote it."""
    return web.Response(
        status=status,
        body=body.encode("utf-8"),
        content_type="application/json",
        headers=dict(headers or {}),
    )


# -- Entra ID stand-in ---------------------------------------------------------------------


@dataclass
class LocalIssuer:
    """Signs and checks the tokens APIs with ``auth.entraId`` accept under ``ai4ec dev``.

    An RSA key made at start (RS256, as Entra signs): a token from a previous run, or
    one signed with anything else, is refused like a forged one.
    """

    issuer: str = "https://ai4ec.local/dev-issuer"
    _private: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(
        self,
        audiences: tuple[str, ...],
        roles: tuple[str, ...] = (),
        subject: str = "dev-user",
        lifetime_seconds: int = 12 * 3600,
    ) -> str:
        """A signed access token for ``audiences`` carrying ``roles``."""
        import jwt

        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": list(audiences) if len(audiences) != 1 else audiences[0],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "roles": list(roles),
        }
        return str(jwt.encode(claims, self._private, algorithm="RS256"))

    def check(self, token: str, plan: JwtPlan) -> dict[str, Any] | None:
        """The claims when ``token`` passes ``plan`` (audience, expiry, roles), else None."""
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._private.public_key(),
                algorithms=["RS256"],
                audience=list(plan.audiences),
                issuer=self.issuer,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return None
        if plan.roles and not set(plan.roles) & set(claims.get("roles") or ()):
            return None
        return claims


# -- product limits --------------------------------------------------------------------------


@dataclass
class Counters:
    """``rate-limit-by-key`` (sliding window) and ``quota-by-key`` (fixed window) counters."""

    clock: Callable[[], float] = time.monotonic
    _rate: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _quota: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def rate_exceeded(self, product: ProductPlan, key: str) -> int | None:
        """Seconds to wait when this call goes over the product's rate limit, else None."""
        return self.rate_over(product.name, product.rate_limit, key)

    def quota_exceeded(self, product: ProductPlan, key: str) -> int | None:
        """Seconds until the quota renews when this call goes over it, else None."""
        return self.quota_over(product.name, product.quota, key)

    def rate_over(self, scope: str, limit: Limit | None, key: str) -> int | None:
        """``rate-limit-by-key`` of ``scope`` (a product, or an API's keyless callers)."""
        if limit is None:
            return None
        now = self.clock()
        calls = self._rate.setdefault((scope, key), deque())
        while calls and calls[0] <= now - limit.period_seconds:
            calls.popleft()
        if len(calls) >= limit.calls:
            return max(1, int(calls[0] + limit.period_seconds - now + 0.999))
        calls.append(now)
        return None

    def quota_over(self, scope: str, quota: Limit | None, key: str) -> int | None:
        """``quota-by-key`` of ``scope``: seconds until it renews when over, else None."""
        if quota is None:
            return None
        now = self.clock()
        start, used = self._quota.get((scope, key), (now, 0))
        if now >= start + quota.period_seconds:
            start, used = now, 0
        if used >= quota.calls:
            return max(1, int(start + quota.period_seconds - now + 0.999))
        self._quota[(scope, key)] = (start, used + 1)
        return None


def _hms(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


# -- routing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One public operation: ``METHOD /<api path><url template>``."""

    api: ApiPlan
    op: OperationPlan | None  # None: the shared task-status operation
    method: str
    pattern: re.Pattern[str]


def _template_regex(api_path: str, template: str) -> re.Pattern[str]:
    """``/detect/{id}`` under ``v1/camera-trap`` as a regex with named groups."""
    out = []
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{") and part.endswith("}"):
            out.append(f"(?P<{re.sub(r'[^A-Za-z0-9_]', '_', part[1:-1])}>[^/]+)")
        else:
            out.append(re.escape(part))
    prefix = "/" + api_path.strip("/") if api_path.strip("/") else ""
    return re.compile("^" + re.escape(prefix) + "".join(out) + "/?$")


def routes(plan: ApimPlan) -> list[Route]:
    """Every public operation of the plan, longest API path first (APIM matches so)."""
    found: list[Route] = []
    for api in plan.apis:
        found.extend(
            Route(api, op, op.method, _template_regex(api.path, op.url_template))
            for op in api.operations
        )
    if plan.status is not None:
        status_api = plan.status.api
        found.append(
            Route(status_api, None, "GET", _template_regex(status_api.path, STATUS_URL_TEMPLATE))
        )
    return sorted(found, key=lambda r: -len(r.api.path))


# -- the gateway -------------------------------------------------------------------------------


@dataclass
class Gateway:
    """The aiohttp application that plays API Management for one environment's plan.

    Args:
        plan: the APIM plan of the environment (the one that renders the policies).
        functions_url: the local task manager, ``http://127.0.0.1:PORT``.
        functions_key: the key API Management holds for the task manager.
        ingress_url: the local cluster ingress, ``http://127.0.0.1:PORT``.
        keys: subscription key of each product (``ai4ec dev`` generates them).
        issuer: the local Entra ID stand-in.
    """

    plan: ApimPlan
    functions_url: str
    functions_key: str
    ingress_url: str
    keys: dict[str, str]
    issuer: LocalIssuer
    #: Backend path -> API id of the async operations nothing serves in this run: their
    #: tasks could never run, so they answer 503 at once instead of a 202 that never ends.
    no_backend: dict[str, str] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    _routes: list[Route] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self._routes = routes(self.plan)

    def application(self) -> web.Application:
        """The app to run; its client session opens and closes with it."""
        return catch_all_app(self._handle, self._open, self._close)

    async def _open(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    # -- the request path ----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        response = await self._answer(request)
        log.info(
            "%s %s -> %d (%.0f ms)",
            request.method,
            request.rel_url.path,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _match(self, request: web.Request) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path parameters, whether some route has this path with another method)."""
        path = request.rel_url.path
        other_method = False
        for route in self._routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == request.method or (
                request.method == "HEAD" and route.method == "GET"
            ):
                return route, found.groupdict(), False
            other_method = True
        return None, {}, other_method

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        route, params, other_method = self._match(request)
        api = route.api if route else self._api_by_path(request.rel_url.path)
        if api is not None and api.cors is not None and _is_preflight(request):
            return _preflight(request, api.cors)
        if route is None:
            if api is not None and api.openapi is not None:
                return _policy_body(404, api.not_routed_body)
            return apim_error(404, NOT_FOUND)
        response = await self._through_scopes(request, route, params)
        if api is not None and api.cors is not None:
            _cors_headers(request, api.cors, response)
        return response

    def _api_by_path(self, path: str) -> ApiPlan | None:
        for route in self._routes:
            prefix = "/" + route.api.path.strip("/")
            if path == prefix or path.startswith(prefix + "/"):
                return route.api
        return None

    async def _through_scopes(
        self, request: web.Request, route: Route, params: dict[str, str]
    ) -> web.StreamResponse:
        api = route.api
        subscription: str | None = None
        if api.subscription_required:
            key = request.headers.get(SUBSCRIPTION_KEY_HEADER) or request.rel_url.query.get(
                SUBSCRIPTION_KEY_QUERY
            )
            if not key:
                return apim_error(401, MISSING_KEY)
            products = [
                p for p in self.plan.products if api.name in p.apis and self.keys.get(p.name) == key
            ]
            if not products:
                return apim_error(401, INVALID_KEY)
            subscription = f"dev-subscription-{products[0].name}"
            if products[0].jwt is not None and self._validate_jwt(request, products[0].jwt) is None:
                return apim_error(401, JWT_FAILED)  # the product policy's validate-jwt
            limited = self._product_scope(products[0], subscription)
            if limited is not None:
                return limited
        claims: dict[str, Any] | None = None
        if api.jwt is not None:
            claims = self._validate_jwt(request, api.jwt)
            if claims is None:
                return apim_error(401, JWT_FAILED)
        if subscription is None:
            # The API policy's limits of keyless callers, per token subject or address.
            caller = f"sub:{claims.get('sub')}" if claims else f"ip:{request.remote}"
            limited = self._limits(
                f"keyless:{api.name}", api.keyless_rate_limit, api.keyless_quota, caller
            )
            if limited is not None:
                return limited
        if route.op is None:
            return await self._task_status(params.get("taskId", ""))
        op = route.op
        body = await _read_capped(request, op.max_body_bytes)
        if body is None:
            return _policy_body(413, op.too_large_body)
        if op.is_async and op.backend_path in self.no_backend:
            api_id = self.no_backend[op.backend_path]
            return apim_error(
                503,
                f"API {api_id} has no backend in ai4ec dev: start it with --backend "
                f"{api_id}=URL, or run with --demo",
            )
        if op.is_async:
            caller = (
                f"subscription:{subscription}"
                if subscription
                else (
                    f"jwt:{claims.get('iss')}|{claims.get('sub')}"
                    if claims
                    else f"ip:{request.remote}"
                )
            )
            return await self._create_task(request, op, body, caller)
        return await self._proxy(request, op, body)

    def _product_scope(self, product: ProductPlan, subscription: str) -> web.Response | None:
        return self._limits(product.name, product.rate_limit, product.quota, subscription)

    def _limits(
        self, scope: str, rate: Limit | None, quota: Limit | None, key: str
    ) -> web.Response | None:
        wait = self.counters.rate_over(scope, rate, key)
        if wait is not None:
            return apim_error(
                429,
                f"Rate limit is exceeded. Try again in {wait} seconds.",
                {"Retry-After": str(wait)},
            )
        renews = self.counters.quota_over(scope, quota, key)
        if renews is not None:
            return apim_error(
                403,
                f"Out of call volume quota. Quota will be replenished in {_hms(renews)}.",
            )
        return None

    def _validate_jwt(self, request: web.Request, plan: JwtPlan) -> dict[str, Any] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token.strip():
            return None
        return self.issuer.check(token.strip(), plan)

    # -- operations ------------------------------------------------------------------------

    def _task_manager_headers(self) -> dict[str, str]:
        return {"x-functions-key": self.functions_key, "X-Ai4ec-Answers": "strict"}

    async def _send(
        self, method: str, url: str, **kwargs: Any
    ) -> tuple[int, bytes, Mapping[str, str]] | None:
        """``send-request`` inside ``retry``: retried on no answer or 5xx, as the policies do."""
        assert self._session is not None
        result: tuple[int, bytes, Mapping[str, str]] | None = None
        for _attempt in range(1 + TASK_MANAGER_RETRIES):
            try:
                async with self._session.request(
                    method,
                    url,
                    timeout=aiohttp.ClientTimeout(total=TASK_MANAGER_TIMEOUT_SECONDS),
                    **kwargs,
                ) as resp:
                    result = (resp.status, await resp.read(), dict(resp.headers))
            except (aiohttp.ClientError, TimeoutError):
                result = None
            if result is not None and result[0] < 500:
                return result
        return result

    async def _create_task(
        self, request: web.Request, op: OperationPlan, body: bytes, caller: str
    ) -> web.Response:
        text = _compact_json(body)
        if text is None:
            return _policy_body(400, op.bad_json_body)
        pairs = [(k, v) for k, v in _query_pairs(request) if k.lower() != SUBSCRIPTION_KEY_QUERY]
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
        endpoint = self.ingress_url + op.backend_path + (f"?{query}" if query else "")
        task: dict[str, Any] = {
            "Status": "created",
            "BackendStatus": "created",
            "Endpoint": endpoint,
            "Body": text,
            "PublishToGrid": True,
        }
        if op.pipeline:
            task["Pipeline"] = op.pipeline
        headers = {
            **self._task_manager_headers(),
            "Idempotency-Key": request.headers.get("Idempotency-Key") or f"apim-{uuid.uuid4()}",
            "X-Ai4ec-Caller": caller,
            "Content-Type": "application/json",
        }
        answer = await self._send(
            "POST",
            f"{self.functions_url}/api/CacheConnectorUpsert",
            data=json.dumps(task, separators=(",", ":")),
            headers=headers,
        )
        status = answer[0] if answer else 0
        if status == 422 and answer is not None:
            return _policy_body(422, answer[1].decode("utf-8", "replace"))
        task_id = ""
        if answer is not None and 200 <= status <= 299:
            try:
                task_id = str(json.loads(answer[1]).get("TaskId") or "")
            except (ValueError, AttributeError):
                task_id = ""
        if not task_id:
            return _policy_body(
                503, op.create_failed_body, {"Retry-After": str(op.create_failed_retry_after)}
            )
        assert answer is not None
        return _policy_body(
            op.accepted_status,
            answer[1].decode("utf-8", "replace"),
            {
                "Location": op.location_prefix + quote(task_id, safe=""),
                "Retry-After": str(op.retry_after_seconds),
            },
        )

    async def _task_status(self, task_id: str) -> web.Response:
        status = self.plan.status
        assert status is not None
        answer = await self._send(
            "GET",
            f"{self.functions_url}/api/CacheConnectorGet?taskId={quote(task_id, safe='')}",
            headers=self._task_manager_headers(),
        )
        code = answer[0] if answer else 0
        if code == 200 and answer is not None:
            return _policy_body(200, answer[1].decode("utf-8", "replace"))
        if code in (404, 204):
            if status.upstream_status_codes:
                return web.Response(status=204)
            return _policy_body(
                404,
                json.dumps(
                    {
                        "error": "not_found",
                        "message": "Unknown or expired TaskId",
                        "TaskId": task_id,
                    },
                    separators=(",", ":"),
                ),
            )
        return _policy_body(
            503, status.unavailable_body, {"Retry-After": str(CREATE_FAILED_RETRY_AFTER)}
        )

    async def _proxy(self, request: web.Request, op: OperationPlan, body: bytes) -> web.Response:
        assert self._session is not None
        stripped = {h.lower() for h in STRIPPED_REQUEST_HEADERS}
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in stripped and k.lower() not in HOP_BY_HOP
        }
        headers["X-Forwarded-For"] = request.remote or ""
        query = [(k, v) for k, v in _query_pairs(request) if k.lower() != SUBSCRIPTION_KEY_QUERY]
        url = self.ingress_url + op.backend_path
        try:
            async with self._session.request(
                request.method,
                url,
                params=query,
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=op.timeout_seconds),
            ) as resp:
                payload = await resp.read()
                out_headers = {
                    k: v
                    for k, v in resp.headers.items()
                    if k.lower() not in HOP_BY_HOP
                    and k.lower() not in {h.lower() for h in STRIPPED_RESPONSE_HEADERS}
                }
                return web.Response(status=resp.status, body=payload, headers=out_headers)
        except TimeoutError:
            return apim_error(504, "Gateway Timeout: the backend did not answer in time")
        except aiohttp.ClientError:
            return apim_error(502, "Bad Gateway: the backend could not be reached")


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` (declared or, if chunked, as read).

    Like the size-check policy: a declared Content-Length decides before anything is
    read, and a chunked body is never buffered beyond the limit.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _query_pairs(request: web.Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.rel_url.query.items()]


def _compact_json(body: bytes) -> str | None:
    """The body as compact JSON text when it is an object or array (the policy's rule)."""
    try:
        value = json.loads(body.decode("utf-8") if body else "")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, (dict, list)):
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def _origin_allowed(cors: CorsPlan, origin: str) -> bool:
    return "*" in cors.origins or origin in cors.origins


def _preflight(request: web.Request, cors: CorsPlan) -> web.Response:
    origin = request.headers.get("Origin", "")
    method = request.headers.get("Access-Control-Request-Method", "")
    if not _origin_allowed(cors, origin) or (
        "*" not in cors.methods and method not in cors.methods
    ):
        return web.Response(status=200)
    headers = {
        "Access-Control-Allow-Origin": "*"
        if "*" in cors.origins and not cors.allow_credentials
        else origin,
        "Access-Control-Allow-Methods": ", ".join(cors.methods),
        "Access-Control-Allow-Headers": ", ".join(cors.headers),
        "Access-Control-Max-Age": str(cors.max_age_seconds),
    }
    if cors.allow_credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return web.Response(status=200, headers=headers)


def _cors_headers(request: web.Request, cors: CorsPlan, response: web.StreamResponse) -> None:
    origin = request.headers.get("Origin")
    if not origin or not _origin_allowed(cors, origin):
        return
    response.headers["Access-Control-Allow-Origin"] = (
        "*" if "*" in cors.origins and not cors.allow_credentials else origin
    )
    if cors.allow_credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"
    if cors.expose_headers:
        response.headers["Access-Control-Expose-Headers"] = ", ".join(cors.expose_headers)
