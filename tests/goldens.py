"""Golden-tree comparison shared by every target's golden tests.

There is one golden tree, ``tests/golden/<sample>/<env>/``: what ``ai4ec build`` writes
for each sample environment. The full build compares all of it (tests/test_golden.py);
each target's tests compare their own part (``only="azure/"``, ``only="apim/"``), so one
change to the output shows up once in review. A test renders the same tree in memory as
``{relative path: bytes}``. ``pytest --update-golden`` rewrites the golden (or only that
part of it) instead of comparing; review the git diff afterwards like code.

A ZIP (the Functions bundle, several MB of vendored wheels) is kept in the golden as
``<name>.entries``: one line per entry with its SHA-256 and size. The entries are also
pinned through their digest in ``manifest.json``; the deflated bytes are not, because
they depend on the machine's zlib (``compiler/digest.py``). The listing makes a change
reviewable without committing megabytes of binaries per sample.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import shutil
import zipfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def read_tree(root: Path, only: str = "") -> dict[str, bytes]:
    """Every file below ``root`` (whose relative path starts with ``only``) as bytes."""
    return {
        name: p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (name := p.relative_to(root).as_posix()).startswith(only)
    }


def _entries(data: bytes) -> bytes:
    """A ZIP archive as text: ``sha256 size name`` per entry, in archive order."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        lines = [
            f"{hashlib.sha256(z.read(i)).hexdigest()} {i.file_size:>9} {i.filename}"
            for i in z.infolist()
        ]
    return ("\n".join(lines) + "\n").encode()


def golden_view(actual: dict[str, bytes]) -> dict[str, bytes]:
    """``actual`` as the golden tree stores it: ZIPs replaced by their entry listings."""
    return {
        (f"{name}.entries" if name.endswith(".zip") else name): (
            _entries(data) if name.endswith(".zip") else data
        )
        for name, data in actual.items()
    }


def check_golden(actual: dict[str, bytes], target: Path, update: bool, only: str = "") -> None:
    """Assert ``actual`` equals the golden tree at ``target`` (or rewrite it when updating).

    Args:
        actual: The rendered files, by path relative to ``target``.
        target: The golden directory (``GOLDEN / sample / env``).
        update: Rewrite instead of comparing (``pytest --update-golden``).
        only: Compare (or rewrite) just the files whose path starts with this prefix,
            e.g. ``"azure/"``; every file of ``actual`` must start with it.

    On a mismatch the assertion lists missing and unexpected files and the first 40 lines
    of a unified diff per differing file.
    """
    actual = golden_view(actual)
    stray = sorted(n for n in actual if not n.startswith(only))
    assert not stray, f"files outside {only!r}: {stray[:5]}"
    if update:
        if only:
            for name in read_tree(target, only):
                (target / name).unlink()
        else:
            shutil.rmtree(target, ignore_errors=True)
        for name, content in actual.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return
    assert target.is_dir(), f"no golden at {target}; run pytest --update-golden"
    expected = read_tree(target, only)
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
