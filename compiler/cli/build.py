"""``ai4ec build``: compile a platform file into one output directory per environment."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import click

from ..report import format_json
from .options import diagnostic_format_option, env_option
from .output import Command, report


@click.command(cls=Command)
@click.argument("file", default="platform.yaml", type=click.Path(dir_okay=False, path_type=Path))
@env_option("Build")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Output directory; each environment goes to OUTPUT/<env>/.",
)
@diagnostic_format_option()
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Render everything anew, neither reading nor writing the render cache "
    "($AI4EC_CACHE_DIR, else ~/.cache/ai4ec; bounded by $AI4EC_CACHE_MAX_MB, default 2048). "
    "Cached or not, the output is the same bytes.",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Also parse every generated Bicep file back (seconds per large file; CI uses it). "
    "YAML, JSON and XML are always parsed back.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    envvar="AI4EC_JOBS",
    default=None,
    help="Processes that render an environment: 2 renders the Azure and APIM targets in a "
    "forked worker beside the Kubernetes target; 1 renders everything in this process. "
    "Default: $AI4EC_JOBS, else the cores this process may use (at most 2). "
    "The output is the same bytes either way.",
)
def build(
    file: Path,
    envs: tuple[str, ...],
    out: Path,
    fmt: str,
    quiet: bool,
    no_cache: bool,
    verify: bool,
    jobs: int | None,
) -> None:
    """Compile FILE into Bicep/ARM, Kubernetes, APIM and runtime artifacts.

    Writes OUTPUT/<env>/ atomically (a failed build leaves the previous output
    untouched) with a manifest.json listing every artifact and its SHA-256. The same
    input always gives byte-identical output. Without a named environment, a file with
    no `environments` builds into OUTPUT/default/.
    """
    from ..cache import disabled
    from ..pipeline import build_platform
    from .progress import terminal_progress

    progress = terminal_progress("building", quiet or fmt == "json")
    try:
        with disabled() if no_cache else nullcontext():
            result = build_platform(
                file, out, envs or None, verify=verify, progress=progress, jobs=jobs
            )
    finally:
        if progress is not None:
            progress.close()
    if result.check.diagnostics:
        report(result.check.diagnostics, fmt)
    if fmt == "json":
        if not result.check.diagnostics:
            click.echo(format_json([], {"written": [str(p) for p in result.written]}))
    elif not quiet:
        for path in result.written:
            count = sum(1 for p in path.rglob("*") if p.is_file())
            click.echo(f"wrote {path}/ ({count} files)")
