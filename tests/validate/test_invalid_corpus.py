"""The bad-input corpus: every file under cases/invalid/ must fail validation with
exactly the diagnostics stored next to it (``<case>.expected.txt``).

Refresh the expectations with ``pytest --update-golden`` and review the diff: these
files are the user-facing error messages, so a change in them is a change in behaviour.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ai4ec.cli import cli
from ai4ec.errors import Severity
from ai4ec.pipeline import check_platform
from ai4ec.report import format_text

from ..conftest import CASES

INVALID = sorted((CASES / "invalid").glob("*.yaml"))
#: Optional first line of a case judged on another day than the suite's (retirements).
_TODAY = re.compile(rb"^# today: (\d{4}-\d{2}-\d{2})\.")


@pytest.fixture(autouse=True)
def _case_day(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A case whose first line is ``# today: YYYY-MM-DD.`` is judged on that day."""
    case = getattr(request.node, "callspec", None)
    path = case.params.get("case") if case is not None else None
    if isinstance(path, Path):
        m = _TODAY.match(path.read_bytes())
        if m:
            monkeypatch.setenv("AI4EC_TODAY", m.group(1).decode())


def render_case(path: Path) -> str:
    result = check_platform(path, display_name=path.name)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        lines = []
    return format_text(result.diagnostics, {path.name: lines}, color=False) + "\n"


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.stem)
def test_invalid_case(case: Path, update_golden: bool) -> None:
    result = check_platform(case, display_name=case.name)
    assert not result.ok, "an invalid case validated cleanly"
    assert any(d.severity is Severity.ERROR and d.line for d in result.diagnostics), (
        "every invalid case must name at least one line"
    )
    text = render_case(case)
    expected_file = case.with_suffix(".expected.txt")
    if update_golden or not expected_file.exists():
        expected_file.write_text(text, encoding="utf-8")
        if not update_golden:
            pytest.fail(f"wrote missing {expected_file.name}; review and commit it")
    assert text == expected_file.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.stem)
def test_invalid_case_cli_exit_code(case: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["validate", str(case)], catch_exceptions=False)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    gh = runner.invoke(cli, ["validate", "--format", "github", str(case)], catch_exceptions=False)
    assert gh.exit_code == 1
    assert gh.output.startswith("::error ")
