"""Dispatch through a mutual-TLS gateway: the client certificate is presented (issue 13).

A real TLS server (Python's ``ssl``, as strict as the Istio gateway in MUTUAL mode: it
asks for a client certificate and trusts exactly one, the gateway client certificate)
stands in for the ingress. The runtime's real ``BackendClient`` must get through with
the PEM that ``ai4ec apply`` writes (AI4EC_GATEWAY_CLIENT_CERT) and must not without it,
or with another certificate.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ai4ec_runtime.dispatch import BackendClient
from ai4ec_runtime.settings import ConfigurationError, Settings


def _cert(
    cn: str, issuer: tuple[Any, x509.Certificate] | None = None, *, ca: bool = False
) -> tuple[Any, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key, signer = issuer if issuer else (key, None)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.subject if signer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if cn == "127.0.0.1":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(cn))]),
            critical=False,
        )
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return key, builder.sign(signer_key, hashes.SHA256())


def _pem(key: Any, cert: x509.Certificate) -> str:
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    ).decode()


@dataclass
class Gateway:
    url: str
    client_pem: str
    other_pem: str
    seen: list[str]


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    ca = _cert("test root", ca=True)
    server_key, server_cert = _cert("127.0.0.1", ca)
    client = _cert("ai4ec-gateway-client")  # self-signed, as Key Vault issues it
    other = _cert("someone-else")
    (tmp_path / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_text(_pem(server_key, server_cert))
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
        _pem(*client),
        _pem(*other),
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
