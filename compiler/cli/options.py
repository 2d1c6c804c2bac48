"""Click options shared by several commands, so they read and behave the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .output import DIAGNOSTIC_FORMAT

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def env_option(verb: str) -> Decorator:
    """``-e/--env ENV`` (repeatable) into ``envs``; ``verb`` says what is done to it."""
    return click.option(
        "-e",
        "--env",
        "envs",
        multiple=True,
        metavar="ENV",
        help=f"{verb} only this environment (repeatable). Default: every environment.",
    )


def report_format_option(help_text: str) -> Decorator:
    """``--format text|markdown|json`` into ``fmt``: the formats of ``ai4ec diff`` reports."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "markdown", "json"]),
        default="text",
        show_default=True,
        help=help_text,
    )


def _remember_format(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # Kept in ctx.meta so output.Command reports a failed command's errors in this format.
    ctx.meta[DIAGNOSTIC_FORMAT] = value
    return value


def diagnostic_format_option(help_text: str | None = None) -> Decorator:
    """``--format text|json|github`` into ``fmt``: how diagnostics (and errors) are printed."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json", "github"]),
        default="text",
        show_default=True,
        callback=_remember_format,
        help=help_text,
    )
