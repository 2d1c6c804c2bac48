"""The ``ai4ec`` command line.

Commands only parse options, call one library function and report its result; all
exit codes are decided in :func:`main`.

Exit codes: 0 success; 1 a problem with your input (the message says what and where);
2 reserved for ``diff`` when it finds changes; 70 an internal ai4ec bug.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from . import __version__
from .cli_options import env_option
from .errors import Ai4ecError, Diagnostic, Severity
from .report import format_github, format_json, format_text

EXIT_OK = 0
EXIT_USER = 1
EXIT_CHANGES = 2
EXIT_INTERNAL = 70

_FORMAT = click.Choice(["text", "json", "github"])


class _Failed(click.exceptions.Exit):
    """Output was already printed; exit with ``exit_code`` (works under CliRunner too)."""


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


def _report(diags: Sequence[Diagnostic], fmt: str, extra: dict[str, object] | None = None) -> None:
    if fmt == "json":
        click.echo(format_json(diags, extra))
    elif fmt == "github":
        if diags:
            click.echo(format_github(diags))
    elif diags:
        color = sys.stderr.isatty() and "NO_COLOR" not in os.environ
        click.echo(format_text(diags, _lines_for(diags), color), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ai4ec")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
def cli(debug: bool) -> None:
    """Compile one platform.yaml into an ML inference platform on Azure.

    \b
    Typical flow:
      ai4ec init                      write a commented starter platform.yaml
      ai4ec validate                  check it; errors point at file:line
      ai4ec build -o out              compile every environment into out/<env>/
      ai4ec diff --base main          review what a change does (PRs)
      ai4ec apply out/prod            deploy a build

    FILE defaults to ./platform.yaml everywhere.
    """  # noqa: D301 - click needs the \b escape
    del debug  # read by main() before click runs, so it also covers startup errors


@cli.command()
@click.argument("file", default="platform.yaml", type=click.Path(dir_okay=False, path_type=Path))
@env_option("Check")
@click.option(
    "--format",
    "fmt",
    type=_FORMAT,
    default="text",
    show_default=True,
    help="text for people, json for tools, github for workflow annotations.",
)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(file: Path, envs: tuple[str, ...], fmt: str, strict: bool) -> None:
    """Check FILE against the schema and the semantic rules.

    Every problem is reported at once, with file, line, column, the JSON path, a
    stable code (e.g. E-REF-POOL) and a hint. Each environment overlay is merged and
    checked as a whole platform.
    """
    from .pipeline import check_platform

    result = check_platform(file, envs or None)
    diags = result.diagnostics
    failed = not result.ok or (strict and any(d.severity is Severity.WARNING for d in diags))
    extra: dict[str, object] = {"environments": [e.name for e in result.environments]}
    if fmt == "json":
        extra["valid"] = not failed
    _report(diags, fmt, extra)
    if failed:
        raise _Failed(EXIT_USER)
    if fmt == "text":
        names = ", ".join(e.name for e in result.environments)
        click.echo(f"{file}: valid ({names})")


@cli.command()
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
@click.option("--format", "fmt", type=_FORMAT, default="text", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def build(file: Path, envs: tuple[str, ...], out: Path, fmt: str, quiet: bool) -> None:
    """Compile FILE into Bicep/ARM, Kubernetes, APIM and runtime artifacts.

    Writes OUTPUT/<env>/ atomically (a failed build leaves the previous output
    untouched) with a manifest.json listing every artifact and its SHA-256. The same
    input always gives byte-identical output. Without a named environment, a file with
    no `environments` builds into OUTPUT/default/.
    """
    from .pipeline import build_platform

    try:
        result = build_platform(file, out, envs or None)
    except Ai4ecError as exc:
        _report(exc.diagnostics, fmt)
        if not exc.diagnostics:
            click.echo(f"error: {exc}", err=True)
        raise _Failed(EXIT_USER) from None
    _report([d for d in result.check.diagnostics], fmt) if result.check.diagnostics else None
    if fmt == "json":
        if not result.check.diagnostics:
            click.echo(format_json([], {"written": [str(p) for p in result.written]}))
    elif not quiet:
        for path in result.written:
            count = sum(1 for p in path.rglob("*") if p.is_file())
            click.echo(f"wrote {path}/ ({count} files)")


@cli.command()
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
    from .docs import schema_markdown, schema_text

    text = schema_markdown() if markdown else schema_text()
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("path", default="platform.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter PATH (and platform.schema.json beside it)."""
    from .docs import schema_text, starter_platform

    schema_path = path.with_name("platform.schema.json")
    for target in (path, schema_path):
        if target.exists() and not force:
            click.echo(f"error: {target} already exists (use --force to overwrite)", err=True)
            raise _Failed(EXIT_USER)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(starter_platform(), encoding="utf-8")
    schema_path.write_text(schema_text(), encoding="utf-8")
    click.echo(f"wrote {path} and {schema_path}\nnext: edit it, then run `ai4ec validate {path}`")


@cli.group()
def functions() -> None:
    """The task-manager runtime (Azure Functions app) on this machine."""


