"""Stage: two builds of one environment -> the list of changes, with risk, cause and cost.

Input: each side's artifacts (and, when built from platform.yaml, its merged data,
source map and model). Output: an :class:`~ai4ec.diff.records.EnvironmentDiff`.

Resources are matched by identity (:mod:`.resources`). Those left over on one side are
checked for renames before they count as removed and added, in this order:

1. items of platform.yaml that only changed their name (from :mod:`.trace`): every
   resource whose identity contains the old id and maps onto an added one;
2. API/pipeline/product ids that disappear while another appears with resources that
   map onto the old ones (builds compared without their platform.yaml);
3. same content under another name (the resource's own name masked out);
4. the one storage account / registry / vault / cache... of a build replaced by one
   with another name (then its child resources follow).

A rename is reported once per resource (``renamed``), with whatever else changed, and
is destructive: Azure and Kubernetes cannot rename, so the old one is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..load import SourceMap
from ..model.types import Platform
from . import cost as costs
from .clients import client_changes
from .normalize import (
    Path,
    Rewriter,
    format_path,
    is_secret,
    looks_secret,
    substitute,
)
from .records import (
    LAYERS,
    MISSING,
    ChangeKind,
    CostChange,
    EnvironmentDiff,
    FieldChange,
    Hidden,
    RenamedEntity,
    ResourceChange,
    Risk,
    SourceRef,
)
from .resources import Comparable, extract
from .risk import field_risk, removal_risk, shared_fragment_reason, type_key, worst
from .trace import DataChange, EntityIndex, EntityRename, Tracer, data_changes


@dataclass(slots=True)
class EnvSide:
    """One environment of one side, ready to compare."""

    name: str
    files: dict[str, bytes]
    data: dict[str, Any] | None = None
    source: SourceMap | None = None
    platform: Platform | None = None
    #: Where the environment's overlay starts (for a whole environment added/removed).
    overlay: SourceRef | None = None


@dataclass(frozen=True, slots=True)
class Sub:
    """Rewrite ``old`` to ``new`` when matching renamed resources."""

    old: str
    new: str
    #: Bare names (``detector``) must not match inside longer names (``detector-sync``).
    strict: bool


def _rewriter(subs: list[Sub]) -> Rewriter:
    return Rewriter([(s.old, s.new, s.strict) for s in subs])


@dataclass(slots=True)
class _Rename:
    section: str
    old: str
    new: str
    subs: list[Sub]
    sources: tuple[SourceRef, ...] = ()
    count: int = 0


#: ARM types a build has exactly one of; one removed and one added is a rename.
_SINGLETONS = (
    "microsoft.containerservice/managedclusters",
    "microsoft.storage/storageaccounts",
    "microsoft.containerregistry/registries",
    "microsoft.keyvault/vaults",
    "microsoft.cache/redis",
    "microsoft.cache/redisenterprise",
    "microsoft.apimanagement/service",
    "microsoft.operationalinsights/workspaces",
    "microsoft.insights/components",
    "microsoft.eventgrid/topics",
    "microsoft.web/serverfarms",
    "microsoft.web/sites",
)
_VERSION_SUFFIX = re.compile(r"-(v[0-9][A-Za-z0-9.]*)$")


def diff_environment(
    name: str,
    base: EnvSide | None,
    head: EnvSide | None,
    prices: costs.Prices,
) -> EnvironmentDiff:
    """Compare one environment's two builds (either may be absent: env added/removed)."""
    ex = extract(base.files if base else {}, head.files if head else {})
    renames: list[EntityRename] = []
    changes_in_data: list[DataChange] = []
    if base is not None and head is not None and base.data is not None and head.data is not None:
        changes_in_data = data_changes(base.data, head.data, renames)
    base_idx = EntityIndex.of(base.platform if base else None)
    head_idx = EntityIndex.of(head.platform if head else None)
    tracer = Tracer(
        changes_in_data,
        base.source if base else None,
        head.source if head else None,
        base_idx,
        head_idx,
        base.data if base else None,
        head.data if head else None,
    )
    whole_env: tuple[SourceRef, ...] = ()
    if base is None and head is not None and head.overlay is not None:
        whole_env = (head.overlay,)
    elif head is None and base is not None and base.overlay is not None:
        whole_env = (base.overlay,)

    out: list[ResourceChange] = []
    unchanged = ex.unchanged
    removed = {k: r for k, r in ex.base.items() if k not in ex.head}
    added = {k: r for k, r in ex.head.items() if k not in ex.base}
    for key in sorted(set(ex.base) & set(ex.head)):
        change = _change(name, ex.base[key], ex.head[key], tracer, prices, whole_env)
        if change is None:
            unchanged += 1
        else:
            out.append(change)

    entity_renames = _data_renames(renames, tracer, base_idx, head_idx)
    pairs = _pair(removed, added, entity_renames, _prefix_change(base, head))
    for b, h, subs in pairs:
        del removed[b.key]
        del added[h.key]
        change = _change(
            name, b, h, tracer, prices, whole_env, renamed_from=b, rewrite=_rewriter(subs)
        )
        assert change is not None
        out.append(change)
        for r in entity_renames:
            if any(s in subs for s in r.subs):
                r.count += 1
    out.extend(
        _one_sided(name, res, ChangeKind.REMOVED, tracer, prices, whole_env)
        for res in removed.values()
    )
    out.extend(
        _one_sided(name, res, ChangeKind.ADDED, tracer, prices, whole_env) for res in added.values()
    )

    out.sort(key=lambda c: (LAYERS.index(c.layer) if c.layer in LAYERS else 99, c.key))
    notes: list[str] = []
    before = costs.totals(ex.base_arm, prices) if (base and ex.base_arm) else None
    after = costs.totals(ex.head_arm, prices) if (head and ex.head_arm) else None
    if (base and not ex.base_arm) or (head and not ex.head_arm):
        notes.append(
            "cost: a side has no ARM template (azure/main.json), so its cost is not estimated"
        )
    return EnvironmentDiff(
        name=name,
        base_name=base.name if base else None,
        head_name=head.name if head else None,
        changes=tuple(out),
        before=before,
        after=after,
        unchanged=unchanged,
        renames=tuple(
            RenamedEntity(r.section, r.old, r.new, r.count, r.sources)
            for r in entity_renames
            if r.count
        ),
        notes=tuple(notes),
        clients=client_changes(base.platform if base else None, head.platform if head else None)
        if (base is None or base.platform is not None)
        and (head is None or head.platform is not None)
        else (),
    )


