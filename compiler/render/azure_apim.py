"""API Management child resources from the APIM target, merged into the Azure template.

:func:`ai4ec.render.apim.apim_arm_resources` returns ARM resource dicts (APIs,
operations, products, named values, backends, policies) - the contract in
docs/contracts.md. This module turns each into a :class:`Resource` of the ``apim-apis``
module, so ``main.json`` and ``modules/apim-apis.bicep`` carry them from the same spec
as everything else:

* ``name`` is a literal ``service/child/...`` name or a constant expression
  (``[format('{0}/{1}', ...)]``); its segments find the parent (the service or another
  child), so Bicep can write ``parent: apim``.
* String values that are ARM expressions (``[...]``) are parsed into the shared
  expression model, so they print as Bicep too; ``resourceId()`` calls that name a
  resource of this template become references to it (``apim.id`` in Bicep).
* ``dependsOn`` entries (``[resourceId(...)]`` or literal full names) must name
  resources of this template; anything else is an error, because Bicep cannot
  depend on what it does not declare.

Named values that read Key Vault additionally wait for API Management's Key Vault role
and for the secrets themselves: API Management checks both when a named value is saved.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Diagnostic, RenderError
from ..model.types import Platform
from .artifact import RenderContext
from .azure_resources import AzureSpec, camel
from .azure_spec import Cond, Expr, Fn, Member, Op, Param, Resource, Var

MODULE = "apim-apis"
_TYPE = re.compile(r"Microsoft\.ApiManagement/service(/[A-Za-z]+)+\Z")
_ALLOWED_KEYS = {"type", "apiVersion", "name", "properties", "dependsOn", "comments"}

ApimResources = Callable[[Platform, RenderContext], list[dict[str, Any]]]


ApimParameters = Callable[[Platform], dict[str, dict[str, Any]]]


def _apim_function(attr: str) -> Any:
    name = f"{__package__}.apim"
    if importlib.util.find_spec(name) is None:
        return None
    fn = getattr(importlib.import_module(name), attr, None)
    return fn if callable(fn) else None


def apim_provider() -> ApimResources | None:
    """``apim_arm_resources`` when the APIM target exists, else ``None``.

    Only a missing module means "no APIM target yet"; an APIM module that fails to
    import is a bug and raises.
    """
    fn: ApimResources | None = _apim_function("apim_arm_resources")
    return fn


def apim_parameters() -> ApimParameters | None:
    """``apim_arm_parameters``: template parameters the APIM resources read, if any."""
    fn: ApimParameters | None = _apim_function("apim_arm_parameters")
    return fn


def merge_parameters(spec: AzureSpec, params: dict[str, dict[str, Any]]) -> None:
    """Declare the APIM target's template parameters (ARM form) next to ours.

    Raises:
        RenderError: a parameter clashes with one of the Azure target's own.
    """
    taken = {p[0] for p in spec.params}
    for name, decl in sorted(params.items()):
        if name in taken:
            raise _fail(f"APIM parameter {name!r} clashes with an Azure target parameter")
        type_ = str(decl.get("type", "string"))
        if type_ not in ("string", "object", "bool", "int", "array"):
            raise _fail(f"APIM parameter {name!r} has unsupported type {type_!r}")
        description = str((decl.get("metadata") or {}).get("description", name))
        spec.params.append((name, type_, decl.get("defaultValue"), description))


def _fail(message: str) -> RenderError:
    return RenderError(
        message,
        (
            Diagnostic(
                code="E-RENDER-APIM",
                message=message,
                hint="this is an ai4ec bug; please report it with your platform.yaml",
            ),
        ),
    )


# ------------------------------------------------------------------ ARM expression parsing


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Access:
    base: Any
    key: str | int | Any  # str: .name, int: [0], other: [expr]


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),.\[\]]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected character at {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ValueError(f"expected {value or 'a token'}, got {tok}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        node = self.expr()
        if self.peek() is not None:
            raise ValueError(f"trailing tokens from {self.peek()}")
        return node

    def expr(self) -> Any:
        kind, text = self.take()
        node: Any
        if kind == "str":
            node = text[1:-1].replace("''", "'")
        elif kind == "num":
            node = float(text) if "." in text else int(text)
        elif kind == "name":
            self.take("(")
            args: list[Any] = []
            if self.peek() != ("punct", ")"):
                args.append(self.expr())
                while self.peek() == ("punct", ","):
                    self.take(",")
                    args.append(self.expr())
            self.take(")")
            node = _Call(text, tuple(args))
        else:
            raise ValueError(f"unexpected {text!r}")
        while self.peek() in (("punct", "."), ("punct", "[")):
            if self.take()[1] == ".":
                node = _Access(node, self.take()[1])
            else:
                key = self.expr()
                self.take("]")
                node = _Access(node, key)
        return node


def parse_arm_expression(text: str) -> Any:
    """Parse the inside of ``[...]`` into calls, accesses and literals."""
    return _Parser(text).parse()


def is_arm_expression(value: Any) -> bool:
    """Whether an ARM string is an expression (``[...]`` but not the ``[[`` escape)."""
    return (
        isinstance(value, str)
        and value.startswith("[")
        and value.endswith("]")
        and not value.startswith("[[")
    )


def _const(node: Any) -> Any:
    """Evaluate a constant expression (names): literals, ``format``, ``concat``."""
    if isinstance(node, str | int):
        return node
    if isinstance(node, _Call) and node.name.lower() == "concat":
        return "".join(str(_const(a)) for a in node.args)
    if isinstance(node, _Call) and node.name.lower() == "format":
        fmt, *args = (_const(a) for a in node.args)
        return re.sub(
            r"\{\{|\}\}|\{(\d+)\}",
            lambda m: {"{{": "{", "}}": "}"}.get(m.group(0)) or str(args[int(m.group(1))]),
            str(fmt),
        )
    raise ValueError("not a constant expression")


_OPS = {
    "equals": ("==", "equals"),
    "less": ("<", "less"),
    "lessOrEquals": ("<=", "lessOrEquals"),
    "greater": (">", "greater"),
    "greaterOrEquals": (">=", "greaterOrEquals"),
    "and": ("&&", "and"),
    "or": ("||", "or"),
    "not": ("!", "not"),
}


class _Translator:
    """Parsed ARM expressions -> the shared expression model."""

    def __init__(self, index: dict[tuple[str, tuple[str, ...]], Resource]) -> None:
        self.index = index

    def resource_of(self, node: Any) -> Resource | None:
        """The template resource a ``resourceId(type, names...)`` call names."""
        if not (isinstance(node, _Call) and node.name.lower() == "resourceid"):
            return None
        try:
            type_, *names = (_const(a) for a in node.args)
        except (ValueError, IndexError):
            return None
        return self.index.get((str(type_).lower(), tuple(str(n) for n in names)))

    def value(self, node: Any) -> Any:
        if isinstance(node, str | int | float):
            return node
        if isinstance(node, _Access):
            base = self.value(node.base)
            key = node.key if isinstance(node.key, str | int) else None
            if key is None or not isinstance(base, Expr):
                raise ValueError("computed index in an APIM expression")
            return Member(base, (key,))
        assert isinstance(node, _Call)
        name, args = node.name, node.args
        lowered = name.lower()
        if lowered == "parameters" and len(args) == 1 and isinstance(args[0], str):
            return Param(args[0])
        if lowered == "variables" and len(args) == 1 and isinstance(args[0], str):
            return Var(args[0])
        res = self.resource_of(node)
        if res is not None:
            return res.id()
        conv = tuple(self.value(a) for a in args)
        if lowered == "if" and len(conv) == 3:
            return Cond(*conv)
        for arm_name, (op, fn) in _OPS.items():
            if lowered == arm_name.lower():
                return Op(op, fn, conv)
        if lowered in ("true", "false") and not conv:
            return lowered == "true"
        return Fn(name, conv)

    def body(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.body(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.body(v) for v in value]
        if isinstance(value, str) and value.startswith("[["):
            return value[1:]
        if is_arm_expression(value):
            return self.value(parse_arm_expression(value[1:-1]))
        return value


# ---------------------------------------------------------------------------------- merging


def _name_segments(raw: Any) -> tuple[str, ...]:
    if is_arm_expression(raw):
        raw = _const(parse_arm_expression(raw[1:-1]))
    if not isinstance(raw, str) or not raw:
        raise ValueError("name must be a string")
    return tuple(raw.split("/"))


def _symbol(type_: str, segments: tuple[str, ...]) -> str:
    kinds = type_.split("/")[2:]
    return camel("apim", kinds[-1], *segments[1:])


def merge_apim(spec: AzureSpec, raw: list[dict[str, Any]]) -> list[Resource]:
    """Add the APIM target's resources to ``spec`` (module ``apim-apis``).

    Raises:
        RenderError: a resource that cannot be placed (unknown parent or dependency,
            unsupported key or expression): an APIM target bug, reported with its name.
    """
    service = spec.handles["apim"]
    index: dict[tuple[str, tuple[str, ...]], Resource] = {
        (r.type.lower(), tuple(s for s in r.segments if isinstance(s, str))): r
        for r in spec.resources
        if all(isinstance(s, str) for s in r.segments)
    }
    by_name: dict[str, Resource] = {}
    translator = _Translator(index)
    added: list[Resource] = []
    pending: list[tuple[Resource, list[Any]]] = []
    for n, item in enumerate(raw):
        label = f"APIM resource #{n} ({item.get('type')} {item.get('name')})"
        try:
            extra = set(item) - _ALLOWED_KEYS
            if extra:
                raise ValueError(f"unsupported keys {sorted(extra)}")
            type_ = str(item["type"])
            if not _TYPE.match(type_):
                raise ValueError("not a child type of Microsoft.ApiManagement/service")
            segments = _name_segments(item["name"])
            kinds = type_.split("/")
            if len(segments) != len(kinds) - 1:
                raise ValueError(f"name has {len(segments)} segments for type {type_}")
            if segments[0] != service.name:
                raise ValueError(f"belongs to service {segments[0]!r}, not {service.name!r}")
            parent = index.get(("/".join(kinds[:-1]).lower(), segments[:-1]))
            if parent is None:
                raise ValueError(f"parent {'/'.join(segments[:-1])} is not defined before it")
            body: dict[str, Any] = {}
            if "properties" in item:
                body["properties"] = translator.body(item["properties"])
            res = Resource(
                symbol=_symbol(type_, segments),
                type=type_,
                api_version=str(item["apiVersion"]),
                name=segments[-1],
                module=MODULE,
                body=body,
                parent=parent,
                comment=str(item.get("comments", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise _fail(f"cannot place {label}: {exc}") from exc
        spec.add(res)
        index[(type_.lower(), segments)] = res
        by_name["/".join(segments)] = res
        by_name[f"{type_}/{'/'.join(segments)}".lower()] = res
        added.append(res)
        pending.append((res, list(item.get("dependsOn", []))))
    for res, deps in pending:
        for dep in deps:
            target = _dependency(dep, translator, by_name)
            if target is None:
                raise _fail(f"APIM resource {res.full_name}: unknown dependency {dep!r}")
            if target is not res.parent and target not in res.depends_on:
                res.depends_on.append(target)
        if res.type.endswith("/namedValues") and "keyVault" in (res.body.get("properties") or {}):
            _wait_for_key_vault(spec, res)
    return added


def _dependency(dep: Any, translator: _Translator, by_name: dict[str, Resource]) -> Resource | None:
    if is_arm_expression(dep):
        try:
            return translator.resource_of(parse_arm_expression(dep[1:-1]))
        except ValueError:
            return None
    if isinstance(dep, str):
        return by_name.get(dep) or by_name.get(dep.lower())
    return None


def _wait_for_key_vault(spec: AzureSpec, res: Resource) -> None:
    grant = spec.handles.get("grant:roleApimKeyVaultSecretsUser")
    secrets = [r for k, r in spec.handles.items() if k.startswith("secret:")]
    for dep in [grant, *secrets]:
        if dep is not None and dep not in res.depends_on:
            res.depends_on.append(dep)
