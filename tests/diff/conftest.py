"""Helpers for the diff tests: git repositories made in tmp dirs, and the CLI runner.

Every build includes the Azure target, so cost, replacement and rename checks run
against real ARM output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ai4ec.cli.diff import diff

from ..conftest import SAMPLES

GIT = [
    "git",
    "-c",
    "user.email=diff@test.invalid",
    "-c",
    "user.name=diff-test",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
]


def git(repo: Path, *args: str) -> str:
    out = subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Repo:
    """A git repository holding one sample platform, committed once."""

    def __init__(self, root: Path, sample: str) -> None:
        self.root = root
        self.file = root / "platform.yaml"
        shutil.copy(SAMPLES / sample / "platform.yaml", self.file)
        git(root, "init", "-q")
        git(root, "add", ".")
        git(root, "commit", "-qm", "base")

    def edit(self, change: Callable[[str], str]) -> None:
        text = self.file.read_text(encoding="utf-8")
        new = change(text)
        assert new != text, "the edit did not change the file"
        self.file.write_text(new, encoding="utf-8")

    def commit(self, message: str = "change") -> str:
        git(self.root, "commit", "-qam", message)
        return git(self.root, "rev-parse", "HEAD")

    def run(self, *args: str) -> Result:
        return run_diff("-f", str(self.file), *args)

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        res = self.run("--format", "json", *args)
        assert res.exit_code in (0, 2), res.output
        return res.exit_code, json.loads(res.stdout)


def run_diff(*args: str) -> Result:
    return CliRunner().invoke(diff, list(args), catch_exceptions=False)


@pytest.fixture
def repo_factory(tmp_path: Path) -> Callable[[str], Repo]:
    def make(sample: str) -> Repo:
        root = tmp_path / f"repo-{sample}"
        root.mkdir()
        return Repo(root, sample)

    return make


def changes(report: dict[str, Any], env: str | None = None) -> list[dict[str, Any]]:
    return [
        c for e in report["environments"] if env is None or e["name"] == env for c in e["changes"]
    ]


def find(report: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    hits = [c for c in changes(report) if c["kind"] == kind and c["name"] == name]
    assert len(hits) == 1, [(c["kind"], c["name"]) for c in changes(report)]
    return hits[0]
