"""Property tests (hypothesis): the loader round-trips data with positions for every
value, and no input at all - mutated samples, random YAML, random bytes - makes
validation raise instead of reporting diagnostics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai4ec.cli import cli
from ai4ec.errors import LoadError
from ai4ec.load import parse_platform
from ai4ec.pipeline import check_document

from ..conftest import sample_files

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# YAML folds its own line breaks (NEL, LS, PS) inside scalars, so PyYAML's dumper cannot
# round-trip them; they are not what this property is about.
_chars = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="\x85"
)
keys = st.text(_chars, min_size=1, max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.text(_chars, max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@SETTINGS
@given(st.dictionaries(keys, json_like, min_size=1, max_size=5))
def test_loader_round_trips_and_locates_everything(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    doc = parse_platform(text, "p.yaml")
    assert doc.data == data
    for path in _paths(data):
        assert doc.source.locate(path) is not None
        if path:
            assert path in doc.source.positions


SAMPLES = [yaml.safe_load(p.read_text()) for p in sample_files()]


def _mutate(data: Any, choices: list[int], replacement: Any) -> Any:
    data = copy.deepcopy(data)
    node = data
    for c in choices:
        if isinstance(node, dict) and node:
            key = sorted(node)[c % len(node)]
            if c % 5 == 0:
                del node[key]
                return data
            if c % 7 == 0 or not isinstance(node[key], dict | list):
                node[key] = replacement
                return data
            node = node[key]
        elif isinstance(node, list) and node:
            i = c % len(node)
            if c % 5 == 0:
                node.pop(i)
                return data
            if not isinstance(node[i], dict | list):
                node[i] = replacement
                return data
            node = node[i]
        else:
            break
    return data


@SETTINGS
@given(
    st.integers(0, len(SAMPLES) - 1),
    st.lists(st.integers(0, 10_000), min_size=1, max_size=8),
    json_like,
)
def test_mutated_samples_never_raise(index: int, choices: list[int], replacement: Any) -> None:
    mutated = _mutate(SAMPLES[index], choices, replacement)
    text = yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False)
    doc = parse_platform(text, "p.yaml")
    result = check_document(doc)  # must not raise, whatever the input
    for d in result.diagnostics:
        assert d.code and d.message and d.file == "p.yaml"


@SETTINGS
@given(st.text(max_size=300))
def test_random_text_never_raises(text: str) -> None:
    try:
        doc = parse_platform(text, "p.yaml")
    except LoadError as exc:
        assert exc.diagnostics and all(d.code.startswith("E-") for d in exc.diagnostics)
        return
    check_document(doc)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_cli_never_prints_a_traceback(tmp_path_factory: Any, raw: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("p")) / "platform.yaml"
    path.write_bytes(raw)
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code in (0, 1)
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


@SETTINGS
@given(
    st.integers(0, len(SAMPLES) - 1),
    st.lists(st.integers(0, 10_000), min_size=1, max_size=8),
    json_like,
)
def test_fast_and_full_schema_validators_agree(
    index: int, choices: list[int], replacement: Any
) -> None:
    import jsonschema

    from ai4ec.resources import platform_schema
    from ai4ec.validate import fast_validator

    mutated = _mutate(SAMPLES[index], choices, replacement)
    mutated.pop("environments", None)
    fast = fast_validator()
    assert fast is not None
    try:
        fast(mutated)
        fast_ok = True
    except Exception:
        fast_ok = False
    full_ok = jsonschema.Draft202012Validator(platform_schema()).is_valid(mutated)
    assert fast_ok == full_ok
