"""Exit codes, the one "tell the user and exit N" exception, and the map from errors to codes.

Every command ends either normally (0) or by raising; :func:`exit_code_for` is the only
place that decides which code an exception becomes, so a command never calls
``sys.exit`` and the codes are written down once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

import click

from ..errors import Ai4ecError, RenderError

EXIT_OK = 0
EXIT_USER = 1
EXIT_CHANGES = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class CommandExit(click.ClickException):
    """Tell the user ``message`` (nothing when the command printed already) and exit ``code``.

    A :class:`click.ClickException`, so it ends the command the same way under
    ``ai4ec``'s :func:`~ai4ec.cli.app.main` (click re-raises it without standalone mode)
    and under click's own runner (which shows it and exits with :attr:`exit_code`).
    """

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        # click declares exit_code a class variable; a ClickException's code is per class,
        # ours is per instance.
        self.exit_code = code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        """Print ``error: message`` to stderr, or nothing when there is no message."""
        if self.message:
            click.echo(f"error: {self.message}", err=True, file=file)


# Looked up along the exception's MRO, most specific first. Usage mistakes are user
# errors (1): 2 stays reserved for "diff found changes". A render failure is a bug (70):
# rendering runs only on a platform that validated, and every rule that can refuse user
# input runs in validate (issue 12).
EXIT_CODES: Mapping[type[BaseException], int] = {
    RenderError: EXIT_INTERNAL,
    Ai4ecError: EXIT_USER,
    click.UsageError: EXIT_USER,
    click.ClickException: EXIT_USER,
    click.Abort: EXIT_USER,
    KeyboardInterrupt: EXIT_INTERRUPTED,
}


def exit_code_for(exc: BaseException) -> int:
    """The exit code ``exc`` ends the process with; anything unknown is an internal bug."""
    if isinstance(exc, CommandExit):
        return exc.exit_code
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_INTERNAL
