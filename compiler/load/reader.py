"""Stage 1: read ``platform.yaml`` into plain data plus a source map (the YAML reader).

Input: a path. Output: :class:`Document` - JSON-like data (dicts, lists, str, int,
float, bool, None) and, for every JSON path in it, the line and column it came from.

PyYAML's libyaml composer does the parsing (fast, C); this module constructs the values
itself so that it can:

- remember where every value came from (errors point at file:line:col);
- refuse the traps YAML sets for configuration files: duplicate keys, tabs, custom tags,
  non-string keys, several documents, alias bombs, non-UTF-8 input, empty files;
- keep the original text of plain scalars that YAML 1.1 turned into booleans or numbers
  (``no`` -> False, ``1.30`` -> 1.3), so the validator can say exactly that when a string
  was expected.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..errors import Diagnostic, LoadError
from .source import Document, JsonPath, Position, SourceMap

try:  # libyaml is in every PyYAML wheel we pin; the pure-Python loader is a fallback.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - exercised only without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_ALIAS = re.compile(r"\*([^\s,\[\]{}]+)")

#: Deepest nesting accepted; real platform files stay far below it.
MAX_DEPTH = 64
#: Alias expansion may add at most this many nodes beyond the file's own (alias bombs).
MAX_ALIAS_EXPANSION = 100_000

_scalar_builder = yaml.constructor.SafeConstructor()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large trees.

    Loading creates hundreds of thousands of small objects and no cycles; with the
    collector on, its generational passes made a 5,000-API file four times slower.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_platform(path: Path | str, display_name: str | None = None) -> Document:
    """Read and parse a platform file.

    Args:
        path: File to read.
        display_name: Name to use in diagnostics (defaults to the path as given).

    Raises:
        LoadError: with diagnostics, for unreadable, non-UTF-8 or malformed YAML.
    """
    path = Path(path)
    name = display_name or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LoadError(
            f"{name}: file not found",
            (
                Diagnostic(
                    code="E-FILE-NOT-FOUND",
                    message="file not found",
                    file=name,
                    hint="pass the path of your platform.yaml, or run `ai4ec init` to create one",
                ),
            ),
        ) from None
    except OSError as exc:
        raise LoadError(
            f"{name}: {exc.strerror}",
            (
                Diagnostic(
                    code="E-FILE-READ", message=f"cannot read file: {exc.strerror}", file=name
                ),
            ),
        ) from None
    return parse_platform(raw, name, path=path)


def parse_platform(raw: bytes | str, name: str, path: Path | None = None) -> Document:
    """Parse platform YAML given as bytes or text (see :func:`load_platform`)."""
    text = _decode(raw, name) if isinstance(raw, bytes) else raw
    diags: list[Diagnostic] = []
    _check_tabs(text, name, diags)
    if diags:
        raise LoadError(f"{name}: invalid YAML", tuple(diags))
    try:
        with gc_paused():
            nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        raise LoadError(f"{name}: invalid YAML", (_yaml_error(exc, name, text),)) from None
    except yaml.YAMLError as exc:  # pragma: no cover - libyaml always marks its errors
        raise LoadError(
            f"{name}: invalid YAML",
            (Diagnostic(code="E-YAML-SYNTAX", message=str(exc), file=name),),
        ) from None

    nodes = [n for n in nodes if n is not None]
    if not nodes:
        raise LoadError(
            f"{name}: empty file",
            (
                Diagnostic(
                    code="E-YAML-EMPTY",
                    message="the file is empty",
                    file=name,
                    line=1,
                    col=1,
                    hint="start from `ai4ec init`, which writes a commented platform.yaml",
                ),
            ),
        )
    if len(nodes) > 1:
        second = nodes[1].start_mark
        raise LoadError(
            f"{name}: several YAML documents",
            (
                Diagnostic(
                    code="E-YAML-MULTI-DOC",
                    message="the file holds more than one YAML document",
                    file=name,
                    line=second.line + 1,
                    col=second.column + 1,
                    hint="put the whole platform in one document; use `environments` for variants",
                ),
            ),
        )
    root = nodes[0]
    if not isinstance(root, yaml.MappingNode):
        raise LoadError(
            f"{name}: not a mapping",
            (
                Diagnostic(
                    code="E-YAML-NOT-MAPPING",
                    message="the top level must be a mapping (apiVersion, kind, metadata, ...)",
                    file=name,
                    line=root.start_mark.line + 1,
                    col=root.start_mark.column + 1,
                ),
            ),
        )
    builder = _Constructor(name, text)
    with gc_paused():
        data = builder.build(root)
    if builder.diagnostics:
        raise LoadError(f"{name}: invalid YAML", tuple(builder.diagnostics))
    assert isinstance(data, dict)
    return Document(
        path=path or Path(name),
        data=data,
        source=builder.source,
        lines=tuple(text.splitlines()),
    )


def _decode(raw: bytes, name: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise LoadError(
            f"{name}: not UTF-8",
            (
                Diagnostic(
                    code="E-YAML-ENCODING",
                    message=f"byte 0x{raw[exc.start]:02x} is not valid UTF-8",
                    file=name,
                    line=line,
                    col=col,
                    hint="save the file as UTF-8",
                ),
            ),
        ) from None


def _check_tabs(text: str, name: str, diags: list[Diagnostic]) -> None:
    # YAML forbids tabs in indentation, and libyaml's message for it is cryptic.
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip(" ")
        if stripped.startswith("\t"):
            diags.append(
                Diagnostic(
                    code="E-YAML-TAB",
                    message="tab character used for indentation",
                    file=name,
                    line=lineno,
                    col=len(line) - len(stripped) + 1,
                    hint="indent with spaces only",
                )
            )
            return


def _alias_at(text: str, mark: yaml.Mark | None) -> str | None:
    """The alias name (``*name``) written at ``mark``; libyaml's message omits it."""
    if mark is None:
        return None
    lines = text.splitlines()
    if mark.line >= len(lines):
        return None
    found = _ALIAS.match(lines[mark.line], mark.column)
    return found.group(1) if found else None


