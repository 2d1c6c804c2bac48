"""The shape of the code, checked on its import graph (read with ast, nothing imported).

Every ``import`` counts, also those inside functions: a lazy import still ties two
modules together, and a cycle through one is a cycle waiting for the next refactor.

(a) No import cycles in ``compiler/`` (the ``ai4ec`` package) or ``functions/ai4ec_runtime``.
(b) Each render target (``render/azure``, ``render/apim``, ``render/k8s``) is a room of its
    own: no module in one imports another target's room, except the Azure expression
    tree (:data:`SHARED_TREE`), through which APIM emits ARM/Bicep objects.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"ai4ec": ROOT / "compiler", "ai4ec_runtime": ROOT / "functions" / "ai4ec_runtime"}
RENDER_TARGETS = ("azure", "apim", "k8s")
#: The one module of a target room that other target rooms may import.
SHARED_TREE = "ai4ec.render.azure.spec"


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            # Python prefers a package to a module of the same name (render/apim/ over
            # render/apim.py while a room is being moved in).
            if name not in out or path.name == "__init__.py":
                out[name] = path
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _known(name: str) -> str | None:
    """``name`` or its nearest enclosing module that is part of the project."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """(imported project module, line) for every import statement in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if _is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                target = _known(f"{base}.{alias.name}") or _known(base)
                if target:
                    yield target, node.lineno


GRAPH: dict[str, set[str]] = {
    m: {t for t, _ in _imports(m) if t != m} for m in MODULES
}  # fmt: skip


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_the_graph_sees_the_project() -> None:
    assert "ai4ec.cli.app" in MODULES and "ai4ec_runtime" in MODULES
    assert "ai4ec.cli.validate" in GRAPH["ai4ec.cli.app"]
    assert "ai4ec.model.types" in GRAPH["ai4ec.model.context"]


def test_cycle_detection_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_render_target_has_its_room() -> None:
    """Each target in RENDER_TARGETS is a package under render/ (the rule below needs them)."""
    missing = [t for t in RENDER_TARGETS if not (PACKAGES["ai4ec"] / "render" / t).is_dir()]
    assert not missing, f"render/<target>/ rooms missing: {missing}"


@pytest.mark.parametrize("target", RENDER_TARGETS)
def test_render_target_rooms_are_separate(target: str) -> None:
    """No module under render/<target>/ imports another target's room (but SHARED_TREE)."""
    room = f"ai4ec.render.{target}"
    others = [f"ai4ec.render.{t}" for t in RENDER_TARGETS if t != target]
    offenders = [
        f"{module}:{line} imports {imported}"
        for module in sorted(MODULES)
        if module == room or module.startswith(room + ".")
        for imported, line in _imports(module)
        if imported != SHARED_TREE
        and any(imported == o or imported.startswith(o + ".") for o in others)
    ]
    assert not offenders, "\n".join(offenders)
