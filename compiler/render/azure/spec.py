r"""One representation of the Azure template, printed as ARM JSON and as Bicep.

The Azure target builds a list of :class:`Resource` specs (type, API version, name,
parent, scope, body, explicit dependencies). Values in a body are JSON-like Python
values, plus :class:`Expr` nodes for everything Azure computes at deployment time
(resource ids, ``reference()``, ``listKeys()``, ``guid()`` ...).

Every expression node knows how to print itself both ways - ARM template language for
``main.json`` and Bicep for ``main.bicep`` and its modules - so the two files come from
one value and cannot drift: a resource id is ``resourceId('Microsoft.Web/sites', 'app')``
in ARM and ``site.id`` in Bicep, a key is ``listKeys(...)`` in ARM and
``redis.listKeys()`` in Bicep, and so on.

Literal strings are escaped for each target here, once: :func:`bicep_str` for Bicep
(``'`` -> ``\\'``, ``\\`` -> ``\\\\``, ``${`` -> ``\\${``, newlines -> ``\\n``) and
:func:`arm_str` for ARM (a literal that looks like ``[expression]`` gets ``[[``).
"""

from __future__ import annotations

import math
import posixpath
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------- escaping

_BICEP_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BICEP_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Everything :func:`bicep_str` rewrites: escapes, ``${`` and other control characters.
_BICEP_NEEDS_ESCAPE = re.compile(r"[\\'\n\r\t]|\$(?=\{)|[\x00-\x1f\x7f]")


def _bicep_escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _BICEP_ESCAPES:
        return _BICEP_ESCAPES[ch]
    if ch == "$":
        return "\\$"
    return f"\\u{{{ord(ch):X}}}"


def bicep_str(value: str) -> str:
    r"""A Bicep string literal (quotes included) that reads back as exactly ``value``.

    Bicep strings interpolate ``${...}`` and know the escapes ``\\ \' \n \r \t \$
    \u{x}``; every user string goes through here so none can close the literal or
    inject an expression.
    """
    return "'" + bicep_str_body(value) + "'"


def bicep_str_body(value: str, closes: bool = True) -> str:
    r"""The inside of :func:`bicep_str` (also the literal parts of an interpolation).

    ``closes`` says the closing quote follows. A backslash there is written ``\u{5C}``
    rather than ``\\``: the same string for Bicep, but pycep (which ``write`` and
    checkov parse Bicep with) reads ``\\'`` as an escaped quote and runs on.
    """
    body = _BICEP_NEEDS_ESCAPE.sub(_bicep_escape, value)
    if closes and value.endswith("\\"):
        body = body[:-2] + "\\u{5C}"
    return body


def bicep_key(key: Any) -> str:
    """An object key: bare when it is an identifier, else a quoted string.

    A key may be an expression (``userAssignedIdentities`` is keyed by resource id):
    Bicep writes it as an interpolated string.
    """
    if isinstance(key, Expr):
        return "'${" + key.bicep() + "}'"
    return key if _BICEP_IDENT.match(key) else bicep_str(key)


def arm_str(value: str) -> str:
    """A literal ARM string: ``[x]`` would be evaluated, so it is written ``[[x]``."""
    return "[" + value if value.startswith("[") and value.endswith("]") else value


def _arm_quote(value: str) -> str:
    """A string literal inside an ARM expression (``'`` doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _number_text(value: float) -> str:
    if not math.isfinite(value):  # pragma: no cover - the schema only admits finite numbers
        raise ValueError(f"cannot write {value!r} into a template")
    return repr(value)


def normalize_number(value: float) -> int | float:
    """Integral floats become ints: ``-1.0`` is written ``-1`` in both languages."""
    return int(value) if float(value).is_integer() else value


# ------------------------------------------------------------------------------ expressions


class Expr(ABC):
    """A value Azure computes while deploying; printable as ARM and as Bicep.

    Subclasses implement ``_arm``, ``_bicep`` and (when they hold sub-values)
    ``_children``; callers use the public methods.
    """

    __slots__ = ()

    def arm(self) -> str:
        """The ARM template-language text (without the enclosing brackets)."""
        return self._arm()

    def bicep(self) -> str:
        """The Bicep expression text."""
        return self._bicep()

    def children(self) -> tuple[Any, ...]:
        """Sub-values, for walking (dependencies, parameters)."""
        return self._children()

    @abstractmethod
    def _arm(self) -> str: ...

    @abstractmethod
    def _bicep(self) -> str: ...

    def _children(self) -> tuple[Any, ...]:
        return ()


def arm_arg(value: Any) -> str:
    """A Python value or expression as an argument inside an ARM expression."""
    if isinstance(value, Expr):
        return value.arm()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        value = normalize_number(value)
        return str(value) if isinstance(value, int) else f"json('{_number_text(value)}')"
    if isinstance(value, str):
        return _arm_quote(value)
    if value is None:
        return "null()"
    raise TypeError(f"cannot use {type(value).__name__} inside an ARM expression")


def bicep_inline(value: Any) -> str:
    """A scalar or expression as Bicep on one line (function arguments, conditions)."""
    if isinstance(value, Expr):
        return value.bicep()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        value = normalize_number(value)
        return str(value) if isinstance(value, int) else f"json('{_number_text(value)}')"
    if isinstance(value, str):
        return bicep_str(value)
    if isinstance(value, FileText):
        return bicep_str(value.text)
    if value is None:
        return "null"
    raise TypeError(f"cannot use {type(value).__name__} inline in Bicep")


def _path_text(path: tuple[str | int, ...]) -> str:
    """``.a.b[0]['odd-key']`` - the same syntax in both languages."""
    parts = []
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif _BICEP_IDENT.match(p):
            parts.append("." + p)
        else:
            parts.append(f"[{_arm_quote(p)}]")
    return "".join(parts)


def _bicep_path_text(path: tuple[str | int, ...]) -> str:
    parts = []
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif _BICEP_IDENT.match(p):
            parts.append("." + p)
        else:
            parts.append(f"[{bicep_str(p)}]")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Param(Expr):
    """A template parameter (main.bicep passes it on to the modules that use it)."""

    name: str

    def _arm(self) -> str:
        return f"parameters({_arm_quote(self.name)})"

    def _bicep(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Var(Expr):
    """A template variable (each Bicep module declares the ones it uses)."""

    name: str

    def _arm(self) -> str:
        return f"variables({_arm_quote(self.name)})"

    def _bicep(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Fn(Expr):
    """A function both languages share by name (``guid``, ``uriComponent``, ...)."""

    name: str
    args: tuple[Any, ...] = ()

    def _arm(self) -> str:
        return f"{self.name}({', '.join(arm_arg(a) for a in self.args)})"

    def _bicep(self) -> str:
        return f"{self.name}({', '.join(bicep_inline(a) for a in self.args)})"

    def _children(self) -> tuple[Any, ...]:
        return self.args


@dataclass(frozen=True, slots=True)
class Member(Expr):
    """Property or index access on an expression: ``subscription().tenantId``."""

    base: Expr
    path: tuple[str | int, ...]

    def _arm(self) -> str:
        return self.base.arm() + _path_text(self.path)

    def _bicep(self) -> str:
        return self.base.bicep() + _bicep_path_text(self.path)

    def _children(self) -> tuple[Any, ...]:
        return (self.base,)


@dataclass(frozen=True, slots=True)
class Op(Expr):
    """An operator that Bicep writes infix and ARM as a function (``==`` / equals)."""

    bicep_op: str
    arm_fn: str
    args: tuple[Any, ...]

    def _arm(self) -> str:
        return f"{self.arm_fn}({', '.join(arm_arg(a) for a in self.args)})"

    def _bicep(self) -> str:
        if len(self.args) == 1:
            return f"{self.bicep_op}({bicep_inline(self.args[0])})"
        return "(" + f" {self.bicep_op} ".join(bicep_inline(a) for a in self.args) + ")"

    def _children(self) -> tuple[Any, ...]:
        return self.args


@dataclass(frozen=True, slots=True)
class Cond(Expr):
    """``if(c, a, b)`` in ARM, ``c ? a : b`` in Bicep."""

    test: Any
    then: Any
    otherwise: Any

    def _arm(self) -> str:
        return f"if({arm_arg(self.test)}, {arm_arg(self.then)}, {arm_arg(self.otherwise)})"

    def _bicep(self) -> str:
        return (
            f"({bicep_inline(self.test)} ? {bicep_inline(self.then)} "
            f": {bicep_inline(self.otherwise)})"
        )

    def _children(self) -> tuple[Any, ...]:
        return (self.test, self.then, self.otherwise)


@dataclass(frozen=True, slots=True)
class Interp(Expr):
    """A string built from literals and expressions: ``format()`` / ``'${...}'``."""

    parts: tuple[Any, ...]

    def _arm(self) -> str:
        fmt: list[str] = []
        args: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                fmt.append(p.replace("{", "{{").replace("}", "}}"))
            else:
                fmt.append("{" + str(len(args)) + "}")
                args.append(arm_arg(p))
        return f"format({', '.join([_arm_quote(''.join(fmt)), *args])})"

    def _bicep(self) -> str:
        last = len(self.parts) - 1
        out = [
            bicep_str_body(p, closes=i == last)
            if isinstance(p, str)
            else "${" + bicep_inline(p) + "}"
            for i, p in enumerate(self.parts)
        ]
        return "'" + "".join(out) + "'"

    def _children(self) -> tuple[Any, ...]:
        return tuple(p for p in self.parts if not isinstance(p, str))


@dataclass(frozen=True, slots=True)
class ResourceId(Expr):
    """The id of a resource of this template: ``resourceId(...)`` / ``sym.id``."""

    res: Resource

    def _arm(self) -> str:
        r = self.res
        if r.scope is not None:
            return (
                f"extensionResourceId({r.scope.id().arm()}, {_arm_quote(r.type)}, "
                f"{arm_arg(r.name)})"
            )
        return f"resourceId({', '.join([_arm_quote(r.type), *(arm_arg(s) for s in r.segments)])})"

    def _bicep(self) -> str:
        return f"{self.res.symbol}.id"

    def _children(self) -> tuple[Any, ...]:
        return (self.res,)


@dataclass(frozen=True, slots=True)
class Reference(Expr):
    """Runtime state of a resource: ``reference(id, ver[, 'full']).x`` / ``sym.properties.x``.

    ``full`` reads top-level fields such as ``identity``; otherwise the path starts
    inside ``properties``.
    """

    res: Resource
    path: tuple[str | int, ...]
    full: bool = False

    def _arm(self) -> str:
        full = ", 'full'" if self.full else ""
        call = f"reference({self.res.id().arm()}, {_arm_quote(self.res.api_version)}{full})"
        return call + _path_text(self.path)

    def _bicep(self) -> str:
        head = self.res.symbol if self.full else f"{self.res.symbol}.properties"
        return head + _bicep_path_text(self.path)

    def _children(self) -> tuple[Any, ...]:
        return (self.res,)


@dataclass(frozen=True, slots=True)
class ListKeys(Expr):
    """A resource's keys, read at deployment: ``listKeys(id, ver).x`` / ``sym.listKeys().x``."""

    res: Resource
    path: tuple[str | int, ...]

    def _arm(self) -> str:
        call = f"listKeys({self.res.id().arm()}, {_arm_quote(self.res.api_version)})"
        return call + _path_text(self.path)

    def _bicep(self) -> str:
        return f"{self.res.symbol}.listKeys()" + _bicep_path_text(self.path)

    def _children(self) -> tuple[Any, ...]:
        return (self.res,)


@dataclass(frozen=True, slots=True)
class Symbol(Expr):
    """A Bicep symbolic name (``parent:``, ``scope:``, ``dependsOn:``); never in ARM."""

    res: Resource

    def _arm(self) -> str:  # pragma: no cover - a renderer bug if it happens
        raise TypeError("symbolic names exist only in Bicep")

    def _bicep(self) -> str:
        return self.res.symbol

    def _children(self) -> tuple[Any, ...]:
        return (self.res,)


@dataclass(frozen=True, slots=True)
class LoadText(Expr):
    """``loadTextContent('<path>')``: Bicep reads a file at build time; never in ARM.

    :func:`with_loads` puts it where a :class:`FileText` is, for one Bicep file, with
    ``path`` relative to that file (Bicep resolves it so).
    """

    path: str

    def _arm(self) -> str:  # pragma: no cover - a renderer bug if it happens
        raise TypeError("loadTextContent exists only in Bicep")

    def _bicep(self) -> str:
        return f"loadTextContent({bicep_str(self.path)})"


#: Bicep refuses to load a file longer than this many characters (``loadTextContent``).
BICEP_LOAD_LIMIT = 131_072


@dataclass(frozen=True, slots=True)
class FileText:
    """A literal string ai4ec also writes, byte for byte, to a file of the same output.

    ARM has no way to read a file, so ARM JSON inlines ``text``; the Bicep file loads it
    from ``path`` instead (:func:`with_loads`), so an APIM policy is not printed a third
    time. Where it is printed without a Bicep file's place (:func:`to_bicep` alone) it
    is the inline string, which says the same.

    Attributes:
        text: The string (what the file holds, UTF-8).
        path: The file below ``out/<env>/``, POSIX, e.g. ``apim/policies/global.xml``.
    """

    text: str
    path: str

    def loadable(self) -> bool:
        """Whether Bicep may load it: within :data:`BICEP_LOAD_LIMIT`.

        Counted in UTF-8 bytes, never fewer than the characters Bicep counts, so a text
        near the limit stays inline rather than failing ``bicep build``.
        """
        return len(self.text.encode("utf-8")) <= BICEP_LOAD_LIMIT


def with_loads(value: Any, bicep_dir: str) -> Any:
    """``value`` with every loadable :class:`FileText` as a :class:`LoadText`.

    Args:
        value: A body value (dicts and lists are copied only where they change).
        bicep_dir: The directory of the Bicep file it is printed into, below
            ``out/<env>/`` (``azure`` or ``azure/modules``); paths are relative to it.
    """
    if isinstance(value, FileText):
        if not value.loadable():
            return value
        return LoadText(posixpath.relpath(value.path, bicep_dir))
    if isinstance(value, Note):
        inner = with_loads(value.value, bicep_dir)
        return value if inner is value.value else Note(inner, value.text)
    if isinstance(value, dict):
        items = {k: with_loads(v, bicep_dir) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, list | tuple):
        seq = [with_loads(v, bicep_dir) for v in value]
        if all(a is b for a, b in zip(seq, value, strict=True)):
            return value
        return seq if isinstance(value, list) else tuple(seq)
    return value


@dataclass(frozen=True, slots=True)
class Note:
    """A value with a comment: Bicep prints ``// text`` above the key; ARM drops it."""

    value: Any
    text: str


# -------------------------------------------------------------------------------- resources


_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")


def camel(*parts: str) -> str:
    """``camel('aks', 'my-cluster')`` -> ``aksMyCluster`` (a Bicep identifier)."""
    words = [w for p in parts for w in _NOT_WORD.split(p) if w]
    if not words:  # pragma: no cover - callers always pass a word
        raise ValueError("no identifier characters")
    head, *rest = words
    out = head[0].lower() + head[1:] + "".join(w[0].upper() + w[1:] for w in rest)
    return out if out[0].isalpha() else "r" + out


@dataclass(frozen=True, slots=True)
class Parameter:
    """A template parameter: declared in main (and in a split template that reads it).

    Attributes:
        name: The parameter name (``parameters('<name>')``, ``<name>`` in Bicep).
        type: Bicep/ARM type: ``string``, ``object``, ``bool``, ``int`` or ``array``.
        default: The default value, written to ``*.parameters.json`` as well.
        description: Why it is a parameter (``@description`` / ``metadata.description``).
        allowed: The only values Azure accepts (``@allowed`` / ``allowedValues``); empty
            for any value. A typo then fails before anything is deployed, and Bicep can
            check the value against a property that takes a fixed set of strings.
        secure: A secret (``securestring`` / ``@secure()``): Resource Manager never logs
            or returns it. Only ever filled from Key Vault (``key_vault``).
        key_vault: ``(vault resource id, secret name)`` the parameters file reads the
            value from (an ARM Key Vault parameter reference), so no file holds it.
    """

    name: str
    type: str
    default: Any
    description: str
    allowed: tuple[str, ...] = ()
    secure: bool = False
    key_vault: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """A template output: a value ``apply`` reads after deployment (never a secret)."""

    name: str
    type: str
    value: Any
    description: str


@dataclass(eq=False)
class Resource:
    """One resource of the template (see the module docstring).

    Attributes:
        symbol: Bicep symbolic name, unique in the whole template.
        type: Full resource type, e.g. ``Microsoft.Storage/storageAccounts/blobServices``.
        api_version: API version (one published, current version per type).
        name: The last name segment (a string, or an expression such as ``guid(...)``).
        module: The Bicep module (concern) that declares it.
        body: Every other top-level field (location, tags, sku, identity, properties).
        parent: The parent resource of a child type.
        scope: The resource an extension resource (a role assignment) applies to.
        depends_on: Ordering that no expression implies (Azure would otherwise race).
        condition: Deploy only when this is true.
        comment: Why the resource exists, printed above it in Bicep.
        virtual: Never deployed, only referenced (``Microsoft.Web/sites/host``).
    """

    symbol: str
    type: str
    api_version: str
    name: str | Expr
    module: str
    body: dict[str, Any] = field(default_factory=dict)
    parent: Resource | None = None
    scope: Resource | None = None
    depends_on: list[Resource] = field(default_factory=list)
    condition: Expr | None = None
    comment: str = ""
    virtual: bool = False

    @property
    def segments(self) -> tuple[str | Expr, ...]:
        """Every name segment from the top-level ancestor down."""
        head = self.parent.segments if self.parent is not None else ()
        return (*head, self.name)

    @property
    def full_name(self) -> str:
        """``account/default/results`` (only for literal names)."""
        return "/".join(s if isinstance(s, str) else "?" for s in self.segments)

    def id(self) -> ResourceId:
        """The resource id expression."""
        return ResourceId(self)

    def ref(self, *path: str | int, full: bool = False) -> Reference:
        """A runtime property (``full=True`` for ``identity`` and other top-level fields)."""
        return Reference(self, path, full)

    def keys(self, *path: str | int) -> ListKeys:
        """The resource's keys."""
        return ListKeys(self, path)

    def scope_path(self) -> str:
        """``Microsoft.KeyVault/vaults/kv``: how an ARM ``scope`` field names this resource."""
        ns, *types = self.type.split("/")
        parts = [ns]
        for t, s in zip(types, self.segments, strict=True):
            if not isinstance(s, str):  # pragma: no cover - scopes have literal names
                raise TypeError(f"{self.symbol}: a scope needs a literal name")
            parts.extend((t, s))
        return "/".join(parts)


# ---------------------------------------------------------------------------------- walking


def walk(value: Any) -> Iterator[Any]:
    """Every expression node and resource inside a value, depth first.

    An explicit stack rather than nested generators: a 1,000-API template holds over a
    million nodes, and each ``yield from`` level re-yields every node below it (about a
    tenth of the Azure target's time went there). The order is the same pre-order the
    recursive form gave, which :func:`referenced` relies on.
    """
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is int or t is bool or t is float or v is None:
            continue  # the leaves: nearly every node, nothing inside
        if isinstance(v, Note):
            push(v.value)
        elif isinstance(v, dict):
            for k, item in reversed(v.items()):
                push(item)
                if type(k) is not str:
                    push(k)
        elif isinstance(v, list | tuple):
            extend(reversed(v))
        elif isinstance(v, Expr):
            yield v
            extend(reversed(v.children()))
        elif isinstance(v, Resource):
            yield v


def referenced(value: Any) -> list[Resource]:
    """Resources an expression inside ``value`` reads (order of first use)."""
    seen: dict[int, Resource] = {}
    for node in walk(value):
        if isinstance(node, Resource) and id(node) not in seen:
            seen[id(node)] = node
    return list(seen.values())


def scan(value: Any) -> tuple[list[Resource], set[str], set[str]]:
    """:func:`referenced`, :func:`params_used` and :func:`vars_used` in one walk."""
    seen: dict[int, Resource] = {}
    params: set[str] = set()
    variables: set[str] = set()
    for node in walk(value):
        if isinstance(node, Resource):
            seen.setdefault(id(node), node)
        elif isinstance(node, Param):
            params.add(node.name)
        elif isinstance(node, Var):
            variables.add(node.name)
    return list(seen.values()), params, variables


def params_used(value: Any) -> set[str]:
    """Names of the template parameters used inside ``value``."""
    return {n.name for n in walk(value) if isinstance(n, Param)}


def vars_used(value: Any) -> set[str]:
    """Names of the template variables used inside ``value``."""
    return {n.name for n in walk(value) if isinstance(n, Var)}


# ------------------------------------------------------------------------------ serialising


def to_arm(value: Any) -> Any:
    """A body value as ARM JSON: expressions become ``"[...]"`` strings.

    A :class:`FileText` is its text: ARM cannot read a file.
    """
    if isinstance(value, Note):
        return to_arm(value.value)
    if isinstance(value, FileText):
        return arm_str(value.text)
    if isinstance(value, Expr):
        return "[" + value.arm() + "]"
    if isinstance(value, dict):
        return {_arm_key(k): to_arm(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_arm(v) for v in value]
    if isinstance(value, str):
        return arm_str(value)
    if isinstance(value, float):
        return normalize_number(value)
    return value


def _arm_key(key: Any) -> str:
    if isinstance(key, Expr):
        return "[" + key.arm() + "]"
    if not isinstance(key, str):  # pragma: no cover - a builder bug
        raise TypeError(f"object keys are strings or expressions, not {key!r}")
    return arm_str(key)


def to_bicep(value: Any, indent: int = 0) -> str:
    """A body value as Bicep: objects and arrays one item per line, comments from :class:`Note`.

    ``indent`` is the column of the line the value starts on; nested lines are indented
    two more spaces per level, as ``bicep format`` does.
    """
    pad = " " * indent
    if isinstance(value, Note):
        return to_bicep(value.value, indent)
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = ["{"]
        for k, v in value.items():
            if isinstance(v, Note):
                lines.extend(f"{pad}  // {line}".rstrip() for line in v.text.splitlines())
            lines.append(f"{pad}  {bicep_key(k)}: {to_bicep(v, indent + 2)}")
        lines.append(pad + "}")
        return "\n".join(lines)
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        lines = ["["]
        lines.extend(f"{pad}  {to_bicep(v, indent + 2)}" for v in value)
        lines.append(pad + "]")
        return "\n".join(lines)
    return bicep_inline(value)
