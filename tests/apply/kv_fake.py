"""A local stand-in for the Key Vault data plane (secrets), for apply's tests.

There is no Key Vault offline, so the real ``azure-keyvault-secrets`` client talks to a
local HTTPS server that behaves as the data plane does where it matters: it refuses a
request without a bearer token with the ``WWW-Authenticate`` challenge the SDK's
challenge policy expects, refuses a token for another audience (401), a missing
``api-version``, an invalid secret name (400 BadParameter) and a body without a string
``value`` or with tags that are not strings; an unknown secret is ``404 SecretNotFound``.
A listing comes in pages joined by ``nextLink``; a deleted secret is gone from reads
(soft delete), and deleting the secret behind a certificate is refused. Certificates:
``create`` (202, then a completed operation) is refused unless the policy is what ai4ec
needs (self-signed, exportable, PKCS#12, client-authentication usage); the fake issues a
real self-signed certificate and, as Key Vault does, exposes it as a secret of the same
name holding the base64 PKCS#12 with its key. It records violations instead of
raising in its thread; tests assert there are none.
"""

from __future__ import annotations

import base64
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
        #: Tags of each secret's latest version (written with its PUT).
        self.tags: dict[str, dict[str, str]] = {}
        #: Secrets deleted (soft delete), in order.
        self.deleted: list[str] = []
        #: Secrets per page of a listing (Key Vault's default is 25).
        self.page_size = 25
        #: Certificate name -> DER of its current version.
        self.certificates: dict[str, bytes] = {}
        self.writes: list[str] = []
        self.violations: list[str] = []
        self.forbid_writes = False
        #: Azure RBAC on the data plane: with ``require_roles``, a request is refused (403)
        #: until ARM deployed the role it needs for the deployer (secrets: Key Vault
        #: Secrets Officer; certificates: Certificates Officer), and for ``propagation``
        #: more requests after that (a new assignment takes minutes to reach the vault).
        self.require_roles = False
        self.roles: set[str] = set()
        self.propagation = 0
        self.refused = 0
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
                c = re.fullmatch(r"/certificates/([^/]+)(/create|/pending)?/?", url.path)
                if not vault.allowed("certificate" if c is not None else "secret"):
                    self._send(403, {"error": {"code": "Forbidden", "message": "RBAC"}})
                    return
                if c is not None:
                    vault.certificate(self, c.group(1), c.group(2) or "", body)
                    return
                if url.path.rstrip("/") == "/secrets" and self.command == "GET":
                    vault.list_page(self, query)
                    return
                m = re.fullmatch(r"/secrets/([^/]+)/?", url.path)
                if m is None or not _NAME.match(m.group(1)):
                    vault.violations.append(f"bad path {url.path}")
                    self._send(400, {"error": {"code": "BadParameter", "message": "name"}})
                    return
                name = m.group(1)
                vault.secret(self, name, url.path, body)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls.server_context().wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def grant(self, role_definition_id: str) -> None:
        """ARM deployed a role assignment on this vault for the deployer."""
        for name, guid in (
            ("Key Vault Secrets Officer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"),
            ("Key Vault Certificates Officer", "a4417e6f-fecd-4de8-b567-7b0420556985"),
        ):
            if guid in role_definition_id.lower():
                self.roles.add(name)

    def allowed(self, what: str) -> bool:
        """Whether RBAC lets the deployer at a secret or a certificate now."""
        if not self.require_roles:
            return True
        need = (
            "Key Vault Certificates Officer"
            if what == "certificate"
            else ("Key Vault Secrets Officer")
        )
        if need in self.roles and self.propagation <= 0:
            return True
        if need in self.roles:
            self.propagation -= 1
        self.refused += 1
        return False

    def secret(self, h: Any, name: str, path: str, body: bytes) -> None:
        """The secret calls of the data plane ai4ec makes (see the module docstring)."""
        sid = f"https://127.0.0.1:{self.port}/secrets/{name}/0123456789abcdef"
        if h.command == "GET":
            if name not in self.secrets:
                msg = f"A secret with (name/id) {name} was not found in this key self."
                h._send(404, {"error": {"code": "SecretNotFound", "message": msg}})
                return
            doc = {"value": self.secrets[name], "id": sid, "attributes": {}}
            if self.tags.get(name):
                doc["tags"] = self.tags[name]
            if name in self.certificates:
                doc["managed"] = True
            h._send(200, doc)
            return
        if h.command == "PATCH":
            doc = json.loads(body or b"null")
            if name not in self.secrets:
                h._send(404, {"error": {"code": "SecretNotFound", "message": name}})
                return
            if name in self.certificates:
                self.violations.append(f"PATCH of certificate secret {name}")
                h._send(403, {"error": {"code": "Forbidden", "message": "managed"}})
                return
            if not isinstance(doc, dict) or "value" in doc:
                self.violations.append(f"PATCH {name} with a value (a PUT's job)")
                h._send(400, {"error": {"code": "BadParameter", "message": "body"}})
                return
            if isinstance(doc.get("tags"), dict):
                self.tags[name] = doc["tags"]
            self.writes.append(f"tags {name}")
            h._send(200, {"id": sid, "attributes": {}, "tags": self.tags.get(name)})
            return
        if h.command == "PUT":
            doc = json.loads(body or b"null")
            if not isinstance(doc, dict) or not isinstance(doc.get("value"), str):
                self.violations.append(f"PUT {name} without a string value")
                h._send(400, {"error": {"code": "BadParameter", "message": "value"}})
                return
            if self.forbid_writes:
                h._send(403, {"error": {"code": "Forbidden", "message": "no"}})
                return
            tags = doc.get("tags") or {}
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                self.violations.append(f"PUT {name} with tags that are not strings")
                h._send(400, {"error": {"code": "BadParameter", "message": "tags"}})
                return
            self.secrets[name] = doc["value"]
            self.tags[name] = tags
            self.writes.append(name)
            h._send(200, {"value": doc["value"], "id": sid, "tags": tags})
            return
        if h.command == "DELETE":
            if name not in self.secrets:
                msg = f"A secret with (name/id) {name} was not found in this key self."
                h._send(404, {"error": {"code": "SecretNotFound", "message": msg}})
                return
            if name in self.certificates:
                # A certificate's secret goes only with its certificate.
                self.violations.append(f"DELETE of certificate secret {name}")
                h._send(403, {"error": {"code": "Forbidden", "message": "managed"}})
                return
            del self.secrets[name]
            self.deleted.append(name)
            doc = {
                "recoveryId": f"https://127.0.0.1:{self.port}/deletedsecrets/{name}",
                "deletedDate": 1796000000,
                "scheduledPurgeDate": 1803776000,
                "id": sid,
                "attributes": {"enabled": True, "recoveryLevel": "Recoverable"},
                "tags": self.tags.pop(name, {}),
            }
            h._send(200, doc)
            return
        self.violations.append(f"unexpected {h.command} {path}")
        h._send(405, {"error": {"code": "MethodNotAllowed", "message": "no"}})

    def list_page(self, h: Any, query: dict[str, list[str]]) -> None:
        """One page of ``GET /secrets``, names in order, ``nextLink`` to the rest.

        A certificate's secret is listed as ``managed``, as Key Vault lists it.
        """
        names = sorted(self.secrets)
        start = int((query.get("$skiptoken") or ["0"])[0])
        page = names[start : start + self.page_size]
        base = f"https://127.0.0.1:{self.port}/secrets"
        items = []
        for name in page:
            item: dict[str, Any] = {"id": f"{base}/{name}", "attributes": {"enabled": True}}
            if self.tags.get(name):
                item["tags"] = self.tags[name]
            if name in self.certificates:
                item["managed"] = True
            items.append(item)
        more = start + self.page_size < len(names)
        api = (query.get("api-version") or [""])[0]
        link = f"{base}?api-version={api}&$skiptoken={start + self.page_size}" if more else None
        h._send(200, {"value": items, "nextLink": link})

    def certificate(self, h: Any, name: str, action: str, body: bytes) -> None:
        """The certificate calls of the data plane ai4ec makes (see the module docstring)."""
        base = f"https://127.0.0.1:{self.port}/certificates/{name}"
        operation = {
            "id": f"{base}/pending",
            "issuer": {"name": "Self"},
            "status": "completed",
            "target": base,
        }
        if action == "/create" and h.command == "POST":
            policy = (json.loads(body or b"{}") or {}).get("policy") or {}
            problems = []
            if (policy.get("issuer") or {}).get("name") != "Self":
                problems.append("issuer is not Self")
            if not (policy.get("key_props") or {}).get("exportable"):
                problems.append("key not exportable")
            if (policy.get("secret_props") or {}).get("contentType") != "application/x-pkcs12":
                problems.append("content type is not PKCS#12")
            if "1.3.6.1.5.5.7.3.2" not in ((policy.get("x509_props") or {}).get("ekus") or []):
                problems.append("no client authentication usage")
            if problems:
                self.violations.append(f"create {name}: {', '.join(problems)}")
                h._send(400, {"error": {"code": "BadParameter", "message": "policy"}})
                return
            subject = (policy.get("x509_props") or {}).get("subject") or f"CN={name}"
            der, pfx = _self_signed(subject)
            self.certificates[name] = der
            self.secrets[name] = pfx
            self.writes.append(f"certificate {name}")
            h._send(202, {**operation, "status": "inProgress"})
            return
        if action == "/pending" and h.command == "GET":
            h._send(200, operation)
            return
        if action == "" and h.command == "GET":
            if name not in self.certificates:
                msg = f"A certificate with (name/id) {name} was not found in this key vault."
                h._send(404, {"error": {"code": "CertificateNotFound", "message": msg}})
                return
            cer = base64.b64encode(self.certificates[name]).decode()
            h._send(200, {"id": f"{base}/0123456789abcdef", "cer": cer, "attributes": {}})
            return
        self.violations.append(f"unexpected {h.command} certificates/{name}{action}")
        h._send(405, {"error": {"code": "MethodNotAllowed", "message": "no"}})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _self_signed(subject: str) -> tuple[bytes, str]:
    """A real self-signed client certificate: (DER, base64 PKCS#12 with the key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.removeprefix("CN="))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pfx = pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.DER), base64.b64encode(pfx).decode()
