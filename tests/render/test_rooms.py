"""The render stage's shape: rooms that talk through typed values, never through imports.

Reads the import statements of every module under compiler/render (static: an import
inside a function counts too) and checks that

* no import cycle exists between render modules;
* no module of one target's room imports another target's room, except the shared
  expression tree ``render/azure/spec.py`` (the vocabulary the APIM target builds
  Azure resources in);
* the Azure room never imports the APIM room at all (it receives the APIM result as an
  argument: :class:`ai4ec.render.azure.target.ApimChildren`).
"""

from __future__ import annotations

import ast
from pathlib import Path

from ..conftest import ROOT

PACKAGE = ROOT / "compiler"
RENDER = PACKAGE / "render"
SHARED = {"ai4ec.render.azure.spec"}
#: The flat Kubernetes modules, whose cycle (k8s <-> k8s_chart) is being removed in
#: parallel by their move into render/k8s/ (issue 11). Integrator: empty this set when
#: that branch is merged.
PENDING = {"ai4ec.render.k8s", "ai4ec.render.k8s_chart"}


def _module_name(path: Path) -> str:
    parts = ["ai4ec", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("ai4ec.render")}


def _graph() -> dict[str, set[str]]:
    """Module -> the render modules it makes Python import.

    Importing ``ai4ec.render.azure.spec`` from outside the azure package first runs
    ``ai4ec.render.azure/__init__``; that edge is added too, so a package whose
    ``__init__`` imports back into its importer shows up as the cycle it is.
    """
    modules = {_module_name(p): p for p in RENDER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = {m for m in _imports(path) if m in modules}
        for m in list(edges):
            parent = m.rsplit(".", 1)[0]
            if parent in modules and parent not in (own, "ai4ec.render", m):
                edges.add(parent)
        graph[name] = edges - {name}
    return graph


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 else None  # ai4ec.render.<room>.<module>


def test_no_import_cycles_in_render() -> None:
    graph = {m: t - PENDING for m, t in _graph().items() if m not in PENDING}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError(" -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_rooms_meet_only_in_the_expression_tree() -> None:
    graph = _graph()
    crossings = []
    for module, targets in graph.items():
        room = _room(module)
        if room is None:
            continue
        for target in targets:
            other = _room(target)
            if other is not None and other != room and target not in SHARED:
                crossings.append(f"{module} -> {target}")
    assert not crossings, crossings


def test_the_azure_room_does_not_import_the_apim_room() -> None:
    graph = _graph()
    offenders = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m.startswith("ai4ec.render.azure")
        for t in targets
        if t.startswith("ai4ec.render.apim")
    ]
    assert not offenders, offenders
