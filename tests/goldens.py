"""Golden-tree comparison shared by every target's golden tests.

A golden is a directory of files; the test renders the same tree in memory as
``{relative path: bytes}``. ``pytest --update-golden`` rewrites the directory instead of
comparing; review the git diff afterwards like code.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` as ``{posix relative path: bytes}``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def check_golden(actual: dict[str, bytes], target: Path, update: bool) -> None:
    """Assert ``actual`` equals the golden tree at ``target`` (or rewrite it when updating).

    On a mismatch the assertion lists missing and unexpected files and the first 40 lines
    of a unified diff per differing file.
    """
    if update:
        shutil.rmtree(target, ignore_errors=True)
        for name, content in actual.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return
    assert target.is_dir(), f"no golden at {target}; run pytest --update-golden"
    expected = read_tree(target)
    problems = [f"missing from build: {n}" for n in sorted(set(expected) - set(actual))]
    problems += [f"not in golden: {n}" for n in sorted(set(actual) - set(expected))]
    for name in sorted(set(expected) & set(actual)):
        if expected[name] != actual[name]:
            diff = difflib.unified_diff(
                expected[name].decode(errors="replace").splitlines(),
                actual[name].decode(errors="replace").splitlines(),
                f"golden/{name}",
                f"build/{name}",
                lineterm="",
            )
            problems.extend(list(diff)[:40])
    assert not problems, "\n".join(problems)
