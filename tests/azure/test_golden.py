"""Golden Azure output per sample and environment (tests/azure/golden/<sample>/<env>/).

``pytest --update-golden`` rewrites them; review the diff like code, because these are
the templates users deploy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ai4ec.render.azure import render_azure

from ..conftest import ROOT
from ..goldens import check_golden, read_tree
from .support import context_for, platforms, rendered, sample_envs, write_tree

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize(("sample", "env"), sample_envs(), ids=lambda v: str(v))
def test_matches_golden(sample: str, env: str, tmp_path: Path, update_golden: bool) -> None:
    files = rendered(sample, env)
    check_golden(read_tree(write_tree(files, tmp_path)), GOLDEN / sample / env, update_golden)


def test_output_is_deterministic() -> None:

    plat = platforms(str(ROOT / "samples" / "camera-trap" / "platform.yaml"))[0]
    first = [(a.path, a.content) for a in render_azure(plat, context_for("camera-trap"))]
    second = [(a.path, a.content) for a in render_azure(plat, context_for("camera-trap"))]
    assert first == second
