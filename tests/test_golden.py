"""Golden builds: each sample compiles to exactly the tree under tests/golden/<sample>/.

Run ``pytest --update-golden`` after an intended change and review the diff like code:
these files are what users deploy.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from ai4ec.pipeline import build_platform

from .conftest import ROOT, sample_files

GOLDEN = ROOT / "tests" / "golden"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _report(expected: dict[str, bytes], actual: dict[str, bytes]) -> str:
    lines = []
    for name in sorted(set(expected) - set(actual)):
        lines.append(f"missing from build: {name}")
    for name in sorted(set(actual) - set(expected)):
        lines.append(f"not in golden: {name}")
    for name in sorted(set(expected) & set(actual)):
        if expected[name] != actual[name]:
            diff = difflib.unified_diff(
                expected[name].decode(errors="replace").splitlines(),
                actual[name].decode(errors="replace").splitlines(),
                f"golden/{name}",
                f"build/{name}",
                lineterm="",
            )
            lines.extend(list(diff)[:40])
    return "\n".join(lines)


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.parent.name)
def test_sample_matches_golden(sample: Path, tmp_path: Path, update_golden: bool) -> None:
    name = sample.parent.name
    # Build from a path relative to the repo so "source" in manifests is stable.
    rel = sample.relative_to(ROOT)
    build_platform(ROOT / rel, tmp_path, display_name=str(rel))
    actual = _tree(tmp_path)
    target = GOLDEN / name
    if update_golden:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(tmp_path, target)
        return
    assert target.is_dir(), f"no golden for {name}; run pytest --update-golden"
    report = _report(_tree(target), actual)
    assert not report, report
