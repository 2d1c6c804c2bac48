"""A local stand-in for the Functions host: the same routes, served by the stdlib.

``ai4ec functions serve`` runs :func:`serve`; tests use :func:`make_server`. Requests
to ``/api/<FunctionName>`` go through :func:`~ai4ec_runtime.handlers.handle`, exactly as
in Azure; only the transport differs: dispatches are POSTed straight to backend URLs by
a :class:`~ai4ec_runtime.dispatch.LocalDispatcher` (background threads, retries with
backoff, the timeout sweeper) instead of going through Event Grid and the webhook.

The server is a threaded HTTP/1.1 server with keep-alive and a small hand-written
request parser: ``http.server.BaseHTTPRequestHandler`` parses headers with the
``email`` package, which costs more than the whole task transition in Redis. Function
keys (``?code=``) are accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socketserver
import threading
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import redis

from .dispatch import Dispatcher
from .handlers import Request, Response, Runtime, handle
from .routing import Routing
from .settings import Settings

log = logging.getLogger("ai4ec_runtime.localhost")

_MAX_LINE = 65536
_MAX_BODY = 64 * 1024 * 1024


_REASONS = {int(s): s.phrase for s in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class _BadRequest(Exception):
    pass


class _Connection(socketserver.StreamRequestHandler):
    """One client connection; serves requests until the client closes (keep-alive)."""

    server: LocalServer
    disable_nagle_algorithm = True

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (ConnectionError, TimeoutError, _BadRequest):
            return

    def _read_line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadRequest("line too long")
        return line

    def _body(self, headers: Mapping[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self._read_line().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._read_line() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self._read_line()
        length = int(headers.get("content-length") or 0)
        if length < 0 or length > _MAX_BODY:
            raise _BadRequest("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _one(self) -> bool:
        line = self._read_line()
        while line in (b"\r\n", b"\n"):
            line = self._read_line()
        if not line:
            return False
        parts = line.split()
        if len(parts) != 3:
            self._send(Response.json(400, {"error": "bad_request"}), keep_alive=False)
            return False
        method, target, version = (p.decode("latin-1") for p in parts)
        path, _, query = target.partition("?")
        headers: dict[str, str] = {}
        while True:
            raw = self._read_line()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._body(headers)
        conn_hdr = headers.get("connection", "").lower()
        keep_alive = conn_hdr != "close" if version == "HTTP/1.1" else conn_hdr == "keep-alive"
        self._send(self._dispatch(method.upper(), path, query, headers, body), keep_alive)
        return keep_alive

    def _dispatch(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Response:
        if path in ("/health", "/api/health"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if not path.startswith("/api/"):
            return Response.json(404, {"error": "not_found", "message": f"No route {path}"})
        params: dict[str, str] = {}
        if query:
            # Plain ``a=b&c=d`` is split by hand (status polling is the hot path); only
            # escaped queries pay for the full parser.
            if "%" in query or "+" in query:
                pairs = parse_qsl(query, keep_blank_values=True)
            else:
                pairs = [(k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p)]
            for key, value in pairs:
                params.setdefault(key, value)
        req = Request(method=method, params=params, headers=headers, body=body)
        return handle(self.server.runtime, path[len("/api/") :], req)

    def _send(self, resp: Response, keep_alive: bool) -> None:
        head = [f"HTTP/1.1 {resp.status} {_reason(resp.status)}"]
        body = resp.body if resp.status not in (204, 304) else b""
        if resp.status not in (204, 304):
            head.append(f"Content-Type: {resp.content_type}")
            head.append(f"Content-Length: {len(body)}")
        head.extend(f"{k}: {v}" for k, v in resp.headers.items())
        if not keep_alive:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class LocalServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The local Functions host. ``serve_forever()`` blocks; ``shutdown()`` stops it.

    Attributes:
        runtime: the shared :class:`~ai4ec_runtime.handlers.Runtime`.
        url: base URL, e.g. ``http://127.0.0.1:7071``.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    block_on_close = False

    def __init__(self, address: tuple[str, int], runtime: Runtime) -> None:
        self.runtime = runtime
        super().__init__(address, _Connection)
        addr: Any = self.server_address
        self.url = f"http://{addr[0]}:{addr[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> LocalServer:
        """Serve in a background daemon thread (tests); returns ``self``."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="ai4ec-localhost"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving, close the socket, stop the dispatcher and the Redis pool."""
        super().shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.runtime.close()


def make_server(
    host: str = "127.0.0.1",
    port: int = 7071,
    redis_url: str | None = None,
    routing_path: str | Path | None = None,
    *,
    routing: Routing | Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
    dispatcher: Dispatcher | None = None,
) -> LocalServer:
    """Build (but do not start) a local host.

    Args:
        host: address to bind.
        port: port to bind (0 = any free port; read ``server.url``).
        redis_url: Redis to use (default: the settings' ``AI4EC_REDIS_URL``).
        routing_path: routing.json to load.
        routing: an already-built routing table or routing.json dict (wins over the path);
            the CLI passes the routing it compiled from platform.yaml.
        settings: base settings (default: from the environment); dispatch is forced
            to ``local``.
        redis_client: an existing client instead of ``redis_url``.
        dispatcher: an explicit dispatcher (tests), instead of the local one.

    Raises:
        ConfigurationError: no Redis configured, or an invalid routing.json.
    """
    base = settings or Settings.from_env()
    changes: dict[str, Any] = {"dispatch": "local"}
    if redis_url:
        changes["redis_url"] = redis_url
    if routing_path:
        changes["routing_path"] = Path(routing_path)
    runtime = Runtime(
        dataclasses.replace(base, **changes),
        redis_client=redis_client,
        routing=routing,
        dispatcher=dispatcher,
    )
    _ = runtime.dispatcher  # start the delivery workers and the sweeper now
    return LocalServer((host, port), runtime)


def serve(
    host: str,
    port: int,
    redis_url: str | None,
    routing_path: str | Path | None = None,
    *,
    routing: Routing | Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> None:
    """Run the local host until interrupted (Ctrl-C); see :func:`make_server`."""
    server = make_server(host, port, redis_url, routing_path, routing=routing, settings=settings)
    apis = sorted(server.runtime.routing.apis)
    log.info("ai4ec functions host on %s (APIs: %s)", server.url, json.dumps(apis))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.runtime.close()
