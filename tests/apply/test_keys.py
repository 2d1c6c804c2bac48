"""``apply``'s access-key bootstrap against a local Key Vault (issue 13).

The real ``azure-keyvault-secrets`` client talks to :class:`.kv_fake.FakeKeyVault`, a
local HTTPS server that checks requests and refuses what Key Vault refuses (see there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ai4ec.apply import keys as apply_keys
from ai4ec.errors import ApplyError
from ai4ec.render.azure import access
from ai4ec_runtime.auth import AccessKeys

from .kv_fake import FakeKeyVault
from .support import FakeCredential, Tls


@pytest.fixture
def vault(tls: Tls) -> Iterator[FakeKeyVault]:
    kv = FakeKeyVault(tls)
    yield kv
    kv.close()
    assert kv.violations == []


def _options(tls: Tls) -> dict[str, Any]:
    # The challenge names vault.azure.net, the fake listens on 127.0.0.1.
    return {"connection_verify": str(tls.ca_file), "verify_challenge_resource": False}


@pytest.fixture
def store(vault: FakeKeyVault, tls: Tls) -> Iterator[apply_keys.KeyVaultSecrets]:
    s = apply_keys.KeyVaultSecrets(vault.url, FakeCredential(), _options(tls))
    yield s
    s.close()


def test_names_match_the_template() -> None:
    assert apply_keys.ACCESS_KEYS_SECRET == access.ACCESS_KEYS_SECRET
    assert apply_keys.APIM_KEY_SECRET == access.APIM_KEY_SECRET
    assert apply_keys.EVENT_GRID_KEY_SECRET == access.EVENT_GRID_KEY_SECRET
    assert apply_keys.api_key_secret("det-v1") == access.api_key_secret("det-v1")


def test_first_run_writes_one_document_and_one_secret_per_holder(
    vault: FakeKeyVault, store: apply_keys.KeyVaultSecrets
) -> None:
    written = apply_keys.ensure_access_keys(store, ["detector-v1", "classifier-v1"])
    assert written == [
        "ai4ec-access-keys",
        "ai4ec-api-key-classifier-v1",
        "ai4ec-api-key-detector-v1",
        "ai4ec-apim-key",
        "ai4ec-eventgrid-delivery-key",
    ]
    doc = AccessKeys.parse(vault.secrets["ai4ec-access-keys"], "kv")
    assert vault.secrets["ai4ec-apim-key"] == doc.apim
    assert vault.secrets["ai4ec-eventgrid-delivery-key"] == doc.event_grid
    assert vault.secrets["ai4ec-api-key-detector-v1"] == doc.apis["detector-v1"]
    holders = [vault.secrets[n] for n in written[1:]]
    assert len(set(holders)) == len(holders)  # three (and more) different things


def test_second_run_changes_nothing_and_keeps_keys(
    vault: FakeKeyVault, store: apply_keys.KeyVaultSecrets
) -> None:
    apply_keys.ensure_access_keys(store, ["detector-v1"])
    before = dict(vault.secrets)
    vault.writes.clear()
    assert apply_keys.ensure_access_keys(store, ["detector-v1"]) == []
    assert vault.writes == [] and vault.secrets == before


def test_new_api_gets_a_key_removed_api_loses_its_own(
    vault: FakeKeyVault, store: apply_keys.KeyVaultSecrets
) -> None:
    apply_keys.ensure_access_keys(store, ["detector-v1", "old-v1"])
    first = AccessKeys.parse(vault.secrets["ai4ec-access-keys"], "kv")
    written = apply_keys.ensure_access_keys(store, ["detector-v1", "classifier-v1"])
    assert written == ["ai4ec-access-keys", "ai4ec-api-key-classifier-v1"]
    doc = AccessKeys.parse(vault.secrets["ai4ec-access-keys"], "kv")
    assert doc.apim == first.apim and doc.event_grid == first.event_grid
    assert doc.apis["detector-v1"] == first.apis["detector-v1"]
    assert "old-v1" not in doc.apis  # the runtime no longer accepts the old API's key


def test_holder_secret_drifted_is_put_back(
    vault: FakeKeyVault, store: apply_keys.KeyVaultSecrets
) -> None:
    apply_keys.ensure_access_keys(store, ["detector-v1"])
    vault.secrets["ai4ec-apim-key"] = "edited-by-hand-0123456789"
    assert apply_keys.ensure_access_keys(store, ["detector-v1"]) == ["ai4ec-apim-key"]


def test_corrupt_document_is_refused_not_overwritten(
    vault: FakeKeyVault, store: apply_keys.KeyVaultSecrets
) -> None:
    vault.secrets["ai4ec-access-keys"] = '{"apim": "short"}'
    with pytest.raises(ApplyError) as err:
        apply_keys.ensure_access_keys(store, ["detector-v1"])
    assert "ai4ec-access-keys" in str(err.value) and "short" not in str(err.value)
    assert vault.secrets == {"ai4ec-access-keys": '{"apim": "short"}'}


def test_forbidden_write_names_the_secret_and_the_role(
    vault: FakeKeyVault, store: apply_keys.KeyVaultSecrets
) -> None:
    vault.forbid_writes = True
    with pytest.raises(ApplyError) as err:
        apply_keys.ensure_access_keys(store, ["detector-v1"])
    message = str(err.value)
    assert "ai4ec-access-keys" in message and "HTTP 403" in message
    assert "Key Vault Secrets Officer" in message
    assert vault.secrets == {}


@pytest.fixture
def certs(vault: FakeKeyVault, tls: Tls) -> Iterator[apply_keys.KeyVaultCertificates]:
    c = apply_keys.KeyVaultCertificates(vault.url, FakeCredential(), _options(tls), poll_seconds=0)
    yield c
    c.close()


def _pem_cert_der(pem: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.public_bytes(serialization.Encoding.DER)


def test_gateway_certificate_created_once_with_its_pem(
    vault: FakeKeyVault,
    store: apply_keys.KeyVaultSecrets,
    certs: apply_keys.KeyVaultCertificates,
) -> None:
    """The real certificate and secret clients: a self-signed client certificate, then PEM.

    The PEM holds the certificate Key Vault issued and a private key that matches it, so
    the task manager's dispatch presents exactly what API Management presents.
    """
    import ssl
    import tempfile

    name, pem_name = "ai4ec-gateway-client", "ai4ec-gateway-client-pem"
    written = apply_keys.ensure_gateway_certificate(certs, store, name, pem_name)
    assert written == [name, pem_name]
    pem = vault.secrets[pem_name]
    assert "PRIVATE KEY" in pem and _pem_cert_der(pem) == vault.certificates[name]
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        ssl.create_default_context().load_cert_chain(f.name)  # key and certificate agree
    # A second apply writes nothing.
    assert apply_keys.ensure_gateway_certificate(certs, store, name, pem_name) == []
    # Key Vault renewed the certificate: the PEM follows the new version.
    from .kv_fake import _self_signed

    vault.certificates[name], vault.secrets[name] = _self_signed("CN=" + name)
    assert apply_keys.ensure_gateway_certificate(certs, store, name, pem_name) == [pem_name]
    assert _pem_cert_der(vault.secrets[pem_name]) == vault.certificates[name]


def test_gateway_certificate_that_is_not_pkcs12_is_refused(
    vault: FakeKeyVault,
    store: apply_keys.KeyVaultSecrets,
    certs: apply_keys.KeyVaultCertificates,
) -> None:
    """A certificate made by hand as PEM cannot be read back: say so, write nothing."""
    from .kv_fake import _self_signed

    vault.certificates["ai4ec-gateway-client"], _pfx = _self_signed("CN=x")
    vault.secrets["ai4ec-gateway-client"] = "-----BEGIN CERTIFICATE-----\n..."
    with pytest.raises(ApplyError, match="not an exportable PKCS#12"):
        apply_keys.ensure_gateway_certificate(
            certs, store, "ai4ec-gateway-client", "ai4ec-gateway-client-pem"
        )
    assert "ai4ec-gateway-client-pem" not in vault.secrets


OWNER = {"ai4ec-platform": "camera-trap", "ai4ec-environment": "prod"}


def test_written_secrets_carry_the_owner_tags_and_only_they_are_owned(
    vault: FakeKeyVault, tls: Tls
) -> None:
    """Local Key Vault stand-in: the real client lists every page (nextLink) and keeps
    only secrets tagged with both owner tags; a certificate's secret is never listed."""
    vault.page_size = 2
    s = apply_keys.KeyVaultSecrets(vault.url, FakeCredential(), _options(tls), tags=OWNER)
    try:
        s.set("ai4ec-api-key-old-v1", "k1")
        s.set("ai4ec-apim-key", "k2")
        assert vault.tags["ai4ec-apim-key"] == OWNER
        vault.secrets.update({"user-secret": "u", "ai4ec-other-env": "o", "ai4ec-mine": "m"})
        vault.tags["ai4ec-other-env"] = {**OWNER, "ai4ec-environment": "dev"}
        vault.tags["ai4ec-mine"] = {**OWNER, "owner": "someone"}  # more tags: still ours
        vault.tags["user-secret"] = {"ai4ec-platform": "camera-trap"}  # one of two: not
        vault.secrets["ai4ec-gateway-client"] = "pfx"
        vault.certificates["ai4ec-gateway-client"] = b"der"
        vault.tags["ai4ec-gateway-client"] = dict(OWNER)
        assert s.owned() == ["ai4ec-api-key-old-v1", "ai4ec-apim-key", "ai4ec-mine"]
        s.delete("ai4ec-api-key-old-v1")
        s.delete("ai4ec-api-key-old-v1")  # gone already: not an error
        assert vault.deleted == ["ai4ec-api-key-old-v1"]
        assert s.get("ai4ec-api-key-old-v1") is None
    finally:
        s.close()


