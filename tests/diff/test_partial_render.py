"""``ai4ec diff`` renders only what it compares: no Bicep (issue 15).

Real renders of a sample into a real temporary cache directory. The diff asks the
renderers, through :attr:`~ai4ec.render.artifact.RenderContext.bicep`, for everything
but the Bicep files (the compare reads the ARM JSON printed from the same template).
Such a render must never pass for a complete one: a build after a diff still gets the
Bicep files, byte for byte what a cold build writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ai4ec import cache
from ai4ec.pipeline import build_platform, check_platform, render_platforms
from ai4ec.render import stored

from ..conftest import SAMPLES


def _files(path: Path, bicep: bool) -> dict[str, bytes]:
    [(result, _manifest)] = render_platforms(check_platform(path), bicep=bicep)
    return {str(a.path): a.content for a in result.artifacts}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AI4EC_NO_CACHE", raising=False)
    shutil.copytree(SAMPLES / "minimal", tmp_path / "p")
    return tmp_path / "p" / "platform.yaml"


def test_the_diff_render_is_the_build_without_bicep(platform: Path) -> None:
    with cache.disabled():
        full = _files(platform, bicep=True)
        partial = _files(platform, bicep=False)
    assert any(p.endswith(".bicep") for p in full)
    assert partial == {p: c for p, c in full.items() if not p.endswith(".bicep")}


def test_a_partial_render_is_cached_under_its_own_key(platform: Path, tmp_path: Path) -> None:
    partial = _files(platform, bicep=False)
    [entry] = [p for p in (cache.cache_dir() / "render").rglob("*") if p.is_file()]
    payload = entry.read_bytes().split(b"\n", 3)[3]  # magic, key, digest, payload
    unpacked = stored.unpack(payload)
    assert unpacked is not None
    assert {str(a.path) for a in unpacked} == set(partial), "cached as rendered, no Bicep"
    assert _files(platform, bicep=False) == partial, "served from its own entry"
    build_platform(platform, tmp_path / "warm")
    with cache.disabled():
        build_platform(platform, tmp_path / "cold")
    warm = _tree(tmp_path / "warm")
    assert any(p.endswith(".bicep") for p in warm), "a build never gets the partial entry"
    assert warm == _tree(tmp_path / "cold")


def test_a_complete_entry_serves_the_diff(platform: Path, tmp_path: Path) -> None:
    full = _files(platform, bicep=True)
    partial = _files(platform, bicep=False)
    assert partial == full, "the complete entry is served: its Bicep files are extra, not wrong"
    files = [p for p in (cache.cache_dir() / "render").rglob("*") if p.is_file()]
    assert len(files) == 1, "no partial entry is stored when the complete one served"
