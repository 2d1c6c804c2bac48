"""User strings reach Bicep and ARM intact: quotes, backslashes, ``${``, newlines, brackets."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ai4ec.pipeline import check_platform
from ai4ec.render.azure.spec import arm_str, bicep_str

from ...conftest import SAMPLES
from .support import (
    NASTY,
    has_interpolation,
    key_of,
    parse_bicep,
    render_platform,
    unescape,
    variant_files,
)


def _tags_of(bicep_text: str) -> dict[str, str]:
    parsed = parse_bicep(bicep_text)
    raw = parsed["variables"]["tags"]["value"]
    return {key_of(k): unescape(v) for k, v in raw.items()}


def _arm_value(s: str) -> str:
    """What ARM makes of a literal string in a template."""
    return s[1:] if s.startswith("[[") else s


def test_nasty_tags_and_description_from_platform_yaml(tmp_path: Path) -> None:
    text = (SAMPLES / "minimal" / "platform.yaml").read_text()
    tags = {
        "owner": "my-team",
        "note": "it's C:\\dir ${x} [y]\nline two",
        "path": "C:\\dir\\",
        "json": '{"a": "b"}',
        "[brackets]": "[z]",
    }
    description = "Lab's \\ platform ${resourceGroup().name}\nwith two lines [x]"
    text = text.replace("  tags:\n    owner: my-team\n", "  tags: " + json.dumps(tags) + "\n")
    text = text.replace(
        "metadata:\n", "metadata:\n  description: " + json.dumps(description) + "\n", 1
    )
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    result = check_platform(path)
    assert result.ok, result.diagnostics
    (platform,) = result.platforms()
    assert dict(platform.tags)["note"] == tags["note"]
    files = render_platform(platform)
    expected = dict(platform.tags)
    for name, data in files.items():
        if name.endswith(".bicep") and "var tags" in data.decode():
            assert _tags_of(data.decode()) == expected, name
    main = parse_bicep(files["azure/main.bicep"].decode())
    got = unescape(main["metadata"]["description"]["value"])
    assert got == f"{description} (environment default)"
    arm = json.loads(files["azure/main.json"])
    assert {_arm_value(k): _arm_value(v) for k, v in arm["variables"]["tags"].items()} == expected
    assert _arm_value(arm["metadata"]["description"]) == got


def test_every_nasty_string_survives_both_languages() -> None:
    files = variant_files("nasty-strings")
    arm = json.loads(files["azure/main.json"])
    arm_tags = {k: _arm_value(v) for k, v in arm["variables"]["tags"].items()}
    bicep_tags = _tags_of(files["azure/modules/redis.bicep"].decode())
    for key, value in NASTY.items():
        assert arm_tags[key] == value, key
        assert bicep_tags[key] == value, key


def test_arm_escapes_only_what_looks_like_an_expression() -> None:
    assert arm_str("[x]") == "[[x]"
    assert arm_str("[[x]") == "[[[x]"
    assert arm_str("[x") == "[x"  # ARM evaluates only [ ... ]
    assert arm_str("x]") == "x]"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_bicep_str_round_trips(values: list[str]) -> None:
    lines = [f"var v{i} = {bicep_str(v)}" for i, v in enumerate(values)]
    parsed = parse_bicep("\n".join(lines) + "\n")
    for i, v in enumerate(values):
        raw = parsed["variables"][f"v{i}"]["value"]
        assert not has_interpolation(raw)
        assert unescape(raw) == v


def test_bicep_str_escapes_the_dangerous_sequences() -> None:
    assert bicep_str("it's") == "'it\\'s'"
    assert bicep_str("a\\b") == "'a\\\\b'"
    assert bicep_str("${x}") == "'\\${x}'"
    assert bicep_str("$x {y}") == "'$x {y}'"
    assert bicep_str("a\nb\r\tc") == "'a\\nb\\r\\tc'"
    assert bicep_str("\x00") == "'\\u{0}'"
    # A final backslash is \u{5C}: pycep (used by write.py and checkov) misreads \\'.
    assert bicep_str("C:\\dir\\") == "'C:\\\\dir\\u{5C}'"
    parsed = parse_bicep("var a = " + bicep_str("x\\") + "\nvar b = ''\n")
    assert unescape(parsed["variables"]["a"]["value"]) == "x\\"
