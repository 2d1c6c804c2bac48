"""Canonical form of generated content, so only real changes survive the comparison.

Input: parsed artifact content (dicts, lists, scalars). Output: a flat mapping from a
field path to a leaf value, in which every "same thing written two ways" is one value:

- key order and quoting are gone once parsed; integral floats are ints (``1.0 == 1``);
- ``null``, ``{}`` and ``[]`` equal an absent field (every layer treats them alike);
- lists of mappings that carry a ``name`` (or ``key``) are keyed by it, so reordering
  containers, env variables or app settings is not a change;
- Kubernetes resource quantities compare by value (``1024Mi == 1Gi``, ``0.5 == 500m``);
- a few server-side defaults equal their absence (Service ``type: ClusterIP``...).

It also decides which leaves are secret (:func:`is_secret`): those are compared, but
their values never reach a report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from functools import lru_cache
from typing import Any

#: One step of a field path: a mapping key, a list index, or a keyed list item
#: (``("name", "api")`` printed ``[name=api]``).
Seg = str | int | tuple[str, str]
Path = tuple[Seg, ...]
Leaf = str | int | float | bool | tuple[Any, ...]

_PLAIN_KEY = re.compile(r"^[A-Za-z_$@#][A-Za-z0-9_$@#-]*$")
#: Keys that identify an item of a list of mappings, in order of preference.
_ITEM_KEYS = ("name", "key", "objectName", "mountPath")


@lru_cache(maxsize=1 << 16)
def format_path(path: Path) -> str:
    """``('spec', ('name', 'api'), 'image')`` -> ``spec[name=api].image``.

    Cached: the same paths recur in every object of a kind, and sorting fields and
    matching rules format them again and again.
    """
    out: list[str] = []
    for seg in path:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif isinstance(seg, tuple):
            out.append(f"[{seg[0]}={seg[1]}]")
        elif _PLAIN_KEY.match(seg):
            out.append(f".{seg}" if out else seg)
        else:
            out.append(f'["{seg}"]')
    return "".join(out)


def canonical_number(value: Any) -> Any:
    """Integral floats become ints; everything else is returned unchanged."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _item_key(items: list[Any]) -> str | None:
    """The field that names every item of ``items`` uniquely, if there is one."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _ITEM_KEYS:
        values = [i.get(key) for i in items]
        if all(isinstance(v, str | int) and not isinstance(v, bool) for v in values) and len(
            set(values)
        ) == len(values):
            return key
    return None


def flatten(value: Any, prefix: Path = ()) -> dict[Path, Leaf]:
    """Flatten ``value`` into ``{path: leaf}`` (see the module docstring for the rules)."""
    out: dict[Path, Leaf] = {}
    _flatten(value, prefix, out)
    return out


def _flatten(value: Any, path: Path, out: dict[Path, Leaf]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, (*path, str(k)), out)
        return
    if isinstance(value, list | tuple):
        if not value:
            return
        key = _item_key(list(value))
        if key is not None:
            for item in value:
                _flatten(
                    {k: v for k, v in item.items() if k != key}, (*path, (key, str(item[key]))), out
                )
                if len(item) == 1:  # an item that is only its name still exists
                    out[(*path, (key, str(item[key])))] = True
            return
        if all(not isinstance(v, dict | list | tuple) for v in value):
            out[path] = tuple(canonical_number(v) for v in value)
            return
        for i, item in enumerate(value):
            _flatten(item, (*path, i), out)
        return
    out[path] = canonical_number(value)


# ------------------------------------------------------------------- Kubernetes quantities

_QTY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTORS: dict[str, Fraction] = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_BINARY = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki")
_DECIMAL = ("E", "P", "T", "G", "M", "k")


def canonical_quantity(value: Any) -> Any:
    """A Kubernetes quantity in one canonical spelling, readable in a diff.

    Whole values use the largest binary suffix that divides them (``1024Mi`` -> ``1Gi``),
    then the largest decimal one; fractions become millis (``0.5`` -> ``500m``).
    Values that are not quantities are returned unchanged.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value
    m = _QTY.match(str(canonical_number(value)).strip())
    if not m:
        return value
    amount = Fraction(m.group(1)) * _FACTORS[m.group(2) or ""]
    if amount.denominator == 1:
        n = amount.numerator
        if n == 0:
            return "0"
        for suffix in (*_BINARY, *_DECIMAL):
            f = _FACTORS[suffix].numerator
            if abs(n) >= f and n % f == 0:
                return f"{n // f}{suffix}"
        return str(n)
    millis = amount * 1000
    if millis.denominator == 1:
        return f"{millis.numerator}m"
    return value


