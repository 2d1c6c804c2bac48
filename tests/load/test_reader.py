"""Loader: values, positions and the YAML traps it refuses."""

from __future__ import annotations

import pytest

from ai4ec.errors import LoadError
from ai4ec.load import Position, format_path, parse_platform


def codes(text: str | bytes) -> list[str]:
    with pytest.raises(LoadError) as exc:
        parse_platform(text, "p.yaml")
    return [d.code for d in exc.value.diagnostics]


def test_positions_for_every_value() -> None:
    doc = parse_platform("a:\n  b: [1, two]\n  c: {d: x}\n", "p.yaml")
    assert doc.data == {"a": {"b": [1, "two"], "c": {"d": "x"}}}
    pos = doc.source.positions
    assert pos[("a", "b", 1)] == Position(2, 10)
    assert pos[("a", "c", "d")] == Position(3, 10)
    assert doc.source.key_positions[("a", "c")] == Position(3, 3)


def test_locate_falls_back_to_parent() -> None:
    doc = parse_platform("a:\n  b: 1\n", "p.yaml")
    assert doc.source.locate(("a", "b", "missing")) == Position(2, 6)


def test_raw_text_kept_for_yaml11_conversions() -> None:
    doc = parse_platform("v: 1.30\nflag: no\ns: 'no'\nn: 0x1F\nt: 8:30\n", "p.yaml")
    assert doc.data == {"v": 1.3, "flag": False, "s": "no", "n": 31, "t": 510}
    assert doc.source.raw[("v",)] == "1.30"
    assert doc.source.raw[("flag",)] == "no"
    assert ("s",) not in doc.source.raw


def test_dates_stay_text() -> None:
    assert parse_platform("d: 2024-01-01\n", "p.yaml").data == {"d": "2024-01-01"}


def test_merge_keys_and_anchors() -> None:
    doc = parse_platform("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n", "p.yaml")
    assert doc.data["item"] == {"x": 1, "y": 3}


def test_bom_is_accepted() -> None:
    assert parse_platform(b"\xef\xbb\xbfa: 1\n", "p.yaml").data == {"a": 1}


@pytest.mark.parametrize(
    "text,code",
    [
        ("", "E-YAML-EMPTY"),
        ("# only\n", "E-YAML-EMPTY"),
        ("[1, 2]\n", "E-YAML-NOT-MAPPING"),
        ("just text\n", "E-YAML-NOT-MAPPING"),
        ("a: 1\n---\nb: 2\n", "E-YAML-MULTI-DOC"),
        ("a: 1\na: 2\n", "E-YAML-DUPLICATE-KEY"),
        ("a:\n\tb: 1\n", "E-YAML-TAB"),
        ("a: [1\n", "E-YAML-SYNTAX"),
        ("a: !!python/object:os.system x\n", "E-YAML-TAG"),
        ("a: !Ref x\n", "E-YAML-TAG"),
        ("? [x]\n: 1\n", "E-YAML-KEY-TYPE"),
        ("1: x\n", "E-YAML-KEY-TYPE"),
        ("null: x\n", "E-YAML-KEY-TYPE"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", "E-YAML-DEPTH"),
        ("a: *undefined\n", "E-YAML-SYNTAX"),
        (b"a: \xff\n", "E-YAML-ENCODING"),
    ],
)
def test_traps(text: str | bytes, code: str) -> None:
    assert code in codes(text)


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        refs = ",".join([f"*l{i - 1}"] * 10)
        lines.append(f"l{i}: &l{i} [{refs}]")
    assert codes("\n".join(lines) + "\n") == ["E-YAML-ALIAS-BOMB"]


def test_format_path() -> None:
    assert format_path(("apis", 2, "env", "MY_VAR")) == "$.apis[2].env.MY_VAR"
    assert format_path(("tags", "cost center")) == "$.tags['cost center']"
    assert format_path(()) == "$"
