"""routing.json (written by ``ai4ec build``) -> a :class:`Routing` lookup table.

The runtime uses it for three things: which API a backend path belongs to (for the
``ai4ec:pending:<apiId>`` KEDA key, the task TTL, the run timeout and the retry
policy), and which step follows which in a declarative pipeline. The format is pinned in
docs/contracts.md; unknown keys are ignored so the compiler can add fields first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .models import ConfigurationError

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a task is dispatched again after a timeout, and how long to wait.

    Attributes:
        max_attempts: total dispatches allowed (1 = no retry).
        backoff_seconds: wait before the first retry; doubles for each further one.
    """

    max_attempts: int = 1
    backoff_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One API of routing.json.

    Attributes:
        api_id: ``<name>-<version>``.
        task_ttl_seconds: how long a finished task and its body are kept.
        timeout_seconds: how long a task may stay ``running`` (0 = no limit).
        queue_timeout_seconds: how long a task may stay ``created`` (undelivered).
        retry: what happens when either timeout passes.
        paths: backend paths (``EndpointPath``) served by the API.
        cluster: the cluster that runs the API ('' when routing.json does not say);
            a pipeline step is posted to that cluster's ingress
            (``AI4EC_BACKEND_BASE_URLS``), so steps on different clusters each reach
            their own.
    """

    api_id: str
    task_ttl_seconds: int
    timeout_seconds: int
    queue_timeout_seconds: int
    retry: RetryPolicy
    paths: tuple[str, ...]
    cluster: str = ""


@dataclass(frozen=True, slots=True)
class PipelineStep:
    """One step: which API, at which backend path."""

    api_id: str
    path: str


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A declarative pipeline: a task walks the steps in order under one TaskId."""

    pipeline_id: str
    task_ttl_seconds: int
    steps: tuple[PipelineStep, ...]


@dataclass(frozen=True, slots=True)
class Defaults:
    """Values used for paths routing.json does not know (upstream-style free paths).

    ``queue_timeout_seconds`` matches the compiler's ``tasks.queueTimeout`` default and
    ``AI4EC_DEFAULT_QUEUE_TIMEOUT_SECONDS``: 15 minutes leaves a GPU node time to start,
    and a task a crashed host left undelivered is retried or failed the same hour, not
    the next day.
    """

    task_ttl_seconds: int = 7 * 24 * 3600
    timeout_seconds: int = 3600
    queue_timeout_seconds: int = 15 * 60


def _pos_int(doc: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"routing.json: {where}.{key} must be a non-negative integer")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise ConfigurationError(f"routing.json: {where}.{key} must be a string")
    return value


