"""``ai4ec dev``: run the whole platform on this machine, from the same model ``build`` uses."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .exits import EXIT_USER, CommandExit
from .options import complete_environments
from .output import Command

#: Logger name prefix -> the component tag every log line starts with.
COMPONENTS = (
    ("ai4ec.dev.gateway", "gateway"),
    ("ai4ec.dev.ingress", "ingress"),
    ("ai4ec.dev.demo", "demo"),
    ("ai4ec_runtime", "tasks"),
    ("ai4ec.dev", "dev"),
)


class _Component(logging.Filter):
    """Tags each record with the component it comes from, for one readable terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("ai4ec.dev.api."):
            record.component = "api:" + record.name.removeprefix("ai4ec.dev.api.")
            return True
        record.component = next(
            (tag for prefix, tag in COMPONENTS if record.name.startswith(prefix)), "dev"
        )
        return True


def _log_to_terminal(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Component())
    handler.setFormatter(logging.Formatter("%(asctime)s [%(component)s] %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _parse_backends(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise CommandExit(
                EXIT_USER,
                f"--backend {value!r}: write it as API=URL, e.g. detector-v1=http://localhost:5000",
            )
        out[name] = url
    return out


@click.command("dev", cls=Command)
@click.argument("file", default="platform.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-e",
    "--env",
    "env",
    metavar="ENV",
    shell_complete=complete_environments,
    help="The environment to run (needed when the file has several).",
)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the gateway (the platform's public URL).",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="API=URL",
    help="Serve API (its id, name-version, or name) from a process you run, e.g. your Flask "
    "app in a debugger: detector-v1=http://localhost:5000. Repeatable.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Answer every API without its own backend with a built-in stand-in that follows "
    "the Framework's task calls and echoes its input.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".ai4ec/dev"),
    show_default=True,
    help="Where Redis keeps its data and dev.json (gateway URL, keys, token) is written.",
)
@click.option(
    "--redis-url",
    metavar="URL",
    help="Use this Redis instead of starting one (redis://host:port/db).",
)
@click.option("-q", "--quiet", is_flag=True, help="Log warnings only (the banner still prints).")
def dev(
    file: Path,
    env: str | None,
    port: int,
    backends: tuple[str, ...],
    demo: bool,
    state_dir: Path,
    redis_url: str | None,
    quiet: bool,
) -> None:
    """Run the platform on this machine: gateway, task manager, Redis and your APIs.

    The gateway on --port answers the platform's public routes as API Management would,
    from the same plan that renders the APIM policies: subscription keys per product
    (header Ocp-Apim-Subscription-Key or ?subscription-key=), rate limits (429) and
    quotas (403), Entra ID tokens (checked against a local issuer whose token is
    printed), body-size limits (413), CORS, sync endpoints proxied, async endpoints
    answered 202 with the Location of their task status.

    \b
    ai4ec dev --demo                              try the platform with no model at all
    ai4ec dev --backend detector-v1=http://localhost:5000
    ai4ec dev samples/multi-env/platform.yaml -e dev --port 9000

    Each API is served by its --backend, else the demo stand-in (--demo), else its image
    with Docker or Podman when an engine answers, else it answers 503. On start it prints
    each product's key and a curl per endpoint, and writes them to STATE_DIR/dev.json
    (and each API's container environment to STATE_DIR/env/<api>.env). Logs of every
    part go to this terminal, tagged by component. Ctrl-C stops everything it started.
    """  # noqa: D301 - click needs the \b escape
    import asyncio

    from ..dev.session import DevOptions, DevSession, run
    from ..pipeline import check_platform, require_ok

    platforms = require_ok(check_platform(file, [env] if env else None))
    if len(platforms) > 1:
        names = ", ".join(p.environment for p in platforms)
        raise CommandExit(EXIT_USER, f"{file} has several environments ({names}); pick one with -e")
    platform = platforms[0]
    wanted = _parse_backends(backends)
    by_alias: dict[str, str] = {}
    for api in platform.apis:
        by_alias[api.id] = api.id
        by_alias.setdefault(api.name, api.id)
    unknown = sorted(n for n in wanted if n not in by_alias)
    if unknown:
        raise CommandExit(
            EXIT_USER,
            f"--backend names no API of this platform: {', '.join(unknown)} "
            f"(APIs: {', '.join(a.id for a in platform.apis)})",
        )
    options = DevOptions(
        platform=platform,
        source=file,
        port=port,
        backends={by_alias[n]: url for n, url in wanted.items()},
        demo=demo,
        state_dir=state_dir,
        redis_url=redis_url,
    )
    _log_to_terminal(quiet)

    def ready(session: DevSession) -> None:
        click.echo("\n".join(session.banner()), err=False)

    asyncio.run(run(options, ready))
