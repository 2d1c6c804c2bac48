"""Golden Azure output per sample and environment (tests/azure/golden/<sample>/<env>/).

``pytest --update-golden`` rewrites them; review the diff like code, because these are
the templates users deploy.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from ai4ec.render.azure import render_azure

from ..conftest import ROOT
from .support import context_for, platforms, rendered, sample_envs, write_tree

GOLDEN = Path(__file__).resolve().parent / "golden"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(("sample", "env"), sample_envs(), ids=lambda v: str(v))
def test_matches_golden(sample: str, env: str, tmp_path: Path, update_golden: bool) -> None:
    files = rendered(sample, env)
    target = GOLDEN / sample / env
    if update_golden:
        shutil.rmtree(target, ignore_errors=True)
        write_tree(files, target)
        return
    assert target.is_dir(), f"no golden for {sample}/{env}; run pytest --update-golden"
    expected = _tree(target)
    actual = _tree(write_tree(files, tmp_path))
    problems = [f"missing from build: {n}" for n in sorted(set(expected) - set(actual))]
    problems += [f"not in golden: {n}" for n in sorted(set(actual) - set(expected))]
    for name in sorted(set(expected) & set(actual)):
        if expected[name] != actual[name]:
            diff = difflib.unified_diff(
                expected[name].decode().splitlines(),
                actual[name].decode().splitlines(),
                f"golden/{name}",
                f"build/{name}",
                lineterm="",
            )
            problems.extend(list(diff)[:40])
    assert not problems, "\n".join(problems)


def test_output_is_deterministic() -> None:

    plat = platforms(str(ROOT / "samples" / "camera-trap" / "platform.yaml"))[0]
    first = [(a.path, a.content) for a in render_azure(plat, context_for("camera-trap"))]
    second = [(a.path, a.content) for a in render_azure(plat, context_for("camera-trap"))]
    assert first == second