class Routing:
    """Lookup table built from a routing.json document.

    Args:
        doc: the parsed routing.json (``{"schemaVersion": 1, "apis": ..., "pipelines": ...}``).
        defaults: TTL/timeouts for paths that belong to no API.

    Raises:
        ConfigurationError: the document does not follow docs/contracts.md.
    """

    def __init__(self, doc: Mapping[str, Any] | None = None, defaults: Defaults | None = None):
        doc = doc or {"schemaVersion": SCHEMA_VERSION}
        self.defaults = defaults or Defaults()
        version = doc.get("schemaVersion", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigurationError(
                f"routing.json schemaVersion {version!r} is not supported (expected 1)"
            )
        self.apis: dict[str, ApiRoute] = {}
        self._by_path: dict[str, ApiRoute] = {}
        for api_id, api in sorted((doc.get("apis") or {}).items()):
            where = f"apis.{api_id}"
            if not isinstance(api, Mapping):
                raise ConfigurationError(f"routing.json: {where} must be an object")
            retry_doc = api.get("retry") or {}
            retry = RetryPolicy(
                max_attempts=max(1, _pos_int(retry_doc, "maxAttempts", 1, where + ".retry")),
                backoff_seconds=float(retry_doc.get("backoffSeconds", 30)),
            )
            paths = tuple(str(p) for p in api.get("paths") or ())
            route = ApiRoute(
                api_id=api_id,
                task_ttl_seconds=_pos_int(
                    api, "taskTtlSeconds", self.defaults.task_ttl_seconds, where
                ),
                timeout_seconds=_pos_int(
                    api, "timeoutSeconds", self.defaults.timeout_seconds, where
                ),
                queue_timeout_seconds=_pos_int(
                    api, "queueTimeoutSeconds", self.defaults.queue_timeout_seconds, where
                ),
                retry=retry,
                paths=paths,
                cluster=_str(api, "cluster", where),
            )
            self.apis[api_id] = route
            for path in paths:
                if path in self._by_path:
                    other = self._by_path[path].api_id
                    raise ConfigurationError(
                        f"routing.json: path {path} belongs to both {other} and {api_id}"
                    )
                self._by_path[path] = route
        self.pipelines: dict[str, Pipeline] = {}
        for pid, pdoc in sorted((doc.get("pipelines") or {}).items()):
            where = f"pipelines.{pid}"
            steps = []
            for i, sdoc in enumerate(pdoc.get("steps") or ()):
                api_id, path = str(sdoc.get("api", "")), str(sdoc.get("path", ""))
                if api_id not in self.apis:
                    raise ConfigurationError(
                        f"routing.json: {where}.steps[{i}] names unknown api {api_id!r}"
                    )
                steps.append(PipelineStep(api_id=api_id, path=path))
            if not steps:
                raise ConfigurationError(f"routing.json: {where} has no steps")
            self.pipelines[pid] = Pipeline(
                pipeline_id=pid,
                task_ttl_seconds=_pos_int(
                    pdoc, "taskTtlSeconds", self.defaults.task_ttl_seconds, where
                ),
                steps=tuple(steps),
            )
        # Longest first, so prefix matching picks the most specific API.
        self._prefixes = sorted(self._by_path, key=len, reverse=True)

    @classmethod
    def load(cls, path: Path, defaults: Defaults | None = None) -> Routing:
        """Read routing.json from disk; a missing file means "no APIs known".

        Raises:
            ConfigurationError: the file exists but is not valid routing JSON.
        """
        if not path.is_file():
            return cls(None, defaults)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigurationError(f"{path} is not valid JSON: {exc}") from None
        return cls(doc, defaults)

    def resolve(self, path: str) -> ApiRoute | None:
        """The API serving a backend path: exact match, else longest segment prefix."""
        route = self._by_path.get(path)
        if route is not None:
            return route
        for prefix in self._prefixes:
            if path.startswith(prefix.rstrip("/") + "/"):
                return self._by_path[prefix]
        return None

    def ttl_for_path(self, path: str) -> int:
        """Longest TTL any API or pipeline gives tasks on this path (for set trimming)."""
        ttls = [self.defaults.task_ttl_seconds]
        route = self.resolve(path)
        if route is not None:
            ttls = [route.task_ttl_seconds]
        ttls += [
            p.task_ttl_seconds
            for p in self.pipelines.values()
            if any(step.path == path for step in p.steps)
        ]
        return max(ttls)

    def base_url(
        self, api_id: str, by_cluster: Mapping[str, str], fallback: str | None
    ) -> str | None:
        """Scheme and host of the ingress that serves ``api_id``, or ``fallback``.

        The API's cluster (routing.json ``cluster``) looked up in ``by_cluster``
        (``AI4EC_BACKEND_BASE_URLS``) wins; without an entry, ``fallback``
        (``AI4EC_BACKEND_BASE_URL``) applies, as it did when every API ran on one cluster.
        """
        route = self.apis.get(api_id)
        if route is not None and route.cluster:
            url = by_cluster.get(route.cluster)
            if url:
                return url
        return fallback


def step_url(current_endpoint: str, path: str, base_url: str | None) -> str:
    """Backend URL of a pipeline step.

    Uses ``base_url`` (the step's cluster ingress from ``AI4EC_BACKEND_BASE_URLS``, else
    ``AI4EC_BACKEND_BASE_URL``) when known, else the scheme and host of the task's
    current ``Endpoint`` (what upstream's ``AddPipelineTask`` did), so a pipeline works
    behind whatever ingress address APIM put into the first step's URL.
    """
    if base_url:
        return base_url.rstrip("/") + path
    parts = urlsplit(current_endpoint)
    return f"{parts.scheme}://{parts.netloc}{path}"
