"""A local stand-in for the Functions host: the same routes, served by aiohttp.

``ai4ec functions serve`` runs :func:`serve`; tests use :func:`make_server`. Requests
to ``/api/<FunctionName>`` go through :func:`~ai4ec_runtime.handlers.handle`, exactly as
in Azure; only the transport differs: dispatches are POSTed straight to backend URLs by
a :class:`~ai4ec_runtime.dispatch.LocalDispatcher` (background threads, retries with
backoff, the timeout sweeper) instead of going through Event Grid and the webhook.

Why aiohttp's low-level server: HTTP framing (request line, headers, Content-Length,
chunked encoding, pipelining, keep-alive) is parsed by a maintained parser instead of
by hand, every connection is a coroutine instead of a thread, and idle connections are
closed by its keep-alive timer, which also runs before the first request. The routes
that only talk to Redis (creates, updates, status reads, the request reporter) run on the
event loop itself: their handlers are steps (:data:`~ai4ec_runtime.store.Steps`) and
:class:`~ai4ec_runtime.aio.AsyncDriver` sends their calls over one pipelined connection.
Everything else (webhook deliveries, dead letters), and every route when the store cannot
be driven so (a Redis Cluster, TLS, no hiredis; see :func:`~ai4ec_runtime.aio.supported`),
runs the same handlers synchronously (redis-py) in a bounded thread pool. What this
module adds on top:

* bodies are capped while they are read (413), chunked or not, and a body that stalls
  is answered 408;
* framing errors aiohttp detects are answered as JSON 400s with one log line instead
  of its plain-text answer and a logged traceback;
* every 4xx is logged as one line (method, path, status, error code), never a
  traceback; connections beyond ``max_connections`` get a 503 and are closed;
* ``/health`` (and ``/api/health``, the Azure route) pings Redis, as the Azure function
  does (:mod:`~ai4ec_runtime.health`): ``503`` with a generic message when it does not answer;
* :func:`make_server` binds the port and pings Redis before anything starts, raising
  :class:`StartError` with a one-line reason.

Function keys (``?code=``) are accepted and ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import redis
from aiohttp import web, web_protocol, web_server
from aiohttp.web_request import BaseRequest

from .aio import AsyncDriver, supported
from .auth import AccessKeys, authorized_handle, authorized_handle_io, presented_key
from .dispatch import Dispatcher
from .handlers import JSON, STEPS, Request, Response, Runtime, handle, handle_io
from .health import check_health, probe_client, store_pool
from .routing import Routing
from .settings import Settings
from .store import connect_redis

log = logging.getLogger("ai4ec_runtime.localhost")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostOptions:
    """Limits of the local host (``ai4ec functions serve`` options of the same names).

    Attributes:
        max_body_bytes: largest request body accepted (413 beyond), chunked or not.
        idle_timeout: seconds a connection may sit without a request (also the time a
            client gets to send a started request body; 408 after).
        max_connections: open connections served at once; more get a 503 and are
            closed (connections are coroutines, so this bounds memory, not threads).
        workers: threads running handlers (per process): the webhook and dead-letter
            routes, and every route when the store runs in threads. On the event-loop
            path a connection has at most one request in flight, so its Redis calls are
            bounded by ``max_connections`` instead.
        processes: host processes sharing the port through ``SO_REUSEPORT``; the kernel
            spreads connections over them. One process is bound by its GIL and its event
            loop (about one core); more use more cores. Each runs a full host (handlers,
            delivery lanes, sweeper), which the store's leases and atomic scripts make safe,
            as for several Functions instances in Azure.
        uvloop: run the event loop on uvloop (pinned in the ``serve`` extra) when it is
            installed: its transports cost less CPU per request than asyncio's.
        event_loop_store: run the Redis-only routes on the event loop (pipelined, no
            thread hand-over) when the store allows it; ``False`` keeps every route on
            the thread pool (the A/B baseline, and the path a Redis Cluster uses).
    """

    max_body_bytes: int = 4 * 1024 * 1024
    idle_timeout: float = 30.0
    max_connections: int = 1024
    workers: int = 32
    processes: int = 1
    uvloop: bool = True
    event_loop_store: bool = True


class StartError(Exception):
    """The host cannot start (port in use, Redis unreachable); the message is one line."""


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps(
        {"error": code, "message": message, "status": status}, separators=(",", ":")
    ).encode()


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n"
    + b"Content-Length: %d\r\n\r\n" % len(_error_body(503, "busy", "Too many connections"))
    + _error_body(503, "busy", "Too many connections")
)


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler with JSON framing errors and a connection cap."""

    host: LocalServer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host = self.host
        if host.connections >= host.options.max_connections:
            # Answered without reading: no parser, no task, no handler thread.
            host.refused += 1
            transport.write(_BUSY)  # type: ignore[attr-defined]
            transport.close()
            return
        host.connections += 1
        self._ai4ec_counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if getattr(self, "_ai4ec_counted", False):
            self._ai4ec_counted = False
            self.host.connections -= 1
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A JSON answer and one log line for what aiohttp's parser refused.

        aiohttp's own version logs these with a traceback and answers plain text; a
        malformed request is the client's mistake, so it gets neither.
        """
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        reason = (message or (str(exc) if exc else "") or "bad request").splitlines()[0][:200]
        if status >= 500:
            log.error("%s: %d internal error (%s)", request.remote, status, type(exc).__name__)
            body = _error_body(status, "internal_error", "Internal error")
        else:
            log.info("%s: %d malformed request: %s", request.remote, status, reason)
            body = _error_body(status, "bad_request", f"Malformed HTTP request: {reason}")
        resp = web.Response(status=status, body=body, headers={"Content-Type": JSON})
        resp.force_close()
        return resp


class _Server(web_server.Server):
    """Builds :class:`_Protocol` instead of aiohttp's handler for each connection."""

    def __init__(self, host: LocalServer, **kwargs: Any) -> None:
        super().__init__(host._handle, **kwargs)  # noqa: SLF001
        self._host = host
        self._proto_kwargs = kwargs

    def __call__(self) -> web_protocol.RequestHandler:
        proto = _Protocol(self, loop=self._loop, **self._proto_kwargs)
        proto.host = self._host
        return proto


