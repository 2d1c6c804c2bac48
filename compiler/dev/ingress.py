"""The local cluster ingress: backend paths routed to the process that serves each API.

In Azure the Istio VirtualService of each API matches each endpoint's ``backend_path``
exactly, with its methods, and rewrites it to the path the container serves (below its
``API_PREFIX``). Here the same routes, computed by the same functions, go to whatever
serves the API on this machine: a ``--backend`` URL, or the demo stand-in. An API with
neither answers 503 saying what to do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from ..model.types import Api, Mode, Platform
from ..render.k8s.istio import workload_path
from .gateway import HOP_BY_HOP, catch_all_app

log = logging.getLogger("ai4ec.dev.ingress")

#: Seconds an async endpoint has to accept a task (the VirtualService's timeout for them).
ASYNC_ACCEPT_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class IngressRoute:
    """One VirtualService route: exact path and methods, rewrite target, timeout."""

    path: str
    methods: frozenset[str]
    api: Api
    rewrite: str
    timeout_seconds: int


def ingress_routes(platform: Platform) -> dict[str, list[IngressRoute]]:
    """The routes of every API's VirtualService, by exact backend path."""
    found: dict[str, list[IngressRoute]] = {}
    for api in platform.apis:
        for ep in api.endpoints:
            timeout = ep.timeout_seconds if ep.mode is Mode.SYNC else ASYNC_ACCEPT_TIMEOUT_SECONDS
            found.setdefault(ep.backend_path, []).append(
                IngressRoute(
                    ep.backend_path, frozenset(ep.methods), api, workload_path(api, ep), timeout
                )
            )
    return found


@dataclass
class Ingress:
    """The aiohttp application that forwards backend paths to each API's local URL."""

    platform: Platform
    backends: dict[str, str]  # API id -> base URL
    _routes: dict[str, list[IngressRoute]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self._routes = ingress_routes(self.platform)

    def application(self) -> web.Application:
        """The app to run; its client session opens and closes with it."""
        return catch_all_app(self._forward, self._open, self._close)

    async def _open(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def route(self, path: str, method: str) -> IngressRoute | None:
        """The route matching ``path`` exactly with ``method`` (as Istio matches)."""
        return next((r for r in self._routes.get(path, ()) if method in r.methods), None)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        path = request.rel_url.path
        route = self.route(path, request.method)
        if route is None:
            return _json(404, "not_routed", f"no API serves {path} on this platform")
        base = self.backends.get(route.api.id)
        if base is None:
            return _json(
                503,
                "no_backend",
                f"API {route.api.id} has no backend in ai4ec dev: start it with "
                f"--backend {route.api.id}=URL, or run with --demo",
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(
                request.method,
                base.rstrip("/") + route.rewrite,
                params=request.rel_url.query,
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=route.timeout_seconds),
            ) as resp:
                payload = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
                log.info("%s %s -> %s %d", request.method, path, route.api.id, resp.status)
                return web.Response(status=resp.status, body=payload, headers=out)
        except TimeoutError:
            return _json(504, "upstream_timeout", f"API {route.api.id} did not answer in time")
        except aiohttp.ClientError as exc:
            log.warning("API %s at %s cannot be reached: %s", route.api.id, base, exc)
            return _json(503, "upstream_unavailable", f"API {route.api.id} cannot be reached")


def _json(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
    )
