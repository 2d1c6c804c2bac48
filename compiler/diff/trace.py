"""Source tracing: which lines of platform.yaml caused a generated resource to change.

Input: both sides' merged environment data with their source maps and models, and a
changed resource. Output: :class:`~ai4ec.diff.records.SourceRef` records (file, lines,
JSON path).

Two steps:

1. :func:`data_changes` compares the two platform.yaml documents by JSON path. Named
   list items (clusters, pools, apis, pipelines, products; endpoints by path) are
   matched by name, so inserting an API does not shift every later one; an item whose
   name changed but whose content did not is one ``renamed`` change, which also tells
   the rename detector which ids became which (:class:`EntityRename`).
2. :class:`Tracer` maps each generated resource to the model entities it came from
   (``ai4ec.io/api`` labels, ARM names that contain an API id or a pool name, routing
   keys, policy paths...) and picks the data changes under those entities. When none
   is there it widens to related entities (an API's pool), then to changes outside
   any entity (``metadata``, ``azure.location``), and says so (``indirect``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..load import JsonPath, SourceMap, format_path
from ..model.types import Platform
from .records import SourceRef
from .resources import Comparable

_IDENTITY_KEYS = ("name", "version")
_JSON_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]")


def parse_json_path(text: str) -> JsonPath:
    """``$.apis[2].name`` -> ``('apis', 2, 'name')`` (inverse of ``format_path``)."""
    out: list[str | int] = []
    for m in _JSON_PATH_PART.finditer(text.removeprefix("$")):
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        else:
            out.append(m.group(3))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DataChange:
    """One difference between the two platform.yaml documents."""

    kind: str  # added | removed | changed | renamed
    base: JsonPath | None
    head: JsonPath | None


@dataclass(frozen=True, slots=True)
class EntityRename:
    """A list item (api, pipeline, product, cluster, pool) that only changed its name."""

    section: str
    old: dict[str, Any]
    new: dict[str, Any]
    base: JsonPath
    head: JsonPath


def _identity(item: Any, key: tuple[str, ...]) -> tuple[str, ...] | None:
    if not isinstance(item, dict):
        return None
    return tuple(repr(item.get(k)) for k in key)


def _list_key(base: list[Any], head: list[Any]) -> tuple[str, ...] | None:
    items = [*base, *head]
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if all("name" in i for i in items):
        return _IDENTITY_KEYS
    if all("path" in i for i in items):
        return ("path",)
    return None


def _without(item: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in keys}


def data_changes(
    base: Any, head: Any, renames: list[EntityRename] | None = None
) -> list[DataChange]:
    """Every difference between two platform documents (see the module docstring)."""
    out: list[DataChange] = []
    _diff(base, head, (), (), out, renames if renames is not None else [])
    return out


def _diff(
    b: Any,
    h: Any,
    bp: JsonPath,
    hp: JsonPath,
    out: list[DataChange],
    renames: list[EntityRename],
) -> None:
    if isinstance(b, dict) and isinstance(h, dict):
        for k in b:
            if k in h:
                _diff(b[k], h[k], (*bp, k), (*hp, k), out, renames)
            else:
                out.append(DataChange("removed", (*bp, k), None))
        out.extend(DataChange("added", None, (*hp, k)) for k in h if k not in b)
        return
    if isinstance(b, list) and isinstance(h, list):
        key = _list_key(b, h)
        if key is not None:
            _diff_named(b, h, bp, hp, key, out, renames)
            return
        if b != h:
            out.append(DataChange("changed", bp, hp))
        return
    if type(b) is not type(h) or b != h:
        out.append(DataChange("changed", bp, hp))


def _diff_named(
    b: list[Any],
    h: list[Any],
    bp: JsonPath,
    hp: JsonPath,
    key: tuple[str, ...],
    out: list[DataChange],
    renames: list[EntityRename],
) -> None:
    head_ids: dict[tuple[str, ...] | None, int] = {}
    for j, item in enumerate(h):
        head_ids.setdefault(_identity(item, key), j)
    matched: set[int] = set()
    removed: list[int] = []
    for i, item in enumerate(b):
        found = head_ids.get(_identity(item, key))
        if found is None or found in matched:
            removed.append(i)
            continue
        matched.add(found)
        _diff(item, h[found], (*bp, i), (*hp, found), out, renames)
    added = [j for j in range(len(h)) if j not in matched]
    # An item that lost its old name and gained a new one with identical content is a
    # rename, not a removal plus an addition.
    by_content: dict[str, list[int]] = {}
    for j in added:
        by_content.setdefault(repr(_without(h[j], key)), []).append(j)
    for i in removed:
        candidates = by_content.get(repr(_without(b[i], key)))
        if candidates:
            j = candidates.pop(0)
            added.remove(j)
            section = str(bp[-1]) if bp else ""
            renames.append(EntityRename(section, b[i], h[j], (*bp, i), (*hp, j)))
            out.extend(
                DataChange("renamed", (*bp, i, k), (*hp, j, k))
                for k in key
                if b[i].get(k) != h[j].get(k)
            )
            continue
        out.append(DataChange("removed", (*bp, i), None))
    out.extend(DataChange("added", None, (*hp, j)) for j in added)


# --------------------------------------------------------------------------- entities


@dataclass(slots=True)
class EntityIndex:
    """Where each model entity of one side sits in its merged document."""

    apis: dict[str, JsonPath] = field(default_factory=dict)
    pipelines: dict[str, JsonPath] = field(default_factory=dict)
    products: dict[str, JsonPath] = field(default_factory=dict)
    clusters: dict[str, JsonPath] = field(default_factory=dict)
    aks: dict[str, str] = field(default_factory=dict)
    pools: dict[tuple[str, str], JsonPath] = field(default_factory=dict)
    #: API id -> paths of its pool and cluster (causes one step away).
    related: dict[str, list[JsonPath]] = field(default_factory=dict)
    _roots: set[JsonPath] | None = None

    @classmethod
    def of(cls, platform: Platform | None) -> EntityIndex:
        """Index one environment's model (an empty index for ``None``)."""
        idx = cls()
        if platform is None:
            return idx
        for c in platform.clusters:
            cpath = parse_json_path(c.json_path)
            idx.clusters[c.name] = cpath
            idx.aks[c.aks_name] = c.name
            idx.pools[(c.name, c.system_pool.name)] = (*cpath, "systemPool")
            for p in c.pools:
                idx.pools[(c.name, p.name)] = parse_json_path(p.json_path)
        for a in platform.apis:
            idx.apis[a.id] = parse_json_path(a.json_path)
            rel = []
            if (a.cluster, a.pool) in idx.pools:
                rel.append(idx.pools[(a.cluster, a.pool)])
            if a.cluster in idx.clusters:
                rel.append(idx.clusters[a.cluster])
            idx.related[a.id] = rel
        for pipe in platform.pipelines:
            ppath = parse_json_path(pipe.json_path)
            idx.pipelines[pipe.id] = ppath
            idx.related[pipe.id] = [idx.apis[s.api] for s in pipe.steps if s.api in idx.apis]
            # A stage's objects carry its pipeline's name (app.kubernetes.io/part-of).
            for s in pipe.steps:
                idx.related.setdefault(s.api, []).append(ppath)
        for pr in platform.products:
            idx.products[pr.name] = parse_json_path(pr.json_path)
        return idx

    def entity_roots(self) -> list[JsonPath]:
        """Every entity path (changes under none of them are global)."""
        return [
            *self.apis.values(),
            *self.pipelines.values(),
            *self.products.values(),
            *self.clusters.values(),
        ]

    def owner(self, path: JsonPath) -> JsonPath | None:
        """The most specific entity (pool before cluster, ...) that ``path`` lies in."""
        if self._roots is None:
            self._roots = {*self.entity_roots(), *self.pools.values(), *_AZURE_ROOTS}
        for n in range(len(path), 0, -1):
            if path[:n] in self._roots:
                return path[:n]
        return None


