"""Every Redis key the runtime reads or writes, in one place.

The first group is the upstream layout, kept byte-for-byte so existing tooling (the
upstream ``TaskQueueLogger``, dashboards, ad-hoc ``redis-cli`` scripts) still reads it.
The ``ai4ec:`` group is ours; see docs/contracts.md for who reads which key.

The Lua scripts in :mod:`ai4ec_runtime.scripts` build the same names server-side; the
constants here are passed to them so the two can never drift apart.

On a Redis Cluster every key of one task, and every index a script updates together
with it, must hash to one slot. Each task therefore belongs to a *shard* (derived from
its TaskId) and every such key starts with the shard's hash tag ``{ai4ec:<n>}``
(:func:`shard_tag`); the indexes (status sets, pending sets, deadlines, retry and
delivery queues) exist once per shard and readers sum them. On a single Redis the tag
is empty, so the key names stay upstream's byte for byte.
"""

from __future__ import annotations

import hashlib

#: Suffix of the key holding the last body published for a task (upstream ``_ORIG``).
ORIG_SUFFIX = "_ORIG"
#: Prefix of ai4ec's per-task metadata hash (state machine fields, retry policy).
META_PREFIX = "ai4ec:task:"
#: Sorted set per API of created + running TaskIds: the KEDA ``redis`` trigger's list.
PENDING_PREFIX = "ai4ec:pending:"
#: Set of every EndpointPath seen, so metrics never SCAN the keyspace (upstream bug 10).
PATHS = "ai4ec:paths"
#: Sorted set TaskId -> unix deadline of the current state (queue or run timeout).
DEADLINES = "ai4ec:deadlines"
#: Sorted set TaskId -> unix time when a timed-out task is dispatched again.
RETRY = "ai4ec:retry"
#: Prefix of idempotency keys (value ``<TaskId>|<request fingerprint>``).
IDEMPOTENCY_PREFIX = "ai4ec:idem:"
#: Prefix of the durable per-API delivery queues (sorted set TaskId -> due time).
DELIVERY_QUEUE_PREFIX = "ai4ec:dq:"
#: Prefix of the recorded outcome of one script call (replay protection).
OP_PREFIX = "ai4ec:op:"
#: Key declared to route a script call to the node of a shard (never written).
SLOT_KEY = "ai4ec:slot"
#: Upstream request reporter counter prefix; the full key is ``<prefix><cluster><path>``.
CURRENT_REQUESTS_PREFIX = "CURRENT_REQUESTS/"


def shard_of(task_id: str, shards: int) -> int:
    """The shard of a task: its TaskId's first 32 bits modulo ``shards``.

    TaskIds are random UUID4s, so tasks spread evenly; every process computes the same
    shard for the same id without asking Redis.
    """
    try:
        return int(task_id[:8], 16) % shards
    except ValueError:
        return 0


def shard_tag(shard: int) -> str:
    """Key prefix of one shard on a cluster: a hash tag, so its keys share one slot."""
    return f"{{ai4ec:{shard}}}"


def tag_for(task_id: str, shards: int) -> str:
    """Key prefix of a task: ``''`` on a single Redis (``shards == 0``), else its tag."""
    return shard_tag(shard_of(task_id, shards)) if shards else ""


def task(task_id: str, tag: str = "") -> str:
    """Key of the task JSON record (upstream: the bare TaskId)."""
    return tag + task_id


def orig(task_id: str, tag: str = "") -> str:
    """Key of the stored request body (upstream ``<TaskId>_ORIG``)."""
    return tag + task_id + ORIG_SUFFIX


def meta(task_id: str, tag: str = "") -> str:
    """Key of ai4ec's metadata hash for a task."""
    return tag + META_PREFIX + task_id


def status_set(endpoint_path: str, status: str, tag: str = "") -> str:
    """Upstream sorted set of TaskIds per backend path and ``BackendStatus``."""
    return f"{tag}{endpoint_path}_{status}"


def pending(api_id: str, tag: str = "") -> str:
    """KEDA's list key for one API: TaskIds that are created or running."""
    return tag + PENDING_PREFIX + api_id


def delivery_queue(api_id: str, tag: str = "") -> str:
    """The durable delivery queue of one API (``_`` for tasks of unrouted paths)."""
    return tag + DELIVERY_QUEUE_PREFIX + (api_id or "_")


def paths(tag: str = "") -> str:
    """Set of the routed EndpointPaths that have tasks (one per shard on a cluster)."""
    return tag + PATHS


def deadlines(tag: str = "") -> str:
    """Sorted set TaskId -> deadline of the current state."""
    return tag + DEADLINES


def retry(tag: str = "") -> str:
    """Sorted set TaskId -> time a timed-out task is dispatched again."""
    return tag + RETRY


def idempotency(key: str, endpoint_path: str, caller: str) -> str:
    """Key remembering which task an ``Idempotency-Key`` created.

    The client's key is scoped by caller and backend path and hashed, so two callers
    using the same key never see each other's task, and a long or odd key cannot
    produce an odd Redis key name.
    """
    digest = hashlib.sha256(f"{caller}\n{endpoint_path}\n{key}".encode()).hexdigest()
    return IDEMPOTENCY_PREFIX + digest


def current_requests(cluster: str, api_path: str) -> str:
    """Request reporter counter for one cluster and API path.

    Upstream's ``CurrentProcessingUpsert`` wrote ``CURRENT_REQUESTS/<cluster><path>``
    while ``CurrentProcessingGet`` read another key; both now use this one, and the path
    is normalised to start with ``/`` so either caller convention finds it.
    """
    return CURRENT_REQUESTS_PREFIX + cluster + "/" + api_path.lstrip("/")
