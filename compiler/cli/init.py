"""``ai4ec init``: write a commented starter platform.yaml and its schema."""

from __future__ import annotations

from pathlib import Path

import click

from .exits import EXIT_USER, CommandExit
from .output import Command


@click.command(cls=Command)
@click.argument("path", default="platform.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter PATH (and platform.schema.json beside it)."""
    from ..docs import schema_text, starter_platform

    schema_path = path.with_name("platform.schema.json")
    for target in (path, schema_path):
        if target.exists() and not force:
            raise CommandExit(EXIT_USER, f"{target} already exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(starter_platform(), encoding="utf-8")
    schema_path.write_text(schema_text(), encoding="utf-8")
    click.echo(f"wrote {path} and {schema_path}\nnext: edit it, then run `ai4ec validate {path}`")
