"""Environment overlays: deep-merge ``environments.<env>`` over the base document.

Input: a :class:`~ai4ec.load.source.Document` and an environment name. Output: the merged data
(without ``environments``) and a source map for it, in which every value points at the
line it came from - the base section or the overlay - so validation errors in a merged
environment are reported where the user has to fix them.

Merge rules (documented in the schema's ``environments`` description):

- mappings merge key by key, recursively;
- lists whose items all carry ``name`` merge item by item on (``name``, ``version``), and
  lists whose items all carry ``path`` (endpoints) on ``path``; unmatched overlay items
  are appended;
- any other value (scalars, other lists) from the overlay replaces the base value.
"""

from __future__ import annotations

from typing import Any

from .source import Document, JsonPath, SourceMap

ENVIRONMENTS = "environments"


def environment_names(doc: Document) -> list[str]:
    """Environments the document defines, in file order."""
    envs = doc.data.get(ENVIRONMENTS)
    return list(envs) if isinstance(envs, dict) else []


def base_view(doc: Document) -> tuple[dict[str, Any], SourceMap]:
    """The document without its ``environments`` section."""
    data = {k: v for k, v in doc.data.items() if k != ENVIRONMENTS}
    return data, doc.source


def apply_environment(doc: Document, env: str) -> tuple[dict[str, Any], SourceMap]:
    """Merge overlay ``env`` over the base.

    Raises:
        KeyError: if ``env`` is not defined (callers check names first).
    """
    overlays = doc.data.get(ENVIRONMENTS) or {}
    overlay = overlays[env]
    base, _ = base_view(doc)
    merger = _Merger(doc.source, (ENVIRONMENTS, env))
    merged = merger.merge(base, overlay if isinstance(overlay, dict) else {}, (), ())
    # Keys the merge never visited (none today) would keep no position: harmless.
    return merged, merger.out


class _Merger:
    def __init__(self, source: SourceMap, overlay_root: JsonPath) -> None:
        self.src = source
        self.root = overlay_root
        self.out = SourceMap(file=source.file)

    def _copy(self, value: Any, src_path: JsonPath, dst_path: JsonPath) -> Any:
        """Record positions for a subtree taken whole from ``src_path``."""
        src, out = self.src, self.out
        if src_path in src.positions:
            out.positions[dst_path] = src.positions[src_path]
        if src_path in src.key_positions:
            out.key_positions[dst_path] = src.key_positions[src_path]
        if src_path in src.raw:
            out.raw[dst_path] = src.raw[src_path]
        if isinstance(value, dict):
            for k, v in value.items():
                self._copy(v, (*src_path, k), (*dst_path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._copy(v, (*src_path, i), (*dst_path, i))
        return value

    def merge(self, base: Any, over: Any, base_path: JsonPath, over_rel: JsonPath) -> Any:
        over_path = (*self.root, *over_rel)
        if isinstance(base, dict) and isinstance(over, dict):
            self._copy_node(base_path, base_path)
            result: dict[str, Any] = {}
            for k, v in base.items():
                if k in over:
                    result[k] = self.merge(v, over[k], (*base_path, k), (*over_rel, k))
                else:
                    result[k] = self._copy(v, (*base_path, k), (*base_path, k))
            for k, v in over.items():
                if k not in base:
                    result[k] = self._copy(v, (*over_path, k), (*base_path, k))
            return result
        if isinstance(base, list) and isinstance(over, list):
            key = _identity(base, over)
            if key is not None:
                return self._merge_named(base, over, base_path, over_rel, key)
        return self._copy(over, over_path, base_path)

    def _copy_node(self, src_path: JsonPath, dst_path: JsonPath) -> None:
        if src_path in self.src.positions:
            self.out.positions[dst_path] = self.src.positions[src_path]
        if src_path in self.src.key_positions:
            self.out.key_positions[dst_path] = self.src.key_positions[src_path]

    def _merge_named(
        self,
        base: list[Any],
        over: list[Any],
        base_path: JsonPath,
        over_rel: JsonPath,
        key: tuple[str, ...],
    ) -> list[Any]:
        self._copy_node(base_path, base_path)
        over_path = (*self.root, *over_rel)
        match = _match_items(base, over, key)
        result: list[Any] = []
        for i, item in enumerate(base):
            j = match.get(i)
            if j is None:
                result.append(self._copy(item, (*base_path, i), (*base_path, i)))
            else:
                result.append(self.merge(item, over[j], (*base_path, i), (*over_rel, j)))
        used = set(match.values())
        for j, item in enumerate(over):
            if j not in used:
                idx = len(result)
                result.append(self._copy(item, (*over_path, j), (*base_path, idx)))
        return result


def _match_items(
    base: list[dict[str, Any]], over: list[dict[str, Any]], key: tuple[str, ...]
) -> dict[int, int]:
    """Base index -> overlay index.

    An overlay item that omits ``version`` matches the one base item of that name, so
    overlays need not repeat versions needlessly.
    """
    match: dict[int, int] = {}
    for j, item in enumerate(over):
        candidates = [
            i
            for i, b in enumerate(base)
            if i not in match
            and all(k not in item or repr(b.get(k)) == repr(item.get(k)) for k in key)
            and repr(b.get(key[0])) == repr(item.get(key[0]))
        ]
        if len(candidates) == 1:
            match[candidates[0]] = j
    return match


def _identity(base: list[Any], over: list[Any]) -> tuple[str, ...] | None:
    items = [*base, *over]
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if all("name" in i for i in items):
        return ("name", "version")
    if all("path" in i for i in items):
        return ("path",)
    return None
