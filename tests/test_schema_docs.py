"""The schema documents itself: every field has a description and examples, the
examples validate, and docs/platform-yaml.md is exactly what the schema generates."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from ai4ec.docs import schema_markdown
from ai4ec.resources import platform_schema

from .conftest import ROOT


def _fields(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, prop in node.get("properties", {}).items():
            out.append((f"{path}.{key}", prop))
            out.extend(_fields(prop, f"{path}.{key}"))
        for name, sub in node.get("$defs", {}).items():
            out.extend(_fields(sub, f"#{name}"))
    return out


def _resolved(prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        target = dict(platform_schema()["$defs"][prop["$ref"].rsplit("/", 1)[-1]])
        target.update({k: v for k, v in prop.items() if k != "$ref"})
        return target
    return prop


def test_schema_is_valid_draft_2020_12() -> None:
    schema = platform_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    "path,prop", _fields(platform_schema()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_field_has_description_and_examples(path: str, prop: dict[str, Any]) -> None:
    resolved = _resolved(prop)
    assert resolved.get("description"), f"{path} has no description"
    assert resolved.get("examples"), f"{path} has no examples"


def test_property_examples_validate_against_their_field() -> None:
    schema = platform_schema()
    failures = []
    for path, prop in _fields(schema):
        resolved = _resolved(prop)
        sub = {"$defs": schema["$defs"], **resolved}
        validator = jsonschema.Draft202012Validator(sub)
        for example in resolved.get("examples", []):
            errors = list(validator.iter_errors(example))
            if errors:
                failures.append(f"{path}: {example!r}: {errors[0].message}")
    assert not failures, "\n".join(failures)


def test_reference_doc_in_sync() -> None:
    doc = (ROOT / "docs/platform-yaml.md").read_text(encoding="utf-8")
    assert doc == schema_markdown(), "run: ai4ec schema --markdown > docs/platform-yaml.md"


def _walk(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for v in node.values():
            found.extend(_walk(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_walk(v))
    return found


def test_ref_siblings_are_annotations_only() -> None:
    # The fast validator implements draft-07, where keywords beside $ref are ignored;
    # 2020-12 applies them. Keeping only annotations there makes both mean the same.
    annotations = {"$ref", "description", "examples", "default"}
    for node in _walk(platform_schema()):
        if "$ref" in node:
            assert set(node) <= annotations, node


def test_no_keywords_outside_the_shared_draft07_subset() -> None:
    unsupported = {
        "unevaluatedProperties",
        "unevaluatedItems",
        "prefixItems",
        "dependentSchemas",
        "dependentRequired",
        "$dynamicRef",
        "$anchor",
        "contains",
        "if",
    }
    for node in _walk(platform_schema()):
        assert not (set(node) & unsupported), node


def _object_sections(node: Any, title: str, defs: dict[str, Any], out: dict[str, set[str]]) -> None:
    """Every object with fields, titled as the reference titles it, with its field names."""
    out.setdefault(title, set()).update(node.get("properties", {}))
    for key, prop in node.get("properties", {}).items():
        if "$ref" not in prop and "properties" in prop:
            inner = "" if title == "Top level" else f"{title}."
            _object_sections(prop, f"{inner}{key}", defs, out)


def test_reference_documents_every_field_of_every_sub_object() -> None:
    """A new user reads ``spot``, ``cache``, ``entraId``... field by field, not as "object"."""
    schema = platform_schema()
    defs = schema["$defs"]
    expected: dict[str, set[str]] = {}
    _object_sections(schema, "Top level", defs, expected)
    for name, node in defs.items():
        if "properties" in node:
            _object_sections(node, name, defs, expected)
    text = schema_markdown()
    sections = {}
    for block in text.split("\n## ")[1:]:
        head, _, body = block.partition("\n")
        sections[head.strip()] = {
            line.split("`")[1] for line in body.splitlines() if line.startswith("| `")
        }
    for title, fields in expected.items():
        assert title in sections, f"no section for {title}"
        assert fields <= sections[title], f"{title}: undocumented {fields - sections[title]}"


def test_enum_values_shown_once() -> None:
    """``zones`` accepts "1" and 1; the reference shows each zone once."""
    line = next(x for x in schema_markdown().splitlines() if x.startswith("| `zones`"))
    assert line.count("`1`") == 1