def _yaml_error(exc: yaml.MarkedYAMLError, name: str, text: str = "") -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "syntax error"
    alias = _alias_at(text, mark) if "undefined alias" in problem else None
    if alias is not None and alias not in problem:
        problem = f"found undefined alias *{alias}"
    message = problem if not exc.context else f"{exc.context}: {problem}"
    hint = "check indentation and quoting around this line"
    if "found character '\\t'" in problem or "\\t" in problem:
        hint = "indent with spaces only"
    if "could not find expected ':'" in problem:
        hint = "a key is missing its colon, or a multi-line string needs quotes or `|`"
    if "found undefined alias" in problem:
        hint = (
            f"define the anchor &{alias} before this line (anchors are defined before use)"
            if alias
            else "define the anchor (&name) before using the alias (*name)"
        )
    return Diagnostic(
        code="E-YAML-SYNTAX",
        message=message,
        file=name,
        line=mark.line + 1 if mark else None,
        col=mark.column + 1 if mark else None,
        hint=hint,
    )


class _Constructor:
    """Turns a composed YAML node tree into data and a source map."""

    def __init__(self, name: str, text: str = "") -> None:
        self.name = name
        self._lines = text.splitlines()
        self.source = SourceMap(file=name)
        self.diagnostics: list[Diagnostic] = []
        self._expanded = 0
        self._seen: set[int] = set()

    def _diag(self, code: str, message: str, node: yaml.Node, hint: str = "") -> None:
        self.diagnostics.append(
            Diagnostic(
                code=code,
                message=message,
                file=self.name,
                line=node.start_mark.line + 1,
                col=node.start_mark.column + 1,
                hint=hint,
            )
        )

    def build(self, root: yaml.Node) -> Any:
        return self._node(root, (), 0)

    def _node(self, node: yaml.Node, path: JsonPath, depth: int) -> Any:
        if depth > MAX_DEPTH:
            self._diag("E-YAML-DEPTH", f"nesting deeper than {MAX_DEPTH} levels", node)
            return None
        # A node object met twice is an alias; count what it expands to (alias bombs).
        if id(node) in self._seen:
            self._expanded += 1
            if self._expanded > MAX_ALIAS_EXPANSION:
                if not any(d.code == "E-YAML-ALIAS-BOMB" for d in self.diagnostics):
                    self._diag(
                        "E-YAML-ALIAS-BOMB",
                        "aliases expand to too many values (possible alias bomb)",
                        node,
                        hint="write the repeated parts out, or use fewer nested aliases",
                    )
                return None
        else:
            self._seen.add(id(node))
        self.source.positions[path] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._diag("E-YAML-TAG", f"unsupported tag {node.tag}", node)
            return [self._node(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode)
        if node.tag != _MAP:
            self._diag("E-YAML-TAG", f"unsupported tag {node.tag}", node)
        return self._mapping(node, path, depth)

    def _mapping(self, node: yaml.MappingNode, path: JsonPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                for source in self._merge_sources(key_node, value_node, path, depth):
                    for k, v in source.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self._diag(
                    "E-YAML-KEY-TYPE",
                    "mapping keys must be plain strings"
                    + (
                        f" (got {key_node.value!r})"
                        if isinstance(key_node, yaml.ScalarNode)
                        else ""
                    ),
                    key_node,
                    hint="quote the key",
                )
                continue
            key = key_node.value
            if key in out:
                first = self.source.key_positions.get((*path, key))
                where = f" (first defined on line {first.line})" if first else ""
                self._diag(
                    "E-YAML-DUPLICATE-KEY",
                    f"duplicate key {key!r}{where}",
                    key_node,
                    hint="YAML keeps only the last value silently; remove or rename one",
                )
                continue
            self.source.key_positions[(*path, key)] = Position(
                key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
            out[key] = self._node(value_node, (*path, key), depth + 1)
        for k, v in merged.items():
            out.setdefault(k, v)
        return out

    def _merge_sources(
        self, key: yaml.Node, node: yaml.Node, path: JsonPath, depth: int
    ) -> list[dict[str, Any]]:
        """The mappings of ``<<: *anchor`` or ``<<: [*a, *b]``, built at the merge site's path.

        Anything else is one error at the ``<<`` line the user wrote - not at the anchor,
        which may be far away, and not once per item of a list merged by mistake.
        """
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        maps = [item for item in items if isinstance(item, yaml.MappingNode)]
        if len(maps) == len(items):
            return [self._mapping(item, path, depth + 1) for item in maps]
        line = self._lines[key.start_mark.line] if key.start_mark.line < len(self._lines) else ""
        written = line[key.start_mark.column :].partition(":")[2].split("#")[0].strip()
        what = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        if isinstance(node, yaml.SequenceNode) and maps:
            what = "a list that holds more than mappings"
        self._diag(
            "E-YAML-MERGE",
            f"`<<: {written}` merges mappings only, but {written or 'its value'} is {what}",
            key,
            hint="merge a mapping anchor (`<<: *defaults`) or a list of them (`<<: [*a, *b]`); "
            "to reuse a list, give it to the key directly (`key: *list`)",
        )
        return []

    def _scalar(self, node: yaml.ScalarNode, path: JsonPath) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _NULL:
            return None
        if tag in (_BOOL, _INT, _FLOAT):
            if tag == _BOOL:
                value: Any = _scalar_builder.construct_yaml_bool(node)
            elif tag == _INT:
                value = _scalar_builder.construct_yaml_int(node)
            else:
                value = _scalar_builder.construct_yaml_float(node)
                # JSON Schema counts 2.0 as an integer; make it one so that renderers
                # never print "replicas: 2.0". The source text stays in `raw`.
                if (
                    value == value
                    and value not in (float("inf"), float("-inf"))
                    and value.is_integer()
                ):
                    value = int(value)
            if not node.style:  # plain scalar (libyaml says '', PyYAML None)
                self.source.raw[path] = node.value
            return value
        if tag == _TIMESTAMP:
            # Dates stay text: nothing in platform.yaml is a date, and a date object
            # would surprise every renderer.
            return node.value
        self._diag(
            "E-YAML-TAG",
            f"unsupported tag {tag}",
            node,
            hint="platform.yaml takes plain YAML values only",
        )
        return None