_HEADER_BAD_CHARS = re.compile(r"[^\x20-\x7e]")
#: Most requests one worker handles in one hand-over (see :meth:`LocalServer._call`).
_BATCH = 4
#: Routes fast enough to batch: one Redis round trip each, no outbound HTTP.
_BATCHED = frozenset(
    {"CacheConnectorUpsert", "CacheConnectorGet", "CurrentProcessingUpsert", "CurrentProcessingGet"}
)


def _settle(done: list[tuple[asyncio.Future[Response], Response | BaseException]]) -> None:
    for fut, outcome in done:
        if fut.done():  # the client went away and its handler was cancelled
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


class _ClientError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LocalServer:
    """The local Functions host. ``serve_forever()`` blocks; ``shutdown()`` stops it.

    The listening socket is bound in the constructor, so a port in use fails before
    anything is printed or started.

    Attributes:
        runtime: the shared :class:`~ai4ec_runtime.handlers.Runtime`.
        url: base URL, e.g. ``http://127.0.0.1:7071``.
        options: the limits in force.
        keys: the least-privilege keys checked, or ``None`` (no checking).
        connections: connections open now.
        refused: connections refused over ``max_connections`` so far.
    """

    def __init__(
        self,
        sock: socket.socket,
        runtime: Runtime,
        options: HostOptions,
        health: redis.Redis,
        keys: AccessKeys | None = None,
    ) -> None:
        self.runtime = runtime
        self.keys = keys
        self.options = options
        self._sock = sock
        self._health = health
        addr = sock.getsockname()
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        self.url = f"http://{host}:{addr[1]}"
        self.connections = 0
        self.refused = 0
        self._pool = ThreadPoolExecutor(options.workers, thread_name_prefix="ai4ec-handler")
        self._batch: list[tuple[str, Request, asyncio.Future[Response]]] = []
        self._health_pool = ThreadPoolExecutor(1, thread_name_prefix="ai4ec-health")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._aio: AsyncDriver | None = None

    # -- serving ------------------------------------------------------------------

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.options.event_loop_store:
            why = supported(self.runtime.store)
            if why is None:
                self._aio = AsyncDriver(self.runtime.store, self._pool)
            else:
                log.info("Redis calls run in threads (%s)", why)
        server = _Server(
            self,
            keepalive_timeout=self.options.idle_timeout,
            auto_decompress=False,  # no gzip bombs: bodies are read as sent
            access_log=None,
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.SockSite(runner, self._sock, backlog=1024)
        await site.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            if self._aio is not None:
                self._aio.close()

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`shutdown` (or Ctrl-C)."""
        try:
            with asyncio.Runner(loop_factory=_loop_factory(self.options.uvloop)) as runner:
                runner.run(self._main())
        finally:
            self._done.set()

    def start(self) -> LocalServer:
        """Serve in a background daemon thread (tests); returns ``self`` once listening."""
        self._thread = threading.Thread(target=self.serve_forever, name="ai4ec-localhost")
        self._thread.daemon = True
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def shutdown(self) -> None:
        """Stop serving, close the socket, stop the dispatcher and the Redis pool."""
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed
                pass
        if self._loop is not None:
            self._done.wait(timeout=10)  # the loop closes its connections first
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        """Release everything (idempotent): socket, handler threads, runtime, health."""
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._health_pool.shutdown(wait=False, cancel_futures=True)
        self.runtime.close()
        self._health.close()

    # -- requests -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Its own thread: /health must answer even while every handler thread waits on
        # a Redis that is down (their retries take seconds).
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._health_pool, fn, *args)

    async def _call(self, name: str, req: Request) -> Response:
        """Run handler ``name``: on the event loop when it can, else in the pool.

        The Redis-only routes (:data:`~ai4ec_runtime.handlers.STEPS`) run on the event
        loop through :class:`~ai4ec_runtime.aio.AsyncDriver` when the store allows it.
        Otherwise the handler runs in the pool, batched with the requests of the same tick.

        Why batches: each hand-over between the event loop and a worker thread costs a
        wake-up and a GIL hand-over, which under load cost as much as the handler itself.
        Requests that arrive in one loop iteration go to a worker together (at most
        ``_BATCH`` each) and their answers come back in one wake-up. Only the routes that
        answer from Redis alone are batched: a webhook delivery POSTs to a backend and
        may take seconds, so it never holds other requests back.
        """
        aio = self._aio
        if aio is not None and name in STEPS:
            keys = self.keys
            if keys is None:
                return await aio.run(handle_io(self.runtime, name, req))
            who = keys.who(presented_key(req))
            return await aio.run(authorized_handle_io(self.runtime, who, name, req))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Response] = loop.create_future()
        if name not in _BATCHED:
            self._pool.submit(self._work, [(name, req, fut)])
            return await fut
        self._batch.append((name, req, fut))
        if len(self._batch) == 1:
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        for i in range(0, len(batch), _BATCH):
            self._pool.submit(self._work, batch[i : i + _BATCH])

    def _work(self, batch: list[tuple[str, Request, asyncio.Future[Response]]]) -> None:
        done: list[tuple[asyncio.Future[Response], Response | BaseException]] = []
        keys = self.keys
        for name, req, fut in batch:
            try:
                if keys is None:
                    done.append((fut, handle(self.runtime, name, req)))
                else:
                    who = keys.who(presented_key(req))
                    done.append((fut, authorized_handle(self.runtime, who, name, req)))
            except BaseException as exc:  # handle() answers errors itself; be safe anyway
                done.append((fut, exc))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle, done)

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        try:
            resp = await self._dispatch(request)
        except _ClientError as exc:
            resp = Response(exc.status, _error_body(exc.status, exc.code, exc.message))
            out = self._to_web(resp)
            out.force_close()  # the body may be unread: the connection cannot be reused
            self._log_client_error(request, resp)
            return out
        if 400 <= resp.status < 500:
            self._log_client_error(request, resp)
        return self._to_web(resp)

    async def _dispatch(self, request: BaseRequest) -> Response:
        path = request.path
        if path in ("/health", "/api/health"):
            health: Response = await self._run(self._check_health)
            return health
        if not path.startswith("/api/"):
            return Response.json(404, {"error": "not_found", "message": "No such route"})
        body = await self._read_body(request)
        params: dict[str, str] = {}
        query = request.query_string
        if query:
            # Plain ``a=b&c=d`` is split by hand (status polling is the hot path); only
            # escaped queries pay for the full parser.
            if "%" in query or "+" in query:
                pairs = parse_qsl(query, keep_blank_values=True)
            else:
                pairs = [(k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p)]
            for key, value in pairs:
                params.setdefault(key, value)
        headers = {k.lower(): v for k, v in request.headers.items()}
        req = Request(method=request.method.upper(), params=params, headers=headers, body=body)
        return await self._call(path[len("/api/") :], req)

    async def _read_body(self, request: BaseRequest) -> bytes:
        cap = self.options.max_body_bytes
        length = request.content_length
        if length is not None and length > cap:
            raise _ClientError(413, "payload_too_large", f"Request body over {cap} bytes")
        content = request.content
        if content.is_eof():
            # The usual case: a small body already read with the headers, no waiting.
            data = content.read_nowait()
            if len(data) > cap:
                raise _ClientError(413, "payload_too_large", f"Request body over {cap} bytes")
            return data
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.options.idle_timeout):
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > cap:
                        raise _ClientError(
                            413, "payload_too_large", f"Request body over {cap} bytes"
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise _ClientError(408, "request_timeout", "Request body not received") from None
        except _ClientError:
            raise
        except Exception as exc:  # malformed chunked framing, decoding errors
            raise _ClientError(400, "bad_request", f"Malformed request body: {exc}") from None
        return b"".join(chunks)

    def _check_health(self) -> Response:
        return check_health(self._health)

    @staticmethod
    def _to_web(resp: Response) -> web.Response:
        headers = {
            k: v
            for k, v in resp.headers.items()
            if not _HEADER_BAD_CHARS.search(k + v)  # never reflect CR/LF into a header
        }
        if resp.status not in (204, 304):
            headers["Content-Type"] = resp.content_type
            return web.Response(status=resp.status, body=resp.body, headers=headers)
        return web.Response(status=resp.status, headers=headers)

    @staticmethod
    def _log_client_error(request: BaseRequest, resp: Response) -> None:
        code = ""
        if resp.content_type == JSON:
            try:
                code = str(json.loads(resp.body).get("error", ""))
            except (ValueError, AttributeError):
                code = ""
        log.info("%s %s -> %d %s", request.method, request.path[:200], resp.status, code)


def _loop_factory(want_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory: uvloop's when wanted and installed, else asyncio's (None)."""
    if not want_uvloop:
        return None
    try:
        import uvloop
    except ImportError:  # `runtime` without the `serve` extra: asyncio's loop works too
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise StartError(f"cannot listen on {host}:{port}: unknown host") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        why = "the port is in use" if exc.errno == 98 else (exc.strerror or str(exc))
        raise StartError(f"cannot listen on {host}:{port}: {why}") from None
    sock.setblocking(False)
    return sock


def _where(client: Any) -> str:
    kw = store_pool(client).connection_kwargs
    if "path" in kw:
        return str(kw["path"])
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}"


