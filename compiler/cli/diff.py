"""The ``ai4ec diff`` command.

Like every command it only turns options into arguments, calls one library function
(:func:`ai4ec.diff.diff_git` or :func:`ai4ec.diff.diff_dirs`) and prints the report.
Exit codes follow ``terraform plan -detailed-exitcode``: 0 no changes, 2 changes,
1 an error (bad input, unknown ref, invalid platform on either side).
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from .exits import EXIT_OK, EXIT_USER, CommandExit
from .options import env_option, report_format_option
from .output import Command


def _fail(message: str) -> CommandExit:
    return CommandExit(EXIT_USER, message)


def _platform_argument(arg: Path, file: Path | None) -> Path:
    """A lone argument is the platform file to compare across refs (like ``-f``).

    A directory alone is refused with what to do: comparing build directories needs two.
    """
    if arg.is_dir():
        raise _fail(
            f"{arg} is a directory: compare build directories as ai4ec diff DIR_A DIR_B, "
            "or name a platform file"
        )
    if file is not None and file != arg:
        raise _fail(f"two platform files given ({arg} and -f {file}); name one")
    return arg


@click.command("diff", cls=Command)
@click.argument(
    "dirs", nargs=-1, type=click.Path(path_type=Path), metavar="[PLATFORM | DIR_A DIR_B]"
)
@click.option(
    "--base",
    "base_ref",
    metavar="REF",
    help="Git ref to compare from. Default: where this branch left origin's default "
    "branch (merge-base with origin/HEAD, origin/main or origin/master), else HEAD.",
)
@click.option(
    "--head",
    "head_ref",
    metavar="REF",
    help="Git ref to compare to. Default: the working tree (uncommitted edits included).",
)
@click.option(
    "-f",
    "--file",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The platform file (its path inside the repository is the same at both refs). "
    "Default: the PLATFORM argument, else platform.yaml.",
)
@env_option("Compare")
@click.option(
    "--all-envs",
    is_flag=True,
    help="Compare every environment of either side (the default; explicit for CI).",
)
@report_format_option("text for a terminal, markdown for a pull-request comment, json for tools.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file (no colour); a summary line goes to stderr.",
)
@click.option(
    "--prices",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSON price table merged over the shipped one (layout: compiler/data/prices.json).",
)
@click.option("--no-color", is_flag=True, help="Plain text even on a terminal (also NO_COLOR).")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Build both sides anew, without the render cache (the report is the same).",
)
def diff(
    dirs: tuple[Path, ...],
    base_ref: str | None,
    head_ref: str | None,
    file: Path | None,
    envs: tuple[str, ...],
    all_envs: bool,
    fmt: str,
    output: Path | None,
    prices: Path | None,
    no_color: bool,
    no_cache: bool,
) -> None:
    """Show what a platform.yaml change does to Azure, Kubernetes, APIM and the runtime.

    Builds platform.yaml at the base ref and at the head (default: your working tree)
    in memory, with the files it references read from the same ref, and compares
    every generated resource by identity: Azure resources, Kubernetes objects, API
    Management policies, runtime routing entries and settings. Each change lists the
    platform.yaml lines that caused it, flags replacements and data loss first, and
    shows the monthly cost before and after. Secrets are never printed.

    \b
    ai4ec diff                          working tree vs the branch point (or HEAD)
    ai4ec diff samples/x/platform.yaml --base HEAD
    ai4ec diff --base main --head HEAD  two commits
    ai4ec diff -e prod --format markdown -o plan.md
    ai4ec diff out-main/ out/           two `ai4ec build` output directories

    Exit codes: 0 no changes, 2 changes, 1 error.
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from .. import diff as engine
    from ..cache import disabled
    from ..diff import cost as costs
    from ..diff.formats import FORMATTERS, exit_code, summary_line
    from .progress import terminal_progress

    if all_envs and envs:
        raise _fail("--all-envs and -e/--env exclude each other")
    if len(dirs) == 1:
        file, dirs = _platform_argument(dirs[0], file), ()
    if dirs and len(dirs) != 2:
        raise _fail(
            "give one platform file (ai4ec diff PLATFORM) or two build directories "
            "(ai4ec diff DIR_A DIR_B)"
        )
    if dirs and (base_ref or head_ref):
        raise _fail("--base/--head compare git refs; they do not apply to two directories")
    wanted = list(envs) or None
    table = costs.load_prices(prices)
    if dirs:
        report = engine.diff_dirs(dirs[0], dirs[1], wanted, table)
    else:
        platform = file or Path("platform.yaml")
        progress = terminal_progress("building both sides", fmt == "json")
        try:
            with disabled() if no_cache else nullcontext():
                report = engine.diff_git(
                    platform, base_ref, head_ref, wanted, table, str(platform), progress
                )
        finally:
            if progress is not None:
                progress.close()
    if output is not None:
        text = FORMATTERS[fmt](report)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"wrote {output}: {summary_line(report)}", err=True)
    elif fmt == "text":
        color = sys.stdout.isatty() and not no_color and "NO_COLOR" not in os.environ
        from ..diff.formats import format_text

        click.echo(format_text(report, color=color), nl=False, color=color)
    else:
        click.echo(FORMATTERS[fmt](report), nl=False)
    code = exit_code(report)
    if code != EXIT_OK:
        raise CommandExit(code)
