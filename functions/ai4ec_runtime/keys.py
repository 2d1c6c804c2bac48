"""Every Redis key the runtime reads or writes, in one place.

The first group is the upstream layout, kept byte-for-byte so existing tooling (the
upstream ``TaskQueueLogger``, dashboards, ad-hoc ``redis-cli`` scripts) still reads it.
The ``ai4ec:`` group is ours; see docs/contracts.md for who reads which key.

The Lua scripts in :mod:`ai4ec_runtime.scripts` build the same names server-side; the
constants here are passed to them so the two can never drift apart.
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
#: Upstream request reporter counter prefix; the full key is ``<prefix><cluster><path>``.
CURRENT_REQUESTS_PREFIX = "CURRENT_REQUESTS/"


def task(task_id: str) -> str:
    """Key of the task JSON record (upstream: the bare TaskId)."""
    return task_id


def orig(task_id: str) -> str:
    """Key of the stored request body (upstream ``<TaskId>_ORIG``)."""
    return task_id + ORIG_SUFFIX


def meta(task_id: str) -> str:
    """Key of ai4ec's metadata hash for a task."""
    return META_PREFIX + task_id


def status_set(endpoint_path: str, status: str) -> str:
    """Upstream sorted set of TaskIds per backend path and ``BackendStatus``."""
    return f"{endpoint_path}_{status}"


def pending(api_id: str) -> str:
    """KEDA's list key for one API: TaskIds that are created or running."""
    return PENDING_PREFIX + api_id


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