def make_server(
    host: str = "127.0.0.1",
    port: int = 7071,
    redis_url: str | None = None,
    routing_path: str | Path | None = None,
    *,
    routing: Routing | Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    redis_client: Any = None,
    dispatcher: Dispatcher | None = None,
    options: HostOptions | None = None,
    keys: AccessKeys | None = None,
) -> LocalServer:
    """Build (but do not start) a local host; the port is bound and Redis answered.

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
        options: limits (default :class:`HostOptions`).
        keys: least-privilege keys to check (see :mod:`ai4ec_runtime.auth`); ``None``
            checks nothing, as before.

    Raises:
        StartError: the port cannot be bound, or Redis does not answer a PING.
        ConfigurationError: no Redis configured, or an invalid routing.json.
    """
    base = settings or Settings.from_env()
    changes: dict[str, Any] = {"dispatch": "local"}
    if redis_url:
        changes["redis_url"] = redis_url
    if routing_path:
        changes["routing_path"] = Path(routing_path)
    merged = dataclasses.replace(base, **changes)
    own_client = redis_client is None
    client = (
        redis_client
        if redis_client is not None
        else connect_redis(merged.require_redis_url(), merged.redis_mode)
    )
    health = probe_client(client)
    sock: socket.socket | None = None
    try:
        try:
            health.ping()
        except redis.exceptions.RedisError as exc:
            raise StartError(
                f"cannot reach Redis at {_where(client)} ({type(exc).__name__})"
            ) from None
        sock = _bind(host, port, reuse_port=(options or HostOptions()).processes > 1)
        runtime = Runtime(merged, redis_client=client, routing=routing, dispatcher=dispatcher)
    except BaseException:
        if sock is not None:
            sock.close()
        health.close()
        if own_client:
            client.close()
        raise
    _ = runtime.dispatcher  # start the delivery workers and the sweeper now
    return LocalServer(sock, runtime, options or HostOptions(), health, keys)