# ------------------------------------------------------------------------------ fields


def _secret_rule(res: Comparable, other: Comparable | None) -> Callable[[Path], bool] | None:
    """Fields a resource kind holds secrets in, whatever they are called."""
    meta = res.meta
    t = meta.get("arm_type")
    if t == "microsoft.keyvault/vaults/secrets":
        return lambda p: p[:2] == ("properties", "value")
    if t == "microsoft.apimanagement/service/namedvalues":
        flags = [
            bool((r.content.get("properties") or {}).get("secret"))
            for r in (res, other)
            if r is not None and isinstance(r.content, dict)
        ]
        if any(flags):
            return lambda p: p[:2] == ("properties", "value")
    if meta.get("k8s_kind") == "Secret":
        return lambda p: bool(p) and p[0] in ("data", "stringData")
    if "setting" in meta and looks_secret(str(meta["setting"])):
        return lambda _path: True
    return None


def _item_exists(flat: dict[Path, Any], prefix: Path) -> bool:
    n = len(prefix)
    return any(k[:n] == prefix for k in flat)


def _keyed_prefix(path: Path) -> Path | None:
    for i in range(len(path) - 1, -1, -1):
        if isinstance(path[i], tuple):
            return path[: i + 1]
    return None


def _rewrite_path(path: Path, rewrite: Rewriter) -> Path:
    return tuple(
        rewrite(seg)
        if isinstance(seg, str)
        else (seg[0], rewrite(seg[1]))
        if isinstance(seg, tuple)
        else seg
        for seg in path
    )


