"""The health probe both hosts answer: ``GET /api/health`` on Azure, ``/health`` locally.

One implementation so that App Service's health check (``siteConfig.healthCheckPath``)
and ``ai4ec functions serve`` agree on what "healthy" means: the task store answers a
PING. The answer names no host, port or key (issue #13): the probe is anonymous, so
anyone may call it, and a 503 must not map the platform's insides.

The PING goes through a client of its own that fails fast (no retries, 2 s timeouts):
the task store's client retries for seconds to ride out a failover, which would make
a probe hang exactly when it should answer 503.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from .handlers import Response

log = logging.getLogger("ai4ec_runtime.health")

#: Route of the Azure function (``/api/health``); App Service probes this path.
HEALTH_ROUTE = "health"

#: Body of a healthy answer.
HEALTHY = {"status": "ok"}


def store_pool(client: Any) -> redis.ConnectionPool:
    """The connection pool of ``client``, or of a Redis Cluster's default node.

    Raises:
        RuntimeError: a cluster client that has no node yet (cannot happen after init).
    """
    if isinstance(client, redis.cluster.RedisCluster):
        node = client.get_default_node()  # type: ignore[no-untyped-call]
        if node is None or node.redis_connection is None:  # pragma: no cover - after init
            raise RuntimeError("the Redis Cluster client has no node to talk to")
        pool: redis.ConnectionPool = node.redis_connection.connection_pool
        return pool
    plain: redis.ConnectionPool = client.connection_pool
    return plain


def probe_client(client: Any) -> redis.Redis:
    """A client that fails fast (no retries, 2 s timeouts) on the same Redis as ``client``.

    On a Redis Cluster it talks to the node the cluster client starts from: the probe
    says whether the task store answers at all, not whether every shard does.
    """
    pool = store_pool(client)
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(socket_timeout=2.0, socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0))
    kwargs.pop("retry_on_error", None)
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=4, **kwargs
        )
    )


def check_health(probe: redis.Redis | None) -> Response:
    """200 ``{"status":"ok"}`` when the task store answers a PING, else a generic 503.

    ``probe`` is ``None`` when the runtime could not even be configured (no Redis URL):
    that is unhealthy too, and the log line (not the answer) says why.
    """
    if probe is None:
        return Response.unavailable()
    try:
        probe.ping()
    except redis.exceptions.RedisError as exc:
        # The exception's text may carry host:port; only its type is logged.
        log.warning("health: task store unavailable (%s)", type(exc).__name__)
        return Response.unavailable()
    return Response.json(200, HEALTHY)
