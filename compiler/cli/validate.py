"""``ai4ec validate``: check a platform file and report every problem at once."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import Severity
from .exits import EXIT_USER, CommandExit
from .options import diagnostic_format_option, env_option
from .output import Command, report


@click.command(cls=Command)
@click.argument("file", default="platform.yaml", type=click.Path(dir_okay=False, path_type=Path))
@env_option("Check")
@diagnostic_format_option("text for people, json for tools, github for workflow annotations.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(file: Path, envs: tuple[str, ...], fmt: str, strict: bool) -> None:
    """Check FILE against the schema and the semantic rules.

    Every problem is reported at once, with file, line, column, the JSON path, a
    stable code (e.g. E-REF-POOL) and a hint. Each environment overlay is merged and
    checked as a whole platform.
    """
    from ..pipeline import check_platform

    result = check_platform(file, envs or None)
    diags = result.diagnostics
    failed = not result.ok or (strict and any(d.severity is Severity.WARNING for d in diags))
    extra: dict[str, object] = {"environments": [e.name for e in result.environments]}
    if fmt == "json":
        extra["valid"] = not failed
    report(diags, fmt, extra)
    if failed:
        raise CommandExit(EXIT_USER)
    if fmt == "text":
        names = ", ".join(e.name for e in result.environments)
        click.echo(f"{file}: valid ({names})")
