"""The warning corpus: every file under cases/warning/ validates, but with exactly the
warnings stored next to it (``<case>.expected.txt``), and fails under ``--strict``.

Each case's first line names the day it is judged on (``# today: YYYY-MM-DD.``): a
retirement warning exists only within 90 days of a date, so the day is part of the case.
Refresh with ``pytest --update-golden`` and review the diff.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ai4ec.cli import cli
from ai4ec.errors import Severity
from ai4ec.pipeline import check_platform

from ..conftest import CASES
from .test_invalid_corpus import render_case

WARNING = sorted((CASES / "warning").glob("*.yaml"))
_TODAY = re.compile(r"^# today: (\d{4}-\d{2}-\d{2})\.")


def case_day(path: Path) -> str:
    """The day a case is judged on, from its first line."""
    m = _TODAY.match(path.read_text(encoding="utf-8").splitlines()[0])
    assert m, f"{path.name}: the first line must be '# today: YYYY-MM-DD. ...'"
    return m.group(1)


@pytest.mark.parametrize("case", WARNING, ids=lambda p: p.stem)
def test_warning_case(case: Path, update_golden: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI4EC_TODAY", case_day(case))
    result = check_platform(case, display_name=case.name)
    assert result.ok, "a warning case must validate"
    assert result.diagnostics, "a warning case must warn"
    assert all(d.severity is Severity.WARNING and d.line for d in result.diagnostics)
    text = render_case(case)
    expected_file = case.with_suffix(".expected.txt")
    if update_golden or not expected_file.exists():
        expected_file.write_text(text, encoding="utf-8")
        if not update_golden:
            pytest.fail(f"wrote missing {expected_file.name}; review and commit it")
    assert text == expected_file.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", WARNING, ids=lambda p: p.stem)
def test_warning_case_cli(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Warnings pass by default, fail with --strict, and GitHub shows them as ::warning."""
    monkeypatch.setenv("AI4EC_TODAY", case_day(case))
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", str(case)], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    strict = runner.invoke(cli, ["validate", "--strict", str(case)], catch_exceptions=False)
    assert strict.exit_code == 1
    gh = runner.invoke(cli, ["validate", "--format", "github", str(case)], catch_exceptions=False)
    assert gh.exit_code == 0
    assert gh.output.startswith("::warning ")
    args = ["validate", "--format", "json", str(case)]
    as_json = runner.invoke(cli, args, catch_exceptions=False)
    assert as_json.exit_code == 0
    doc = json.loads(as_json.output)
    assert doc["valid"] is True and doc["warnings"] >= 1
    assert doc["diagnostics"] and all(d["severity"] == "warning" for d in doc["diagnostics"])
