"""Shared pytest setup: the --update-golden flag and paths to samples and cases."""

from __future__ import annotations

from pathlib import Path

import pytest

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