def test_a_store_without_owner_tags_owns_nothing(
    vault: FakeKeyVault, store: apply_keys.KeyVaultSecrets
) -> None:
    store.set("ai4ec-apim-key", "k")
    assert vault.tags["ai4ec-apim-key"] == {}
    assert store.owned() == []


def test_listing_refused_names_the_role(vault: FakeKeyVault, tls: Tls) -> None:
    vault.require_roles = True
    s = apply_keys.KeyVaultSecrets(vault.url, FakeCredential(), _options(tls), tags=OWNER)
    try:
        with pytest.raises(apply_keys.KeyVaultForbidden, match="cannot list secret names"):
            s.owned()
    finally:
        s.close()


def test_secrets_read_without_the_owner_tags_are_noted_and_tagged(
    vault: FakeKeyVault, tls: Tls
) -> None:
    vault.secrets.update({"ai4ec-apim-key": "k", "ai4ec-gateway-client": "pfx"})
    vault.tags["ai4ec-apim-key"] = {"keep": "me"}
    vault.certificates["ai4ec-gateway-client"] = b"der"
    s = apply_keys.KeyVaultSecrets(vault.url, FakeCredential(), _options(tls), tags=OWNER)
    try:
        assert s.get("ai4ec-apim-key") == "k" and s.get("ai4ec-gateway-client") == "pfx"
        assert s.untagged == ["ai4ec-apim-key"]  # a certificate's secret is Key Vault's
        s.tag("ai4ec-apim-key")
        assert vault.tags["ai4ec-apim-key"] == {"keep": "me", **OWNER}
        assert vault.secrets["ai4ec-apim-key"] == "k"
        s.untagged.clear()
        s.get("ai4ec-apim-key")
        assert s.untagged == []
    finally:
        s.close()
