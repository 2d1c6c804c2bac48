"""A local stand-in for the Key Vault data plane (secrets), for apply's tests.

There is no Key Vault offline, so the real ``azure-keyvault-secrets`` client talks to a
local HTTPS server that behaves as the data plane does where it matters: it refuses a
request without a bearer token with the ``WWW-Authenticate`` challenge the SDK's
challenge policy expects, refuses a token for another audience (401), a missing
``api-version``, an invalid secret name (400 BadParameter) and a body without a string
``value``; an unknown secret is ``404 SecretNotFound``. It records violations instead of
raising in its thread; tests assert there are none.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from .support import Tls, other_token

VAULT_AUDIENCE = "https://vault.azure.net/.default"
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


class FakeKeyVault:
    """Secrets by name (latest version only), over TLS on 127.0.0.1."""

    def __init__(self, tls: Tls) -> None:
        self.secrets: dict[str, str] = {}
        self.writes: list[str] = []
        self.violations: list[str] = []
        self.forbid_writes = False
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization") or ""
                if not auth:
                    # The SDK first asks without a token and learns where to get one.
                    self._send(
                        401,
                        {"error": {"code": "Unauthorized", "message": "AKV10000"}},
                        {
                            "WWW-Authenticate": 'Bearer authorization="https://login.'
                            'example.test/tenant", resource="https://vault.azure.net"'
                        },
                    )
                    return
                if auth != f"Bearer {other_token(VAULT_AUDIENCE)}":
                    vault.violations.append(f"wrong token for {self.command} {url.path}")
                    self._send(401, {"error": {"code": "Unauthorized", "message": "token"}})
                    return
                if not query.get("api-version"):
                    vault.violations.append(f"no api-version on {self.command} {url.path}")
                    self._send(400, {"error": {"code": "BadParameter", "message": "api"}})
                    return
                m = re.fullmatch(r"/secrets/([^/]+)/?", url.path)
                if m is None or not _NAME.match(m.group(1)):
                    vault.violations.append(f"bad path {url.path}")
                    self._send(400, {"error": {"code": "BadParameter", "message": "name"}})
                    return
                name = m.group(1)
                sid = f"https://127.0.0.1:{vault.port}/secrets/{name}/0123456789abcdef"
                if self.command == "GET":
                    if name not in vault.secrets:
                        msg = f"A secret with (name/id) {name} was not found in this key vault."
                        self._send(404, {"error": {"code": "SecretNotFound", "message": msg}})
                        return
                    self._send(200, {"value": vault.secrets[name], "id": sid, "attributes": {}})
                    return
                if self.command == "PUT":
                    doc = json.loads(body or b"null")
                    if not isinstance(doc, dict) or not isinstance(doc.get("value"), str):
                        vault.violations.append(f"PUT {name} without a string value")
                        self._send(400, {"error": {"code": "BadParameter", "message": "value"}})
                        return
                    if vault.forbid_writes:
                        self._send(403, {"error": {"code": "Forbidden", "message": "no"}})
                        return
                    vault.secrets[name] = doc["value"]
                    vault.writes.append(name)
                    self._send(200, {"value": doc["value"], "id": sid, "attributes": {}})
                    return
                vault.violations.append(f"unexpected {self.command} {url.path}")
                self._send(405, {"error": {"code": "MethodNotAllowed", "message": "no"}})

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls.server_context().wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