#: Fields clients call by: a rename that changes them is a change clients see, so it is
#: shown even though it follows from the rename (the old URL stops working). Keys are
#: lower-case ARM types, as :func:`~ai4ec.diff.risk.type_key` gives them.
CLIENT_VISIBLE_FIELDS: dict[str, frozenset[str]] = {
    "microsoft.apimanagement/service/apis": frozenset({"properties.path"}),
    "microsoft.apimanagement/service/apis/operations": frozenset({"properties.urlTemplate"}),
}


def _same(old: Any, new: Any, rewrite: Rewriter | None) -> bool:
    if old is MISSING or new is MISSING:
        return False
    if type(old) is type(new) and old == new:
        return True
    if rewrite is None:
        return False
    if isinstance(old, str) and isinstance(new, str):
        return rewrite(old) == new
    if isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        return all(_same(o, n, rewrite) for o, n in zip(old, new, strict=True))
    return False


def field_changes(
    base: Comparable | None, head: Comparable | None, rewrite: Rewriter | None = None
) -> tuple[list[FieldChange], int]:
    """Leaf-level differences between two versions of a resource, and the equal count.

    For a renamed resource, ``rewrite`` maps old names to new ones: a field whose only
    difference is the rename itself (its own name, labels, derived paths) is unchanged.
    """
    ref = head if head is not None else base
    assert ref is not None
    tkey = type_key(ref.layer, ref.meta)
    bf = base.flat() if base is not None else {}
    if rewrite is not None:
        bf = {_rewrite_path(p, rewrite): v for p, v in bf.items()}
    hf = head.flat() if head is not None else {}
    rule = _secret_rule(ref, base if ref is head else head)
    opaque = ref.style == "opaque"
    both = base is not None and head is not None
    out: list[FieldChange] = []
    unchanged = 0
    visible = CLIENT_VISIBLE_FIELDS.get(tkey, frozenset())
    for path in sorted(set(bf) | set(hf), key=format_path):
        old = bf.get(path, MISSING)
        new = hf.get(path, MISSING)
        text = format_path(path)
        if _same(old, new, None if text in visible else rewrite):
            unchanged += 1
            continue
        risk: tuple[Risk, str] | None = None
        if both:
            keyed = _keyed_prefix(path)
            if keyed is None or (_item_exists(bf, keyed) and _item_exists(hf, keyed)):
                risk = field_risk(tkey, text, old, new)
        hidden: Hidden | None = None
        if opaque:
            hidden = Hidden.CONTENT
        elif is_secret(path, old, new, rule):
            hidden = Hidden.SECRET
        out.append(
            FieldChange(
                path=text,
                old=None if hidden and old is not MISSING else old,
                new=None if hidden and new is not MISSING else new,
                hidden=hidden,
                risk=risk[0] if risk else None,
                reason=risk[1] if risk else "",
            )
        )
    return out, unchanged


def _cost(
    base: Comparable | None, head: Comparable | None, prices: costs.Prices
) -> CostChange | None:
    def one(r: Comparable | None) -> Any:
        if r is None or "arm_type" not in r.meta:
            return None
        return costs.resource_cost(r.content, prices)

    b, h = one(base), one(head)
    if b is None and h is None:
        return None
    return CostChange(b, h)


def _evidence(fields: list[FieldChange]) -> tuple[str, ...]:
    """Paths and visible values of changed fields, for picking the most likely cause."""
    out: list[str] = []
    for f in fields:
        out.append(f.path)
        if f.hidden is None:
            out.extend(str(v) for v in (f.old, f.new) if v is not MISSING)
    return tuple(out)


def _zip_note(fields: list[FieldChange]) -> str:
    names = [f.path.strip('"[]') for f in fields]
    shown = ", ".join(names[:6]) + (f", +{len(names) - 6} more" if len(names) > 6 else "")
    return f"changed ({len(names)} file{'s' if len(names) != 1 else ''}: {shown})"


