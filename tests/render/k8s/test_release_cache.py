"""The Helm release cache (issue 15): a hit is the cold bytes, and nothing else is trusted.

Real Helm rendering (helm-python-sdk) into a real temporary cache directory. Counting the
engine's calls proves what was rendered anew: after one API changes, exactly that API's
release is rendered again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ai4ec import cache
from ai4ec.cli import cli
from ai4ec.pipeline import build_platform
from ai4ec.render.k8s import chart

from ...conftest import SAMPLES


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A fresh cache directory, and the releases Helm's engine really renders."""
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    seen: list[str] = []
    real = chart.load_chart()

    class Counting:
        def render(self, values: Any, *, name: str, namespace: str) -> dict[str, str]:
            seen.append(name)
            out: dict[str, str] = real.render(values, name=name, namespace=namespace)
            return out

    monkeypatch.setattr(chart, "load_chart", lambda: Counting())
    yield seen


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _forget_environments(tmp_path: Path) -> None:
    """Drop the whole-environment entries, so the next build renders and meets the releases."""
    shutil.rmtree(tmp_path / "cache" / "ai4ec" / "render", ignore_errors=True)


def _project(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLES / "camera-trap", tmp_path / "p")
    return tmp_path / "p" / "platform.yaml"


def test_a_hit_is_the_cold_bytes_and_renders_nothing(tmp_path: Path, calls: list[str]) -> None:
    path = _project(tmp_path)
    build_platform(path, tmp_path / "cold")
    cold = sorted(calls)
    assert cold, "the cold build renders every release"
    calls.clear()
    build_platform(path, tmp_path / "warm")
    assert calls == []
    assert _tree(tmp_path / "warm") == _tree(tmp_path / "cold")


def test_one_changed_api_renders_one_release(tmp_path: Path, calls: list[str]) -> None:
    path = _project(tmp_path)
    build_platform(path, tmp_path / "a")
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("image: camera-trap/classifier:2.0.3", "image: camera-trap/classifier:2.0.4")
    )
    calls.clear()
    build_platform(path, tmp_path / "b")
    assert calls == ["classifier-v1"]
    with cache.disabled():
        build_platform(path, tmp_path / "cold")
    assert _tree(tmp_path / "b") == _tree(tmp_path / "cold")


def test_corrupt_or_foreign_entries_are_ignored(tmp_path: Path, calls: list[str]) -> None:
    path = _project(tmp_path)
    build_platform(path, tmp_path / "cold")
    entries = sorted((tmp_path / "cache" / "ai4ec" / "helm").rglob("*"))
    files = [e for e in entries if e.is_file()]
    assert files
    files[0].write_bytes(files[0].read_bytes()[:-7])  # truncated
    body = files[1].read_bytes()
    files[1].write_bytes(body.replace(b"kind:", b"kind: ", 1))  # altered payload
    files[2].write_bytes(b"not a cache entry")  # foreign
    _forget_environments(tmp_path)
    calls.clear()
    build_platform(path, tmp_path / "again")
    assert len(calls) == 3  # those three rendered anew, the rest came from the cache
    assert _tree(tmp_path / "again") == _tree(tmp_path / "cold")


def test_a_chart_change_invalidates(
    tmp_path: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _project(tmp_path)
    build_platform(path, tmp_path / "a")
    calls.clear()
    monkeypatch.setattr(chart, "chart_fingerprint", lambda: "another chart")
    _forget_environments(tmp_path)
    build_platform(path, tmp_path / "b")
    assert calls, "a different chart (or schema, or engine) must render anew"


def test_no_cache_neither_reads_nor_writes(tmp_path: Path, calls: list[str]) -> None:
    path = _project(tmp_path)
    res = CliRunner().invoke(cli, ["build", str(path), "-o", str(tmp_path / "o"), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "cache" / "ai4ec" / "helm").exists()
    first = len(calls)
    res = CliRunner().invoke(cli, ["build", str(path), "-o", str(tmp_path / "o"), "--no-cache"])
    assert res.exit_code == 0 and len(calls) == 2 * first


def test_an_ai4ec_version_change_invalidates(monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache.key_of("chart", "api", "ns", "{}")
    monkeypatch.setattr(cache, "__version__", "99.0")
    assert cache.key_of("chart", "api", "ns", "{}") != key


def test_a_hit_skips_the_values_check_and_a_code_change_invalidates(
    tmp_path: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a miss checks the values: the key holds all the check's verdict depends on."""
    checked: list[str] = []
    real = chart.values_validator()

    def counting(values: Any) -> Any:
        checked.append(values["name"])
        return real(values)

    monkeypatch.setattr(chart, "values_validator", lambda: counting)
    path = _project(tmp_path)
    build_platform(path, tmp_path / "a")
    assert sorted(checked) == sorted(calls) and calls
    calls.clear()
    checked.clear()
    _forget_environments(tmp_path)
    build_platform(path, tmp_path / "b")
    assert not calls and not checked  # every release from the cache, none checked
    monkeypatch.setattr(chart, "code_fingerprint", lambda: "another ai4ec")
    _forget_environments(tmp_path)
    build_platform(path, tmp_path / "c")
    assert calls and sorted(checked) == sorted(calls)
    assert _tree(tmp_path / "c") == _tree(tmp_path / "a")
