"""`build` shows progress on a terminal and nothing when piped (issue 15).

The terminal is a real pseudo-terminal (``pty``) given to the ``ai4ec`` process as its
standard error, with standard output on a pipe: the bar must reach the terminal and never
the output; with both on pipes, nothing but the summary is printed.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import SAMPLES

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")


def _exe() -> str:
    found = shutil.which("ai4ec", path=str(Path(sys.executable).parent))
    assert found, "the ai4ec console script is installed beside the interpreter"
    return found


def _build_on_a_terminal(args: list[str]) -> tuple[int, str, bytes]:
    """(exit code, standard output, everything written to the terminal)."""
    main, terminal = pty.openpty()
    proc = subprocess.Popen(
        [_exe(), *args], stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the process closed its side of the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(main)
    return proc.returncode, out.decode(), seen


def test_build_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    sample = SAMPLES / "multi-env" / "platform.yaml"
    code, out, terminal = _build_on_a_terminal(["build", str(sample), "-o", str(tmp_path / "a")])
    assert code == 0
    assert b"building" in terminal and b"prod: functions" in terminal
    assert "building" not in out and out.startswith("wrote ")
    quiet_code, quiet_out, quiet_terminal = _build_on_a_terminal(
        ["build", str(sample), "-o", str(tmp_path / "b"), "--quiet"]
    )
    assert quiet_code == 0 and quiet_out == "" and b"building" not in quiet_terminal
    piped = subprocess.run(
        [_exe(), "build", str(sample), "-o", str(tmp_path / "c")], capture_output=True, text=True
    )
    assert piped.returncode == 0 and piped.stderr == "" and "building" not in piped.stdout
