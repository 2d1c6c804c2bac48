"""Redis task store: typed Python calls over the one Lua script.

Every method that changes state is exactly one ``EVALSHA`` (one round trip); reads are
one ``GET`` or one pipeline. The store never publishes anything itself: methods that
require a dispatch return a :class:`Dispatch` and the caller hands it to a dispatcher,
so the Functions host and the local host share this code unchanged.

Every script call carries a fresh operation id, and the script records its reply under
that id for a while (see :mod:`ai4ec_runtime.scripts`): when a connection drops after
Redis ran a call but before its reply arrived, the call is sent again and gets the first
reply back instead of running twice. Calls without that protection are only re-sent
when *sending* failed. The same code runs on a single Redis and on a Redis Cluster
(``AI4EC_REDIS_MODE=cluster``): on a cluster each call goes to the node that owns the
task's shard (see :mod:`ai4ec_runtime.keys`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.cluster

from . import keys
from .models import (
    PUBLISH_FAILED_TEXT,
    BackendStatus,
    BadRequest,
    IdempotencyMismatch,
    IllegalTransition,
    TaskError,
    TaskNotFound,
    UpsertRequest,
    endpoint_path,
    json_output,
    new_task_id,
)
from .routing import ApiRoute, Routing, step_url
from .scripts import TASK_SCRIPT

#: TaskIds are GUIDs. Anything else is answered "not found" without touching Redis, so a
#: crafted id cannot read other keys (upstream's Get did ``GET <anything>``).
_TASK_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)

#: Seconds a request reporter counter survives without updates (leaked counts of crashed
#: pods disappear instead of pinning a scaling metric forever).
CURRENT_REQUESTS_EXPIRE = 24 * 3600
#: Seconds the reply of a script call is kept for a replay (a retry after a lost reply
#: happens within the client's retry budget, a few seconds).
DEFAULT_OP_TTL_SECONDS = 120
#: Shards of the task indexes on a Redis Cluster (every process must use the same).
DEFAULT_CLUSTER_SHARDS = 8
#: ``AI4EC_REDIS_MODE`` values.
REDIS_MODES = ("single", "cluster")


def connect_redis(url: str, mode: str = "single", max_connections: int = 256) -> Any:
    """A redis-py client for the task store: ``redis.Redis`` or ``RedisCluster``.

    ``mode`` is ``AI4EC_REDIS_MODE`` (``functions serve --redis-mode``). Connection
    errors are retried with jittered backoff, which rides out a restart or failover.

    Raises:
        ValueError: unknown ``mode``.
    """
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 8)
    if mode == "cluster":
        return redis.cluster.RedisCluster.from_url(
            url,
            socket_timeout=10,
            socket_connect_timeout=5,
            max_connections=max_connections,
            retry=retry,
        )
    if mode != "single":
        raise ValueError(f"Redis mode must be one of {', '.join(REDIS_MODES)}, got {mode!r}")
    return redis.Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        max_connections=max_connections,
        retry=retry,
    )


def valid_task_id(task_id: str | None) -> bool:
    """Whether ``task_id`` has the GUID shape every TaskId has."""
    return bool(task_id) and _TASK_ID.match(task_id or "") is not None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task to hand to the backend at ``endpoint`` with ``body`` and ``taskId`` header.

    ``queued`` is true when the script that produced it already put it into its API's
    durable delivery queue (a create asked to, see :meth:`TaskStore.upsert`): the local
    dispatcher then only wakes the API's lane instead of queueing it in a second call.
    """

    task_id: str
    endpoint: str
    body: str
    queued: bool = False


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Outcome of an upsert.

    Attributes:
        record: the task JSON as stored (what the caller gets back).
        dispatch: what to publish now, if anything.
        created: a new task was created.
        replayed: an ``Idempotency-Key`` matched an existing task; nothing changed.
        fenced: a late write for a pipeline step that is over (or FailTask after
            CompleteTask); nothing changed and ``record`` is the current task.
    """

    record: bytes
    dispatch: Dispatch | None = None
    created: bool = False
    replayed: bool = False
    fenced: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """Result of claiming a delivery: ``state`` is ok, stale, leased or gone.

    ``lease_left`` is the seconds left of another delivery's lease (``leased``).
    """

    state: str
    endpoint: str = ""
    body: str = ""
    lease_left: float = 0.0


@dataclass(frozen=True, slots=True)
class Queued:
    """A dispatch taken from an API's durable delivery queue.

    Attributes:
        item: what to deliver.
        api: the API id whose queue held it ('' for unrouted paths).
        busy_count: deliveries of this dispatch that already found the backend busy.
    """

    item: Dispatch
    api: str
    busy_count: int


#: What :meth:`TaskStore._prepare` returns: mode, key tag, arguments, reply parser.
_Prepared = tuple[str, str, tuple[str | int | float, ...], Callable[[Any], UpsertResult]]


class _ReplyLost(Exception):
    """A call reached Redis but its reply did not come back; it must not be re-sent."""


#: One script call: (mode, key tag, arguments, declared key or None for the tag's slot).
_Call = tuple[str, str, Sequence[str | int | float], str | None]


def _pack(parts: list[bytes]) -> bytes:
    """One command in RESP: ``*<n>`` then ``$<len>`` + bytes per argument."""
    return b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%s\r\n" % (len(p), p) for p in parts])


def _send_read(conn: Any, packed: bytes, count: int, replay_safe: bool) -> list[Any]:
    """Write ``packed`` on ``conn``'s socket and read ``count`` replies with hiredis.

    Only for connections whose redis-py parser is hiredis's (the ``serve`` extra); the
    Azure bundle, without compiled code, keeps redis-py's own parser and path.

    redis-py's ``send_packed_command``/``read_response`` cost about as much client CPU
    per call as the rest of a transition (connection checks and hooks around each read);
    this does only the socket calls and the parsing. redis-py still opens the connection
    (AUTH, TLS, HELLO) and closes it; each socket gets its own reader, so no byte of an
    earlier connection is ever parsed. The failures map onto redis-py's, as
    :meth:`TaskStore._exchange` expects: a failed send, or a lost reply (only retried when
    ``replay_safe``).
    """
    sock = conn._sock  # noqa: SLF001
    if sock is None:
        conn.connect()
        sock = conn._sock  # noqa: SLF001
    state = getattr(conn, "_ai4ec_reader", None)
    if state is None or state[0] is not sock:
        state = (sock, _HIREDIS.Reader(**_READER_ARGS))
        conn._ai4ec_reader = state  # noqa: SLF001
    reader = state[1]
    try:
        sock.sendall(packed)
    except OSError as exc:
        raise redis.exceptions.ConnectionError(f"Error writing to Redis: {exc}") from None
    out: list[Any] = []
    try:
        while len(out) < count:
            reply = reader.gets()
            if reply is False:
                data = sock.recv(65536)
                if not data:
                    raise redis.exceptions.ConnectionError("Connection closed by server.")
                reader.feed(data)
            else:
                out.append(reply)  # an error reply is an exception instance, kept in place
    except (TimeoutError, OSError, redis.exceptions.ConnectionError) as exc:
        err: Exception = exc
        if isinstance(exc, TimeoutError):
            err = redis.exceptions.TimeoutError("Timeout reading from Redis")
        elif not isinstance(exc, redis.exceptions.ConnectionError):
            err = redis.exceptions.ConnectionError(f"Error reading from Redis: {exc}")
        if not replay_safe:
            raise _ReplyLost() from err
        raise err from None
    return out


def _hiredis() -> Any:
    try:
        import hiredis
    except ImportError:  # the Azure bundle: redis-py's own parser
        return None
    return hiredis


_HIREDIS = _hiredis()
_READER_ARGS: dict[str, Any] = {}
_HiredisParser: Any = type(None)  # with no hiredis, no connection parses with it
if _HIREDIS is not None:
    from redis._parsers import _HiredisParser
    from redis._parsers.base import BaseParser

    _READER_ARGS = {
        "protocolError": redis.exceptions.InvalidResponse,
        "replyError": BaseParser.parse_error,
    }


#: RESP bulk-string headers ``$<n>\r\n`` of the usual argument lengths, built once.
_BULK = [b"$%d\r\n" % n for n in range(512)]


def _bulk_args(args: Sequence[str | bytes | int | float]) -> bytes:
    """The arguments of a command in RESP, as :func:`_pack` would write them."""
    out: list[bytes] = []
    add = out.append
    for a in args:
        b = a.encode() if isinstance(a, str) else a if isinstance(a, bytes) else str(a).encode()
        n = len(b)
        add(_BULK[n] if n < 512 else b"$%d\r\n" % n)
        add(b)
        add(b"\r\n")
    return b"".join(out)


# -- I/O as values ------------------------------------------------------------------------
#
# The task operations the HTTP routes use are written once, as generators that *yield*
# what they need from Redis (an op below) and receive its reply: ``reply = yield op``.
# :func:`drive` runs them with blocking sockets (the Functions app, the thread pool of
# the local host, tools); :mod:`ai4ec_runtime.aio` runs the same generators on the local
# host's event loop over one pipelined connection. Parsing, checks, key building,
# packing and answer shaping therefore exist once; only the transport differs.

T = TypeVar("T")


@dataclass(slots=True)
class ScriptCalls:
    """Run these packed script calls; the reply is a list, errors in place.

    Every call carries its own operation id (packed in), so sending the same bytes
    again after a lost reply is safe.
    """

    store: TaskStore
    calls: Sequence[_Call]
    packed: list[bytes]
    groups: dict[str, list[int]]

    def run(self) -> list[Any]:
        """Blocking: one round trip per node (see :meth:`TaskStore._run_groups`)."""
        return self.store._run_groups(self.calls, self.packed, self.groups, 0)  # noqa: SLF001


@dataclass(slots=True)
class Command:
    """Run one packed read-only command (a ``GET``) on ``node``; the reply is its value.

    A read can always be sent again, so a lost reply is retried like a failed send.
    """

    store: TaskStore
    packed: bytes
    node: str

    def run(self) -> Any:
        """Blocking: one round trip."""
        return self.store._roundtrip(self.packed, 1, self.node)[0]  # noqa: SLF001


@dataclass(slots=True)
class Blocking:
    """Call ``fn(*args)``, which may block (publishing a dispatch): a thread runs it."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def run(self) -> Any:
        """Call it here."""
        return self.fn(*self.args)