def serve(
    host: str,
    port: int,
    redis_url: str | None,
    routing_path: str | Path | None = None,
    *,
    routing: Routing | Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    options: HostOptions | None = None,
    on_ready: Callable[[LocalServer], None] | None = None,
    keys: AccessKeys | Callable[[Routing], AccessKeys] | None = None,
) -> None:
    """Run the local host until interrupted (Ctrl-C); see :func:`make_server`.

    ``on_ready`` runs once the port is bound and Redis answered (the CLI prints its
    banner there, so a failed start never shows one). ``keys`` may be a function of the
    routing table (the CLI generates one key per API there).

    Raises:
        StartError: as :func:`make_server`.
    """
    server = make_server(
        host, port, redis_url, routing_path, routing=routing, settings=settings, options=options
    )
    if callable(keys):
        try:
            server.keys = keys(server.runtime.routing)
        except BaseException:
            server.close()
            raise
    else:
        server.keys = keys
    if server.keys is None:
        log.warning("WARNING: no key checking (--insecure-no-auth): anyone can call every function")
    try:
        children = _start_children(server)
    except BaseException:
        server.close()
        raise
    apis = sorted(server.runtime.routing.apis)
    log.info("ai4ec functions host on %s (APIs: %s)", server.url, json.dumps(apis))
    if on_ready is not None:
        on_ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=10)
        server.close()


