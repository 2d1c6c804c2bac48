"""Schema errors worded by keyword: every keyword the shipped schema uses is covered."""

from __future__ import annotations

from typing import Any

from ai4ec.load import parse_platform
from ai4ec.resources import platform_schema
from ai4ec.validate import schema_diagnostics
from ai4ec.validate.convert import CONVERTERS

# Keywords that structure a schema rather than reject a value: they never fail alone.
_STRUCTURAL = {
    "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "examples",
    "default", "properties", "items", "additionalItems", "patternProperties",
    "propertyNames", "markdownDescription", "deprecated", "if", "then", "else", "allOf",
    "not", "format", "contains", "dependentRequired", "dependentSchemas",
}  # fmt: skip


_MAPS_OF_SCHEMAS = {"properties", "$defs", "patternProperties", "dependentSchemas"}
_SCHEMAS = {"items", "additionalProperties", "propertyNames", "not", "if", "then", "else",
            "contains", "additionalItems"}  # fmt: skip
_LISTS_OF_SCHEMAS = {"allOf", "anyOf", "oneOf", "prefixItems"}


def _keywords(schema: Any, out: set[str]) -> set[str]:
    """The keywords used anywhere in ``schema`` (walking subschemas only, not values)."""
    if not isinstance(schema, dict):
        return out
    for key, value in schema.items():
        out.add(key)
        if key in _MAPS_OF_SCHEMAS:
            for sub in value.values():
                _keywords(sub, out)
        elif key in _SCHEMAS:
            _keywords(value, out)
        elif key in _LISTS_OF_SCHEMAS:
            for sub in value:
                _keywords(sub, out)
    return out


def test_every_rejecting_keyword_of_the_schema_has_a_converter() -> None:
    used = _keywords(platform_schema(), set()) - _STRUCTURAL
    rejecting = {k for k in used if not k.startswith("x-")}
    # A keyword without a converter still gets the generic E-SCHEMA message; this test
    # says when a new keyword deserves its own wording.
    missing = {k for k in rejecting if k not in CONVERTERS}
    assert not missing or missing <= {"minProperties", "maxProperties", "multipleOf"}, missing


def test_unknown_field_points_at_the_key_with_a_suggestion() -> None:
    text = "apiVersion: ai4ec/v1\nmetadata: {name: demo, descripton: x}\n"
    doc = parse_platform(text, "p.yaml")
    diags = [
        d for d in schema_diagnostics(doc.data, doc.source) if d.code == "E-SCHEMA-UNKNOWN-FIELD"
    ]
    assert diags and diags[0].line == 2
    assert "did you mean 'description'?" in diags[0].hint
