"""The APIM target's assertions on the values it places in policies.

Every value that reaches policy XML is refused in ``validate`` when API Management would
misread it (:mod:`ai4ec.model.apim_rules`: E-APIM-ID, -PATH, -EXPRESSION, -LITERAL, -CORS,
-RATE-PERIOD, -OPENAPI, located at the field in platform.yaml). The plan (:mod:`.plan`)
asserts the same predicates again on every value it places, so that a model change or a
model built by hand can never put a named-value reference or C# code into the gateway. A
failure here is therefore an ai4ec bug: validate accepted what the renderer refuses. It is
raised as a :class:`~ai4ec.errors.RenderError` (code E-RENDER-RULE, exit 70), naming the
rule that validate should have applied.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import Diagnostic, RenderError
from ...model.apim_rules import (
    OpenApiDocument,
    Problem,
    header_problem,
    id_problem,
    literal_problem,
    neutral_problem,
    parse_openapi,
    path_problem,
)
from ...model.types import Api

#: The APIM import record of an API's OpenAPI document (validate parsed the same file).
OpenApiImport = OpenApiDocument

#: Code of a broken model guarantee: validate accepted a value the renderer refuses.
RULE_BUG_CODE = "E-RENDER-RULE"


def fail(code: str, message: str, json_path: str = "$", hint: str = "") -> RenderError:
    """The internal error of a rule validate should have enforced (``code`` names it)."""
    text = f"validate let through what rule {code} refuses: {message}"
    del hint  # the user's hint belongs to validate; this is a bug report
    return RenderError(
        text,
        (
            Diagnostic(
                code=RULE_BUG_CODE,
                message=text,
                json_path=json_path,
                hint="this is an ai4ec bug; please report it with your platform.yaml",
            ),
        ),
    )


def _checked(value: str, problem: Problem | None, json_path: str) -> str:
    if problem is not None:
        raise fail(problem.code, problem.message, json_path)
    return value


def checked_id(value: str, what: str, json_path: str = "$") -> str:
    """``value``, asserted to be a lowercase id that is safe inside policy expressions."""
    return _checked(value, id_problem(value, what), json_path)


def checked_header(value: str, what: str, json_path: str = "$") -> str:
    """A header name (or ``*``) placed in a CORS policy, asserted."""
    return _checked(value, header_problem(value, what), json_path)


def checked_path(value: str, what: str, json_path: str = "$") -> str:
    """A URL path asserted safe as a literal policy attribute and a C# string."""
    return _checked(value, path_problem(value, what), json_path)


def checked_neutral(value: str, what: str, json_path: str = "$") -> str:
    """A value asserted safe to splice into C# code inside a policy expression."""
    return _checked(value, neutral_problem(value, what), json_path)


def checked_literal(value: str, what: str, json_path: str = "$") -> str:
    """User text asserted to be no named-value reference and no policy expression."""
    return _checked(value, literal_problem(value, what), json_path)


def openapi_import(api: Api, source_dir: str) -> OpenApiImport | None:
    """The OpenAPI document of ``api`` (if it names one), as validate checked it.

    Raises:
        RenderError: E-RENDER-RULE - the file no longer matches what validate accepted.
    """
    if api.openapi is None:
        return None
    found = parse_openapi(Path(source_dir) / api.openapi, api.openapi, api.id, api.endpoints)
    if isinstance(found, Problem):
        raise fail(found.code, found.message, f"{api.json_path}.openapi")
    return found
