"""One way out of the CLI: the codes defined once, one exception, one map, one sys.exit."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

from ai4ec.cli.exits import (
    EXIT_CHANGES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USER,
    CommandExit,
    exit_code_for,
)
from ai4ec.errors import DiffError, ValidationError

COMPILER = Path(__file__).resolve().parents[2] / "compiler"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValidationError("bad"), EXIT_USER),
        (DiffError("bad"), EXIT_USER),
        (click.UsageError("no such option"), EXIT_USER),  # 2 is diff's "changes"
        (click.Abort(), EXIT_USER),
        (KeyboardInterrupt(), EXIT_INTERRUPTED),
        (CommandExit(EXIT_CHANGES), EXIT_CHANGES),
        (RuntimeError("bug"), EXIT_INTERNAL),
    ],
)
def test_exit_code_for(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_command_exit_prints_its_message_only(capsys: pytest.CaptureFixture[str]) -> None:
    CommandExit(EXIT_USER, "nope").show()
    CommandExit(EXIT_CHANGES).show()
    assert capsys.readouterr().err == "error: nope\n"


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(COMPILER.rglob("*.py"))]


def test_exit_codes_are_defined_once() -> None:
    where = [
        f"{path.relative_to(COMPILER)}:{target.id}"
        for path, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.startswith("EXIT_")
    ]
    assert where and all(w.startswith("cli/exits.py:") for w in where), where


def test_only_main_ends_the_process() -> None:
    offenders = []
    for path, tree in _sources():
        rel = str(path.relative_to(COMPILER))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("SystemExit", "click.exceptions.Exit", "_Failed"):
                offenders.append(f"{rel}:{node.lineno} {name}")
            if name == "sys.exit" and rel != "cli/app.py":
                offenders.append(f"{rel}:{node.lineno} {name}")
    assert not offenders
