"""The task store's Redis calls on an asyncio event loop, for the local host.

Why: on the local host a create or a status read costs more host CPU in getting the
request to a handler thread and back (a wake-up and a GIL hand-over each way, and
redis-py's blocking connection) than in the handler itself. The Redis-only routes are
written as steps (:data:`~ai4ec_runtime.store.Steps`: generators that yield their Redis
calls); :class:`AsyncDriver` runs those same generators on the event loop and sends their
calls over one connection. Requests that arrive together are then *pipelined*: their
commands go out in one write and their replies come back in one read, which also saves
Redis the per-command system calls.

Nothing about *what* is sent differs from the blocking path: the same packed bytes, the
same operation ids. The replay rules are therefore the same: every script call carries
an operation id and a ``GET`` is a read, so a call whose reply was lost (the connection
dropped) is sent again as is, on a new connection, with the client's retry budget; a
script Redis does not know (``NOSCRIPT``) is loaded and the call sent again.

Only a single Redis reached over TCP or a Unix socket, with at most a password, is
served here, and only with hiredis (the ``serve`` extra) to parse replies; a Redis
Cluster, TLS, a credential provider or a missing hiredis keep the thread path
(:func:`supported`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import Executor
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff

from .scripts import TASK_SCRIPT
from .store import Blocking, Command, ScriptCalls, Steps, T, TaskStore, _pack

log = logging.getLogger("ai4ec_runtime.aio")

#: Failures after which a request is sent again on a new connection.
_RETRIED = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _hiredis() -> Any:
    try:
        import hiredis
    except ImportError:
        return None
    return hiredis


def supported(store: TaskStore) -> str | None:
    """Why ``store`` cannot be driven here (one line), or ``None`` when it can."""
    if store.cluster:
        return "a Redis Cluster"
    if _hiredis() is None:
        return "hiredis is not installed"
    pool = store.redis.connection_pool
    kw = pool.connection_kwargs
    if pool.connection_class not in (redis.Connection, redis.UnixDomainSocketConnection):
        return f"connection class {pool.connection_class.__name__}"
    if kw.get("credential_provider") is not None or kw.get("redis_connect_func") is not None:
        return "a credential provider"
    if kw.get("protocol") not in (None, 2, "2") or kw.get("decode_responses"):
        return "RESP3 or decoded replies"
    return None


class _Protocol(asyncio.Protocol):
    """One Redis connection: writes packed commands, hands replies back in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from redis._parsers.base import BaseParser

        self._loop = loop
        self._reader = _hiredis().Reader(
            protocolError=redis.exceptions.InvalidResponse, replyError=BaseParser.parse_error
        )
        #: (future, replies expected, replies so far, time sent), oldest first.
        self._waiting: collections.deque[tuple[asyncio.Future[list[Any]], int, list[Any], float]]
        self._waiting = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                fut, count, got, _ = waiting[0]
                got.append(reply)
                if len(got) == count:
                    waiting.popleft()
                    if not fut.done():  # its request was cancelled: the reply is dropped
                        fut.set_result(got)
        except (redis.exceptions.InvalidResponse, IndexError):
            # Garbage or a reply nobody asked for: this connection cannot be trusted.
            log.warning("Redis connection out of step; reconnecting")
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        self.lost = True
        err = redis.exceptions.ConnectionError("Connection to Redis lost")
        waiting, self._waiting = self._waiting, collections.deque()
        for fut, _, _, _ in waiting:
            if not fut.done():
                fut.set_exception(err)

    def request(self, packed: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Send ``packed`` (``count`` commands); the future gets their replies."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise redis.exceptions.ConnectionError("Connection to Redis lost")
        fut: asyncio.Future[list[Any]] = self._loop.create_future()
        self._waiting.append((fut, count, [], self._loop.time()))
        self.transport.write(packed)
        return fut

    def oldest(self) -> float | None:
        """When the oldest unanswered request was sent (loop time), if any."""
        return self._waiting[0][3] if self._waiting else None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # connection_lost fails what is waiting


class AsyncDriver:
    """Runs :data:`~ai4ec_runtime.store.Steps` of one store on the running event loop.

    Args:
        store: the store whose steps are run (its client's connection settings are used).
        executor: where :class:`~ai4ec_runtime.store.Blocking` ops run.
    """

    def __init__(self, store: TaskStore, executor: Executor) -> None:
        reason = supported(store)
        if reason is not None:
            raise ValueError(f"steps cannot run on the event loop with {reason}")
        self.store = store
        self._executor = executor
        kw = store.redis.connection_pool.connection_kwargs
        self._kw = kw
        retry = kw.get("retry")
        self._retries = int(retry.get_retries()) if retry is not None else 3
        self._backoff = ExponentialWithJitterBackoff(base=0.05, cap=1.0)
        self._timeout = float(kw.get("socket_timeout") or 10.0)
        self._connect_timeout = float(kw.get("socket_connect_timeout") or 5.0)
        self._conn: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._closed = False

    async def run(self, steps: Steps[T]) -> T:
        """Run ``steps`` to its end and return its result, as :func:`~.store.drive` does."""
        try:
            op = next(steps)
            while True:
                try:
                    if type(op) is ScriptCalls:
                        reply: Any = await self._scripts(op)
                    elif type(op) is Command:
                        reply = (await self._send(op.packed, 1))[0]
                    else:
                        assert isinstance(op, Blocking)
                        loop = asyncio.get_running_loop()
                        reply = await loop.run_in_executor(self._executor, op.run)
                except Exception as exc:
                    op = steps.throw(exc)
                else:
                    op = steps.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _scripts(self, op: ScriptCalls) -> list[Any]:
        packed = op.packed
        replies = await self._send(b"".join(packed), len(packed))
        for _ in range(3):
            missing = [
                i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
            ]
            if not missing:
                break
            # First use, or Redis restarted or flushed its scripts: the calls did nothing.
            (loaded,) = await self._send(_pack([b"SCRIPT", b"LOAD", TASK_SCRIPT.encode()]), 1)
            if isinstance(loaded, Exception):
                raise loaded
            again = await self._send(b"".join(packed[i] for i in missing), len(missing))
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _send(self, packed: bytes, count: int) -> list[Any]:
        """Send and read, again on a new connection after a failure (every op is replay-safe)."""
        failures = 0
        while True:
            try:
                conn = self._conn if self._conn is not None and not self._conn.lost else None
                if conn is None:
                    conn = await self._connect()
                return await conn.request(packed, count)
            except _RETRIED as exc:
                failures += 1
                if self._closed or failures > self._retries:
                    if isinstance(exc, redis.exceptions.RedisError):
                        raise
                    raise redis.exceptions.ConnectionError(f"Redis unreachable: {exc}") from None
                await asyncio.sleep(self._backoff.compute(failures))

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise redis.exceptions.ConnectionError("closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        fut = self._connecting
        try:
            return await asyncio.shield(fut)
        finally:
            if fut.done() and self._connecting is fut:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        kw = self._kw
        proto = _Protocol(loop)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if kw.get("path"):
                    await loop.create_unix_connection(lambda: proto, kw["path"])
                else:
                    await loop.create_connection(
                        lambda: proto, kw.get("host", "localhost"), int(kw.get("port", 6379))
                    )
                hello: list[bytes] = []
                if kw.get("password") is not None:
                    user = kw.get("username")
                    creds = [user, kw["password"]] if user else [kw["password"]]
                    hello.append(_pack([b"AUTH", *(str(c).encode() for c in creds)]))
                if int(kw.get("db") or 0):
                    hello.append(_pack([b"SELECT", str(int(kw["db"])).encode()]))
                if hello:
                    for reply in await proto.request(b"".join(hello), len(hello)):
                        if isinstance(reply, Exception):
                            raise redis.exceptions.AuthenticationError(
                                "Redis refused the connection's AUTH or SELECT"
                            )
        except TimeoutError:
            proto.abort()
            raise redis.exceptions.TimeoutError("Timeout connecting to Redis") from None
        except BaseException:
            proto.abort()
            raise
        self._conn = proto
        if self._watch is None:
            self._watch = loop.call_later(1.0, self._check_timeout)
        return proto

    def _check_timeout(self) -> None:
        """Once a second: a request unanswered for ``socket_timeout`` drops the connection.

        Its callers then send again on a new one, as redis-py does after a timeout.
        """
        self._watch = None
        conn = self._conn
        if self._closed or conn is None:
            return
        loop = asyncio.get_running_loop()
        sent = conn.oldest()
        if sent is not None and loop.time() - sent > self._timeout:
            log.warning("Redis did not answer for %.0f s; reconnecting", self._timeout)
            conn.abort()
        self._watch = loop.call_later(1.0, self._check_timeout)

    def close(self) -> None:
        """Drop the connection (on the loop's thread)."""
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._conn is not None:
            self._conn.abort()
            self._conn = None
