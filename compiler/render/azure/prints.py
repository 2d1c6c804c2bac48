"""Azure target, printing side: each resource printed once, per-API groups from the cache.

A 1,000-API template holds about 16,000 resources, nearly all of them in per-API groups
(an API's API Management children, its identity with its results container and
grants). Converting, weighing, scanning and pretty-printing them was most of the Azure
target's time, and a pull request that edits 10 APIs used to pay it for all 1,000.

So every resource is printed on its own (:class:`Printed`: its ``main.json`` text, its
compact size, its dependencies, the parameters and variables it reads) and the
templates are assembled from those texts (:func:`document_text`), byte for byte what
``json.dumps(doc, indent=2, sort_keys=True)`` printed before; a test proves it. The
prints of a per-API group are kept in the render cache (namespace ``arm``) under a key
that hashes everything the group's resources read (:class:`Group`: the model slice its
builder reads, ai4ec's code via :func:`~ai4ec.cache.code_fingerprint`), so a hit is
the text a cold render prints. What depends on the other APIs - which split template
a resource lands in, which of its dependencies are in the same template, the
parameters a template declares - is still decided per build, from the prints.

An entry is used only when it names exactly the group's resources, in order, and every
dependency it names is a resource of this template; anything else (truncated, foreign,
another layout) is ignored and rendered again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from ...cache import DiskCache, code_fingerprint, key_of
from .spec import Resource, scan, to_arm

#: Bumped when what an entry holds, or how it is printed, changes shape.
_FORMAT = "arm-prints/1"
NAMESPACE = "arm"
#: Where a resource's ``dependsOn`` goes: its dependencies depend on the template it
#: lands in, so the stored text holds this line instead. Escaped by JSON (``\\u0000``),
#: so no value of a body prints the same line.
_MARK = "\0ai4ec-depends-on\0"
#: Indentation of a resource's keys in a template (``{"resources": [{...}]}``).
_KEY_PAD = " " * 6
_MARK_LINE = "\n" + _KEY_PAD + '"dependsOn": ' + json.dumps(_MARK) + ","
#: Placeholder of the ``resources`` array while the rest of a template is printed.
_RESOURCES_MARK = "\0ai4ec-resources\0"
_RESOURCES_LINE = "\n    " + json.dumps(_RESOURCES_MARK) + "\n"


#: ``json.dumps(s, ensure_ascii=False)`` of a string, without making an encoder per call.
_quote: Callable[[str], str] = getattr(json.encoder, "encode_basestring", json.dumps)


@dataclass(frozen=True, slots=True)
class Printed:
    """One resource as ``main.json`` (or a split template) prints it.

    Attributes:
        text: The resource's object, indented as an item of a template's ``resources``,
            with a placeholder line where ``dependsOn`` goes.
        size: Compact size of its body plus 300 (what split templates are cut by).
        deps: Symbols of everything it waits for, in order.
        params: Template parameters its name, body and condition read.
        variables: Template variables they read.
    """

    text: str
    size: int
    deps: tuple[str, ...]
    params: frozenset[str]
    variables: frozenset[str]

    def resolved(self, inside: AbstractSet[str], arm_id: Callable[[str], str]) -> str:
        """The text with ``dependsOn`` limited to the resources (symbols) ``inside``.

        ``arm_id`` gives the ARM id expression of a resource by its symbol.
        """
        ids = [arm_id(symbol) for symbol in self.deps if symbol in inside]
        if not ids:
            return self.text.replace(_MARK_LINE, "", 1)
        pad = _KEY_PAD + "  "
        items = ",\n".join(pad + _quote(i) for i in ids)
        line = f'\n{_KEY_PAD}"dependsOn": [\n{items}\n{_KEY_PAD}],'
        return self.text.replace(_MARK_LINE, line, 1)


def arm_resource(res: Resource, deps: list[Resource], body: Any = None) -> dict[str, Any]:
    """One resource of ``main.json`` (classic form: full type, full name, dependsOn ids).

    ``body`` is ``to_arm(res.body)`` when the caller has it already (:class:`~.template.ArmBodies`).
    """
    if all(isinstance(s, str) for s in res.segments):
        name: Any = "/".join(str(s) for s in res.segments)
    elif res.parent is None:
        name = res.name
    else:  # pragma: no cover - expression names only occur on top-level resources
        raise TypeError(f"{res.symbol}: expression name below a parent")
    out: dict[str, Any] = {"type": res.type, "apiVersion": res.api_version, "name": to_arm(name)}
    if res.scope is not None:
        out["scope"] = res.scope.scope_path()
    if res.condition is not None:
        out["condition"] = to_arm(res.condition)
    out.update(to_arm(res.body) if body is None else body)
    if deps:
        out["dependsOn"] = [to_arm(d.id()) for d in deps]
    return out


#: Between two items of a list of objects printed with indent 2 (deeper objects'
#: lines start with four spaces or more, and strings hold no newline).
_ITEM_JOINT = "\n  },\n  {\n"


def print_resources(
    items: Sequence[tuple[Resource, Sequence[Resource], Any, int]],
) -> list[Printed]:
    """:class:`Printed` of each ``(resource, dependencies, ARM body, size)``.

    Printed as one list and cut at the joints between items: one ``json.dumps`` per
    resource (16,000 of them) made the pure-Python encoder's closures every time.
    """
    if not items:
        return []
    objects = []
    for res, _deps, body, _size in items:
        out = arm_resource(res, [], body)
        out["dependsOn"] = _MARK
        objects.append(out)
    text = json.dumps(objects, indent=2, sort_keys=True, ensure_ascii=False)
    parts = text[len("[\n  {\n") : -len("\n  }\n]")].split(_ITEM_JOINT)
    if len(parts) != len(items):  # pragma: no cover - the joint is unambiguous
        raise AssertionError("resources printed as a list did not cut into items")
    printed: list[Printed] = []
    for part, (res, deps, _body, size) in zip(parts, items, strict=True):
        # Items of a template's resources: two levels deeper than the list's items.
        item = "    {\n  " + part.replace("\n", "\n  ") + "\n    }"
        if _MARK_LINE not in item:  # pragma: no cover - a key sorted after every other
            raise AssertionError(f"{res.symbol}: dependsOn is not between two keys")
        _refs, params, variables = scan([res.name, res.body, res.condition])
        printed.append(
            Printed(
                text=item,
                size=size,
                deps=tuple(d.symbol for d in deps),
                params=frozenset(params),
                variables=frozenset(variables),
            )
        )
    return printed


def document_text(doc: Mapping[str, Any], resources: Sequence[str]) -> str:
    """``json.dumps(doc, indent=2, sort_keys=True)`` with ``resources`` as its array.

    ``doc`` holds everything but the resources; ``resources`` are their texts, as
    :meth:`Printed.resolved` gives them. The result ends with a newline, like every
    JSON artifact.
    """
    if not resources:
        text = json.dumps({**doc, "resources": []}, indent=2, sort_keys=True, ensure_ascii=False)
        return text + "\n"
    text = json.dumps(
        {**doc, "resources": [_RESOURCES_MARK]}, indent=2, sort_keys=True, ensure_ascii=False
    )
    head, sep, tail = text.partition(_RESOURCES_LINE)
    if not sep:  # pragma: no cover - the placeholder is always printed so
        raise AssertionError("the resources placeholder was not printed")
    return head + "\n" + ",\n".join(resources) + "\n" + tail + "\n"


@dataclass(frozen=True, slots=True)
class Group:
    """Resources of one API that only the model slice hashed in ``slice`` decides.

    ``slice`` must hash everything the group's builder read (the API's model or plan,
    the platform-wide values it uses); the cache key adds ai4ec's code and the
    resources' symbols.
    """

    kind: str
    slice: str
    resources: tuple[Resource, ...]


#: Groups of one kind are stored in this many entries (by a hash of their first
#: symbol, so adding an API moves no other API): one file per API made a cold
#: 1,000-API build write 2,000 files, about 0.5 s; a changed API now re-prints the
#: other APIs of its entry too (about 15 at 1,000 APIs).
BUCKETS = 64


def _bucket(group: Group) -> tuple[str, int]:
    return group.kind, zlib.crc32(group.resources[0].symbol.encode("utf-8")) % BUCKETS


def _bucket_key(kind: str, groups: Sequence[Group]) -> str:
    parts: list[str | bytes] = [_FORMAT, code_fingerprint(), kind]
    for g in groups:
        parts += [g.slice, "\0".join(r.symbol for r in g.resources)]
    return key_of(*parts)


def _pack(resources: Sequence[Resource], prints: Sequence[Printed]) -> bytes:
    """A JSON line, then the texts.

    The line holds per resource its symbol, size, text length, dependencies,
    parameters and variables. The texts are appended as they are: escaping 20 MB of
    them into JSON strings and back cost more than printing them.
    """
    rows = [
        [r.symbol, p.size, len(p.text), list(p.deps), sorted(p.params), sorted(p.variables)]
        for r, p in zip(resources, prints, strict=True)
    ]
    head = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return "\n".join([head, *(p.text for p in prints)]).encode("utf-8")


_NONE: frozenset[str] = frozenset()


def _names(values: Any) -> frozenset[str]:
    if not values:
        return _NONE
    if not isinstance(values, list) or not all(type(v) is str for v in values):
        raise TypeError("not a list of names")
    return frozenset(values)


def _unpack(
    payload: bytes, resources: Sequence[Resource], known: Mapping[str, Resource]
) -> list[Printed] | None:
    """The prints of ``resources`` an entry holds, or None unless it holds exactly theirs."""
    try:
        head, sep, body = payload.decode("utf-8").partition("\n")
        rows = json.loads(head)
        if not sep or not isinstance(rows, list) or len(rows) != len(resources):
            return None
        out: list[Printed] = []
        at = 0
        for res, row in zip(resources, rows, strict=True):
            symbol, size, length, deps, params, variables = row
            if symbol != res.symbol or type(size) is not int or type(length) is not int:
                return None
            if length < 0:
                return None
            text = body[at : at + length]
            at += length + 1  # and the newline after it
            if len(text) != length or _MARK_LINE not in text:
                return None
            if not isinstance(deps, list) or not all(type(d) is str and d in known for d in deps):
                return None
            out.append(Printed(text, size, tuple(deps), _names(params), _names(variables)))
        if at != len(body) + 1:
            return None
    except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        return None
    return out


class GroupStore:
    """The cached groups of one build: what came from the cache, what to store after."""

    def __init__(self) -> None:
        self._cache = DiskCache(NAMESPACE)
        self._missed: list[tuple[str, list[Resource]]] = []

    def load(
        self, groups: Sequence[Group], known: Mapping[str, Resource]
    ) -> list[tuple[Resource, Printed]]:
        """The groups' resources whose prints the cache holds, with their prints.

        ``known`` maps every deployed resource's symbol to it: an entry naming another
        dependency is not this template's.
        """
        found: list[tuple[Resource, Printed]] = []
        if not self._cache.active:
            return found
        buckets: dict[tuple[str, int], list[Group]] = {}
        for group in groups:
            if group.resources:
                buckets.setdefault(_bucket(group), []).append(group)
        for (kind, _n), members in sorted(buckets.items()):
            key = _bucket_key(kind, members)
            resources = [r for g in members for r in g.resources]
            payload = self._cache.get(key)
            prints = _unpack(payload, resources, known) if payload else None
            if prints is None:
                self._missed.append((key, resources))
            else:
                found.extend(zip(resources, prints, strict=True))
        return found

    def store(self, printed: Mapping[int, Printed]) -> None:
        """Keep the prints of every entry that missed (all printed by now)."""
        for key, resources in self._missed:
            prints = [printed.get(id(r)) for r in resources]
            if all(p is not None for p in prints):
                self._cache.put(key, _pack(resources, [p for p in prints if p is not None]))
        self._missed = []


__all__ = [
    "BUCKETS",
    "arm_resource",
    "NAMESPACE",
    "Group",
    "GroupStore",
    "Printed",
    "document_text",
    "print_resources",
]
