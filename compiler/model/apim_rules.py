"""API Management's rules on user values, checked in validate (issue 12: valid means deployable).

API Management expands ``{{name}}`` as a named-value reference anywhere in a policy and
treats a value that starts with ``@(`` or ``@{`` as C# code, so a user-written audience,
origin or role containing either would smuggle a secret or code into the gateway; ids
and paths are spliced into policy expressions; CORS cannot allow credentials for any
origin; rate limits renew within 300 s; an OpenAPI document must hold every endpoint
platform.yaml routes. Each such value is refused here, at the field that holds it, with
E-APIM-ID, -PATH, -EXPRESSION, -LITERAL, -CORS, -RATE-PERIOD or -OPENAPI.

The predicates (``*_problem`` and :func:`parse_openapi`) are plain functions of values,
shared with the APIM renderer, which asserts them again before placing a value in a
policy: there a failure is an ai4ec bug (validate should have refused the input), not a
user error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ..load import JsonPath
from .context import ModelContext
from .defaults import seconds
from .refs import pipeline_index
from .types import Api, Endpoint, Pipeline, Product

#: ``rate-limit``/``rate-limit-by-key`` refuse renewal periods above 300 s.
MAX_RATE_LIMIT_PERIOD = 300

_ID = re.compile(r"^[a-z][-a-z0-9]*$")
#: Characters that mean the same in XML text, XML attributes and C# string literals.
_NEUTRAL = re.compile(r"^[A-Za-z0-9/._~!$()*+,;=:@%-]+$")
_HEADER = re.compile(r"^[A-Za-z0-9-]+$|^\*$")
_PATH_BAD = re.compile(r'[{}"\\\s<>]')
#: Characters XML 1.0 cannot carry at all, escaped or not: a policy holding one is refused.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class Problem(NamedTuple):
    """What a rule found: a stable code, a message naming the value, and a hint."""

    code: str
    message: str
    hint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenApiDocument:
    """An API's OpenAPI document as API Management imports it."""

    format: str
    value: str
    source: str


# -- predicates (shared with the renderer's assertions) ---------------------------------


def id_problem(value: str, what: str) -> Problem | None:
    """A lowercase id spliced into policy expressions (API, pipeline, product, endpoint)."""
    if _ID.match(value):
        return None
    return Problem("E-APIM-ID", f"{what} {value!r} is not a lowercase id")


def header_problem(value: str, what: str) -> Problem | None:
    """A header name (or ``*``) placed in a CORS policy."""
    if _HEADER.match(value):
        return None
    return Problem("E-APIM-LITERAL", f"{what} {value!r} is not a header name")


def path_problem(value: str, what: str) -> Problem | None:
    """A URL path used as a literal policy attribute and inside C# strings.

    Braces would be read as URL-template parameters or named values, quotes and
    backslashes would end a C# string literal, whitespace is never a valid path.
    """
    if value.startswith("/") and not _PATH_BAD.search(value):
        return None
    return Problem(
        "E-APIM-PATH",
        f"{what} {value!r} cannot be used in an API Management policy",
        "paths may not contain braces, quotes, backslashes, angle brackets or spaces",
    )


def neutral_problem(value: str, what: str) -> Problem | None:
    """A value spliced into C# code inside a policy expression, written once as fixed text."""
    if _NEUTRAL.match(value):
        return None
    return Problem(
        "E-APIM-EXPRESSION",
        f"{what} {value!r} cannot be used inside an API Management policy expression",
        "use only letters, digits and / . _ ~ ! $ ( ) * + , ; = : @ % -",
    )


def literal_problem(value: str, what: str) -> Problem | None:
    """User text placed verbatim in policy XML: no named-value reference, no expression.

    Nor a control character: XML 1.0 has no way to write one, so the policy would not
    parse (found by tests/test_property_build.py with a CORS origin the schema allows).
    """
    if _XML_BAD.search(value):
        return Problem(
            "E-APIM-LITERAL",
            f"{what} {value!r} holds a control character an API Management policy cannot carry",
            "remove the control character; policies are XML documents",
        )
    if "{{" not in value and "}}" not in value and not value.lstrip().startswith("@"):
        return None
    return Problem(
        "E-APIM-LITERAL",
        f"{what} {value!r} would be evaluated by API Management",
        "remove '{{', '}}' and a leading '@': API Management reads them as named "
        "values and policy expressions",
    )


def cors_problem(origins: Iterable[str], allow_credentials: bool) -> Problem | None:
    """Browsers refuse credentials with ``*``; API Management refuses the policy."""
    if not (allow_credentials and "*" in origins):
        return None
    return Problem(
        "E-APIM-CORS",
        "CORS cannot allow credentials for any origin ('*')",
        "list the origins, or set allowCredentials: false",
    )


