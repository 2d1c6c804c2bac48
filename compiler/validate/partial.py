"""The parts of a document the schema accepted, for the semantic rules (every problem at once).

The model readers rely on schema-valid data, so a single schema error used to hide every
semantic error. Instead, each top-level entry (``clusters[i]``, ``apis[i]``,
``pipelines[i]``, ``products[i]``) whose subtree has a schema error, and each unknown
top-level field, is left out; if what remains is schema-valid, the model runs on it.
Everything else (``metadata``, ``azure``, the shape of a whole section) is needed by every
rule, so an error there still stops the semantic rules.

Leaving entries out must neither move nor invent diagnostics:

* the source map is re-keyed, so a diagnostic of the pruned ``apis[1]`` that was the
  document's ``apis[3]`` is located at ``apis[3]``'s line, and :meth:`Pruned.restore`
  rewrites its JSON path back to ``$.apis[3]``;
* the names of the left-out entries are handed to the model (``broken``), whose reference
  rules stay silent about them: a product naming a broken API is not "unknown API", the
  API's own schema error already says what is wrong;
* warnings that judge a whole section (an API in no product, an empty product) are
  dropped, since the entries they would need are missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import Diagnostic
from ..load import JsonPath, SourceMap
from ..resources import platform_schema
from .schema import schema_accepts

#: Top-level lists whose entries can be left out one by one.
PRUNABLE = ("clusters", "apis", "pipelines", "products")
#: Warnings about a whole section, meaningless while some of its entries are left out.
SECTION_WARNINGS = frozenset({"W-API-NO-PRODUCT", "W-PRODUCT-EMPTY"})


@dataclass(frozen=True, slots=True)
class Pruned:
    """The schema-valid rest of a document, and how to map back to the original."""

    data: dict[str, Any]
    source: SourceMap
    #: Section -> names of the entries left out (for the reference rules).
    broken: dict[str, frozenset[str]]
    #: Section -> original index of each kept entry, in order.
    kept: dict[str, tuple[int, ...]]

    def restore(self, diags: Iterable[Diagnostic]) -> list[Diagnostic]:
        """``diags`` of the pruned document, with JSON paths of the original document."""
        out = []
        for d in diags:
            if d.code in SECTION_WARNINGS:
                continue
            out.append(
                replace(
                    d,
                    json_path=self._original_path(d.json_path),
                    message=self._original_message(d.json_path, d.message),
                )
            )
        return out

    def _original_message(self, json_path: str, message: str) -> str:
        """E-DUPLICATE-NAME names the first entry's index; give the document's."""
        m, first = _ENTRY.match(json_path), _FIRST_AT.search(message)
        if m is None or first is None or m.group(1) not in self.kept:
            return message
        index = self.kept[m.group(1)][int(first.group(1))]
        return f"{message[: first.start(1)]}{index}{message[first.end(1) :]}"

    def _original_path(self, json_path: str) -> str:
        m = _ENTRY.match(json_path)
        if m is None or m.group(1) not in self.kept:
            return json_path
        index = self.kept[m.group(1)][int(m.group(2))]
        return f"$.{m.group(1)}[{index}]{json_path[m.end() :]}"


_FIRST_AT = re.compile(r"\(first at index ([0-9]+)\)")
_ENTRY = re.compile(r"^\$\.(" + "|".join(PRUNABLE) + r")\[([0-9]+)\]")


def _map_path(path: JsonPath, index_maps: dict[str, dict[int, int]]) -> JsonPath | None:
    """``path`` of the original document in the pruned one (None: it was left out)."""
    if len(path) >= 2 and path[0] in index_maps and isinstance(path[1], int):
        new = index_maps[str(path[0])].get(path[1])
        return None if new is None else (path[0], new, *path[2:])
    return path


def prune(data: Any, source: SourceMap, error_paths: Iterable[JsonPath]) -> Pruned | None:
    """The document without the parts the schema refused, or None when the rest is unusable.

    Args:
        data: The merged document of one environment.
        source: Its source map.
        error_paths: Where the schema errors are (see :func:`.schema.schema_findings`).
    """
    if not isinstance(data, dict):
        return None
    top = set(platform_schema().get("properties", {}))
    drop: dict[str, set[int]] = {}
    drop_keys: set[str] = set()
    for path in error_paths:
        if len(path) >= 2 and path[0] in PRUNABLE and isinstance(path[1], int):
            drop.setdefault(str(path[0]), set()).add(path[1])
        elif len(path) == 1 and path[0] not in top:
            drop_keys.add(str(path[0]))
        else:
            return None
    pruned = {k: v for k, v in data.items() if k not in drop_keys}
    broken: dict[str, frozenset[str]] = {}
    kept: dict[str, tuple[int, ...]] = {}
    index_maps: dict[str, dict[int, int]] = {}
    for section, indexes in drop.items():
        entries = data.get(section)
        if not isinstance(entries, list):
            return None
        keep = tuple(i for i in range(len(entries)) if i not in indexes)
        pruned[section] = [entries[i] for i in keep]
        kept[section] = keep
        index_maps[section] = {old: new for new, old in enumerate(keep)}
        broken[section] = frozenset(
            str(entries[i]["name"])
            for i in indexes
            if i < len(entries)
            and isinstance(entries[i], dict)
            and isinstance(entries[i].get("name"), str)
        )
    if not schema_accepts(pruned):
        return None
    remapped = SourceMap(file=source.file)
    for attr in ("positions", "key_positions", "raw"):
        target = getattr(remapped, attr)
        for path, value in getattr(source, attr).items():
            if path and path[0] in drop_keys:
                continue
            new = _map_path(path, index_maps)
            if new is not None:
                target[new] = value
    return Pruned(data=pruned, source=remapped, broken=broken, kept=kept)
