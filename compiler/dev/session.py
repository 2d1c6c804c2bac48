"""One ``ai4ec dev`` run: start every part, print how to call it, stop everything on exit.

Order matters and mirrors production: state (Redis) first, then the task manager, then
what serves the APIs and the ingress in front of them, and the gateway last, so that the
first request a user sends finds everything behind it ready. Stopping goes in reverse
and always completes: no process or listening socket outlives the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shlex
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import dev_error
from ..model.types import Api, Platform
from ..render.apim.plan import SUBSCRIPTION_KEY_HEADER, ApimPlan, ApiPlan, build_plan
from .containers import HOST_ALIAS, ContainerRunner, find_engine
from .demo import DemoApi
from .gateway import Gateway, LocalIssuer
from .ingress import Ingress
from .redis import EmbeddedRedis

log = logging.getLogger("ai4ec.dev")

#: Audience of the printed token when no API names one (any API with Entra ID names one).
DEFAULT_AUDIENCE = "api://ai4ec-dev"


@dataclass(frozen=True)
class DevOptions:
    """What ``ai4ec dev`` was asked for (the CLI's options, checked)."""

    platform: Platform
    source: Path
    port: int = 8080
    host: str = "127.0.0.1"
    backends: dict[str, str] = field(default_factory=dict)
    demo: bool = False
    state_dir: Path = Path(".ai4ec/dev")
    redis_url: str | None = None


@dataclass(frozen=True)
class ApiBackend:
    """Where one API is served from in this run, and why."""

    api: str
    kind: str  # "backend", "demo", "container" or "none"
    url: str | None
    #: The variables its container would get (task-manager URIs with its own key).
    env_file: Path


@dataclass
class DevSession:
    """The running parts; :meth:`start` brings them up, :meth:`stop` takes them down."""

    options: DevOptions
    plan: ApimPlan | None = None
    keys: dict[str, str] = field(default_factory=dict)
    token: str = ""
    gateway_url: str = ""
    backends: list[ApiBackend] = field(default_factory=list)
    _redis: EmbeddedRedis | None = None
    _task_manager: Any = None
    _engine: str | None = None
    _containers: ContainerRunner | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)
    #: Sockets bound but not yet served (closed by :meth:`stop` if start fails between).
    _socks: list[socket.socket] = field(default_factory=list)

    async def start(self) -> None:
        """Start everything, or stop what was started and raise :class:`~ai4ec.errors.DevError`."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        opts = self.options
        platform = opts.platform
        self.plan = build_plan(platform, str(opts.source.parent), opts.source.name)
        gateway_sock = self._bind(opts.host, opts.port, "the gateway")
        redis_url = opts.redis_url
        if redis_url is None:
            self._redis = EmbeddedRedis(opts.state_dir / "redis")
            await asyncio.to_thread(self._redis.start)
            redis_url = self._redis.url
            log.info("Redis on %s (data in %s)", redis_url, self._redis.data_dir)
        if not opts.demo and any(a.id not in opts.backends for a in platform.apis):
            self._engine = await asyncio.to_thread(find_engine)
        functions_url, access = await asyncio.to_thread(self._start_task_manager, redis_url)
        api_urls = await self._start_backends(functions_url, access)
        ingress = Ingress(platform, api_urls)
        ingress_url = await self._serve(
            ingress.application(), self._bind("127.0.0.1", 0, "ingress")
        )
        issuer = LocalIssuer()
        self.keys = self._product_keys()
        self.token = issuer.token(*_token_claims(self.plan))
        gateway = Gateway(
            plan=self.plan,
            functions_url=functions_url,
            functions_key=access.apim,
            ingress_url=ingress_url,
            keys=self.keys,
            issuer=issuer,
            no_backend={
                ep.backend_path: api.id
                for api in platform.apis
                if api.id not in api_urls
                for ep in api.endpoints
            },
        )
        self.gateway_url = await self._serve(gateway.application(), gateway_sock)
        self._write_state()

    def _start_task_manager(self, redis_url: str) -> tuple[str, Any]:
        try:
            from ai4ec_runtime.auth import AccessKeys, KeysFileError
            from ai4ec_runtime.localhost import StartError, make_server
        except ImportError as exc:
            raise dev_error(
                f"ai4ec dev needs the runtime's packages ({exc.name} is missing)",
                "pip install 'ai4ec[local]'",
            ) from None

        from ..render.runtime import routing_table

        routing = routing_table(self.options.platform)
        api_ids = [api.id for api in self.options.platform.apis]
        path = self.options.state_dir / "access-keys.json"
        try:
            access = AccessKeys.load(path) if path.exists() else None
        except KeysFileError as exc:
            raise dev_error(str(exc), f"delete {path} to get fresh keys") from None
        if access is None or set(access.apis) != set(api_ids):
            # Kept across runs so that --backend processes and their env files stay valid.
            fresh = AccessKeys.generate(api_ids)
            known = dict(access.apis) if access else {}
            access = AccessKeys(
                apim=access.apim if access else fresh.apim,
                event_grid=access.event_grid if access else fresh.event_grid,
                apis={a: known.get(a, fresh.apis[a]) for a in sorted(api_ids)},
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            access.dump(path)
        port = self.options.port + 1 if self.options.port else 0
        # Containers reach the host through its gateway address, not loopback.
        host = "0.0.0.0" if self._engine else "127.0.0.1"  # noqa: S104 - keys still checked
        if self._engine:
            log.warning(
                "the task manager listens on all interfaces so that containers reach it; "
                "every call still needs its key"
            )
        try:
            server = make_server(host, port, redis_url, routing=routing, keys=access)
        except StartError as exc:
            raise dev_error(
                f"the task manager cannot start: {exc}",
                "it listens on --port + 1; pick another --port" if port else "",
            ) from None
        self._task_manager = server.start()
        url = str(server.url).replace("://0.0.0.0:", "://127.0.0.1:")
        log.info("task manager on %s/api/", url)
        return url, access

    async def _start_backends(self, functions_url: str, access: Any) -> dict[str, str]:
        urls: dict[str, str] = {}
        env_dir = self.options.state_dir / "env"
        env_dir.mkdir(parents=True, exist_ok=True)
        for api in self.options.platform.apis:
            env = container_env(self.options.platform, api, functions_url, access.apis[api.id])
            env_file = env_dir / f"{api.id}.env"
            _write_private(env_file, "".join(f"{k}={v}\n" for k, v in sorted(env.items())))
            given = self.options.backends.get(api.id)
            if given is not None:
                urls[api.id] = given
                self.backends.append(ApiBackend(api.id, "backend", given, env_file))
            elif self.options.demo:
                app = DemoApi(api, env).application()
                url = await self._serve(app, self._bind("127.0.0.1", 0, f"demo {api.id}"))
                urls[api.id] = url
                self.backends.append(ApiBackend(api.id, "demo", url, env_file))
            elif self._engine is not None:
                if self._containers is None:
                    self._containers = ContainerRunner(self._engine, self.options.platform.name)
                inside = container_env(
                    self.options.platform,
                    api,
                    functions_url.replace("://127.0.0.1:", f"://{HOST_ALIAS}:"),
                    access.apis[api.id],
                )
                url = await asyncio.to_thread(self._containers.start, api, inside)
                urls[api.id] = url
                self.backends.append(ApiBackend(api.id, "container", url, env_file))
            else:
                self.backends.append(ApiBackend(api.id, "none", None, env_file))
        return urls

    async def _serve(self, app: web.Application, sock: socket.socket) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock).start()
        self._socks.remove(sock)
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def _product_keys(self) -> dict[str, str]:
        """One subscription key per product, kept across runs in ``DIR/product-keys.json``."""
        assert self.plan is not None
        path = self.options.state_dir / "product-keys.json"
        try:
            known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, ValueError):
            known = {}
        if not isinstance(known, dict):
            known = {}
        keys = {
            p.name: str(known[p.name])
            if isinstance(known.get(p.name), str) and len(known[p.name]) >= 16
            else secrets.token_hex(16)
            for p in self.plan.products
        }
        _write_private(path, json.dumps(keys, indent=2, sort_keys=True) + "\n")
        return keys

    def _write_state(self) -> None:
        """``DIR/dev.json``: gateway URL, product keys and token, readable by the user only."""
        data = {"gateway": self.gateway_url, "keys": self.keys, "token": self.token}
        _write_private(
            self.options.state_dir / "dev.json", json.dumps(data, indent=2, sort_keys=True) + "\n"
        )

    def _bind(self, host: str, port: int, what: str) -> socket.socket:
        sock = _bind(host, port, what)
        self._socks.append(sock)
        return sock

    async def stop(self) -> None:
        """Stop everything that was started, in reverse order; safe to call twice."""
        socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        containers, self._containers = self._containers, None
        if containers is not None:
            await asyncio.to_thread(containers.stop)
        server, self._task_manager = self._task_manager, None
        if server is not None:
            await asyncio.to_thread(server.close)
        redis, self._redis = self._redis, None
        if redis is not None:
            await asyncio.to_thread(redis.stop)

    # -- what the user sees --------------------------------------------------------------

    def banner(self) -> list[str]:
        """The lines printed once everything listens: URL, keys, backends, one curl each."""
        assert self.plan is not None
        lines = [f"ai4ec dev: {self.options.platform.name} ({self.options.platform.environment})"]
        lines.append(f"  gateway   {self.gateway_url}")
        for product, key in sorted(self.keys.items()):
            lines.append(f"  key       {product}: {key}")
        for b in self.backends:
            where = {
                "backend": f"{b.url} (its environment: {b.env_file})",
                "demo": "demo stand-in",
                "container": f"container of {self._image(b.api)} on {b.url}",
                "none": "NO BACKEND: answers 503 (no Docker or Podman engine answered; "
                "use --backend API=URL or --demo)",
            }[b.kind]
            lines.append(f"  api       {b.api}: {where}")
        lines.append(f"  state     {self.options.state_dir / 'dev.json'}")
        lines.append("")
        lines.extend(self.curls())
        lines.append("")
        lines.append("Ctrl-C stops everything.")
        return lines

    def _image(self, api_id: str) -> str:
        return next(a.image for a in self.options.platform.apis if a.id == api_id)

    def curls(self) -> list[str]:
        """One ready-to-paste ``curl`` per public operation."""
        assert self.plan is not None
        out: list[str] = []
        for api in self.plan.apis:
            key = self._key_for(api)
            for op in api.operations:
                url = f"{self.gateway_url}/{api.path}{_example_path(op.url_template)}"
                parts = ["curl", "-i", "-X", op.method, shlex.quote(url)]
                if key:
                    parts += ["-H", shlex.quote(f"{SUBSCRIPTION_KEY_HEADER}: {key}")]
                if api.jwt is not None:
                    parts += ["-H", shlex.quote(f"Authorization: Bearer {self.token}")]
                if op.method in ("POST", "PUT", "PATCH"):
                    parts += ["-H", "'Content-Type: application/json'", "-d", "'{}'"]
                out.append(" ".join(parts))
        if self.plan.status is not None:
            key = self._key_for(self.plan.status.api)
            url = f"{self.gateway_url}/{self.plan.status.api.path}/task/TASK_ID"
            parts = ["curl", "-i", shlex.quote(url)]
            if key:
                parts += ["-H", shlex.quote(f"{SUBSCRIPTION_KEY_HEADER}: {key}")]
            out.append(" ".join(parts) + "   # the Location of a 202")
        return out

    def _key_for(self, api: ApiPlan) -> str | None:
        if not api.subscription_required:
            return None
        assert self.plan is not None
        return next((self.keys[p.name] for p in self.plan.products if api.name in p.apis), None)


def container_env(platform: Platform, api: Api, functions_url: str, key: str) -> dict[str, str]:
    """The variables the chart gives the API's container, pointed at the local task manager.

    Only this API's key is in its URIs (``?code=``), as only its own credential is in its
    pod: the task manager refuses it on any other API's task.
    """
    from ..render.k8s.chart import pipeline_stage

    _component, _part_of, next_api = pipeline_stage(platform, api)
    cluster = f"{platform.name}-{platform.environment}-{api.cluster}"
    env = {
        **dict(api.env),
        "API_PREFIX": api.api_prefix,
        "SERVICE_CLUSTER": cluster,
        "SERVICE_NAME": api.name,
        "SERVICE_VERSION": api.version,
        "CACHE_CONNECTOR_UPSERT_URI": f"{functions_url}/api/CacheConnectorUpsert?code={key}",
        "CACHE_CONNECTOR_GET_URI": f"{functions_url}/api/CacheConnectorGet?code={key}",
        "CURRENT_PROCESSING_UPSERT_URI": f"{functions_url}/api/CurrentProcessingUpsert?code={key}",
    }
    if next_api:
        env["NEXT_API_NAME_IN_PIPELINE"] = next_api
    return env


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only: these files hold keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _token_claims(plan: ApimPlan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Audiences and roles that pass every API's and product's ``validate-jwt`` (one token)."""
    audiences: list[str] = []
    roles: list[str] = []
    for jwt in [a.jwt for a in plan.apis] + [p.jwt for p in plan.products]:
        if jwt is None:
            continue
        audiences.extend(a for a in jwt.audiences if a not in audiences)
        roles.extend(r for r in jwt.roles if r not in roles)
    return tuple(audiences) or (DEFAULT_AUDIENCE,), tuple(roles)


def _example_path(template: str) -> str:
    """A URL template with its ``{parameters}`` filled with a placeholder."""
    import re

    return re.sub(r"\{([^}]+)\}", lambda m: m.group(1).upper(), template)


def _bind(host: str, port: int, what: str) -> socket.socket:
    """A listening socket, or a one-line error naming the port (before any banner)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise dev_error(
            f"cannot listen on {host}:{port} for {what}: {exc.strerror}",
            "pick another port with --port" if port else "",
        ) from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def run(options: DevOptions, on_ready: Callable[[DevSession], None]) -> None:
    """Start, call ``on_ready``, wait for SIGINT/SIGTERM, stop. Used by ``ai4ec dev``."""
    session = DevSession(options)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await session.start()
        on_ready(session)
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await session.stop()
