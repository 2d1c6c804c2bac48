"""Fixtures for the task-manager runtime tests: a real redis-server, never a fake.

A session-scoped ``redis-server`` runs on a free port without persistence; each test
gets a flushed database. Tests that need durability start their own AOF server.
Helpers live in rt_support.py.
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

from rt_support import ROUTING, RUNTIMES, RedisServer, make_runtime  # noqa: E402

from ai4ec_runtime.handlers import Runtime  # noqa: E402


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
