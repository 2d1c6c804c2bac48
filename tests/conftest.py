"""Shared pytest setup: the --update-golden flag and paths to samples and cases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The day the Azure catalog checks judge by, pinned so that goldens and expected
#: diagnostics do not change when a retirement date passes (set before any test runs,
#: so CLI subprocesses inherit it too). A test that needs another day sets it itself.
os.environ.setdefault("AI4EC_TODAY", "2026-12-05")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CASES = Path(__file__).resolve().parent / "cases"
#: The strict Istio/KEDA/ARM checker; CI clones main with shared/ beside it, a user's
#: clone has none (tests needing it skip).
ARTIFACT_CHECK_DIR = ROOT.parent / "shared" / "artifact-check"
ARTIFACT_CHECK = ARTIFACT_CHECK_DIR / "lib" / "validate_artifacts.py"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite golden files (expected diagnostics, compiled samples) instead of "
        "comparing. Review `git diff` before committing.",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*/platform.yaml"))
