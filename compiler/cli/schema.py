"""``ai4ec schema``: print the platform.yaml JSON Schema or its field reference."""

from __future__ import annotations

from pathlib import Path

import click

from .output import Command


@click.command(cls=Command)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of standard output.",
)
@click.option("--markdown", is_flag=True, help="Print the field reference (docs/platform-yaml.md).")
def schema(output: Path | None, markdown: bool) -> None:
    """Print the platform.yaml JSON Schema, for editors and CI.

    \b
    With the YAML extension of VS Code (yaml-language-server), save it and add this
    first line to platform.yaml to get completion and inline errors:
      # yaml-language-server: $schema=./platform.schema.json
    """  # noqa: D301 - click needs the \b escape
    from ..docs import schema_markdown, schema_text

    text = schema_markdown() if markdown else schema_text()
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