@functions.command()
@click.option("--port", type=click.IntRange(0, 65535), default=7071, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--redis-url",
    envvar="AI4EC_REDIS_URL",
    required=True,
    help="Redis to keep tasks in, e.g. redis://127.0.0.1:6379/0 (or $AI4EC_REDIS_URL).",
)
@click.option(
    "--platform",
    "platform_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="platform.yaml whose routing table (TTLs, retries, pipelines) to use.",
)
@click.option("-e", "--env", "env", metavar="ENV", help="Environment of --platform to use.")
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1),
    default=4 * 1024 * 1024,
    show_default=True,
    help="Largest request body accepted; larger ones get 413.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds an idle connection is kept open (and a started body may take).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Open connections served at once; more are answered 503 and closed.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Threads running handlers (concurrent task-store calls).",
)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON {apim, eventGrid, apis: {API: key}} of least-privilege function keys; "
    "written with fresh keys when absent.",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Check no function keys at all (anyone can call every function).",
)
def serve(
    port: int,
    host: str,
    redis_url: str,
    platform_file: Path | None,
    env: str | None,
    max_body_bytes: int,
    idle_timeout: float,
    max_connections: int,
    workers: int,
    keys_file: Path | None,
    insecure_no_auth: bool,
) -> None:
    """Serve the task manager's HTTP routes locally, for development and tests.

    The same handlers as the Functions host answer /api/CacheConnectorUpsert,
    /api/CacheConnectorGet, /api/BackendWebhook and the rest; tasks are dispatched
    straight to their backend URLs instead of through Event Grid. Point Framework
    containers at it with CACHE_CONNECTOR_UPSERT_URI=http://HOST:PORT/api/CacheConnectorUpsert
    and CACHE_CONNECTOR_GET_URI=http://HOST:PORT/api/CacheConnectorGet.

    Each caller gets its own key (x-functions-key header or ?code=): APIM creates and
    reads tasks, Event Grid calls the webhook, an API's containers touch only its tasks.
    """
    import logging

    if (keys_file is None) == (not insecure_no_auth):
        click.echo(
            "error: functions serve needs --keys FILE (read, or written with fresh keys) "
            "or --insecure-no-auth, not both",
            err=True,
        )
        raise _Failed(EXIT_USER)
    try:
        from ai4ec_runtime.auth import AccessKeys, KeysFileError
        from ai4ec_runtime.localhost import HostOptions, StartError
        from ai4ec_runtime.localhost import serve as run
        from ai4ec_runtime.models import TaskError
    except ImportError as exc:
        click.echo(
            f"error: the runtime needs its extra packages ({exc.name} is missing): "
            "pip install 'ai4ec[runtime]'",
            err=True,
        )
        raise _Failed(EXIT_USER) from None
    routing = None
    if platform_file is not None:
        from .pipeline import check_platform, require_ok
        from .render.runtime import routing_table

        platforms = require_ok(check_platform(platform_file, [env] if env else None))
        if len(platforms) > 1:
            names = ", ".join(p.environment for p in platforms)
            click.echo(
                f"error: {platform_file} has several environments ({names}); pick one with -e",
                err=True,
            )
            raise _Failed(EXIT_USER)
        routing = routing_table(platforms[0])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = HostOptions(
        max_body_bytes=max_body_bytes,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        workers=workers,
    )

    def keys(routing_table: object) -> AccessKeys:
        assert keys_file is not None
        if keys_file.exists():
            return AccessKeys.load(keys_file)
        fresh = AccessKeys.generate(getattr(routing_table, "apis", {}))
        fresh.dump(keys_file)
        click.echo(f"wrote fresh function keys to {keys_file}", err=True)
        return fresh

    try:
        # The banner is printed only once the port is bound and Redis answered.
        run(
            host,
            port,
            redis_url,
            routing=routing,
            options=options,
            on_ready=lambda server: click.echo(
                f"ai4ec task manager on {server.url}/api/ (Ctrl-C to stop)", err=True
            ),
            keys=None if insecure_no_auth else keys,
        )
    except (StartError, TaskError, KeysFileError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise _Failed(EXIT_USER) from None


def _register_optional_commands() -> None:
    # Each lives in its own module so the heavy SDKs load only when the command runs.
    from .cli_apply import apply
    from .cli_diff import diff

    cli.add_command(diff)
    cli.add_command(apply)


_register_optional_commands()


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI and map every outcome to an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("AI4EC_DEBUG") == "1"
    try:
        # Without standalone mode click *returns* the code of an Exit instead of raising.
        code = cli.main(args=args, prog_name="ai4ec", standalone_mode=False)
        if isinstance(code, int) and code != EXIT_OK:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # Usage mistakes are user errors (1); 2 stays reserved for "diff found changes".
        exc.show()
        sys.exit(EXIT_USER)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USER)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_USER)
    except Ai4ecError as exc:
        _report(exc.diagnostics, "text")
        if not exc.diagnostics:
            click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USER)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            traceback.print_exc()
        click.echo(
            f"internal error: {type(exc).__name__}: {exc}. This is an ai4ec bug; please "
            "report it with the command you ran (rerun with --debug for a traceback).",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(EXIT_OK)
