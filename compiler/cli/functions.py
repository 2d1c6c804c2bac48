"""``ai4ec functions``: run the task-manager runtime (Azure Functions app) on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from .exits import EXIT_USER, CommandExit
from .output import Command


@click.group()
def functions() -> None:
    """The task-manager runtime (Azure Functions app) on this machine."""


@functions.command(cls=Command)
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
def serve(
    port: int, host: str, redis_url: str, platform_file: Path | None, env: str | None
) -> None:
    """Serve the task manager's HTTP routes locally, for development and tests.

    The same handlers as the Functions host answer /api/CacheConnectorUpsert,
    /api/CacheConnectorGet, /api/BackendWebhook and the rest; tasks are dispatched
    straight to their backend URLs instead of through Event Grid. Point Framework
    containers at it with CACHE_CONNECTOR_UPSERT_URI=http://HOST:PORT/api/CacheConnectorUpsert
    and CACHE_CONNECTOR_GET_URI=http://HOST:PORT/api/CacheConnectorGet.
    """
    import logging

    try:
        from ai4ec_runtime.localhost import serve as run
    except ImportError as exc:
        raise CommandExit(
            EXIT_USER,
            f"the runtime needs its extra packages ({exc.name} is missing): "
            "pip install 'ai4ec[runtime]'",
        ) from None
    routing = None
    if platform_file is not None:
        from ..pipeline import check_platform, require_ok
        from ..render.runtime import routing_table

        platforms = require_ok(check_platform(platform_file, [env] if env else None))
        if len(platforms) > 1:
            names = ", ".join(p.environment for p in platforms)
            raise CommandExit(
                EXIT_USER,
                f"{platform_file} has several environments ({names}); pick one with -e",
            )
        routing = routing_table(platforms[0])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    click.echo(f"ai4ec task manager on http://{host}:{port}/api/ (Ctrl-C to stop)", err=True)
    run(host, port, redis_url, routing=routing)
