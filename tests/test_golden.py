"""Golden builds: each sample compiles to exactly the tree under tests/golden/<sample>/.

Run ``pytest --update-golden`` after an intended change and review the diff like code:
these files are what users deploy. The targets' own golden tests compare their part of
the same tree (tests/goldens.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from ai4ec.pipeline import build_platform

from .conftest import ROOT, sample_files
from .goldens import GOLDEN, check_golden, read_tree


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.parent.name)
def test_sample_matches_golden(sample: Path, tmp_path: Path, update_golden: bool) -> None:
    name = sample.parent.name
    # Build from a path relative to the repo so "source" in manifests is stable. With
    # verify: every generated Bicep file of every sample is parsed back (pycep), as CI's
    # build does; a plain build skips that (it is most of a large build's time).
    rel = sample.relative_to(ROOT)
    build_platform(ROOT / rel, tmp_path, display_name=str(rel), verify=True)
    check_golden(read_tree(tmp_path), GOLDEN / name, update_golden)


_BUILD = "import sys; from ai4ec.pipeline import build_platform; build_platform(*sys.argv[1:])"


@pytest.mark.parametrize("sample", ["camera-trap", "multi-env"])
def test_build_is_identical_across_hash_seeds(sample: str, tmp_path: Path) -> None:
    """Two processes with different ``PYTHONHASHSEED`` write byte-identical trees.

    One process cannot show this: set and dict order that depends on string hashing is
    fixed for its lifetime, so only separate interpreters catch such ordering.
    """
    trees = []
    for seed in ("1", "4242"):
        out = tmp_path / f"seed-{seed}"
        subprocess.run(
            [sys.executable, "-c", _BUILD, f"samples/{sample}/platform.yaml", str(out)],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        trees.append(read_tree(out))
    assert trees[0], "the build wrote nothing"
    assert sorted(trees[0]) == sorted(trees[1])
    differing = [n for n in trees[0] if trees[0][n] != trees[1][n]]
    assert not differing, differing


def test_verify_parses_bicep_back_only_when_asked() -> None:
    """A Bicep file that does not parse passes a plain build's check, not ``--verify``'s."""
    from ai4ec.errors import RenderError
    from ai4ec.render.artifact import Artifact
    from ai4ec.write import verify_artifact

    broken = Artifact(PurePosixPath("azure/main.bicep"), b"resource x 'a@b' = {\n")
    verify_artifact(broken)
    with pytest.raises(RenderError, match="does not parse"):
        verify_artifact(broken, full=True)
    with pytest.raises(RenderError, match="does not parse"):
        verify_artifact(Artifact(PurePosixPath("apim/p.xml"), b"<policies><a></policies>"))
