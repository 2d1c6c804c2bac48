"""Publishing to Event Grid with the Function App's managed identity (checkov CKV_AZURE_192).

No App Service or Event Grid exists offline, so two local stand-ins play them, each as
strict as the real service on the points that matter:

* the identity endpoint (App Service's ``IDENTITY_ENDPOINT``) answers a token only for
  the right ``X-IDENTITY-HEADER``, ``api-version=2019-08-01`` and a ``resource``;
* the topic is HTTPS (azure-core refuses to send a bearer token over plain HTTP) and,
  like a topic with ``disableLocalAuth: true``, refuses an ``aeg-sas-key`` and accepts
  only the bearer token the endpoint issued.

The real azure-eventgrid client publishes through the runtime's real credential.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from rt_support import DETECT, make_cert, pem_of

from ai4ec_runtime.dispatch import DispatchError, EventGridDispatcher
from ai4ec_runtime.identity import AppServiceIdentityCredential
from ai4ec_runtime.settings import ManagedIdentity, Settings
from ai4ec_runtime.store import Dispatch

HEADER = "rotating-identity-header-value"
EVENTGRID = "https://eventgrid.azure.net"


@dataclass
class Stand:
    """What the two stand-ins saw."""

    identity: ManagedIdentity
    topic_uri: str
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    publishes: list[dict[str, Any]] = field(default_factory=list)
    lifetime: int = 3600
    issued: int = 0


def _serve(server: ThreadingHTTPServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


@pytest.fixture
def stand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stand]:
    ca = make_cert("test root", ca=True)
    server_key, server_cert = make_cert("127.0.0.1", ca)
    (tmp_path / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_text(pem_of(server_key, server_cert))
    # The SDK's requests session trusts the test root as it trusts a public CA on Azure.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    state: dict[str, Stand] = {}

    class Identity(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            s = state["stand"]
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            s.token_requests.append(query)
            ok = (
                self.headers.get("X-IDENTITY-HEADER") == HEADER
                and query.get("api-version") == "2019-08-01"
                and query.get("resource") == EVENTGRID
            )
            if ok:
                s.issued += 1
                body = {
                    "access_token": f"token-{s.issued}",
                    "expires_on": str(int(time.time()) + s.lifetime),
                    "resource": EVENTGRID,
                    "token_type": "Bearer",
                }
                code = 200
            else:
                code, body = 400, {"error": "invalid_request"}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Topic(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            s = state["stand"]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization") or ""
            s.publishes.append({"auth": auth, "key": self.headers.get("aeg-sas-key"), "body": body})
            valid = {f"Bearer token-{n}" for n in range(1, s.issued + 1)}
            # disableLocalAuth: a key is refused even when it would be right.
            code = 200 if auth in valid and not self.headers.get("aeg-sas-key") else 401
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    identity = ThreadingHTTPServer(("127.0.0.1", 0), Identity)
    topic = ThreadingHTTPServer(("127.0.0.1", 0), Topic)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem")
    topic.socket = ctx.wrap_socket(topic.socket, server_side=True)
    for server in (identity, topic):
        _serve(server)
    state["stand"] = Stand(
        identity=ManagedIdentity(
            f"http://127.0.0.1:{identity.server_address[1]}/msi/token", HEADER
        ),
        topic_uri=f"https://127.0.0.1:{topic.server_address[1]}/api/events",
    )
    yield state["stand"]
    for server in (identity, topic):
        server.shutdown()
        server.server_close()


def _dispatch(task_id: str) -> Dispatch:
    return Dispatch(task_id=task_id, endpoint=DETECT, body='{"x": 1}')


def test_publishes_with_the_identity_token_and_reuses_it(stand: Stand) -> None:
    dispatcher = EventGridDispatcher(stand.topic_uri, None, 1024, identity=stand.identity)
    try:
        dispatcher.dispatch(_dispatch("t-1"))
        dispatcher.dispatch(_dispatch("t-2"))
    finally:
        dispatcher.close()
    assert [p["auth"] for p in stand.publishes] == ["Bearer token-1"] * 2
    assert all(p["key"] is None for p in stand.publishes)
    assert [e["id"] for p in stand.publishes for e in p["body"]] == ["t-1", "t-2"]
    assert len(stand.token_requests) == 1, "a valid token is cached, not asked for again"


def test_a_token_close_to_expiry_is_renewed(stand: Stand) -> None:
    stand.lifetime = 120  # inside the five-minute renewal margin
    credential = AppServiceIdentityCredential(stand.identity)
    try:
        first = credential.get_token(EVENTGRID + "/.default")
        second = credential.get_token(EVENTGRID + "/.default")
    finally:
        credential.close()
    assert (first.token, second.token) == ("token-1", "token-2")


def test_a_refused_identity_is_a_dispatch_error_without_the_header(stand: Stand) -> None:
    wrong = ManagedIdentity(stand.identity.endpoint, "stale-header")
    dispatcher = EventGridDispatcher(stand.topic_uri, None, 1024, identity=wrong)
    try:
        with pytest.raises(DispatchError) as err:
            dispatcher.dispatch(_dispatch("t-1"))
    finally:
        dispatcher.close()
    assert "managed identity endpoint answered 400" in str(err.value)
    assert "stale-header" not in str(err.value) and HEADER not in str(err.value)
    assert stand.publishes == [], "nothing is sent without a token"


def test_the_topic_refuses_a_key(stand: Stand) -> None:
    """The stand-in topic, like disableLocalAuth, refuses keys: the runtime must not use one."""
    dispatcher = EventGridDispatcher(stand.topic_uri, "a-topic-key", 1024)
    try:
        with pytest.raises(DispatchError):
            dispatcher.dispatch(_dispatch("t-1"))
    finally:
        dispatcher.close()
    assert stand.publishes and stand.publishes[0]["key"] == "a-topic-key"


def test_settings_read_the_identity_and_never_show_the_header() -> None:
    env = {"IDENTITY_ENDPOINT": "http://127.0.0.1:41000/msi/token", "IDENTITY_HEADER": HEADER}
    settings = Settings.from_env(env=env, bundled=None)
    assert settings.managed_identity == ManagedIdentity(env["IDENTITY_ENDPOINT"], HEADER)
    assert HEADER not in repr(settings) and HEADER not in repr(settings.managed_identity)
    assert Settings.from_env(env={}, bundled=None).managed_identity is None
    keyed = Settings.from_env(env={"EVENT_GRID_KEY": "k-secret"}, bundled=None)
    assert "k-secret" not in repr(keyed)