#: What a step generator yields.
Op = ScriptCalls | Command | Blocking
#: A task operation written as a generator of :data:`Op` (see :func:`drive`).
Steps = Generator[Op, Any, T]


def drive(steps: Steps[T]) -> T:
    """Run ``steps`` to its end with blocking I/O; returns what it returns.

    A failed op is thrown into the generator at its ``yield``, so the operation's own
    ``try``/``except`` sees it exactly as it would see a blocking call fail.
    """
    try:
        op = next(steps)
        while True:
            try:
                reply = op.run()
            except Exception as exc:
                op = steps.throw(exc)
            else:
                op = steps.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskStore:
    """All task operations against one Redis database or one Redis Cluster.

    Args:
        client: a redis-py client (``decode_responses=False``): ``redis.Redis``, or a
            ``RedisCluster`` (see :func:`connect_redis`).
        routing: routing table used to resolve APIs and pipelines.
        backend_base_url: ``AI4EC_BACKEND_BASE_URL`` for pipeline step URLs.
        backend_base_urls: ``AI4EC_BACKEND_BASE_URLS``: cluster name -> ingress base URL;
            a step of an API whose cluster is listed goes there instead.
        clock: seconds since the epoch, passed to the scripts (tests only); by default
            the scripts read Redis ``TIME``.
        shards: index shards on a cluster (default :data:`DEFAULT_CLUSTER_SHARDS`);
            ignored on a single Redis.
        op_ttl_seconds: how long a call's reply is kept for a replay.
    """

    def __init__(
        self,
        client: Any,
        routing: Routing,
        *,
        backend_base_url: str | None = None,
        backend_base_urls: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        shards: int = 0,
        op_ttl_seconds: int = DEFAULT_OP_TTL_SECONDS,
    ) -> None:
        self.redis = client
        self.routing = routing
        self.backend_base_url = backend_base_url
        self.backend_base_urls: Mapping[str, str] = dict(backend_base_urls or {})
        self.clock = clock
        self.cluster = isinstance(client, redis.cluster.RedisCluster)
        #: 0 on a single Redis: no hash tags, upstream's key names.
        self.shards = (shards or DEFAULT_CLUSTER_SHARDS) if self.cluster else 0
        self.tags = [keys.shard_tag(i) for i in range(self.shards)] or [""]
        self.op_ttl = str(op_ttl_seconds).encode()
        self._sha_b = hashlib.sha1(TASK_SCRIPT.encode()).hexdigest().encode()
        self._evalsha_head = _bulk_args((b"EVALSHA", self._sha_b, b"1"))
        self._idle: dict[str, list[Any]] = {}
        self._idle_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------

    def tag(self, task_id: str) -> str:
        """Key prefix of ``task_id``'s keys ('' on a single Redis)."""
        return keys.tag_for(task_id, self.shards)

    def _eval(self, mode: str, tag: str, *args: str | int | float, key: str | None = None) -> Any:
        """Run the task script once: one round trip."""
        return drive(self._eval_io(mode, tag, *args, key=key))

    def _eval_io(
        self, mode: str, tag: str, *args: str | int | float, key: str | None = None
    ) -> Steps[Any]:
        """:meth:`_eval` as steps."""
        reply = (yield self._script_calls([(mode, tag, args, key)]))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _node(self, key: str) -> str:
        """Name of the node that serves ``key`` ('' on a single Redis)."""
        if not self.cluster:
            return ""
        slot = self.redis.keyslot(key)
        return str(self.redis.nodes_manager.get_node_from_slot(slot).name)

    def _eval_many(self, calls: Sequence[_Call]) -> list[Any]:
        """Run script calls pipelined, one round trip per node; errors come back in place.

        The RESP request is packed here rather than by redis-py's generic command path:
        on a transition that path (argument encoding, packing, instrumentation) costs
        more client CPU than Redis spends running the script. Every call gets a fresh
        operation id, so re-sending it after a lost reply is safe.
        """
        if not calls:
            return []
        return self._script_calls(calls).run()

    def _script_calls(self, calls: Sequence[_Call]) -> ScriptCalls:
        """Pack ``calls`` (each with a fresh operation id) and group them by node."""
        now = b"" if self.clock is None else repr(self.clock()).encode()
        groups: dict[str, list[int]] = {}
        packed: list[bytes] = []
        for i, (mode, tag, args, key) in enumerate(calls):
            route = key if key is not None else tag + keys.SLOT_KEY
            op = os.urandom(9).hex()
            # EVALSHA sha 1 route mode now tag op ttl args...: _pack's bytes, built in
            # one pass (this runs for every transition; the generic path cost 5 us).
            packed.append(self._pack_evalsha((route, mode, now, tag, op, self.op_ttl, *args)))
            groups.setdefault(self._node(route), []).append(i)
        return ScriptCalls(self, calls, packed, groups)

    def _pack_evalsha(self, args: tuple[str | bytes | int | float, ...]) -> bytes:
        """``EVALSHA <sha> 1 *args`` in RESP, as :func:`_pack` writes it.

        hiredis's C packer when it is there (half the cost again); both give the same
        bytes for the str, bytes, int and float arguments the store passes.
        """
        if _HIREDIS is not None:
            try:
                packed: bytes = _HIREDIS.pack_command((b"EVALSHA", self._sha_b, b"1", *args))
            except TypeError:  # an argument type it does not take: the Python packer
                pass
            else:
                return packed
        return b"*%d\r\n" % (3 + len(args)) + self._evalsha_head + _bulk_args(args)

    def _run_groups(
        self,
        calls: Sequence[_Call],
        packed: list[bytes],
        groups: dict[str, list[int]],
        depth: int,
    ) -> list[Any]:
        if len(groups) == 1 and len(calls) == 1:
            # The usual case, one call: its reply as is, unless it is an error to fix.
            ((node, _),) = groups.items()
            replies = self._roundtrip(packed[0], 1, node)
            if not isinstance(replies[0], redis.exceptions.ResponseError):
                return replies
        else:
            replies = [None] * len(calls)
            for node, idx in groups.items():
                got = self._roundtrip(b"".join(packed[i] for i in idx), len(idx), node)
                for i, reply in zip(idx, got, strict=True):
                    replies[i] = reply
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        moved = [
            i
            for i, r in enumerate(replies)
            if isinstance(r, redis.exceptions.ResponseError)
            and str(r).startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"))
        ]
        if (missing or moved) and depth < 3:
            # NOSCRIPT: first use, or Redis restarted/flushed its script cache. MOVED: the
            # cluster resharded. Either way the call did nothing: fix and run it again
            # (same packed bytes, so the same operation id).
            if missing:
                self.redis.script_load(TASK_SCRIPT)  # a cluster client loads it on every primary
            if moved:
                self.redis.nodes_manager.initialize()
            again = missing + moved
            regroup: dict[str, list[int]] = {}
            for j, i in enumerate(again):
                _, tag, _, key = calls[i]
                route = key if key is not None else tag + keys.SLOT_KEY
                regroup.setdefault(self._node(route), []).append(j)
            sub = self._run_groups(
                [calls[i] for i in again], [packed[i] for i in again], regroup, depth + 1
            )
            for i, reply in zip(again, sub, strict=True):
                replies[i] = reply
        return replies

    def _roundtrip(
        self, packed: bytes, count: int, node: str = "", *, replay_safe: bool = True
    ) -> list[Any]:
        """Send pre-packed commands on an idle connection and read ``count`` replies.

        Connections come from the store's own free list rather than redis-py's pool,
        whose checkout polls every socket for stray data (a syscall per command). Every
        reply is always read, so a connection goes back clean; one that failed is closed.

        A failure to *send* is retried per the client's retry policy (a Redis restart):
        bytes written to a dead socket never reached a live server. A failure while
        reading the replies is retried only when ``replay_safe`` (every script call
        carries an operation id, and ``GET`` is a read); otherwise it is raised, since
        Redis may have run the commands.
        """
        conn = self._take(node)

        def send_recv() -> list[Any]:
            if _HIREDIS is not None and isinstance(conn._parser, _HiredisParser):  # noqa: SLF001
                return _send_read(conn, packed, count, replay_safe)
            conn.send_packed_command([packed], check_health=False)
            out: list[Any] = []
            try:
                for _ in range(count):
                    try:
                        out.append(conn.read_response())
                    except redis.exceptions.ResponseError as exc:
                        out.append(exc)  # keep reading: the connection must stay in sync
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if not replay_safe:
                    raise _ReplyLost() from exc
                raise
            return out

        try:
            result: list[Any] = conn.retry.call_with_retry(
                send_recv,
                lambda _: conn.disconnect(),
            )
        except _ReplyLost as lost:
            conn.disconnect()
            raise lost.__cause__ or redis.exceptions.ConnectionError("reply lost") from None
        except BaseException:
            conn.disconnect()
            raise
        with self._idle_lock:
            self._idle.setdefault(node, []).append(conn)
        return result

    def _take(self, node: str) -> Any:
        with self._idle_lock:
            idle = self._idle.get(node)
            if idle:
                return idle.pop()
        if self.cluster:
            cnode = self.redis.nodes_manager.get_node(node_name=node)
            if cnode is None or cnode.redis_connection is None:
                self.redis.nodes_manager.initialize()
                cnode = self.redis.nodes_manager.get_node(node_name=node)
            pool = cnode.redis_connection.connection_pool
        else:
            pool = self.redis.connection_pool
        return pool.connection_class(**pool.connection_kwargs)  # connects on first use

    def close(self) -> None:
        """Close the store's own connections (the redis-py pool is the caller's)."""
        with self._idle_lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.disconnect()

    def _policy(self, route: ApiRoute | None) -> tuple[str, int, int, int, int, float]:
        d = self.routing.defaults
        if route is None:
            return ("", d.task_ttl_seconds, d.timeout_seconds, d.queue_timeout_seconds, 1, 30.0)
        return (
            route.api_id,
            route.task_ttl_seconds,
            route.timeout_seconds,
            route.queue_timeout_seconds,
            route.retry.max_attempts,
            route.retry.backoff_seconds,
        )

    # -- task API -------------------------------------------------------------------

    def upsert(
        self,
        req: UpsertRequest,
        *,
        idempotency_key: str | None = None,
        caller: str = "",
        queue: bool = False,
    ) -> UpsertResult:
        """Create (no TaskId) or update a task, atomically, in one round trip.

        With ``queue``, a create that publishes also puts its dispatch into its API's
        durable delivery queue in the same script (the local dispatcher's transport), so
        a create and its hand-over cost one round trip instead of two, and a host killed
        between them cannot leave a created task that was never queued. Ignored for
        updates and for creates without ``PublishToGrid``.

        Raises:
            BadRequest: creation without Endpoint, unknown pipeline, bad TaskId.
            TaskNotFound: update of an unknown TaskId.
            IllegalTransition: the change breaks the state machine.
            IdempotencyMismatch: the key was used for a different request.
        """
        steps = self.upsert_io(req, idempotency_key=idempotency_key, caller=caller, queue=queue)
        return drive(steps)

    def upsert_io(
        self,
        req: UpsertRequest,
        *,
        idempotency_key: str | None = None,
        caller: str = "",
        queue: bool = False,
    ) -> Steps[UpsertResult]:
        """:meth:`upsert` as steps."""
        mode, tag, args, finish = self._prepare(req, idempotency_key, caller, queue)
        return finish((yield from self._eval_io(mode, tag, *args)))

    def upsert_many(self, reqs: Sequence[UpsertRequest]) -> list[UpsertResult | TaskError]:
        """Apply many upserts in one pipelined round trip (each still its own script).

        Each request is checked and applied atomically on its own, exactly as
        :meth:`upsert` would; batching only saves network round trips, which dominate
        on a busy host (workers, sweepers, the benchmark). Errors come back in place.
        """
        prepared: list[Any] = []
        for req in reqs:
            try:
                prepared.append(self._prepare(req, None, ""))
            except TaskError as exc:
                prepared.append(exc)
        todo = [p for p in prepared if not isinstance(p, TaskError)]
        replies = iter(self._eval_many([(mode, tag, args, None) for mode, tag, args, _ in todo]))
        out: list[UpsertResult | TaskError] = []
        for p in prepared:
            if isinstance(p, TaskError):
                out.append(p)
                continue
            reply = next(replies)
            if isinstance(reply, Exception):
                raise reply
            try:
                out.append(p[3](reply))
            except TaskError as exc:
                out.append(exc)
        return out

    def _prepare(
        self, req: UpsertRequest, idem: str | None, caller: str, queue: bool = False
    ) -> _Prepared:
        if req.task_id is None:
            return self._prepare_create(req, idem, caller, queue)
        return self._prepare_update(req)

    def _prepare_create(
        self, req: UpsertRequest, idem: str | None, caller: str, queue: bool = False
    ) -> _Prepared:
        if req.endpoint is None:
            raise BadRequest("Creating a task needs an Endpoint (the backend URL)")
        if req.backend_status not in (None, BackendStatus.CREATED):
            raise BadRequest("A new task starts as 'created'; send a TaskId to update one")
        endpoint = req.endpoint
        path = endpoint_path(endpoint)
        route = self.routing.resolve(path)
        api, ttl, tmo, qto, maxatt, boff = self._policy(route)
        pipeline_id, step, steps = "", 0, ""
        if req.pipeline is not None:
            pipeline = self.routing.pipelines.get(req.pipeline)
            if pipeline is None:
                raise BadRequest(f"Unknown pipeline {req.pipeline!r}", field="Pipeline")
            matches = [i for i, s in enumerate(pipeline.steps) if s.path == path]
            if not matches:
                first = pipeline.steps[0].path
                raise BadRequest(
                    f"Endpoint path {path} is not a step of pipeline {req.pipeline} "
                    f"(first step: {first})",
                    field="Endpoint",
                )
            pipeline_id, step, ttl = pipeline.pipeline_id, matches[0], pipeline.task_ttl_seconds
            table = []
            for s in pipeline.steps:
                _, _, s_tmo, s_qto, s_max, s_boff = self._policy(self.routing.apis[s.api_id])
                base = self.routing.base_url(
                    s.api_id, self.backend_base_urls, self.backend_base_url
                )
                url = step_url(endpoint, s.path, base)
                table.append([url, s.path, s.api_id, s_tmo, s_qto, s_max, s_boff])
            table[step][0] = endpoint  # the first hop keeps APIM's exact URL (query too)
            steps = json.dumps(table, separators=(",", ":"))
        publish = bool(req.publish)
        body = req.body or ""
        idem_key, fingerprint = "", ""
        if idem:
            idem_key = keys.idempotency(idem, path, caller)
            fingerprint = hashlib.sha256(
                f"{endpoint}\n{req.pipeline or ''}\n{body}".encode()
            ).hexdigest()[:32]
        task_id = new_task_id()
        if idem_key and self.shards:
            # On a cluster the idempotency key lives in its task's slot: pick an id in
            # the shard the key's digest names (a few tries on average).
            want = keys.shard_of(idem_key.removeprefix(keys.IDEMPOTENCY_PREFIX), self.shards)
            while keys.shard_of(task_id, self.shards) != want:
                task_id = new_task_id()
        text = req.status if req.status is not None else BackendStatus.CREATED.value
        args = (
            task_id, text, endpoint, path, api, ttl, tmo, qto, maxatt, boff,
            "1" if publish else "0", body, pipeline_id, step, steps, idem_key, fingerprint,
            "1" if queue and publish else "0",
        )  # fmt: skip

        def finish(reply: Any) -> UpsertResult:
            kind = _s(reply[0])
            if kind == "idem_mismatch":
                raise IdempotencyMismatch(
                    "Idempotency-Key was already used for a different request",
                    TaskId=_s(reply[1]),
                )
            if kind == "replay":
                record = reply[1] or self._gone_record(_s(reply[2]))
                return UpsertResult(record=record, replayed=True)
            # 'ok' ('exists' would be a TaskId collision; the id is fresh per call).
            dispatch = Dispatch(task_id, endpoint, body, queue) if publish else None
            return UpsertResult(record=reply[1], dispatch=dispatch, created=True)

        return "create", self.tag(task_id), args, finish

    @staticmethod
    def _gone_record(task_id: str) -> bytes:
        # The idempotency key outlived its task (TTL race): answer with a minimal record.
        doc = {"TaskId": task_id, "Status": "expired", "BackendStatus": "completed"}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _prepare_update(self, req: UpsertRequest) -> _Prepared:
        task_id = req.task_id or ""
        if not valid_task_id(task_id):
            raise TaskNotFound(f"Unknown TaskId {task_id!r}", TaskId=task_id)
        path, api, ttl, tmo, qto, maxatt, boff = "", "", 0, 0, 0, 1, 0.0
        if req.endpoint is not None:
            path = endpoint_path(req.endpoint)
            api, ttl, tmo, qto, maxatt, boff = self._policy(self.routing.resolve(path))
        bs = req.backend_status.value if req.backend_status else ""
        completing = req.backend_status is BackendStatus.COMPLETED
        args = (
            task_id, "0" if req.status is None else "1", req.status or "", bs,
            req.endpoint or "", path, api, ttl, tmo, qto, maxatt, boff,
            "" if req.publish is None else ("1" if req.publish else "0"), req.body or "",
            "1" if completing and not req.body and json_output(req.status) else "0",
        )  # fmt: skip
        return "update", self.tag(task_id), args, lambda r: self._finish_update(task_id, r)

    @staticmethod
    def _finish_update(task_id: str, reply: Any) -> UpsertResult:
        kind = _s(reply[0])
        if kind == "ok":
            dispatch = None
            if reply[2] == b"1":
                dispatch = Dispatch(task_id, _s(reply[3]), _s(reply[4]))
            return UpsertResult(record=reply[1], dispatch=dispatch)
        if kind == "noop":
            return UpsertResult(record=reply[1])
        if kind == "fenced":
            return UpsertResult(record=reply[1], fenced=True)
        if kind == "notfound":
            raise TaskNotFound(f"Unknown TaskId {task_id!r}", TaskId=task_id)
        if kind == "conflict":
            current, wanted = _s(reply[1]), _s(reply[2])
            if current in ("completed", "failed"):
                why = f"{current} is final"
            else:
                why = "a running task only goes back to created as a pipeline hop (PublishToGrid)"
            raise IllegalTransition(
                f"Task {task_id} is {current}; cannot change it to {wanted}: {why}",
                TaskId=task_id,
                BackendStatus=current,
                Requested=wanted,
            )
        raise redis.exceptions.ResponseError(f"ai4ec: unexpected script reply {kind!r}")

    def get(self, task_id: str | None) -> bytes | None:
        """The stored task JSON, or ``None`` for unknown (or malformed) ids."""
        return drive(self.get_io(task_id))

    def get_io(self, task_id: str | None) -> Steps[bytes | None]:
        """:meth:`get` as steps."""
        if not valid_task_id(task_id):
            return None
        # The hottest read (status polling): packed by hand like the scripts.
        key = keys.task(task_id or "", self.tag(task_id or ""))
        return _value((yield Command(self, _pack([b"GET", key.encode()]), self._node(key))))

    def get_doc(self, task_id: str) -> dict[str, Any] | None:
        """The stored task as a dict (tests, tooling)."""
        raw = self.get(task_id)
        return None if raw is None else dict(json.loads(raw))

    def meta(self, task_id: str) -> dict[str, str]:
        """The task's metadata hash (tests, tooling)."""
        raw = self.redis.hgetall(keys.meta(task_id, self.tag(task_id)))
        return {_s(k): _s(v) for k, v in raw.items()}

    # -- dispatch bookkeeping ------------------------------------------------------

    def claim(self, task_id: str, endpoint: str, lease_seconds: float, *, want_body: bool) -> Claim:
        """Lease the current dispatch of a task before POSTing it to the backend.

        The lease stops duplicate deliveries (an Event Grid batch retried because another
        event in it was busy, or a stale retry) from reaching the backend twice; it only
        succeeds while the task is still ``created`` at ``endpoint``. A successful claim
        also marks the step delivered, which un-fences writes for it.
        """
        reply = self._eval(
            "claim", self.tag(task_id), task_id, endpoint, lease_seconds, "1" if want_body else "0"
        )
        state = _s(reply[0])
        if state == "leased":
            return Claim(state, lease_left=float(_s(reply[1])))
        if state != "ok":
            return Claim(state)
        return Claim(state, _s(reply[1]), _s(reply[2]))

    def note_waiting(
        self,
        task_id: str,
        endpoint: str,
        kind: str,
        detail: str = "",
        *,
        requeue_after: float | None = None,
    ) -> int:
        """Record that the backend was busy (429/503) or erred; the dispatch is retried.

        Writes upstream's ``Awaiting service availability. Queued for N seconds.`` (N is
        measured from when the task entered ``created``, in seconds) and releases the
        delivery lease so the retry can deliver. With ``requeue_after`` the task is put
        back into its API's durable delivery queue, due that many seconds from now.

        Returns:
            How many deliveries of this dispatch found the backend busy or down (0 when
            the task moved on meanwhile).
        """
        delay = "" if requeue_after is None else repr(float(requeue_after))
        reply = self._eval("busy", self.tag(task_id), task_id, endpoint, kind, detail, delay)
        return int(_s(reply[2])) if _s(reply[0]) == "ok" else 0

    def fail(
        self, task_id: str, text: str, *, endpoint: str = "", only_if_created: bool = True
    ) -> bytes | None:
        """Mark a task failed by the platform (dispatch gave up); returns the record.

        Guarded: a task that already moved on (running, completed, another endpoint) is
        left alone, so a late dead-letter cannot fail a task that in fact ran.

        Returns:
            The failed record, or ``None`` when the task was left alone.
        """
        reply = self._eval(
            "fail", self.tag(task_id), task_id, endpoint, text, "1" if only_if_created else "0"
        )
        return reply[1] if _s(reply[0]) == "ok" else None

    def publish_failed(self, task_id: str, endpoint: str) -> tuple[bool, bytes | None]:
        """The transport refused ``task_id``'s dispatch: publish it again later, or fail it.

        The dispatch goes into the retry queue (:meth:`due_retries` hands it out again
        5 s later, doubling up to 60 s) while the task has waited less than its queue
        timeout; after that it fails with upstream's ``Failed - unable to send to
        backend service.``.

        Returns:
            Whether the task failed now, and its record as it now stands (awaiting the
            retry, or failed), or ``None`` when the task moved on meanwhile.
        """
        reply = self._eval("repub", self.tag(task_id), task_id, endpoint, PUBLISH_FAILED_TEXT)
        outcome = _s(reply[0])
        return outcome == "failed", reply[1] if outcome in ("retry", "failed") else None

    # -- durable delivery queues -------------------------------------------------------

    def enqueue(self, task_id: str, delay: float = 0.0) -> str | None:
        """Put a task's current dispatch into its API's durable delivery queue.

        Returns:
            The API id whose queue now holds it ('' for an unrouted path), or ``None``
            when the task is no longer waiting for delivery.
        """
        reply = self._eval("enqueue", self.tag(task_id), task_id, repr(float(delay)))
        return _s(reply[1]) if _s(reply[0]) == "ok" else None

    def take(self, api: str, limit: int, lease_seconds: float) -> list[Queued]:
        """Lease up to ``limit`` due dispatches of one API's queue (every shard).

        A taken entry stays in the queue, due again when the lease ends: a host killed
        mid-delivery leaves it there for the next one. :meth:`delivered` removes it.
        """
        calls: list[_Call] = [("take", t, (api, limit, lease_seconds), None) for t in self.tags]
        out: list[Queued] = []
        for reply in self._eval_many(calls):
            if isinstance(reply, Exception):
                raise reply
            for i in range(0, len(reply), 4):
                item = Dispatch(_s(reply[i]), _s(reply[i + 1]), _s(reply[i + 2]))
                out.append(Queued(item, api, int(_s(reply[i + 3]) or 0)))
        return out[: max(limit, 0)] if len(self.tags) > 1 else out

    def delivered(self, task_id: str, api: str) -> None:
        """Remove a settled dispatch from its API's delivery queue."""
        self._eval("dqdone", self.tag(task_id), task_id, api)

    def next_due(self, api: str) -> float | None:
        """Seconds until the next entry of an API's queue is due (``None``: empty)."""
        waits = []
        for reply in self._eval_many([("dqnext", t, (api,), None) for t in self.tags]):
            if isinstance(reply, Exception):
                raise reply
            wait = float(_s(reply))
            if wait >= 0:
                waits.append(wait)
        return min(waits) if waits else None

    def backlog(self, apis: Sequence[str]) -> dict[str, int]:
        """Entries per API delivery queue (queued, parked or in flight), all shards."""
        names = [(api, keys.delivery_queue(api, t)) for api in apis for t in self.tags]
        pipe = self.redis.pipeline(transaction=False)
        for _, name in names:
            pipe.zcard(name)
        out = dict.fromkeys(apis, 0)
        for (api, _), n in zip(names, pipe.execute(), strict=True):
            out[api] += int(n)
        return out

    # -- timers ----------------------------------------------------------------------

    def sweep(self, limit: int = 500) -> list[tuple[str, str]]:
        """Retry or fail tasks past their queue or run timeout; returns (id, action)."""
        out: list[tuple[str, str]] = []
        for flat in self._eval_many([("sweep", t, (limit,), None) for t in self.tags]):
            if isinstance(flat, Exception):
                raise flat
            out += [(_s(flat[i]), _s(flat[i + 1])) for i in range(0, len(flat), 2)]
        return out

    def due_retries(self, limit: int = 500) -> list[Dispatch]:
        """Claim timed-out tasks whose backoff has passed; the caller dispatches them."""
        out: list[Dispatch] = []
        for flat in self._eval_many([("due", t, (limit,), None) for t in self.tags]):
            if isinstance(flat, Exception):
                raise flat
            out += [
                Dispatch(_s(flat[i]), _s(flat[i + 1]), _s(flat[i + 2]))
                for i in range(0, len(flat), 3)
            ]
        return out

    def known_paths(self) -> list[str]:
        """Every routed EndpointPath the runtime has seen (sorted)."""
        found: set[str] = set()
        for t in self.tags:
            found.update(_s(p) for p in self.redis.smembers(keys.paths(t)))
        return sorted(found)

    def trim_finished(self) -> int:
        """Drop completed/failed set members older than their path's task TTL.

        The task keys expire on their own; this keeps the upstream ``_completed`` and
        ``_failed`` sorted sets from growing forever (upstream bug 1). Only routed paths
        enter ``ai4ec:paths``; a path whose API left the routing table is dropped here.
        """
        now = self.redis.time()
        cutoff_base = float(now[0]) + float(now[1]) / 1e6
        pipe = self.redis.pipeline(transaction=False)
        counted = 0
        for t in self.tags:
            for path in sorted(_s(p) for p in self.redis.smembers(keys.paths(t))):
                if self.routing.resolve(path) is None:
                    pipe.srem(keys.paths(t), path)  # the routing table dropped its API
                    continue
                cutoff = cutoff_base - self.routing.ttl_for_path(path)
                for status in ("completed", "failed"):
                    pipe.zremrangebyscore(keys.status_set(path, status, t), "-inf", cutoff)
                    counted += 1
        results = pipe.execute()
        return sum(int(n) for n in results[-counted:]) if counted else 0

    def queue_sizes(self, statuses: Sequence[str]) -> dict[str, int]:
        """Sizes of the upstream status sets and of each API's pending set.

        Keys of the result are the metric names: ``<EndpointPath>_<status>`` (upstream's
        names) and ``ai4ec:pending:<apiId>``; on a cluster each sums its shards.
        """
        names = [keys.status_set(p, s) for p in self.known_paths() for s in statuses]
        names += [keys.pending(api) for api in sorted(self.routing.apis)]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            for t in self.tags:
                pipe.zcard(t + name)
        counts = [int(n) for n in pipe.execute()]
        width = len(self.tags)
        return {name: sum(counts[i * width : (i + 1) * width]) for i, name in enumerate(names)}

    # -- request reporter ------------------------------------------------------------

    def current_processing_add(self, cluster: str, api_path: str, delta: int) -> int:
        """Add ``delta`` to the in-flight counter of (cluster, path); never below 0."""
        return drive(self.current_processing_add_io(cluster, api_path, delta))

    def current_processing_add_io(self, cluster: str, api_path: str, delta: int) -> Steps[int]:
        """:meth:`current_processing_add` as steps."""
        key = keys.current_requests(cluster, api_path)
        expire = CURRENT_REQUESTS_EXPIRE
        return int((yield from self._eval_io("current", "", key, delta, expire, key=key)))

    def current_processing_get(self, cluster: str, api_path: str) -> int | None:
        """The in-flight counter, or ``None`` when nothing was ever reported."""
        return drive(self.current_processing_get_io(cluster, api_path))

    def current_processing_get_io(self, cluster: str, api_path: str) -> Steps[int | None]:
        """:meth:`current_processing_get` as steps."""
        key = keys.current_requests(cluster, api_path)
        value = _value((yield Command(self, _pack([b"GET", key.encode()]), self._node(key))))
        return None if value is None else int(value)


def _value(reply: Any) -> bytes | None:
    """A ``GET`` reply: the bytes, ``None`` for no key; an error reply is raised."""
    if isinstance(reply, redis.exceptions.ResponseError):
        raise reply
    return reply if isinstance(reply, bytes) else None
