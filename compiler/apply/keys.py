"""The platform's access keys, generated once and kept in Key Vault (issue 13).

The runtime checks a key per caller (``ai4ec_runtime.auth``): API Management's,
Event Grid's, and one per API. Nothing in Azure makes such keys, and reading the Functions
host's key with ``listKeys()`` right after a role assignment raced that assignment (issue
12 item 8), so ``apply`` makes them itself, after the vault exists and before anything
reads them:

* ``ai4ec-access-keys``: the whole document ``{"apim", "eventGrid", "apis": {id: key}}``,
  for the Function App only (app setting ``AI4EC_ACCESS_KEYS``);
* ``ai4ec-apim-key``, ``ai4ec-eventgrid-delivery-key`` and ``ai4ec-api-key-<api id>``:
  one secret per holder, each readable by that holder only.

The gateway client certificate of mutual TLS (``ai4ec-gateway-client``) is made here too:
a self-signed Key Vault certificate (PKCS#12, exportable, client authentication), which
API Management presents from Key Vault and whose public part the gateways trust, and its
PEM form (``ai4ec-gateway-client-pem``) for the task manager's dispatch, whose bundle has
no compiled code to read PKCS#12. Key Vault renews the certificate; the next apply sees
the new version and writes the PEM again.

Keys are never rotated behind anyone's back: an existing document is kept; a new API gets
a new key and a removed API's key is dropped (so it stops working). The holder secrets
always follow the document. No key is ever printed, logged or returned: the functions
report secret *names* only.

Every secret written here carries the template's ``ai4ec-platform`` and
``ai4ec-environment`` tags, as the template's own secrets do: they are what ``apply
--prune`` may delete when the build drops them (``keys_step.py``, docs/apply.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ApplyError

#: Secret names; the Azure template names the same ones (``render/azure/access.py``, a
#: test pins the two together).
ACCESS_KEYS_SECRET = "ai4ec-access-keys"
APIM_KEY_SECRET = "ai4ec-apim-key"
EVENT_GRID_KEY_SECRET = "ai4ec-eventgrid-delivery-key"
API_KEY_PREFIX = "ai4ec-api-key-"


class SecretStore(Protocol):
    """The two Key Vault operations the bootstrap needs."""

    def get(self, name: str) -> str | None:
        """The current value of secret ``name``, or ``None`` when it does not exist."""
        ...

    def set(self, name: str, value: str) -> None:
        """Write a new version of secret ``name``."""
        ...


@dataclass
class KeyVaultSecrets:
    """:class:`SecretStore` over the Key Vault data plane (``azure-keyvault-secrets``).

    Args:
        vault_url: ``https://<vault>.vault.azure.net``.
        credential: An Entra ID token credential (the deployer's).
        client_options: Passed to ``SecretClient`` (TLS verification, retries; tests
            point it at a local Key Vault).
    """

    vault_url: str
    credential: Any
    client_options: dict[str, Any] = field(default_factory=dict)
    #: Written on every secret this store sets: the template's ``ai4ec-platform`` and
    #: ``ai4ec-environment`` tags, which mark what prune may delete (:meth:`owned`).
    tags: dict[str, str] = field(default_factory=dict)
    #: Secrets :meth:`get` found without :attr:`tags` (written before ai4ec tagged them).
    untagged: list[str] = field(default_factory=list)
    _client: Any = None

    def _secrets(self) -> Any:
        if self._client is None:
            from azure.keyvault.secrets import SecretClient

            self._client = SecretClient(self.vault_url, self.credential, **self.client_options)
        return self._client

    def get(self, name: str) -> str | None:
        """The current value of secret ``name``, or ``None`` when it does not exist."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            secret = self._secrets().get_secret(name)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _refused("read", name, self.vault_url, exc) from None
        props = secret.properties
        if self.tags and not props.managed and not self.tags.items() <= (props.tags or {}).items():
            self.untagged.append(name)
        return str(secret.value) if secret.value is not None else None

    def tag(self, name: str) -> None:
        """Add :attr:`tags` to secret ``name``'s current version (no new version)."""
        from azure.core.exceptions import AzureError

        client = self._secrets()
        try:
            current = client.get_secret(name).properties.tags or {}
            client.update_secret_properties(name, tags={**current, **self.tags})
        except AzureError as exc:
            raise _refused("tag", name, self.vault_url, exc) from None

    def set(self, name: str, value: str) -> None:
        """Write a new version of secret ``name`` (never logged)."""
        from azure.core.exceptions import AzureError

        try:
            self._secrets().set_secret(
                name, value, content_type="text/plain", tags=dict(self.tags) or None
            )
        except AzureError as exc:
            raise _refused("write", name, self.vault_url, exc) from None

    def owned(self) -> list[str]:
        """Names of the secrets that carry every one of :attr:`tags` (all pages), sorted.

        Secrets Key Vault manages for a certificate are never listed: they go with their
        certificate. With no :attr:`tags` nothing is owned (prune would not know).
        """
        from azure.core.exceptions import AzureError

        if not self.tags:
            return []
        want = self.tags.items()
        try:
            return sorted(
                str(p.name)
                for p in self._secrets().list_properties_of_secrets()
                if not p.managed and want <= (p.tags or {}).items()
            )
        except AzureError as exc:
            raise _refused("list", "names", self.vault_url, exc) from None

    def delete(self, name: str) -> None:
        """Delete secret ``name``: soft delete, recoverable for the vault's retention.

        Only the deletion is sent; the SDK's poller, which would wait until the vault
        shows the secret as deleted, is not waited on.
        """
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self._secrets().begin_delete_secret(name)
        except ResourceNotFoundError:
            return  # gone already: what prune wanted
        except AzureError as exc:
            raise _refused("delete", name, self.vault_url, exc) from None

    def close(self) -> None:
        """Release the client's connections."""
        if self._client is not None:
            self._client.close()


class CertificateStore(Protocol):
    """The Key Vault certificate operations the gateway certificate needs."""

    def public_der(self, name: str) -> bytes | None:
        """The current version's certificate (DER), or ``None`` when there is none."""
        ...

    def create_self_signed(self, name: str, subject: str) -> bytes:
        """Create certificate ``name`` and wait for it; returns its certificate (DER)."""
        ...


#: Extended key usage "TLS client authentication" (RFC 5280).
CLIENT_AUTH_EKU = "1.3.6.1.5.5.7.3.2"


@dataclass
class KeyVaultCertificates:
    """:class:`CertificateStore` over ``azure-keyvault-certificates`` (see KeyVaultSecrets)."""

    vault_url: str
    credential: Any
    client_options: dict[str, Any] = field(default_factory=dict)
    #: Seconds between polls of a pending certificate (the SDK's default is 5).
    poll_seconds: int = 2
    _client: Any = None

    def _certs(self) -> Any:
        if self._client is None:
            from azure.keyvault.certificates import CertificateClient

            self._client = CertificateClient(self.vault_url, self.credential, **self.client_options)
        return self._client

    def public_der(self, name: str) -> bytes | None:
        """The current version's certificate (DER), or ``None`` when there is none."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            cer = self._certs().get_certificate(name).cer
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _refused("read", name, self.vault_url, exc, "certificate") from None
        return bytes(cer) if cer else None

    def create_self_signed(self, name: str, subject: str) -> bytes:
        """Create a self-signed client certificate and wait until Key Vault issued it."""
        from azure.core.exceptions import AzureError
        from azure.keyvault.certificates import (
            CertificateContentType,
            CertificatePolicy,
            KeyType,
            KeyVaultCertificate,
        )

        policy = CertificatePolicy(
            issuer_name="Self",
            subject=subject,
            exportable=True,
            key_type=KeyType.rsa,
            key_size=2048,
            reuse_key=False,
            content_type=CertificateContentType.pkcs12,
            enhanced_key_usage=[CLIENT_AUTH_EKU],
            validity_in_months=12,
            lifetime_actions=None,
        )
        try:
            poller = self._certs().begin_create_certificate(
                name, policy, _polling_interval=self.poll_seconds
            )
            done = poller.result()
        except AzureError as exc:
            raise _refused("create", name, self.vault_url, exc, "certificate") from None
        if not isinstance(done, KeyVaultCertificate) or not done.cer:
            status = getattr(done, "status", "unknown")
            raise ApplyError(
                f"Key Vault {self.vault_url}: certificate {name} was not issued (status {status})"
            )
        return bytes(done.cer)

    def close(self) -> None:
        """Release the client's connections."""
        if self._client is not None:
            self._client.close()


def ensure_gateway_certificate(
    certs: CertificateStore, secrets: SecretStore, name: str, pem_name: str
) -> list[str]:
    """Make the gateway client certificate and its PEM copy exist; return what was written.

    The PEM secret is rewritten whenever its certificate is not the certificate's current
    version (a renewal), so dispatch always presents what the gateways trust.

    Raises:
        ApplyError: Key Vault refused a call, or its certificate secret is not PKCS#12.
    """
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    written: list[str] = []
    der = certs.public_der(name)
    if der is None:
        der = certs.create_self_signed(name, f"CN={name}")
        written.append(name)
    current = secrets.get(pem_name)
    if current is not None:
        try:
            have = x509.load_pem_x509_certificate(current.encode("ascii"))
            if have.public_bytes(serialization.Encoding.DER) == der:
                return written
        except ValueError:
            pass  # not PEM: written again below
    pfx = secrets.get(name)
    try:
        key, cert, _extra = pkcs12.load_key_and_certificates(base64.b64decode(pfx or ""), None)
    except ValueError:
        cert = key = None
    if key is None or cert is None:
        raise ApplyError(
            f"Key Vault secret {name} is not an exportable PKCS#12 certificate with its key; "
            "delete the certificate and apply again to create it as ai4ec needs it"
        )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    secrets.set(pem_name, pem.decode("ascii"))
    written.append(pem_name)
    return written


class KeyVaultForbidden(ApplyError):
    """Key Vault answered 403: the deployer lacks a data role on the vault (yet).

    A separate class because a role the same run has just assigned takes minutes to
    reach Key Vault: the keys step waits for it (bounded) instead of failing at once.
    """


def _refused(verb: str, name: str, vault: str, exc: Any, what: str = "secret") -> ApplyError:
    """The error for a failed Key Vault call: :class:`KeyVaultForbidden` on a 403."""
    message = _failure(verb, name, vault, exc, what)
    if getattr(exc, "status_code", None) == 403:
        return KeyVaultForbidden(message)
    return ApplyError(message)


def _failure(verb: str, name: str, vault: str, exc: Any, what: str = "secret") -> str:
    """One line naming the secret and the cause; never the value, never a body dump."""
    status = getattr(exc, "status_code", None)
    if status is None:  # no answer at all: DNS, TLS, connection
        return f"Key Vault {vault}: cannot {verb} {what} {name} ({type(exc).__name__})"
    code = getattr(getattr(exc, "error", None), "code", None) or "error"
    hint = ""
    if status == 403:
        role = "Certificates Officer" if what == "certificate" else "Secrets Officer"
        hint = (
            f"; the deployer needs the 'Key Vault {role}' role on the vault to "
            "write the platform's access keys and gateway certificate (the template "
            "grants it to deployerPrincipalId)"
        )
    return f"Key Vault {vault}: cannot {verb} {what} {name} (HTTP {status}, {code}){hint}"


def api_key_secret(api_id: str) -> str:
    """The secret of one API's key (its pods' credential)."""
    return API_KEY_PREFIX + api_id


def ensure_access_keys(store: SecretStore, api_ids: Iterable[str]) -> list[str]:
    """Make every access key exist, once; return the names of the secrets written.

    Raises:
        ApplyError: the stored document is not a valid keys document (it is never
            overwritten silently: that would lock every caller out), or Key Vault
            refused a read or write.
    """
    from ai4ec_runtime.auth import AccessKeys, KeysFileError

    wanted = sorted(set(api_ids))
    written: list[str] = []
    text = store.get(ACCESS_KEYS_SECRET)
    if text is None:
        keys = AccessKeys.generate(wanted)
    else:
        try:
            current = AccessKeys.parse(text, f"Key Vault secret {ACCESS_KEYS_SECRET}")
        except KeysFileError as exc:
            raise ApplyError(f"{exc}; fix or delete the secret, then apply again") from None
        fresh = AccessKeys.generate(a for a in wanted if a not in current.apis)
        apis = {a: current.apis.get(a) or fresh.apis[a] for a in wanted}
        keys = AccessKeys(apim=current.apim, event_grid=current.event_grid, apis=apis)
    document = keys.to_json()
    if text != document:
        store.set(ACCESS_KEYS_SECRET, document)
        written.append(ACCESS_KEYS_SECRET)
    holders = {APIM_KEY_SECRET: keys.apim, EVENT_GRID_KEY_SECRET: keys.event_grid}
    holders.update({api_key_secret(a): k for a, k in keys.apis.items()})
    for name in sorted(holders):
        if store.get(name) != holders[name]:
            store.set(name, holders[name])
            written.append(name)
    return written


__all__ = [
    "ACCESS_KEYS_SECRET",
    "CertificateStore",
    "KeyVaultCertificates",
    "ensure_gateway_certificate",
    "APIM_KEY_SECRET",
    "EVENT_GRID_KEY_SECRET",
    "KeyVaultSecrets",
    "SecretStore",
    "api_key_secret",
    "ensure_access_keys",
]
