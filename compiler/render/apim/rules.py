"""The render-time rules of the APIM target: values API Management would misread.

API Management expands ``{{name}}`` as a named-value reference anywhere in a policy and
treats a value that starts with ``@(`` or ``@{`` as C# code, so a user-written audience,
origin or path containing either would smuggle a secret or code into the gateway; ids
and paths are spliced into policy expressions; an OpenAPI document must hold every
endpoint platform.yaml routes. These checks reject such input with E-APIM-ID, -PATH,
-EXPRESSION, -LITERAL and -OPENAPI.

They live here, apart from the plan, as functions of model values (and, for OpenAPI,
the file the model names), so that validation can run them before rendering (the
follow-up issue on deployability moves them there). The plan (:mod:`.plan`) calls them
on every value it places; :func:`ai4ec.render.apim.rule_diagnostics` runs them all over
a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...errors import Diagnostic, RenderError
from ...model.types import Api


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenApiImport:
    """An API whose operations API Management imports from an OpenAPI document."""

    format: str
    value: str
    source: str


_ID = re.compile(r"^[a-z][-a-z0-9]*$")
#: Characters that mean the same in XML text, XML attributes and C# string literals.
_NEUTRAL = re.compile(r"^[A-Za-z0-9/._~!$()*+,;=:@%-]+$")
_HEADER = re.compile(r"^[A-Za-z0-9-]+$|^\*$")


def fail(code: str, message: str, json_path: str = "$", hint: str = "") -> RenderError:
    """The error of a rule: code, message and where in platform.yaml (JSON path)."""
    return RenderError(
        message, (Diagnostic(code=code, message=message, json_path=json_path, hint=hint),)
    )


def checked_id(value: str, what: str, json_path: str = "$") -> str:
    """``value`` if it is a lowercase id that is safe inside policy expressions.

    The model already guarantees this for API, pipeline, product, cluster and endpoint
    names; the check keeps a future model change from silently putting arbitrary text
    into C# code.

    Raises:
        RenderError: the id contains anything but lowercase letters, digits and hyphens.
    """
    if not _ID.match(value):
        raise fail("E-APIM-ID", f"{what} {value!r} is not a lowercase id", json_path)
    return value


def checked_header(value: str, what: str, json_path: str = "$") -> str:
    """A header name (or ``*``) placed in a CORS policy.

    Raises:
        RenderError: E-APIM-LITERAL - anything but letters, digits and hyphens.
    """
    if not _HEADER.match(value):
        raise fail("E-APIM-LITERAL", f"{what} {value!r} is not a header name", json_path)
    return value


def checked_path(value: str, what: str, json_path: str = "$") -> str:
    """A URL path that is safe as a literal policy attribute and a C# string.

    Braces would be read as URL-template parameters or named values, quotes and
    backslashes would end a C# string literal, whitespace is never a valid path.

    Raises:
        RenderError: the path contains such a character.
    """
    if not value.startswith("/") or re.search(r'[{}"\\\s<>]', value):
        raise fail(
            "E-APIM-PATH",
            f"{what} {value!r} cannot be used in an API Management policy",
            json_path,
            "paths may not contain braces, quotes, backslashes, angle brackets or spaces",
        )
    return value


def checked_neutral(value: str, what: str, json_path: str = "$") -> str:
    """A value that may be spliced into C# code inside a policy expression.

    Only characters that need no escaping in XML or in a C# string literal are allowed,
    so the template can write the expression once, as fixed text, around the value.

    Raises:
        RenderError: the value holds anything else (quotes, ampersands, braces ...).
    """
    if not _NEUTRAL.match(value):
        raise fail(
            "E-APIM-EXPRESSION",
            f"{what} {value!r} cannot be used inside an API Management policy expression",
            json_path,
            "use only letters, digits and / . _ ~ ! $ ( ) * + , ; = : @ % -",
        )
    return value


def checked_literal(value: str, what: str, json_path: str = "$") -> str:
    """User text that is placed verbatim into policy XML (after XML escaping).

    Raises:
        RenderError: the text would be read by API Management as a named-value
            reference (``{{``/``}}``) or a policy expression (leading ``@``).
    """
    if "{{" in value or "}}" in value or value.lstrip().startswith("@"):
        raise fail(
            "E-APIM-LITERAL",
            f"{what} {value!r} would be evaluated by API Management",
            json_path,
            "remove '{{', '}}' and a leading '@': API Management reads them as named "
            "values and policy expressions",
        )
    return value


def openapi_import(api: Api, source_dir: str) -> OpenApiImport | None:
    """The OpenAPI document of ``api`` (if it names one), checked against its endpoints.

    Raises:
        RenderError: E-APIM-OPENAPI - unreadable, unparsable, not OpenAPI 3 / Swagger 2
            JSON, or missing an endpoint of platform.yaml.
    """
    if api.openapi is None:
        return None
    where = f"{api.json_path}.openapi"
    path = Path(source_dir) / api.openapi
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(
            "E-APIM-OPENAPI", f"cannot read OpenAPI file {api.openapi}: {exc}", where
        ) from None
    is_json = path.suffix.lower() == ".json"
    try:
        doc: Any = json.loads(text) if is_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise fail(
            "E-APIM-OPENAPI", f"OpenAPI file {api.openapi} does not parse: {exc}", where
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        raise fail("E-APIM-OPENAPI", f"OpenAPI file {api.openapi} has no 'paths'", where)
    if "openapi" in doc:
        fmt = "openapi+json" if is_json else "openapi"
    elif "swagger" in doc and is_json:
        fmt = "swagger-json"
    else:
        raise fail(
            "E-APIM-OPENAPI",
            f"OpenAPI file {api.openapi} is neither OpenAPI 3 nor Swagger 2 JSON",
            where,
            "API Management imports OpenAPI 3 (JSON or YAML) and Swagger 2 (JSON only)",
        )
    declared = {
        (method.upper(), p)
        for p, item in doc["paths"].items()
        if isinstance(item, dict)
        for method in item
    }
    missing = [
        f"{m} {ep.path}" for ep in api.endpoints for m in ep.methods if (m, ep.path) not in declared
    ]
    if missing:
        raise fail(
            "E-APIM-OPENAPI",
            f"OpenAPI file {api.openapi} lacks endpoints of API {api.id}: {', '.join(missing)}",
            where,
            "every endpoint in platform.yaml must be an operation of the OpenAPI document, "
            "with the same path and method",
        )
    return OpenApiImport(format=fmt, value=text, source=api.openapi)