def _change(
    env: str,
    base: Comparable,
    head: Comparable,
    tracer: Tracer,
    prices: costs.Prices,
    whole_env: tuple[SourceRef, ...],
    renamed_from: Comparable | None = None,
    rewrite: Rewriter | None = None,
) -> ResourceChange | None:
    fields, unchanged = field_changes(base, head, rewrite)
    if not fields and renamed_from is None:
        return None
    risks = [f.risk for f in fields]
    reasons = [f"{f.path}: {f.reason}" for f in fields if f.reason]
    action = ChangeKind.CHANGED
    if renamed_from is not None:
        action = ChangeKind.RENAMED
        removal = removal_risk(type_key(base.layer, base.meta))
        why = "cannot be renamed in place: a new one is created and the old one deleted"
        if removal is not None and removal[0] is Risk.DATA_LOSS:
            risks.append(Risk.DATA_LOSS)
            why += f" ({removal[1]})"
        reasons.insert(0, why)
    elif any(r in (Risk.REPLACEMENT, Risk.DATA_LOSS) for r in risks):
        action = ChangeKind.REPLACED
    shared = shared_fragment_reason(head)
    if shared is not None:
        risks.append(shared[0])
        reasons.insert(0, shared[1])
    old = renamed_from or base
    return ResourceChange(
        environment=env,
        layer=head.layer,
        key=head.key,
        kind=head.kind,
        name=head.name,
        action=action,
        old_name=old.name if renamed_from is not None else None,
        fields=tuple(fields),
        unchanged_fields=unchanged,
        risk=worst(risks),
        reasons=tuple(dict.fromkeys(reasons)),
        sources=whole_env or tracer.sources(old, head, _evidence(fields)),
        cost=_cost(old, head, prices),
        files=tuple(dict.fromkeys((*old.files, *head.files))),
        note=_zip_note(fields) if head.style == "opaque" else "",
    )


def _one_sided(
    env: str,
    res: Comparable,
    action: ChangeKind,
    tracer: Tracer,
    prices: costs.Prices,
    whole_env: tuple[SourceRef, ...],
) -> ResourceChange:
    base, head = (res, None) if action is ChangeKind.REMOVED else (None, res)
    fields, _ = field_changes(base, head)
    risk = None
    reasons: tuple[str, ...] = ()
    if action is ChangeKind.REMOVED:
        found = removal_risk(type_key(res.layer, res.meta))
        if found is not None:
            risk = found[0]
            reasons = (found[1],)
    elif (shared := shared_fragment_reason(res)) is not None:
        risk, reasons = shared[0], (shared[1],)
    note = ""
    if res.style == "opaque":
        note = f"{action.value} ({len(fields)} files)"
    return ResourceChange(
        environment=env,
        layer=res.layer,
        key=res.key,
        kind=res.kind,
        name=res.name,
        action=action,
        fields=tuple(fields),
        risk=risk,
        reasons=reasons,
        sources=whole_env or tracer.sources(base, head),
        cost=_cost(base, head, prices),
        files=res.files,
        note=note,
    )


# ----------------------------------------------------------------------------- renames


def _data_renames(
    renames: list[EntityRename], tracer: Tracer, base_idx: EntityIndex, head_idx: EntityIndex
) -> list[_Rename]:
    """Substitutions for items of platform.yaml that only changed their name."""
    out: list[_Rename] = []
    tables = {
        "apis": (base_idx.apis, head_idx.apis),
        "pipelines": (base_idx.pipelines, head_idx.pipelines),
        "products": (base_idx.products, head_idx.products),
        "clusters": (base_idx.clusters, head_idx.clusters),
    }
    for r in renames:
        old_name, new_name = str(r.old.get("name")), str(r.new.get("name"))
        old_id, new_id = old_name, new_name
        section = r.section
        if section in tables:
            b_table, h_table = tables[section]
            old_id = next((i for i, p in b_table.items() if p == r.base), old_name)
            new_id = next((i for i, p in h_table.items() if p == r.head), new_name)
        subs = [Sub(old_id, new_id, strict=False)]
        if old_name != new_name and old_name != old_id:
            subs.append(Sub(old_name, new_name, strict=True))
        named = [
            c for c in tracer.changes if c.kind == "renamed" and c.head and c.head[:-1] == r.head
        ]
        sources = tuple(x for x in (tracer.ref(c) for c in named) if x is not None)
        out.append(_Rename(section.rstrip("s"), old_id, new_id, subs, sources))
    return out


