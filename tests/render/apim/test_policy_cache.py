"""Each API's policy files in the render cache: 1 changed API renders 1 API (issue 15).

Real renders of the camera-trap sample into a real temporary cache directory
(``$AI4EC_CACHE_DIR``). Counting the real template renders proves what was rendered
anew; comparing with a render under ``cache.disabled()`` proves that a hit is the cold
bytes, for the changed API and for the unchanged ones alike.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ai4ec.render.apim.policies as policies
from ai4ec import cache
from ai4ec.pipeline import check_platform
from ai4ec.render.apim import render_apim
from ai4ec.render.artifact import RenderContext

from ...conftest import SAMPLES

#: Text of the detector's endpoint; the edit changes its policy (the forward timeout).
BEFORE = "        timeout: 10m\n"
AFTER = "        timeout: 9m\n"


@pytest.fixture
def rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A fresh cache directory, and the API policy files really rendered (not served)."""
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AI4EC_NO_CACHE", raising=False)
    seen: list[str] = []
    real = policies._render

    def counting(template: str, path: str, **values: Any) -> Any:
        if template == "api.xml.j2":
            seen.append(path)
        return real(template, path, **values)

    monkeypatch.setattr(policies, "_render", counting)
    yield seen


def _project(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLES / "camera-trap", tmp_path / "p")
    path = tmp_path / "p" / "platform.yaml"
    assert path.read_text().count(BEFORE) == 1
    return path


def _render(path: Path) -> dict[str, bytes]:
    result = check_platform(path, display_name="platform.yaml")
    assert result.ok, result.diagnostics
    [platform] = result.platforms()
    ctx = RenderContext(source_name="platform.yaml", source_dir=str(path.parent))
    return {str(a.path): a.content for a in render_apim(platform, ctx).artifacts}


def _cold(path: Path) -> dict[str, bytes]:
    with cache.disabled():
        return _render(path)


def _entries() -> list[Path]:
    root = cache.cache_dir() / policies.CACHE_NAMESPACE
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_one_changed_api_renders_one_api_and_hits_are_cold_bytes(
    tmp_path: Path, rendered: list[str]
) -> None:
    path = _project(tmp_path)
    first = _render(path)
    apis = sorted(rendered)
    assert len(apis) > 2, "the status API plus several platform APIs"
    assert len(_entries()) == len(apis) - 1, "one entry per platform API (not the status API)"
    rendered.clear()
    assert _render(path) == first
    assert rendered == [p for p in apis if "status" in p], "only the status API renders again"

    path.write_text(path.read_text().replace(BEFORE, AFTER))
    rendered.clear()
    warm = _render(path)
    changed = sorted(p for p in rendered if "status" not in p)
    # The species pipeline's first step is the detector: its plan carries the timeout.
    assert changed == ["apim/policies/detector-v1/api.xml", "apim/policies/species-v1/api.xml"]
    cold = _cold(path)
    assert warm == cold, "changed and unchanged APIs alike: a hit is the cold bytes"
    assert warm != first, "the edit changed the output"
    for api in changed:
        folder = api.rpartition("/")[0]
        assert any(warm[p] != first[p] for p in warm if p.startswith(folder)), folder


def test_a_corrupt_entry_is_ignored(tmp_path: Path, rendered: list[str]) -> None:
    path = _project(tmp_path)
    cold = _cold(path)
    _render(path)
    entries = _entries()
    assert entries
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:-7])  # truncated
    rendered.clear()
    assert _render(path) == cold
    assert len(rendered) == len(entries) + 1, "every API rendered again (and the status API)"
    rendered.clear()
    assert _render(path) == cold
    assert len(rendered) == 1, "the bad entries were replaced"


def test_no_cache_neither_reads_nor_writes(
    tmp_path: Path, rendered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _project(tmp_path)
    _cold(path)
    assert _entries() == []
    monkeypatch.setenv("AI4EC_NO_CACHE", "1")
    _render(path)
    assert _entries() == []
    monkeypatch.delenv("AI4EC_NO_CACHE")
    cold = _render(path)
    rendered.clear()
    with cache.disabled():
        assert _render(path) == cold
    assert len(rendered) == len(_entries()) + 1, "--no-cache renders every API"
