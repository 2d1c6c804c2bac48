"""The Function App's managed identity as an azure-core token credential.

The runtime publishes tasks to Event Grid with its own identity, so the topic can refuse
keys altogether (``disableLocalAuth: true``, checkov CKV_AZURE_192) and no topic key
exists to leak. ``azure-identity`` would do this, but it cannot travel in the bundle: it
needs ``msal`` and ``cryptography``, and the bundle carries no compiled code (see
:mod:`ai4ec_runtime.bundle`). App Service (and so Azure Functions, Consumption plans
included) gives every app with an identity a local token endpoint instead:

* ``IDENTITY_ENDPOINT`` - the URL to ask, reachable from the app only;
* ``IDENTITY_HEADER`` - a value App Service rotates, sent back as ``X-IDENTITY-HEADER``
  so that only code running in the app (not a request it was tricked into forwarding)
  can get a token.

``GET {IDENTITY_ENDPOINT}?resource=<resource>&api-version=2019-08-01`` answers
``{"access_token": ..., "expires_on": "<epoch seconds>", "token_type": "Bearer", ...}``
for the app's system-assigned identity. The request goes through azure-core's own
pipeline (retries included), the library the Event Grid client already uses.

Tokens are cached until five minutes before they expire, so a publish normally costs
no extra round trip. Neither the header nor a token is ever logged or put in an error.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest

from .settings import ManagedIdentity

#: The endpoint's protocol version (App Service's current one).
API_VERSION = "2019-08-01"

#: A token is renewed this long before it expires.
REFRESH_MARGIN_SECONDS = 300


class AppServiceIdentityCredential:
    """``get_token`` for the app's system-assigned identity (azure-core's protocol)."""

    def __init__(self, identity: ManagedIdentity, timeout_seconds: float = 10.0) -> None:
        self._identity = identity
        self._timeout = timeout_seconds
        self._client: PipelineClient[Any, Any] = PipelineClient(
            base_url=identity.endpoint,
            policies=[RetryPolicy(retry_total=3, retry_backoff_factor=0.5)],
        )
        self._tokens: dict[str, AccessToken] = {}
        self._lock = threading.Lock()

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A token for the one resource ``scopes`` names (``https://x/.default``).

        Raises:
            ClientAuthenticationError: the endpoint refused, or answered no token.
        """
        del claims, tenant_id, enable_cae, kwargs  # not offered by the App Service endpoint
        if len(scopes) != 1:
            raise ClientAuthenticationError("a managed identity token is for exactly one scope")
        resource = scopes[0].removesuffix("/.default")
        with self._lock:
            cached = self._tokens.get(resource)
            if cached is not None and cached.expires_on - REFRESH_MARGIN_SECONDS > time.time():
                return cached
            token = self._request(resource)
            self._tokens[resource] = token
            return token

    def _request(self, resource: str) -> AccessToken:
        request = HttpRequest(
            "GET",
            self._identity.endpoint,
            params={"resource": resource, "api-version": API_VERSION},
            headers={"X-IDENTITY-HEADER": self._identity.header, "Metadata": "true"},
        )
        try:
            response = self._client.send_request(
                request, connection_timeout=self._timeout, read_timeout=self._timeout
            )
            response.raise_for_status()
            body = response.json()
            return AccessToken(str(body["access_token"]), int(body["expires_on"]))
        except HttpResponseError as exc:
            raise ClientAuthenticationError(
                f"the managed identity endpoint answered {exc.status_code} for {resource}"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise ClientAuthenticationError(
                f"the managed identity endpoint answered no usable token for {resource}"
            ) from None

    def close(self) -> None:
        """Close the pipeline's HTTP session."""
        self._client.close()
