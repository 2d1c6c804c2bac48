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
@click.option(
    "--redis-mode",
    type=click.Choice(["single", "cluster"]),
    default="single",
    show_default=True,
    help="single: one Redis; cluster: a Redis Cluster (keys hash-tagged per task shard).",
)
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
    help="Threads running handlers (concurrent task-store calls), per process.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Host processes sharing the port (SO_REUSEPORT), to use more than one core.",
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
    redis_mode: str,
    max_body_bytes: int,
    idle_timeout: float,
    max_connections: int,
    workers: int,
    processes: int,
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
    import dataclasses
    import logging

    if (keys_file is None) == (not insecure_no_auth):
        raise CommandExit(
            EXIT_USER,
            "functions serve needs --keys FILE (read, or written with fresh keys) "
            "or --insecure-no-auth, not both",
        )
    try:
        from ai4ec_runtime.auth import AccessKeys, KeysFileError
        from ai4ec_runtime.localhost import HostOptions, StartError
        from ai4ec_runtime.localhost import serve as run
        from ai4ec_runtime.models import TaskError
        from ai4ec_runtime.settings import Settings
    except ImportError as exc:
        raise CommandExit(
            EXIT_USER,
            f"the runtime needs its extra packages ({exc.name} is missing): "
            "pip install 'ai4ec[serve]'",
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
    options = HostOptions(
        max_body_bytes=max_body_bytes,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        workers=workers,
        processes=processes,
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
        settings = dataclasses.replace(Settings.from_env(), redis_mode=redis_mode)
        # The banner is printed only once the port is bound and Redis answered.
        run(
            host,
            port,
            redis_url,
            routing=routing,
            settings=settings,
            options=options,
            on_ready=lambda server: click.echo(
                f"ai4ec task manager on {server.url}/api/ (Ctrl-C to stop)", err=True
            ),
            keys=None if insecure_no_auth else keys,
        )
    except (StartError, TaskError, KeysFileError) as exc:
        raise CommandExit(EXIT_USER, str(exc)) from None
