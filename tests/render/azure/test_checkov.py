"""Security scan: every failed checkov check is fixed or documented in docs/security.md.

checkov lives in its own venv (it pins many libraries):

    python3 -m venv .venv-scan && .venv-scan/bin/pip install checkov==3.3.30

The test is skipped where that venv does not exist.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ...conftest import ROOT
from .support import all_cases, case_files, write_tree

CHECKOV = ROOT / ".venv-scan" / "bin" / "checkov"
SECURITY_DOC = ROOT / "docs" / "security.md"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHECKOV.is_file(), reason="checkov venv (.venv-scan) not installed"),
]


def documented_checks() -> set[str]:
    """Check ids in the 'Accepted checkov findings' table of docs/security.md."""
    text = SECURITY_DOC.read_text()
    section = text.split("## Accepted checkov findings", 1)[1]
    return set(re.findall(r"^\| (CKV2?_[A-Z]+_\d+) \|", section, re.M))


def test_documented_checks_are_listed_once() -> None:
    text = SECURITY_DOC.read_text().split("## Accepted checkov findings", 1)[1]
    ids = re.findall(r"^\| (CKV2?_[A-Z]+_\d+) \|", text, re.M)
    assert ids and len(ids) == len(set(ids))


def test_failed_checks_are_documented(tmp_path: Path) -> None:
    for case in all_cases():
        write_tree(case_files(case), tmp_path / re.sub(r"[^A-Za-z0-9-]", "-", case))
    run = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(tmp_path),
            "--framework",
            "bicep",
            "arm",
            "--compact",
            "--quiet",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=280,
    )
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"arm", "bicep"}, run.stderr[-2000:]
    failed: dict[str, set[str]] = {}
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
        for check in report["results"].get("failed_checks", []):
            failed.setdefault(check["check_id"], set()).add(check["file_path"])
    undocumented = {k: sorted(v)[:3] for k, v in failed.items() if k not in documented_checks()}
    assert not undocumented, f"fix these or document them in docs/security.md: {undocumented}"
