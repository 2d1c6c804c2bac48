"""Properties: a platform compared with itself never shows a change.

1. Valid samples, mutated at random, built twice independently, diff empty (the builds
   are deterministic and the comparison adds no noise of its own).
2. The same platform re-serialised at random - key order, quoting, flow vs block
   style, integral numbers written as ``2.0``, comments - builds to an empty diff
   against the original.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ai4ec.diff import diff_builds
from ai4ec.diff.formats import format_json
from ai4ec.diff.records import Side
from ai4ec.diff.sources import Loaded, render
from ai4ec.load import parse_platform

from ..conftest import SAMPLES

SAMPLE_NAMES = ["camera-trap", "landcover", "minimal", "multi-env"]
NAME = "platform.yaml"
PROFILE = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SAMPLES / name / "platform.yaml").read_text())
    return data


def _build(text: str, directory: str):
    doc = parse_platform(text, NAME, path=__import__("pathlib").Path(directory) / NAME)
    envs, _ = render(Loaded(Side("x"), doc), None, "head")
    return envs


# --------------------------------------------------------------------------- mutation


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    data = _sample(draw(st.sampled_from(SAMPLE_NAMES)))
    apis = data.get("apis") or []
    for api in apis:
        if draw(st.booleans()):
            api["image"] = f"{api['image'].split(':')[0]}:{draw(st.integers(0, 99))}.0.1"
        if draw(st.booleans()):
            env = api.setdefault("env", {})
            key = draw(st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True))
            env[key] = draw(st.text("abc xyz-0123:/", min_size=0, max_size=12))
        scaling = api.get("scaling")
        if isinstance(scaling, dict) and draw(st.booleans()):
            scaling["maxReplicas"] = max(scaling.get("minReplicas", 1), 1) + draw(st.integers(0, 9))
        if draw(st.booleans()):
            api["description"] = draw(st.text("Some words, 'quoted' and \"more\": #1", max_size=40))
    for product in data.get("products") or []:
        if draw(st.booleans()):
            product["rateLimit"] = {"calls": draw(st.integers(1, 10_000)), "period": "60s"}
    if draw(st.booleans()):
        data.setdefault("metadata", {}).setdefault("tags", {})["team"] = draw(
            st.sampled_from(["a", "b-team", "yes", "1.30", "null"])
        )
    return data


# --------------------------------------------------------------------- re-serialising


def _plain_ok(text: str) -> bool:
    if not text or text != text.strip() or "\n" in text:
        return False
    try:
        return yaml.safe_load(f"k: {text}") == {"k": text} and yaml.safe_load(f"[{text}]") == [text]
    except yaml.YAMLError:
        return False


def _scalar(value: Any, draw: st.DrawFn, flow: bool) -> str:
    if value is None:
        return draw(st.sampled_from(["null", "~"]))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return draw(st.sampled_from([str(value), f"{value}.0"]))
    if isinstance(value, float):
        return repr(value)
    style = draw(st.sampled_from(["plain", "single", "double"]))
    if style == "plain" and _plain_ok(value):
        return str(value)
    if style == "single" and "\n" not in value:
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)


def _key(key: str, draw: st.DrawFn) -> str:
    return _scalar(key, draw, True) if not key[:1].isdigit() else json.dumps(key)


def _flow(value: Any, draw: st.DrawFn) -> str:
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        return "{" + ", ".join(f"{_key(k, draw)}: {_flow(value[k], draw)}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v, draw) for v in value) + "]"
    return _scalar(value, draw, True)


def _block(value: Any, indent: int, draw: st.DrawFn, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for k in draw(st.permutations(list(value))):
            if draw(st.integers(0, 9)) == 0:
                out.append(f"{pad}# comment before {k}")
            _entry(f"{pad}{_key(k, draw)}:", value[k], indent, draw, out)
    else:
        for item in value:
            _entry(f"{pad}-", item, indent, draw, out)


def _entry(prefix: str, value: Any, indent: int, draw: st.DrawFn, out: list[str]) -> None:
    if isinstance(value, dict | list) and value:
        if draw(st.booleans()):
            out.append(f"{prefix} {_flow(value, draw)}")
        else:
            out.append(prefix)
            _block(value, indent + 2, draw, out)
    elif isinstance(value, dict | list):
        out.append(f"{prefix} {'{}' if isinstance(value, dict) else '[]'}")
    else:
        comment = "  # trailing" if draw(st.integers(0, 7)) == 0 else ""
        out.append(f"{prefix} {_scalar(value, draw, False)}{comment}")


def reserialise(data: dict[str, Any], draw: st.DrawFn) -> str:
    out: list[str] = ["# re-serialised at random"]
    _block(data, 0, draw, out)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- properties


@pytest.mark.slow
@PROFILE
@given(data=mutated())
def test_mutated_sample_diffed_with_itself_is_empty(data: dict[str, Any], tmp_path) -> None:
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        a = _build(text, str(tmp_path))
    except Exception:  # noqa: BLE001 - a mutation broke a rule: not a case to test
        assume(False)
        return
    b = _build(text, str(tmp_path))
    report = diff_builds(a, b, Side("a"), Side("b"))
    assert not report.has_changes, format_json(report)[:3000]


@pytest.mark.slow
@PROFILE
@given(data=mutated(), draw=st.data())
def test_reserialised_platform_diffs_empty(
    data: dict[str, Any], draw: st.DataObject, tmp_path
) -> None:
    text = yaml.safe_dump(data, sort_keys=False)
    other = reserialise(data, draw.draw)
    assert yaml.safe_load(other) == yaml.safe_load(text) or _numbers_only(
        yaml.safe_load(other), yaml.safe_load(text)
    ), other
    try:
        a = _build(text, str(tmp_path))
    except Exception:  # noqa: BLE001
        assume(False)
        return
    b = _build(other, str(tmp_path))
    report = diff_builds(a, b, Side("original"), Side("re-serialised"))
    assert not report.has_changes, other + "\n" + format_json(report)[:3000]


def _numbers_only(a: Any, b: Any) -> bool:
    """Equal once integral floats (``2.0``) are read as ints, as ai4ec's loader does."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_numbers_only(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_numbers_only(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a.is_integer():
        a = int(a)
    return bool(a == b)