#: ARM types owned by one section of ``azure:`` in platform.yaml.
_AZURE_SECTIONS: tuple[tuple[str, str], ...] = (
    ("microsoft.containerregistry/", "registry"),
    ("microsoft.cache/", "cache"),
    ("microsoft.apimanagement/service", "apiManagement"),
    ("microsoft.keyvault/", "keyVault"),
    ("microsoft.storage/", "storage"),
    ("microsoft.eventgrid/", "eventGrid"),
    ("microsoft.web/", "functions"),
    ("microsoft.operationalinsights/", "monitoring"),
    ("microsoft.insights/", "monitoring"),
)


_AZURE_ROOTS: tuple[JsonPath, ...] = tuple(
    ("azure", s) for s in dict.fromkeys(s for _p, s in _AZURE_SECTIONS)
)


def _named(idx: EntityIndex, token: str) -> list[JsonPath]:
    for table in (idx.apis, idx.pipelines, idx.products):
        if token in table:
            return [table[token]]
    return []


def entity_paths(res: Comparable, idx: EntityIndex) -> tuple[list[JsonPath], list[JsonPath]]:
    """(direct, related) entity paths a resource was generated from, on one side."""
    direct: list[JsonPath] = []
    related: list[JsonPath] = []
    meta = res.meta
    if "labels" in meta:
        api = str(meta["labels"].get("ai4ec.io/api", ""))
        direct += _named(idx, api)
        related += idx.related.get(api, [])
        if not direct:
            direct += _named(idx, res.name.split(" ", 1)[0].rsplit("/", 1)[-1])
        cluster = str(meta.get("cluster", ""))
        if cluster in idx.clusters:
            (related if direct else direct).append(idx.clusters[cluster])
    elif "arm_type" in meta:
        t = str(meta["arm_type"])
        parts = res.name.split("/")
        if t.startswith("microsoft.containerservice/managedclusters"):
            owner = idx.aks.get(parts[0])
            if owner is not None:
                if t.endswith("/agentpools") and len(parts) > 1 and (owner, parts[1]) in idx.pools:
                    direct.append(idx.pools[(owner, parts[1])])
                related.append(idx.clusters[owner])
                if not direct:
                    direct.append(idx.clusters[owner])
        for part in parts[1:]:
            direct += _named(idx, part)
            if part.startswith("ai4ec-ingress-") and part[14:] in idx.clusters:
                related.append(idx.clusters[part[14:]])
        for prefix, section in _AZURE_SECTIONS:
            if t.startswith(prefix):
                (related if direct else direct).append(("azure", section))
                break
    elif "policy_file" in meta:
        parts = str(meta["policy_file"]).removesuffix(".xml").split("/")
        if parts[1] == "products":
            direct += _named(idx, parts[2])
        elif len(parts) > 3:
            direct += _named(idx, parts[2])
            related += idx.related.get(parts[2], [])
        related.append(("azure", "apiManagement"))
    elif "routing" in meta:
        direct += _named(idx, str(meta["id"]))
    elif "setting" in meta or "zip" in meta:
        related += [("azure", "functions"), ("azure", "eventGrid")]
    elif "section" in meta:
        related += [("metadata",), ("azure",)]
    return direct, related


