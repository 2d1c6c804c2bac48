"""Task vocabulary, request parsing and the runtime's error types.

Input is the upstream ``APITask`` JSON (PascalCase, object or one-element array, as the
R client sends arrays); output of parsing is an :class:`UpsertRequest` whose absent
fields stay ``None`` so the store can merge them server-side instead of overwriting.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class BackendStatus(StrEnum):
    """Machine state of a task; the exact upstream strings."""

    #: Accepted and waiting for (or in) dispatch to a backend.
    CREATED = "created"
    #: A backend reported progress.
    RUNNING = "running"
    #: Finished successfully; final.
    COMPLETED = "completed"
    #: Finished unsuccessfully; final.
    FAILED = "failed"


TERMINAL = frozenset({BackendStatus.COMPLETED, BackendStatus.FAILED})

#: Status text upstream wrote when publishing failed; kept so dashboards still match it.
PUBLISH_FAILED_TEXT = "Failed - unable to send to backend service."


class TaskError(Exception):
    """An error answered to the caller as a JSON body with an HTTP status.

    Attributes:
        status: HTTP status code of the answer.
        code: short stable machine-readable error code.
        extra: additional JSON fields (e.g. the current task state).
    """

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_json(self) -> bytes:
        """The error body: ``{"error": code, "message": ..., **extra}``."""
        doc = {"error": self.code, "message": self.message, **self.extra}
        return json.dumps(doc, separators=(",", ":")).encode()


class BadRequest(TaskError):
    """The request body or parameters are malformed (400)."""

    status = 400
    code = "bad_request"


class TaskNotFound(TaskError):
    """An update named a TaskId the store does not hold (404)."""

    status = 404
    code = "not_found"


class IllegalTransition(TaskError):
    """The requested ``BackendStatus`` change is not allowed from the current one (409)."""

    status = 409
    code = "illegal_transition"


class IdempotencyMismatch(TaskError):
    """An ``Idempotency-Key`` was reused with a different request (422)."""

    status = 422
    code = "idempotency_key_reused"


class ConfigurationError(TaskError):
    """A required app setting is missing or invalid (500, at first use)."""

    status = 500
    code = "configuration_error"


def utc_now_iso(now: float | None = None) -> str:
    """ISO-8601 UTC timestamp with milliseconds, e.g. ``2026-11-25T10:44:00.123Z``.

    Upstream used .NET's culture-dependent ``DateTime.ToString()``; a fixed ISO format
    sorts as text and parses everywhere.
    """
    dt = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def new_task_id() -> str:
    """A fresh TaskId: a random (version 4) UUID in upstream's lower-case GUID form.

    Why uuid4: it carries 122 bits from ``os.urandom`` (the OS CSPRNG), so ids cannot be
    guessed or enumerated. That matters because a TaskId is a bearer capability: anyone
    holding it can read the task, whose ``Status`` often carries a SAS URL to the result.
    Time-based or sequential ids would leak neighbours' results.
    """
    return str(uuid.uuid4())


def endpoint_path(endpoint: str) -> str:
    """The path of a backend URL, as upstream's ``new Uri(Endpoint).AbsolutePath``.

    Raises:
        BadRequest: the endpoint is not an absolute http(s) URL.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(f"Endpoint must be an absolute http(s) URL, got {endpoint!r}")
    return parts.path or "/"


def _opt_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    # Upstream clients send Body as a string; a structured body is kept as compact JSON.
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class UpsertRequest:
    """One ``CacheConnectorUpsert`` call; ``None`` means "field absent, keep stored".

    Attributes:
        task_id: empty/absent creates a task.
        status: free-text ``Status``.
        backend_status: requested machine state.
        endpoint: backend URL (``Endpoint``).
        body: request payload to publish (``Body``).
        publish: ``PublishToGrid``.
        pipeline: ai4ec extension: pipeline id from routing.json (creation only).
    """

    task_id: str | None
    status: str | None
    backend_status: BackendStatus | None
    endpoint: str | None
    body: str | None
    publish: bool | None
    pipeline: str | None

    @classmethod
    def parse(cls, raw: bytes) -> UpsertRequest:
        """Parse an upsert body: a JSON object or an array whose first element is used.

        Raises:
            BadRequest: empty body, invalid JSON, wrong shape or an unknown status.
        """
        if not raw or not raw.strip():
            raise BadRequest("Request body is empty; expected a task JSON object")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"Request body is not valid JSON: {exc}") from None
        if isinstance(doc, list):
            if not doc:
                raise BadRequest("Request body is an empty array")
            doc = doc[0]
        if not isinstance(doc, dict):
            raise BadRequest("Request body must be a JSON object or an array of one")
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> UpsertRequest:
        """Build from an already-decoded task object (see :meth:`parse`)."""
        bs_raw = doc.get("BackendStatus")
        backend_status: BackendStatus | None = None
        if bs_raw not in (None, ""):
            try:
                backend_status = BackendStatus(str(bs_raw).lower())
            except ValueError:
                allowed = ", ".join(s.value for s in BackendStatus)
                raise BadRequest(
                    f"BackendStatus {bs_raw!r} is not one of: {allowed}", field="BackendStatus"
                ) from None
        publish_raw = doc.get("PublishToGrid")
        publish: bool | None
        if publish_raw is None:
            publish = None
        elif isinstance(publish_raw, bool):
            publish = publish_raw
        elif isinstance(publish_raw, str) and publish_raw.lower() in ("true", "false"):
            publish = publish_raw.lower() == "true"
        else:
            raise BadRequest("PublishToGrid must be a boolean", field="PublishToGrid")
        endpoint = _opt_str(doc, "Endpoint") or None
        if endpoint is not None:
            endpoint_path(endpoint)  # validate early: upstream crashed later on a bad Uri
        return cls(
            task_id=_opt_str(doc, "TaskId") or None,
            status=_opt_str(doc, "Status"),
            backend_status=backend_status,
            endpoint=endpoint,
            body=_opt_str(doc, "Body"),
            publish=publish,
            pipeline=_opt_str(doc, "Pipeline") or None,
        )


def json_output(text: str | None) -> bool:
    """Whether a ``Status`` text is a JSON object or array (a pipeline step's output).

    Only objects and arrays count: a bare number or word is a progress message, not a
    document to hand to the next step.
    """
    if not text:
        return False
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return False
    try:
        return isinstance(json.loads(stripped), dict | list)
    except ValueError:
        return False
