"""Click options shared by several commands, so they read and behave the same everywhere."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from click.shell_completion import CompletionItem

from .output import DIAGNOSTIC_FORMAT

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _platform_file(ctx: click.Context) -> Path:
    """The platform file a command line names so far (``FILE``, ``-f``, a lone diff argument).

    While ``-e`` still waits for its value click cannot parse the line, so ``ctx.params``
    holds only defaults; the words the shell passed (``COMP_WORDS``, set by click's bash,
    zsh and fish scripts) still name the file.
    """
    for word in shlex.split(os.environ.get("COMP_WORDS", ""))[1:]:
        if word.endswith((".yaml", ".yml")) and Path(word).is_file():
            return Path(word)
    for name in ("file", "platform"):
        value = ctx.params.get(name)
        if isinstance(value, (str, Path)) and value:
            return Path(value)
    dirs = ctx.params.get("dirs")
    if isinstance(dirs, tuple) and len(dirs) == 1:
        return Path(dirs[0])
    return Path("platform.yaml")


def complete_environments(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Environment names of the platform file on the command line, for ``-e <TAB>``.

    Completion must never fail loudly: an unreadable or invalid file completes nothing.
    Only the YAML is read (no validation), so completion stays instant.
    """
    try:
        data = yaml.safe_load(_platform_file(ctx).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    envs = data.get("environments") if isinstance(data, dict) else None
    if not isinstance(envs, dict):
        return []
    return [CompletionItem(str(name)) for name in envs if str(name).startswith(incomplete)]


def env_option(verb: str) -> Decorator:
    """``-e/--env ENV`` (repeatable) into ``envs``; ``verb`` says what is done to it."""
    return click.option(
        "-e",
        "--env",
        "envs",
        multiple=True,
        metavar="ENV",
        shell_complete=complete_environments,
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
