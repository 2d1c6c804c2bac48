"""Least-privilege access keys, one rule set for the local host and the Function App.

Azure's own function keys (``AuthLevel.FUNCTION``) open every function with any key, so
the runtime checks keys itself, in both places: ``ai4ec functions serve --keys`` on a
laptop, and on Azure the Function App (anonymous HTTP triggers) with the document of
the app setting ``AI4EC_ACCESS_KEYS``, a Key Vault reference to the secret ``ai4ec apply``
generates once (``compiler/apply/keys.py``). Each caller gets its own key and only the
functions and tasks it needs:

* ``apim``: API Management creates tasks and reads their status (any API);
* ``eventGrid``: Event Grid delivers to ``BackendWebhook`` and ``BackendDeadLetter``;
* ``apis[<apiId>]``: an API's containers read and update the tasks that are at their API
  now (a pipeline task: at its current step), and report requests in flight.

Keys are presented as Azure Functions takes them: the ``x-functions-key`` header or the
``code`` query parameter. With keys on, an ``Endpoint`` must belong to the routing table,
so a key cannot make the runtime POST anywhere else.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .handlers import Request, Response, Runtime, handle_io, redact
from .models import BadRequest
from .store import Steps, drive

#: Functions each kind of key may call.
ALLOWED: dict[str, frozenset[str]] = {
    "apim": frozenset({"CacheConnectorUpsert", "CacheConnectorGet"}),
    "eventGrid": frozenset({"BackendWebhook", "BackendDeadLetter"}),
    "api": frozenset(
        {
            "CacheConnectorUpsert",
            "CacheConnectorGet",
            "CurrentProcessingUpsert",
            "CurrentProcessingGet",
        }
    ),  # fmt: skip
}

__all__ = [
    "ALLOWED",
    "AccessKeys",
    "KeysFileError",
    "Principal",
    "authorized_handle",
    "redact",
    "unauthorized",
]


class KeysFileError(Exception):
    """The keys file is unreadable or malformed; the message names file and field."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who presented a key: ``kind`` is ``apim``, ``eventGrid`` or ``api``."""

    kind: str
    api_id: str | None = None


@dataclass(frozen=True, slots=True)
class AccessKeys:
    """The keys of one host.

    Attributes:
        apim: API Management's key.
        event_grid: Event Grid's key.
        apis: key of each API, by API id (``<name>-<version>`` as in routing.json).
    """

    apim: str
    event_grid: str
    apis: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def generate(cls, api_ids: Iterable[str]) -> AccessKeys:
        """Fresh random keys (256 bits each) for APIM, Event Grid and each API."""
        return cls(
            apim=secrets.token_urlsafe(32),
            event_grid=secrets.token_urlsafe(32),
            apis={api: secrets.token_urlsafe(32) for api in sorted(api_ids)},
        )

    @classmethod
    def load(cls, path: Path) -> AccessKeys:
        """Read ``{"apim": KEY, "eventGrid": KEY, "apis": {API: KEY}}``.

        Raises:
            KeysFileError: unreadable, not JSON, or a field missing or not a string.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeysFileError(f"{path}: cannot read: {exc.strerror}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> AccessKeys:
        """Parse the keys document; ``source`` names where it came from in errors.

        The Function App reads the same document as the local host, from the app setting
        ``AI4EC_ACCESS_KEYS`` (a Key Vault reference), so both enforce one rule set. The
        error never quotes the text: it holds secrets.

        Raises:
            KeysFileError: not JSON, or a field missing, short, not a string or reused.
        """
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise KeysFileError(
                f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno})"
                if isinstance(exc, json.JSONDecodeError)
                else f"{source}: not valid JSON"
            ) from None
        if not isinstance(doc, dict):
            raise KeysFileError(f"{source}: expected a JSON object")

        def key(value: Any, where: str) -> str:
            if not isinstance(value, str) or len(value) < 16:
                raise KeysFileError(f"{source}: {where} must be a string of 16 characters or more")
            return value

        apis = doc.get("apis", {})
        if not isinstance(apis, dict):
            raise KeysFileError(f"{source}: apis must be an object of API id -> key")
        keys = cls(
            apim=key(doc.get("apim"), "apim"),
            event_grid=key(doc.get("eventGrid"), "eventGrid"),
            apis={str(k): key(v, f"apis.{k}") for k, v in sorted(apis.items())},
        )
        every = [keys.apim, keys.event_grid, *keys.apis.values()]
        if len(set(every)) != len(every):
            raise KeysFileError(f"{source}: every key must be different")
        return keys

    def to_json(self) -> str:
        """The document :meth:`parse` reads (sorted keys, so output is deterministic)."""
        doc = {"apim": self.apim, "eventGrid": self.event_grid, "apis": dict(self.apis)}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    def dump(self, path: Path) -> None:
        """Write the keys as JSON, readable by the owner only."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    def who(self, presented: str | None) -> Principal | None:
        """The owner of ``presented``, compared in constant time; ``None`` if nobody."""
        if not presented:
            return None
        found: Principal | None = None
        candidates: list[tuple[str, str | None, str]] = [
            ("apim", None, self.apim),
            ("eventGrid", None, self.event_grid),
        ]
        candidates += [("api", api, k) for api, k in self.apis.items()]
        for kind, api, secret in candidates:
            if hmac.compare_digest(presented.encode(), secret.encode()):
                found = Principal(kind, api)
        return found


