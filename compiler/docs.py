"""Human-facing views of the schema.

The raw JSON, a Markdown field reference, and the commented starter file of
``ai4ec init``; all derived from ``schemas/`` and ``templates/`` so they cannot drift
(a test compares docs/platform-yaml.md with :func:`schema_markdown`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .resources import platform_schema, schemas_dir, templates_dir


def schema_text() -> str:
    """The schema file exactly as shipped."""
    return (schemas_dir() / "platform.schema.json").read_text(encoding="utf-8")


def starter_platform() -> str:
    """The commented starter platform.yaml written by ``ai4ec init``."""
    return (templates_dir() / "init" / "platform.yaml").read_text(encoding="utf-8")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return target
    return node


def _enum_text(values: list[Any]) -> str:
    """Enum values once each: ``zones`` accepts ``"1"`` and ``1``, which read the same."""
    shown: list[str] = []
    for value in values:
        text = f"`{value}`"
        if text not in shown:
            shown.append(text)
    return " \\| ".join(shown)


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _link(title: str) -> str:
    return f"[`{title}`](#{_anchor(title)})"


def _type_of(node: dict[str, Any], defs: dict[str, Any], section: str | None = None) -> str:
    """The type cell; ``section`` names the table that documents an object's fields."""
    ref = node.get("$ref", "")
    node = _resolve(node, defs)
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return _enum_text(node["enum"])
    if "oneOf" in node:
        kinds = sorted({str(b.get("type", "object")) for b in node["oneOf"]})
        return " or ".join(kinds)
    t = node.get("type", "object")
    if t == "array":
        items = node.get("items", {})
        item_ref = items.get("$ref", "")
        if item_ref:
            name = item_ref.rsplit("/", 1)[-1]
            target = defs.get(name, {})
            return f"list of {_link(name)}" if "properties" in target else f"list of {name}"
        return f"list of {_type_of(items, defs)}"
    if isinstance(t, list):
        return " or ".join(t)
    if t == "object" and "properties" in node:
        name = ref.rsplit("/", 1)[-1] if ref else section
        return f"object, see {_link(name)}" if name else "object"
    if t == "object" and "additionalProperties" in node and "properties" not in node:
        return "map"
    return str(t)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every object that has fields, in reading order.

    Shared definitions are titled by their name (``pool``); an object written inline in
    another is titled by its path from there (``azure.cache``, ``pool.spot``), so every
    field of every sub-object gets a row.
    """
    defs: dict[str, Any] = schema["$defs"]
    sections: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()

    def visit(title: str, node: dict[str, Any]) -> None:
        if title in seen:
            return
        seen.add(title)
        sections.append((title, node))
        for key, prop in node.get("properties", {}).items():
            for sub in _branches(prop):
                ref = sub.get("$ref")
                if ref:
                    name = ref.rsplit("/", 1)[-1]
                    if "properties" in defs.get(name, {}) and name not in seen:
                        pending.append(name)
                elif "properties" in sub:
                    inner = title if title != "Top level" else ""
                    visit(f"{inner}.{key}".lstrip("."), sub)
                items = sub.get("items")
                items_ref = items.get("$ref") if isinstance(items, dict) else None
                if items_ref:
                    name = items_ref.rsplit("/", 1)[-1]
                    if "properties" in defs.get(name, {}) and name not in seen:
                        pending.append(name)
            extra = additional(prop)
            if extra is not None:
                pending.append(extra)

    def additional(prop: dict[str, Any]) -> str | None:
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict) and "$ref" in extra:
            name = str(extra["$ref"]).rsplit("/", 1)[-1]
            if "properties" in defs.get(name, {}) and name not in seen:
                return name
        return None

    pending: list[str] = []
    visit("Top level", schema)
    while pending:
        name = pending.pop(0)
        if name not in seen:
            visit(name, defs[name])
    for name in _refs(schema):  # anything reachable only through combinators
        if name not in seen and "properties" in defs.get(name, {}):
            visit(name, defs[name])
    return sections


def _branches(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """A property and the branches of its combinators, each a schema to look into."""
    out = [prop]
    for key in ("oneOf", "anyOf", "allOf"):
        out.extend(b for b in prop.get(key, []) if isinstance(b, dict))
    return out


def schema_markdown() -> str:
    """Markdown reference of every platform.yaml field, generated from the schema."""
    schema = platform_schema()
    defs: dict[str, Any] = schema["$defs"]
    out = [
        "# platform.yaml reference (ai4ec/v1)",
        "",
        "<!-- Generated by `ai4ec schema --markdown` from schemas/platform.schema.json. "
        "Do not edit by hand; a test keeps it in sync. -->",
        "",
        _cell(schema["description"]),
        "",
    ]
    for title, node in _sections(schema):
        out += [f"## {title}", ""]
        if title != "Top level" and node.get("description"):
            out += [_cell(node["description"]), ""]
        required = set(node.get("required", []))
        out += [
            "| field | type | required | default | description | example |",
            "|---|---|---|---|---|---|",
        ]
        prefix = "" if title == "Top level" else f"{title}."
        for key, prop in node.get("properties", {}).items():
            resolved = _resolve(prop, defs)
            default = json.dumps(resolved["default"]) if "default" in resolved else ""
            example = resolved.get("examples", [""])[0]
            example_text = json.dumps(example) if example != "" else ""
            out.append(
                f"| `{key}` | {_type_of(prop, defs, prefix + key)} | "
                f"{'yes' if key in required else ''} | "
                f"{_cell(default)} | {_cell(str(resolved.get('description', '')))} | "
                f"{_cell(example_text)} |"
            )
        out.append("")
    return "\n".join(out)


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.append(v.rsplit("/", 1)[-1])
            elif k != "$defs":
                found.extend(_refs(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_refs(v))
    return found