def rate_period_problem(period_seconds: int, what: str) -> Problem | None:
    """API Management's rate limits renew within at most 300 s."""
    if period_seconds <= MAX_RATE_LIMIT_PERIOD:
        return None
    return Problem(
        "E-APIM-RATE-PERIOD",
        f"{what} period is {period_seconds}s; API Management rate limits renew "
        f"within at most {MAX_RATE_LIMIT_PERIOD}s",
        "use a period of 5m or less, and a quota for longer periods",
    )


def parse_openapi(
    path: Path, source: str, api_id: str, endpoints: Iterable[Endpoint]
) -> OpenApiDocument | Problem:
    """The OpenAPI document at ``path``, or why API Management cannot import it for the API.

    Unreadable, unparsable, not OpenAPI 3 / Swagger 2 JSON, or missing an endpoint of
    platform.yaml: each is E-APIM-OPENAPI.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem("E-APIM-OPENAPI", f"cannot read OpenAPI file {source}: {exc}")
    is_json = path.suffix.lower() == ".json"
    try:
        doc: Any = json.loads(text) if is_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        return Problem("E-APIM-OPENAPI", f"OpenAPI file {source} does not parse: {exc}")
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        return Problem("E-APIM-OPENAPI", f"OpenAPI file {source} has no 'paths'")
    if "openapi" in doc:
        fmt = "openapi+json" if is_json else "openapi"
    elif "swagger" in doc and is_json:
        fmt = "swagger-json"
    else:
        return Problem(
            "E-APIM-OPENAPI",
            f"OpenAPI file {source} is neither OpenAPI 3 nor Swagger 2 JSON",
            "API Management imports OpenAPI 3 (JSON or YAML) and Swagger 2 (JSON only)",
        )
    declared = {
        (str(method).upper(), p)
        for p, item in doc["paths"].items()
        if isinstance(item, dict)
        for method in item
    }
    missing = [
        f"{m} {ep.path}" for ep in endpoints for m in ep.methods if (m, ep.path) not in declared
    ]
    if missing:
        return Problem(
            "E-APIM-OPENAPI",
            f"OpenAPI file {source} lacks endpoints of API {api_id}: {', '.join(missing)}",
            "every endpoint in platform.yaml must be an operation of the OpenAPI document, "
            "with the same path and method",
        )
    return OpenApiDocument(format=fmt, value=text, source=source)


# -- the validate pass -------------------------------------------------------------------


def _report(ctx: ModelContext, problem: Problem | None, path: JsonPath) -> None:
    if problem is not None:
        ctx.report(problem.code, problem.message, path, problem.hint)


def _field(raw: dict[str, Any], path: JsonPath, key: str) -> JsonPath:
    """``path + key`` when the user wrote ``key``, else the entry (a derived value)."""
    return (*path, key) if key in raw else path


def _check_access(ctx: ModelContext, raw: dict[str, Any], path: JsonPath) -> None:
    """CORS origins, headers and credentials, Entra audiences and roles of one API/pipeline."""
    cors = raw.get("cors") or {}
    cpath: JsonPath = (*path, "cors")
    origins = cors.get("allowedOrigins", [])
    for k, origin in enumerate(origins):
        _report(ctx, literal_problem(origin, "CORS origin"), (*cpath, "allowedOrigins", k))
    for k, header in enumerate(cors.get("allowedHeaders", [])):
        _report(ctx, header_problem(header, "CORS header"), (*cpath, "allowedHeaders", k))
    if cors:
        _report(
            ctx,
            cors_problem(origins, cors.get("allowCredentials", False)),
            _field(cors, cpath, "allowCredentials"),
        )
    _check_entra(ctx, (raw.get("auth") or {}).get("entraId") or {}, (*path, "auth", "entraId"))


def _check_entra(ctx: ModelContext, entra: dict[str, Any], epath: JsonPath) -> None:
    """Audiences and roles become XML text in ``validate-jwt``: literals only."""
    for key, what in (("audiences", "Entra audience"), ("requiredRoles", "Entra role")):
        for k, text in enumerate(entra.get(key, [])):
            _report(ctx, literal_problem(text, what), (*epath, key, k))


def _check_api(ctx: ModelContext, api: Api, index: int) -> None:
    path: JsonPath = ("apis", index)
    raw: dict[str, Any] = ctx.data["apis"][index]
    _check_access(ctx, raw, path)
    _report(ctx, id_problem(api.id, "API id"), path)
    _report(ctx, path_problem(api.base_path, "base path"), _field(raw, path, "basePath"))
    routed = api.openapi is not None
    for j, ep in enumerate(api.endpoints):
        epath: JsonPath = (*path, "endpoints", j)
        _report(ctx, id_problem(ep.name, "endpoint"), _field(raw["endpoints"][j], epath, "name"))
        problem = path_problem(ep.path, "endpoint path") or path_problem(
            ep.backend_path, "backend path"
        )
        if problem is None and routed:
            # The API policy compares the imported operation's URL template in C#.
            problem = neutral_problem(ep.path, "endpoint path")
        _report(ctx, problem, (*epath, "path"))
    if api.openapi is not None:
        file = ctx.base_dir / api.openapi
        if file.is_file():  # else E-REF-FILE says it
            found = parse_openapi(file, api.openapi, api.id, api.endpoints)
            if isinstance(found, Problem):
                _report(ctx, found, (*path, "openapi"))


def _check_pipeline(ctx: ModelContext, pipeline: Pipeline, index: int) -> None:
    path: JsonPath = ("pipelines", index)
    raw: dict[str, Any] = ctx.data["pipelines"][index]
    _check_access(ctx, raw, path)
    _report(ctx, id_problem(pipeline.id, "pipeline id"), path)
    _report(ctx, path_problem(pipeline.path, "pipeline path"), _field(raw, path, "path"))


def _check_product(ctx: ModelContext, product: Product, raw: dict[str, Any], index: int) -> None:
    path: JsonPath = ("products", index)
    _report(ctx, id_problem(product.name, "product"), _field(raw, path, "name"))
    rate = raw.get("rateLimit")
    if rate:
        _report(
            ctx,
            rate_period_problem(seconds(rate["period"]), f"product {product.name!r} rate limit"),
            (*path, "rateLimit", "period"),
        )
    _check_entra(ctx, raw.get("entraId") or {}, (*path, "entraId"))


def check_apim(
    ctx: ModelContext, apis: list[Api], pipelines: list[Pipeline], products: tuple[Product, ...]
) -> None:
    """Report every value of the APIs, pipelines and products API Management would refuse.

    ``apis`` are in document order (one per ``apis[i]``); pipelines and products are
    found in the document by id and name.
    """
    for i, api in enumerate(apis):
        _check_api(ctx, api, i)
    where = pipeline_index(ctx)
    for p in pipelines:
        if p.id in where:
            _check_pipeline(ctx, p, where[p.id])
    _check_keyless_limits(ctx, apis, pipelines, products)
    raw_products = ctx.data.get("products", [])
    seen: set[str] = set()
    for i, raw in enumerate(raw_products):
        product = next((p for p in products if p.name == raw["name"]), None)
        if product is not None and raw["name"] not in seen:
            seen.add(raw["name"])
            _check_product(ctx, product, raw, i)


def _check_keyless_limits(
    ctx: ModelContext, apis: list[Api], pipelines: list[Pipeline], products: tuple[Product, ...]
) -> None:
    """E-APIM-KEYLESS-LIMIT: keyless callers of a limited product cannot be limited.

    Calls without a subscription key have no product context, so the API policy limits
    them itself with ``rate-limit-by-key``/``quota-by-key``; the Consumption tier has
    neither, and leaving such an API unlimited would silently drop its products' limits.
    """
    sku = ((ctx.data.get("azure") or {}).get("apiManagement") or {}).get("sku")
    if sku != "Consumption":
        return
    where = pipeline_index(ctx)
    members: list[tuple[str, bool, JsonPath]] = [
        (a.id, a.auth.subscription_key, ("apis", i)) for i, a in enumerate(apis)
    ]
    members += [
        (p.id, p.auth.subscription_key, ("pipelines", where[p.id]))
        for p in pipelines
        if p.id in where
    ]
    for member, keyed, path in members:
        if keyed:
            continue
        limited = [
            p.name
            for p in products
            if member in (*p.apis, *p.pipelines) and (p.rate_limit or p.quota)
        ]
        if limited:
            ctx.report(
                "E-APIM-KEYLESS-LIMIT",
                f"{member!r} takes calls without a subscription key, which the limits of "
                f"product(s) {', '.join(map(repr, limited))} cannot count, and the "
                "Consumption tier has no per-caller limits to count them with",
                (*path, "auth", "subscriptionKey"),
                "keep subscriptionKey: true, or use a tier with rate-limit-by-key "
                "(Developer, Basic, Standard, Premium)",
            )