def presented_key(req: Request) -> str | None:
    """The key as Azure Functions takes it: ``x-functions-key`` header, else ``?code=``."""
    return req.header("x-functions-key") or req.params.get("code")


def _error(status: int, code: str, message: str) -> Response:
    return Response.json(status, {"error": code, "message": message})


def unauthorized() -> Response:
    """The 401 every caller without a known key gets, before any store access."""
    return _error(401, "unauthorized", "A function key is required (x-functions-key)")


def _api_of(rt: Runtime, endpoint: str) -> str | None:
    route = rt.routing.resolve(urlsplit(endpoint).path or "/")
    return route.api_id if route is not None else None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


def _on_its_ingress(rt: Runtime, api_id: str, endpoint: str) -> bool:
    """Whether ``endpoint`` points at the ingress that serves ``api_id``.

    Only when the runtime knows that ingress (``AI4EC_BACKEND_BASE_URLS`` or
    ``AI4EC_BACKEND_BASE_URL``, always set on Azure); without either (a bare local
    ``functions serve``) the routing table's path check is all there is.
    """
    s = rt.settings
    base = rt.routing.base_url(api_id, s.backend_base_urls, s.backend_base_url)
    if not base or ".invalid" in base:
        return True
    return _origin(endpoint) == _origin(base)


def _task_api(rt: Runtime, record: bytes) -> str | None:
    """The API a task is at now (a pipeline task: its current step's API)."""
    path = str(json.loads(record).get("EndpointPath") or "")
    route = rt.routing.resolve(path) if path else None
    return route.api_id if route is not None else None


def authorized_handle(
    rt: Runtime, principal: Principal | None, name: str, req: Request
) -> Response:
    """:func:`authorized_handle_io`, blocking."""
    return drive(authorized_handle_io(rt, principal, name, req))


def authorized_handle_io(
    rt: Runtime, principal: Principal | None, name: str, req: Request
) -> Steps[Response]:
    """:func:`~ai4ec_runtime.handlers.handle_io` behind the least-privilege rules.

    Answers 401 without a known key, 403 for a function or a task the key does not
    cover, 400 for an ``Endpoint`` outside the routing table, each before any store
    write or outbound request.
    """
    if principal is None:
        return unauthorized()
    if name not in ALLOWED[principal.kind]:
        return _error(403, "forbidden", f"This key may not call {name}")
    if name == "CacheConnectorUpsert":
        refusal = yield from _check_upsert(rt, principal, req)
        if refusal is not None:
            return refusal
    elif name == "CacheConnectorGet" and principal.kind == "api":
        task_id = req.param("taskId")
        record = (yield from rt.store.get_io(task_id)) if task_id else None
        if record is not None and _task_api(rt, record) != principal.api_id:
            return _error(403, "forbidden", "This key may not read tasks of another API")
    return (yield from handle_io(rt, name, req))


def _check_upsert(rt: Runtime, principal: Principal, req: Request) -> Steps[Response | None]:
    try:
        doc = json.loads(req.body or b"null")
    except (ValueError, RecursionError):
        return None  # the handler answers the 400
    if isinstance(doc, list):
        doc = doc[0] if doc else None
    if not isinstance(doc, dict):
        return None
    endpoint = doc.get("Endpoint")
    if isinstance(endpoint, str) and endpoint:
        try:
            api = _api_of(rt, endpoint)
        except ValueError:
            return None  # malformed URL: the handler answers the 400
        if api is None:
            err = BadRequest("Endpoint is not in the routing table", field="Endpoint")
            return Response.error(err)
        if not _on_its_ingress(rt, api, endpoint):
            # Dispatch POSTs to the Endpoint as given: a host of the caller's choosing
            # would make the task manager a request forwarder and a port scanner.
            err = BadRequest("Endpoint is not on the ingress of its API", field="Endpoint")
            return Response.error(err)
        if principal.kind == "api" and api != principal.api_id and not doc.get("TaskId"):
            return _error(403, "forbidden", "This key may not create tasks of another API")
    task_id = doc.get("TaskId")
    if task_id:
        if principal.kind != "api":
            return _error(403, "forbidden", "Only an API's key may update its tasks")
        record = yield from rt.store.get_io(str(task_id))
        if record is not None and _task_api(rt, record) != principal.api_id:
            return _error(403, "forbidden", "This key may not update tasks of another API")
    return None