def _ids(res: Comparable) -> set[str]:
    """API, pipeline and product ids a resource belongs to, read from the artifact."""
    meta = res.meta
    found: set[str] = set()
    if "labels" in meta and meta["labels"].get("ai4ec.io/api"):
        found.add(str(meta["labels"]["ai4ec.io/api"]))
    if "routing" in meta:
        found.add(str(meta["id"]))
    if "policy_file" in meta:
        parts = str(meta["policy_file"]).removesuffix(".xml").split("/")
        # apim/fragments/<id>: shared by every API, so it names none of them
        if len(parts) >= 3 and parts[2] not in ("global",) and parts[1] != "fragments":
            found.add(parts[2])
    t = meta.get("arm_type", "")
    if t.startswith(
        ("microsoft.apimanagement/service/apis", "microsoft.apimanagement/service/products")
    ):
        parts = res.name.split("/")
        if len(parts) >= 2:
            found.add(parts[1])
    return found


def _inferred_renames(
    removed: dict[str, Comparable], added: dict[str, Comparable]
) -> list[_Rename]:
    """Id renames seen in the artifacts alone (when there is no platform.yaml to ask)."""
    old_ids: dict[str, list[Comparable]] = {}
    new_ids: set[str] = set()
    for r in removed.values():
        for i in _ids(r):
            old_ids.setdefault(i, []).append(r)
    for r in added.values():
        new_ids |= _ids(r)
    still = {i for r in removed.values() for i in _ids(r)} & new_ids
    candidates_old = [i for i in old_ids if i not in still]
    candidates_new = sorted(new_ids - still - set(old_ids))
    if not candidates_old or not candidates_new or len(candidates_old) * len(candidates_new) > 2500:
        return []
    out: list[_Rename] = []
    taken: set[str] = set()
    for old in sorted(candidates_old):
        best: tuple[int, str] | None = None
        for new in candidates_new:
            if new in taken:
                continue
            subs = _id_subs(old, new)
            rewrite = _rewriter(subs)
            hits = sum(1 for r in old_ids[old] if rewrite(r.key) in added)
            if hits and hits >= 0.8 * len(old_ids[old]) and (best is None or hits > best[0]):
                best = (hits, new)
        if best is not None:
            taken.add(best[1])
            out.append(_Rename(_entity_kind(old_ids[old]), old, best[1], _id_subs(old, best[1])))
    return out


def _entity_kind(resources: list[Comparable]) -> str:
    """What an id read from artifacts names: a pipeline, a product or an API."""
    for r in resources:
        if r.meta.get("routing") == "pipelines":
            return "pipeline"
        if str(r.meta.get("policy_file", "")).startswith("apim/products/"):
            return "product"
    return "api"


def _id_subs(old: str, new: str) -> list[Sub]:
    subs = [Sub(old, new, strict=False)]
    mo, mn = _VERSION_SUFFIX.search(old), _VERSION_SUFFIX.search(new)
    if mo and mn and mo.group(1) == mn.group(1):
        subs.append(Sub(old[: mo.start()], new[: mn.start()], strict=True))
    return subs


def _pair_subs(
    removed: dict[str, Comparable], added: dict[str, Comparable], subs: list[Sub]
) -> list[tuple[Comparable, Comparable, list[Sub]]]:
    rewrite = _rewriter(subs)
    out = []
    used: set[str] = set()
    for key in sorted(removed):
        new_key = rewrite(key)
        if new_key != key and new_key in added and new_key not in used:
            used.add(new_key)
            out.append((removed[key], added[new_key], subs))
    return out


def _short_name(res: Comparable) -> str:
    if "k8s_kind" in res.meta:
        return str(((res.content.get("metadata") or {}).get("name")) or "")
    if "arm_type" in res.meta:
        return res.name.rsplit("/", 1)[-1]
    if "routing" in res.meta:
        return str(res.meta["id"])
    return ""