def _value_at(data: Any, path: JsonPath | None) -> Any:
    if path is None:
        return None
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _under(path: JsonPath | None, roots: list[JsonPath]) -> bool:
    if path is None:
        return False
    return any(path[: len(r)] == r for r in roots)


@dataclass(slots=True)
class Tracer:
    """Finds the platform.yaml lines behind each changed resource of one environment."""

    changes: list[DataChange]
    base_source: SourceMap | None
    head_source: SourceMap | None
    base_index: EntityIndex
    head_index: EntityIndex
    base_data: Any = None
    head_data: Any = None
    _ends: dict[tuple[str, JsonPath], int] = field(default_factory=dict)
    _by_owner: dict[tuple[str, JsonPath], list[int]] = field(default_factory=dict)
    _unowned: list[tuple[int, str, JsonPath]] = field(default_factory=list)
    _global: list[DataChange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ends = self._end_lines()
        # Each change is filed under the most specific entity it lies in, once, so that
        # picking the causes of one resource costs a few dict lookups even when
        # thousands of resources and changes are involved.
        for i, c in enumerate(self.changes):
            for side, path, idx in (
                ("head", c.head, self.head_index),
                ("base", c.base, self.base_index),
            ):
                if path is None:
                    continue
                owner = idx.owner(path)
                if owner is None:
                    self._unowned.append((i, side, path))
                else:
                    self._by_owner.setdefault((side, owner), []).append(i)
        # Changes outside every api, pipeline, product and cluster (metadata, azure.*):
        # the fallback cause of resources with no entity-specific change.
        entity = {
            (s, i)
            for (s, root), ids in self._by_owner.items()
            if root not in _AZURE_ROOTS
            for i in ids
        }
        self._global = [
            c
            for i, c in enumerate(self.changes)
            if ("head", i) not in entity and ("base", i) not in entity
        ]

    def _end_lines(self) -> dict[tuple[str, JsonPath], int]:
        """Last line of every added/removed subtree (one pass over each source map)."""
        wanted: dict[str, set[JsonPath]] = {"base": set(), "head": set()}
        for c in self.changes:
            if c.kind == "added" and c.head is not None:
                wanted["head"].add(c.head)
            elif c.kind == "removed" and c.base is not None:
                wanted["base"].add(c.base)
        ends: dict[tuple[str, JsonPath], int] = {}
        for side, source in (("base", self.base_source), ("head", self.head_source)):
            if source is None or not wanted[side]:
                continue
            lengths = sorted({len(p) for p in wanted[side]})
            for path, pos in source.positions.items():
                for n in lengths:
                    if len(path) < n:
                        break
                    prefix = path[:n]
                    if prefix in wanted[side] and pos.line > ends.get((side, prefix), 0):
                        ends[(side, prefix)] = pos.line
        return ends

    def ref(self, change: DataChange, indirect: bool = False) -> SourceRef | None:
        """Where ``change`` is in platform.yaml (head lines, base lines for removals)."""
        side = "base" if change.kind == "removed" else "head"
        path = change.base if side == "base" else change.head
        source = self.base_source if side == "base" else self.head_source
        if path is None or source is None:
            return None
        pos = source.locate(path, prefer_key=True)
        line = pos.line if pos else None
        end = self._ends.get((side, path), line)
        return SourceRef(
            file=source.file,
            line=line,
            end_line=end if end and line and end > line else line,
            json_path=format_path(path),
            side=side,
            change=change.kind,
            indirect=indirect,
        )

    def sources(
        self,
        base: Comparable | None,
        head: Comparable | None,
        evidence: tuple[str, ...] = (),
        limit: int = 8,
    ) -> tuple[SourceRef, ...]:
        """The platform.yaml changes behind a resource, most specific first.

        ``evidence`` holds the resource's changed values; when some candidate causes
        have their new (or old) value among them, only those are kept - a Deployment
        relabelled after a pipeline rename names the pipeline, not a pool change on
        the same cluster.
        """
        if not self.changes:
            return ()
        hd, hr = entity_paths(head, self.head_index) if head is not None else ([], [])
        bd, br = entity_paths(base, self.base_index) if base is not None else ([], [])
        picked = self._pick(hd, bd)
        indirect = False
        if not picked:
            picked = self._pick(hr, br)
        if not picked:
            picked = self._global
            indirect = True
        if not picked:
            picked = list(self.changes)
        if evidence and len(picked) > 1:
            proven = [c for c in picked if self._evidenced(c, evidence)]
            picked = proven or picked
        refs = [r for r in (self.ref(c, indirect) for c in picked[:limit]) if r is not None]
        return tuple(refs)

    def _evidenced(self, change: DataChange, evidence: tuple[str, ...]) -> bool:
        """Whether the changed value (or the key it sits under) shows in the resource."""
        for data, path in ((self.head_data, change.head), (self.base_data, change.base)):
            if path is None:
                continue
            key = path[-1]
            if isinstance(key, str) and len(key) >= 3 and any(key in e for e in evidence):
                return True
            value = _value_at(data, path)
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                continue
            text = str(value)
            if text in evidence or (len(text) >= 3 and any(text in e for e in evidence)):
                return True
        return False

    def _pick(self, head_roots: list[JsonPath], base_roots: list[JsonPath]) -> list[DataChange]:
        """Changes whose most specific entity is one of ``roots``.

        A cluster is related to every API on it, but a change to another pool of that
        cluster did not cause a change to this API's objects.
        """
        if not head_roots and not base_roots:
            return []
        found: set[int] = set()
        for side, roots in (("head", head_roots), ("base", base_roots)):
            for root in roots:
                found.update(self._by_owner.get((side, root), ()))
            found.update(i for i, s, path in self._unowned if s == side and _under(path, roots))
        return [self.changes[i] for i in sorted(found)]
