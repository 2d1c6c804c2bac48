"""The renderer plugs into the build: registered, every sample builds and parses back."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai4ec import render as render_pkg
from ai4ec.pipeline import build_platform
from ai4ec.render.apim import render_apim

from ..conftest import ROOT, sample_files


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.parent.name)
def test_sample_builds_with_the_apim_renderer(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renderers = tuple(r for r in render_pkg.RENDERERS if r[0] != "apim")
    monkeypatch.setattr(render_pkg, "RENDERERS", (*renderers, ("apim", render_apim)))
    rel = sample.relative_to(ROOT)
    result = build_platform(ROOT / rel, tmp_path, display_name=str(rel))
    for env_dir in result.written:
        files = sorted(p.relative_to(env_dir).as_posix() for p in env_dir.rglob("*.xml"))
        assert "apim/policies/global.xml" in files
        assert all(f.startswith("apim/") for f in files)
