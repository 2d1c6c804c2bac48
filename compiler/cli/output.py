"""How commands print diagnostics, and the click command class that reports ai4ec errors.

:class:`Command` is the one place an :class:`~ai4ec.errors.Ai4ecError` raised by a library
call is shown to the user; it then ends the command with the code from
:func:`~ai4ec.cli.exits.exit_code_for`.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import Ai4ecError, Diagnostic
from ..report import format_github, format_json, format_text
from .exits import EXIT_INTERNAL, CommandExit, exit_code_for

# ctx.meta key under which a command's diagnostics --format is kept (see options.py), so
# errors come out in the format the user asked for.
DIAGNOSTIC_FORMAT = "ai4ec.diagnostic_format"


def _lines_for(diags: Sequence[Diagnostic]) -> dict[str, Sequence[str]]:
    out: dict[str, Sequence[str]] = {}
    for d in diags:
        if d.file and d.file not in out and d.line:
            try:
                out[d.file] = (
                    Path(d.file).read_text(encoding="utf-8", errors="replace").splitlines()
                )
            except OSError:
                out[d.file] = []
    return out


def report(diags: Sequence[Diagnostic], fmt: str, extra: dict[str, object] | None = None) -> None:
    """Print ``diags`` as text (stderr, with source lines), json or github annotations."""
    if fmt == "json":
        click.echo(format_json(diags, extra))
    elif fmt == "github":
        if diags:
            click.echo(format_github(diags))
    elif diags:
        color = sys.stderr.isatty() and "NO_COLOR" not in os.environ
        click.echo(format_text(diags, _lines_for(diags), color), err=True)


def report_error(exc: Ai4ecError, fmt: str = "text") -> None:
    """Show an ai4ec error: its diagnostics, or its message when it has none.

    The message passes the secret scrubber: errors from apply and the runtime can quote
    URLs and service answers, and no secret may reach a terminal or a CI log.
    """
    from ..apply.scrub import scrub

    report(exc.diagnostics, fmt)
    if not exc.diagnostics:
        click.echo(scrub(f"error: {exc}"), err=True)


def report_step_error(exc: Ai4ecError) -> None:
    """Show an error of a deployment step: its message, then each step diagnostic, scrubbed.

    apply's diagnostics are service answers, not places in platform.yaml, so they are
    listed under the message rather than formatted as file:line:col findings.
    """
    from ..apply.scrub import scrub

    click.echo(scrub(f"error: {exc}"), err=True)
    for d in exc.diagnostics:
        click.echo(scrub(f"  {d.code}: {d.message}"), err=True)


#: What every internal error ends with: it is ours to fix, and how to give us the details.
BUG_HINT = (
    "This is an ai4ec bug; please report it with the command you ran "
    "(rerun with --debug for a traceback)."
)


def debug_requested(ctx: click.Context | None = None) -> bool:
    """Whether ``--debug`` (on the ``ai4ec`` group) or ``AI4EC_DEBUG=1`` asks for tracebacks."""
    if os.environ.get("AI4EC_DEBUG") == "1":
        return True
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def report_internal(exc: BaseException, debug: bool) -> None:
    """Tell the user an ai4ec bug stopped the command, with the traceback under ``--debug``.

    An :class:`Ai4ecError` has shown its diagnostics already, so only the hint follows.
    """
    from ..apply.scrub import scrub

    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, Ai4ecError):
        click.echo(f"internal error: {BUG_HINT}", err=True)
    else:
        click.echo(scrub(f"internal error: {type(exc).__name__}: {exc}. {BUG_HINT}"), err=True)


class Command(click.Command):
    """A click command whose ai4ec errors are reported, then end it with their exit code.

    An error that maps to exit 70 (a render failure, or any exception ai4ec did not
    expect) is a bug: after its diagnostics comes the bug hint, and with ``--debug`` the
    traceback. Handling it here, not only in :func:`ai4ec.cli.app.main`, gives the same
    exit code under click's own runner.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; an error becomes a report and a :class:`CommandExit`."""
        try:
            return super().invoke(ctx)
        except Ai4ecError as exc:
            code = exit_code_for(exc)
            report_error(exc, str(ctx.meta.get(DIAGNOSTIC_FORMAT, "text")))
            if code == EXIT_INTERNAL:
                report_internal(exc, debug_requested(ctx))
            raise CommandExit(code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug; reported, never a bare traceback
            report_internal(exc, debug_requested(ctx))
            raise CommandExit(EXIT_INTERNAL) from None
