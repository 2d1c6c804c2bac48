"""The Key Vault secrets of docs/contracts.md, written from keys at deployment time."""

from __future__ import annotations

from typing import Any

from .common import SECRET_NAMES, TAGS, AzureSpec, new_resource
from .data import Redis
from .functions import Functions
from .roles import Grants
from .spec import Fn, Interp, Note, Resource, camel


def secrets(
    spec: AzureSpec,
    vault: Resource,
    cache: Redis,
    functions: Functions,
    app_insights: Resource,
    grants: Grants,
) -> tuple[Resource, ...]:
    """The Key Vault secrets of docs/contracts.md, written from keys at deployment time."""
    site, appi = functions.site, app_insights
    app_host = site.ref("defaultHostName")

    def fn_uri(function: str) -> tuple[Interp, str]:
        # No key in the URL: each API's pods hold their own (ai4ec-api-key-<api id>,
        # written by `ai4ec apply`) and present it as x-functions-key or ?code=.
        return Interp(("https://", app_host, f"/api/{function}")), "Carries no key."

    redis_key = cache.keys_from.keys("primaryKey")
    values: dict[str, tuple[Any, str]] = {
        "ai4ec-redis-url": (
            Interp(
                (
                    "rediss://:",
                    Fn("uriComponent", (redis_key,)),
                    "@",
                    cache.server.ref("hostName"),
                    f":{cache.port}/0",
                )
            ),
            "The key is URL-encoded: Redis keys may contain / and +.",
        ),
        "ai4ec-redis-password": (redis_key, ""),
        "ai4ec-cache-connector-upsert-uri": fn_uri("CacheConnectorUpsert"),
        "ai4ec-cache-connector-get-uri": fn_uri("CacheConnectorGet"),
        "ai4ec-current-processing-upsert-uri": fn_uri("CurrentProcessingUpsert"),
        "ai4ec-appinsights-connection-string": (appi.ref("ConnectionString"), ""),
        "ai4ec-appinsights-instrumentation-key": (
            appi.ref("InstrumentationKey"),
            "For upstream-style containers that read APPINSIGHTS_INSTRUMENTATIONKEY.",
        ),
    }
    del grants  # no secret reads the Functions host's keys any more (no listKeys race)
    made: list[Resource] = []
    for name in SECRET_NAMES:
        value, why = values[name]
        made.append(
            spec.add(
                new_resource(
                    camel("secret", name.removeprefix("ai4ec-")),
                    "Microsoft.KeyVault/vaults/secrets",
                    name,
                    "secrets",
                    parent=vault,
                    body={
                        "tags": TAGS,
                        "properties": {
                            "value": Note(value, why) if why else value,
                            "contentType": "text/plain",
                            "attributes": {"enabled": True},
                        },
                    },
                )
            )
        )
    return tuple(made)