def normalise_k8s(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Kubernetes object with quantities canonical and generator noise gone."""
    return _k8s_walk(obj, ())  # type: ignore[no-any-return]


_QUANTITY_PARENTS = {"requests", "limits", "capacity", "allocatable", "hard"}
#: Labels/annotations that change with the generator, not with the platform (helm-diff#473).
_VOLATILE_LABELS = {"helm.sh/chart"}


def _k8s_walk(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        out = {}
        parent = path[-1] if path else ""
        for k, v in value.items():
            if parent in ("labels", "annotations") and k in _VOLATILE_LABELS:
                continue
            if parent in _QUANTITY_PARENTS and not isinstance(v, dict | list):
                out[k] = canonical_quantity(v)
            else:
                out[k] = _k8s_walk(v, (*path, str(k)))
        return out
    if isinstance(value, list):
        return [_k8s_walk(v, path) for v in value]
    return canonical_number(value)


#: (kind regex, path regex, default value): a leaf equal to its default equals absence.
_K8S_DEFAULTS: tuple[tuple[re.Pattern[str], re.Pattern[str], Leaf], ...] = tuple(
    (re.compile(k), re.compile(p), v)
    for k, p, v in (
        (r"^Service$", r"^spec\.type$", "ClusterIP"),
        (r".*", r"(^|\.)ports(\[[^]]*\])?\.protocol$", "TCP"),
        (r".*", r"(^|\.)template\.spec\.restartPolicy$", "Always"),
        (r".*", r"(^|\.)template\.spec\.dnsPolicy$", "ClusterFirst"),
        (r".*", r"(^|\.)template\.spec\.schedulerName$", "default-scheduler"),
        (r".*", r"(^|\.)template\.spec\.terminationGracePeriodSeconds$", 30),
        (r"^Deployment$", r"^spec\.revisionHistoryLimit$", 10),
        (r"^Deployment$", r"^spec\.progressDeadlineSeconds$", 600),
    )
)


def drop_k8s_defaults(kind: str, flat: dict[Path, Leaf]) -> dict[Path, Leaf]:
    """Remove leaves that only restate a Kubernetes default (see ``_K8S_DEFAULTS``)."""
    rules = [(p, v) for k, p, v in _K8S_DEFAULTS if k.match(kind)]
    if not rules:
        return flat
    out = {}
    for path, leaf in flat.items():
        text = format_path(path)
        if any(leaf == v and p.search(text) for p, v in rules):
            continue
        out[path] = leaf
    return out


# ----------------------------------------------------------------------------- secrets

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SECRET_WORDS = {
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "credential",
    "credentials",
    "apikey",
    "passphrase",
    "sas",
    "connectionstring",
}
_SECRET_PAIRS = {
    ("connection", "string"),
    ("access", "key"),
    ("account", "key"),
    ("primary", "key"),
    ("secondary", "key"),
    ("private", "key"),
    ("api", "key"),
    ("shared", "key"),
    ("instrumentation", "key"),
    ("client", "secret"),
    ("function", "key"),
    ("host", "key"),
    ("master", "key"),
    ("subscription", "key"),
}
#: Word pairs that make a field *point at* a stored secret (a Key Vault secret's name).
_REFERENCE_PAIRS = {("vault", "secret"), ("vault", "certificate"), ("vault", "key")}
#: A last word that makes the field *name* or *describe* a secret, not hold it.
_DESCRIBING = {
    "name",
    "names",
    "ref",
    "refs",
    "type",
    "types",
    "id",
    "ids",
    "version",
    "enabled",
    "policy",
    "provider",
    "path",
    "identifier",
    "count",
    "objects",
    "object",
    "format",
    "header",
    "query",
}
#: Values that carry credentials whatever their field is called.
_SECRET_VALUE = re.compile(
    r"(?i)^@Microsoft\.KeyVault\(|accountkey=|sharedaccesskey=|sharedaccesssignature=|"
    r"[?&]sig=|[?&]code=[^{&]|password=|[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@"
)


def words(name: str) -> list[str]:
    """``EVENT_GRID_KEY`` -> ``['event', 'grid', 'key']``; camelCase splits too."""
    return [w.lower() for w in _WORD.findall(name)]


def looks_secret(name: str) -> bool:
    """Whether a field or setting called ``name`` holds secret material."""
    ws = words(name)
    if not ws or ws[-1] in _DESCRIBING:
        return False
    if any(pair in _REFERENCE_PAIRS for pair in zip(ws, ws[1:], strict=False)):
        return False
    if any(w in _SECRET_WORDS for w in ws):
        return True
    if any(pair in _SECRET_PAIRS for pair in zip(ws, ws[1:], strict=False)):
        return True
    return len(ws) >= 2 and ws[-1] == "key"


def secret_value(value: Any) -> bool:
    """Whether a value itself carries a credential (Key Vault reference, keyed URL...)."""
    return isinstance(value, str) and bool(_SECRET_VALUE.search(value))


def is_secret(path: Path, old: Any, new: Any, extra: Callable[[Path], bool] | None = None) -> bool:
    """Whether the leaf at ``path`` must be redacted.

    A leaf is secret when its own name looks secret, when it is the ``value`` of a
    list item whose name looks secret (app settings, env variables), when either value
    carries a credential, or when the resource kind says so (``extra``).
    """
    if secret_value(old) or secret_value(new):
        return True
    if extra is not None and extra(path):
        return True
    last = next((s for s in reversed(path) if isinstance(s, str)), None)
    if last is not None and looks_secret(last):
        return True
    if last == "value":
        keyed = next((s for s in reversed(path) if isinstance(s, tuple)), None)
        if keyed is not None and looks_secret(keyed[1]):
            return True
    return False


# ----------------------------------------------------------------------------- renames


class Rewriter:
    """Rewrites names in one pass (so ``a -> ab`` never becomes ``abb``).

    Each rule is ``(old, new, strict)``: ``strict`` also refuses ``-`` and ``_`` next to
    the match, for bare names (``detector`` must not match inside ``detector-sync``);
    ids such as ``detector-v1`` use the loose form so that ``detector-v1-secrets`` is
    renamed too.
    """

    def __init__(self, rules: list[tuple[str, str, bool]]) -> None:
        self.map = {old: new for old, new, _strict in rules if old}
        alternatives = [
            rf"(?<![{_edge(strict)}]){re.escape(old)}(?![{_edge(strict)}])"
            for old, _new, strict in sorted(rules, key=lambda r: -len(r[0]))
            if old
        ]
        self.pattern = re.compile("|".join(alternatives)) if alternatives else None

    def __call__(self, text: str) -> str:
        """``text`` with every rule applied once."""
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: self.map[m.group(0)], text)


def _edge(strict: bool) -> str:
    return "A-Za-z0-9_-" if strict else "A-Za-z0-9"


def token_pattern(token: str, strict: bool) -> re.Pattern[str]:
    """A regex matching ``token`` as a whole name (see :class:`Rewriter`)."""
    edge = _edge(strict)
    return re.compile(rf"(?<![{edge}]){re.escape(token)}(?![{edge}])")


def substitute(value: Any, rewrite: Callable[[str], str]) -> Any:
    """``value`` with every string (keys too) passed through ``rewrite``."""
    if isinstance(value, str):
        return rewrite(value)
    if isinstance(value, dict):
        return {substitute(k, rewrite): substitute(v, rewrite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, rewrite) for v in value]
    return value


def iter_strings(value: Any) -> Iterator[str]:
    """Every string in ``value`` (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from iter_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_strings(v)