def _fingerprint(res: Comparable) -> str | None:
    """Content with the resource's own name masked, or ``None`` if that says nothing.

    Only resources whose content mentions their own name and has some substance take
    part: two tiny resources (a product-API link is one field) are "equal" without
    being the same thing.
    """
    short = _short_name(res)
    if len(short) < 3:
        return None
    rewrite = Rewriter([(short, "\x00", False)])
    masked = substitute(res.content, rewrite)
    if masked == res.content:
        return None
    tmp = Comparable(res.key, res.layer, res.kind, res.name, masked, res.files, res.meta, res.style)
    flat = tmp.flat()
    if len(flat) < 4:
        return None
    return repr(sorted(flat.items(), key=lambda kv: format_path(kv[0])))


def _same_content_pairs(
    rem: dict[str, Comparable], add: dict[str, Comparable]
) -> list[tuple[Comparable, Comparable, list[Sub]]]:
    """Pairs whose content is identical but for their own names (unique matches only)."""
    kinds = {(r.layer, r.kind) for r in rem.values()} & {(r.layer, r.kind) for r in add.values()}
    found: list[tuple[Comparable, Comparable, list[Sub]]] = []
    for kind in sorted(kinds):
        side_prints: list[dict[str, list[Comparable]]] = []
        for side in (rem, add):
            group = [r for r in side.values() if (r.layer, r.kind) == kind]
            prints: dict[str, list[Comparable]] = {}
            if len(group) <= 2000:
                for r in group:
                    fp = _fingerprint(r)
                    if fp is not None:
                        prints.setdefault(fp, []).append(r)
            side_prints.append(prints)
        bp, hp = side_prints
        for fp, bs in bp.items():
            hs = hp.get(fp, [])
            if len(bs) == 1 and len(hs) == 1:
                b, h = bs[0], hs[0]
                found.append((b, h, [Sub(_short_name(b), _short_name(h), strict=False)]))
    return found


def _pair(
    removed: dict[str, Comparable],
    added: dict[str, Comparable],
    renames: list[_Rename],
    prefix: Sub | None = None,
) -> list[tuple[Comparable, Comparable, list[Sub]]]:
    """Renamed (base, head, substitutions) pairs among unmatched resources."""
    pairs: list[tuple[Comparable, Comparable, list[Sub]]] = []
    rem, add = dict(removed), dict(added)

    def take(found: list[tuple[Comparable, Comparable, list[Sub]]]) -> None:
        for b, h, s in found:
            if b.key in rem and h.key in add:
                del rem[b.key]
                del add[h.key]
                pairs.append((b, h, s))

    if not rem or not add:
        return pairs
    all_subs = [s for r in renames for s in r.subs]
    take(_pair_subs(rem, add, all_subs))
    inferred = _inferred_renames(rem, add)
    renames.extend(inferred)
    take(_pair_subs(rem, add, [s for r in inferred for s in r.subs]))
    # Same content under another name.
    take(_same_content_pairs(rem, add))
    # The one stateful resource of its type, renamed.
    for t in _SINGLETONS:
        bs = [r for r in rem.values() if r.meta.get("arm_type") == t]
        hs = [r for r in add.values() if r.meta.get("arm_type") == t]
        if len(bs) == 1 and len(hs) == 1:
            take([(bs[0], hs[0], [Sub(bs[0].name, hs[0].name, strict=False)])])
    # Children follow their renamed parents: ARM names them "parent/child", and other
    # resources embed the parent's name (role assignments, data collection rules).
    parents = [
        Sub(b.name, h.name, strict=False)
        for b, h, _subs in pairs
        if "arm_type" in b.meta and "/" not in b.name and b.name != h.name
    ]
    if parents and rem and add:
        take(_pair_subs(rem, add, parents))
    # ``azure.namePrefix`` changed: what is left and carries the old prefix follows it,
    # e.g. identities whose content never names them, and role assignments whose names
    # embed an identity and a vault.
    if prefix is not None and rem and add:
        take(_pair_subs(rem, add, [*parents, prefix]))
    return pairs


def _prefix_change(base: EnvSide | None, head: EnvSide | None) -> Sub | None:
    """``namePrefix`` old -> new, when both sides come from platform.yaml and it changed."""
    if base is None or head is None or base.platform is None or head.platform is None:
        return None
    old, new = base.platform.azure.name_prefix, head.platform.azure.name_prefix
    return Sub(old, new, strict=False) if old != new else None


__all__ = ["EnvSide", "diff_environment", "field_changes"]
