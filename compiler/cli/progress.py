"""Progress of long commands on a terminal (``build``, ``diff``): click's progress bar.

Shown on standard error, and only when it is a terminal: piped output, CI logs and
``--quiet`` stay silent, and standard output (reports, JSON) is never touched.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from typing import Any, TextIO

import click


class TerminalProgress:
    """A :class:`~ai4ec.pipeline.Progress` drawing one bar per batch of steps."""

    def __init__(self, label: str, file: TextIO | None = None) -> None:
        self.label = label
        self.file = file or sys.stderr
        self._bar: Any = None
        self._context: AbstractContextManager[Any] | None = None

    def start(self, total: int) -> None:
        """Begin a bar of ``total`` steps (a second call, e.g. diff's base side, starts anew)."""
        self.close()
        self._context = click.progressbar(
            length=total,
            label=self.label,
            file=self.file,
            show_eta=False,
            item_show_func=lambda item: item,
        )
        self._bar = self._context.__enter__()

    def step(self, label: str) -> None:
        """One step is done."""
        if self._bar is not None:
            self._bar.update(1, label)

    def close(self) -> None:
        """Finish the current bar, if any."""
        if self._context is not None:
            self._context.__exit__(None, None, None)
        self._context = self._bar = None


def terminal_progress(label: str, quiet: bool = False) -> TerminalProgress | None:
    """A progress display when standard error is a terminal and not ``quiet``, else None."""
    if quiet or not sys.stderr.isatty():
        return None
    return TerminalProgress(label)
