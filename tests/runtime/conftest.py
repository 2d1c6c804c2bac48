"""Fixtures for the task-manager runtime tests: a real redis-server, never a fake.

A session-scoped ``redis-server`` runs on a free port without persistence; each test
gets a flushed database. Tests that need durability start their own AOF server.
Helpers live in rt_support.py.

``redis_cluster`` is a real three-master Redis Cluster (rt_cluster.py), started once per
session when a test asks for it; ``store_client`` is parametrized over a single Redis
and that cluster, so the suites that use it run against both.

``both_paths`` runs a module's tests twice: with its ``handle`` as imported (blocking
I/O, as the Functions app and the host's thread pool run it) and with ``handle``
replaced by :class:`~rt_support.EventLoopHandle` (the steps on an event loop, as the
local host runs the Redis-only routes). A module opts in with
``pytestmark = pytest.mark.usefixtures("both_paths")``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rt_cluster import RedisClusterProcs  # noqa: E402
from rt_support import ROUTING, RUNTIMES, EventLoopHandle, RedisServer, make_runtime  # noqa: E402

from ai4ec_runtime.handlers import Runtime  # noqa: E402
from ai4ec_runtime.store import connect_redis  # noqa: E402


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def routing_doc() -> dict[str, Any]:
    return copy.deepcopy(ROUTING)


@pytest.fixture(autouse=True)
def _close_runtimes() -> Iterator[None]:
    yield
    while RUNTIMES:
        RUNTIMES.pop().close()


@pytest.fixture
def runtime(r: redis.Redis, routing_doc: dict[str, Any]) -> Runtime:
    return make_runtime(r, routing_doc)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    cluster = RedisClusterProcs(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def store_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A flushed task-store client: ``redis.Redis`` or ``RedisCluster`` (one per mode)."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = connect_redis(server.url)
        client.flushdb()
    else:
        cluster: RedisClusterProcs = request.getfixturevalue("redis_cluster")
        cluster.flush()
        client = connect_redis(cluster.url, "cluster")
    yield client
    client.close()


@pytest.fixture
def any_runtime(store_client: Any, routing_doc: dict[str, Any]) -> Runtime:
    """A runtime (recording dispatcher) on ``store_client``: single Redis or cluster."""
    return make_runtime(store_client, routing_doc)


@pytest.fixture(params=["threads", "event-loop"])
def both_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The module's ``handle``: blocking, or on an event loop (see the module docstring)."""
    if request.param == "threads":
        yield
        return
    assert hasattr(request.module, "handle"), "both_paths needs a module that imports handle"
    on_loop = EventLoopHandle()
    monkeypatch.setattr(request.module, "handle", on_loop)
    try:
        yield
    finally:
        on_loop.close()