def _start_children(server: LocalServer) -> list[Any]:
    """Start ``processes - 1`` more hosts on the same port (``SO_REUSEPORT``).

    Spawned, not forked: the parent already runs threads (delivery lanes, sweeper) and
    holds Redis sockets, which a fork would copy half-way. Each child gets the parent's
    resolved settings, routing table and keys, so all processes answer alike.
    """
    import multiprocessing

    count = server.options.processes - 1
    if count <= 0:
        return []
    port = server._sock.getsockname()[1]  # noqa: SLF001 (port 0 resolved by the parent)
    host = server._sock.getsockname()[0]  # noqa: SLF001
    ctx = multiprocessing.get_context("spawn")
    children = []
    for i in range(count):
        child = ctx.Process(
            target=_child_main,
            args=(host, port, server.runtime.settings, server.runtime.routing),
            kwargs={"options": server.options, "keys": server.keys},
            name=f"ai4ec-host-{i + 1}",
            daemon=True,
        )
        child.start()
        children.append(child)
    return children


def _child_main(
    host: str,
    port: int,
    settings: Settings,
    routing: Routing,
    *,
    options: HostOptions,
    keys: AccessKeys | None,
) -> None:
    """One extra host process: serve until the parent stops it (or dies)."""
    import signal

    try:  # Linux: SIGTERM this process when the parent dies, even by kill -9
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        server = make_server(host, port, routing=routing, settings=settings, options=options)
    except StartError as exc:
        log.error("extra host process cannot start: %s", exc)
        return
    server.keys = keys
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
