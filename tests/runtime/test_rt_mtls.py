"""Dispatch through a mutual-TLS gateway: the client certificate is presented (issue 13).

A real TLS server (Python's ``ssl``, as strict as the Istio gateway in MUTUAL mode: it
asks for a client certificate and trusts exactly one, the gateway client certificate)
stands in for the ingress. The runtime's real ``BackendClient`` must get through with
the PEM that ``ai4ec apply`` writes (AI4EC_GATEWAY_CLIENT_CERT) and must not without it,
or with another certificate.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from rt_support import make_cert, pem_of

from ai4ec_runtime.dispatch import BackendClient
from ai4ec_runtime.settings import ConfigurationError, Settings


@dataclass
class Gateway:
    url: str
    client_pem: str
    other_pem: str
    seen: list[str]


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    ca = make_cert("test root", ca=True)
    server_key, server_cert = make_cert("127.0.0.1", ca)
    client = make_cert("ai4ec-gateway-client")  # self-signed, as Key Vault issues it
    other = make_cert("someone-else")
    (tmp_path / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_text(pem_of(server_key, server_cert))
    (tmp_path / "trusted-client.pem").write_bytes(
        client[1].public_bytes(serialization.Encoding.PEM)
    )
    # The dispatch side trusts the test root the way it trusts a public CA on Azure.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            peer = self.connection.getpeercert() or {}
            seen.append(dict(x[0] for x in peer.get("subject", ()))["commonName"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # MUTUAL: no certificate, no connection
    ctx.load_verify_locations(tmp_path / "trusted-client.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Gateway(
        f"https://127.0.0.1:{server.server_address[1]}/v1/detector/detect",
        pem_of(*client),
        pem_of(*other),
        seen,
    )
    server.shutdown()
    server.server_close()


def test_dispatch_presents_the_gateway_client_certificate(gateway: Gateway) -> None:
    backend = BackendClient(5.0, gateway.client_pem)
    try:
        assert backend.post(gateway.url, "{}", "t-1") == 200
        assert backend.post(gateway.url, "{}", "t-2") == 200  # kept-alive connection
    finally:
        backend.close()
    assert gateway.seen == ["ai4ec-gateway-client", "ai4ec-gateway-client"]


@pytest.mark.parametrize("which", ["none", "other"])
def test_without_the_certificate_the_gateway_refuses(gateway: Gateway, which: str) -> None:
    backend = BackendClient(5.0, None if which == "none" else gateway.other_pem)
    try:
        with pytest.raises(OSError):
            backend.post(gateway.url, "{}", "t-1")
    finally:
        backend.close()
    assert gateway.seen == []


def test_setting_is_checked_and_never_shown() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"
    pem += "-----BEGIN CERTIFICATE-----\ny\n-----END CERTIFICATE-----\n"
    s = Settings.from_env(env={"AI4EC_GATEWAY_CLIENT_CERT": pem}, bundled=None)
    assert s.gateway_client_cert == pem and "PRIVATE" not in repr(s)
    ref = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/)"
    with pytest.raises(ConfigurationError, match="unresolved Key Vault reference"):
        Settings.from_env(env={"AI4EC_GATEWAY_CLIENT_CERT": ref}, bundled=None)
    with pytest.raises(ConfigurationError, match="PEM private key and certificate"):
        Settings.from_env(env={"AI4EC_GATEWAY_CLIENT_CERT": "hello"}, bundled=None)
