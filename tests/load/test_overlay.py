"""Environment overlays: merge rules and source positions through the merge."""

from __future__ import annotations

from ai4ec.load import Position, apply_environment, parse_platform

DOC = """\
a: {x: 1, y: 2}
items:
  - {name: one, v: 1, tags: [p]}
  - {name: two, version: v1, v: 2}
  - {name: two, version: v2, v: 3}
plain: [1, 2]
environments:
  prod:
    a: {y: 20, z: 30}
    items:
      - {name: one, tags: [q]}
      - {name: two, version: v2, v: 33}
      - {name: three, v: 4}
    plain: [9]
"""


def test_merge_rules() -> None:
    doc = parse_platform(DOC, "p.yaml")
    data, _ = apply_environment(doc, "prod")
    assert data["a"] == {"x": 1, "y": 20, "z": 30}
    assert data["items"] == [
        {"name": "one", "v": 1, "tags": ["q"]},
        {"name": "two", "version": "v1", "v": 2},
        {"name": "two", "version": "v2", "v": 33},
        {"name": "three", "v": 4},
    ]
    assert data["plain"] == [9]
    assert "environments" not in data


def test_positions_point_at_the_line_that_set_the_value() -> None:
    doc = parse_platform(DOC, "p.yaml")
    _, source = apply_environment(doc, "prod")
    assert source.positions[("a", "x")].line == 1  # from the base
    assert source.positions[("a", "y")].line == 9  # from the overlay
    assert source.positions[("items", 2, "v")] == Position(12, 37)
    assert source.positions[("items", 1, "v")].line == 4
    assert source.positions[("items", 3, "name")].line == 13


def test_overlay_without_version_matches_single_item() -> None:
    doc = parse_platform(
        "apis:\n  - {name: d, version: v1, n: 1}\n"
        "environments:\n  e:\n    apis:\n      - {name: d, n: 2}\n",
        "p.yaml",
    )
    data, _ = apply_environment(doc, "e")
    assert data["apis"] == [{"name": "d", "version": "v1", "n": 2}]


def test_base_document_is_not_mutated() -> None:
    doc = parse_platform(DOC, "p.yaml")
    before = repr(doc.data)
    apply_environment(doc, "prod")
    assert repr(doc.data) == before
