"""manifests.yaml: apply order comes from the typed objects; every text is kept as is."""

from __future__ import annotations

import ast
from pathlib import Path

from ai4ec.render.k8s.manifests import assemble_manifests
from ai4ec.render.k8s.objects import KubeObject

ROOM = Path(__file__).resolve().parents[3] / "compiler" / "render" / "k8s"


def _obj(kind: str, name: str, namespace: str = "apis", text: str = "") -> KubeObject:
    return KubeObject("v1", kind, name, namespace, text or f"kind: {kind}\nname: {name}")


def test_objects_are_written_in_apply_order() -> None:
    objects = [
        _obj("VirtualService", "b"),
        _obj("Deployment", "a"),
        _obj("Namespace", "apis", ""),
        _obj("Deployment", "0"),
    ]
    out = assemble_manifests(objects, "# header\n")
    assert out == (
        "# header\n"
        "---\nkind: Namespace\nname: apis\n"
        "---\nkind: Deployment\nname: 0\n"
        "---\nkind: Deployment\nname: a\n"
        "---\nkind: VirtualService\nname: b\n"
    )


def test_equal_keys_keep_their_arrival_order() -> None:
    first, second = _obj("Secret", "s", text="first"), _obj("Secret", "s", text="second")
    assert assemble_manifests([first, second], "") == "---\nfirst\n---\nsecond\n"


def test_room_modules_depend_on_objects_only() -> None:
    """No cycles in the room: istio, addons, chart and manifests import no sibling but objects."""
    for module in ("istio", "addons", "chart", "manifests", "objects"):
        tree = ast.parse((ROOM / f"{module}.py").read_text(encoding="utf-8"))
        siblings = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        }
        allowed = set() if module == "objects" else {"objects"}
        assert siblings <= allowed, (module, siblings)
