"""Golden builds: each sample compiles to exactly the tree under tests/golden/<sample>/.

Run ``pytest --update-golden`` after an intended change and review the diff like code:
these files are what users deploy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ai4ec.pipeline import build_platform

from .conftest import ROOT, sample_files
from .goldens import check_golden, read_tree

GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.parent.name)
def test_sample_matches_golden(sample: Path, tmp_path: Path, update_golden: bool) -> None:
    name = sample.parent.name
    # Build from a path relative to the repo so "source" in manifests is stable.
    rel = sample.relative_to(ROOT)
    build_platform(ROOT / rel, tmp_path, display_name=str(rel))
    check_golden(read_tree(tmp_path), GOLDEN / name, update_golden)
