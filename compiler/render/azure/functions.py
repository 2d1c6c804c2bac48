"""The task manager's infrastructure: Event Grid topic, plan and Function App."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...model.naming import GATEWAY_CLIENT_PEM_SECRET, mutual_tls
from ...model.types import Platform
from ..runtime import app_settings
from .access import ACCESS_KEYS_SECRET
from .common import (
    LOCATION,
    PACKAGE_BLOB,
    PACKAGE_CONTAINER,
    PARAM_BACKEND_URL,
    TAGS,
    AzureSpec,
    new_resource,
)
from .spec import Interp, Note, Param, Parameter, Resource, camel

#: The runtime's health function (``Health`` in functions/ai4ec_runtime/app.py).
HEALTH_CHECK_PATH = "/api/health"


@dataclass(frozen=True, slots=True)
class Functions:
    """Handle of the functions module.

    Attributes:
        topic: The Event Grid topic async tasks travel on.
        site: The Function App (the runtime).
        host: Its host (virtual; nothing reads its keys: the runtime checks its own).
    """

    topic: Resource
    site: Resource
    host: Resource


def _site_config(
    platform: Platform,
    topic: Resource,
    account: Resource,
    consumption: bool,
    ingress_urls: Any | None,
) -> dict[str, Any]:
    """``siteConfig`` of the Function App: runtime, TLS, and app settings without secrets."""
    az = platform.azure
    fn = az.functions
    vault_uri = f"https://{az.key_vault.name}.vault.azure.net/secrets"
    settings: dict[str, Any] = dict(app_settings(platform))
    # The real endpoint, not a guess of its host name: Azure reports it after creation.
    settings["EVENT_GRID_TOPIC_URI"] = topic.ref("endpoint")
    settings.setdefault(
        "AI4EC_EVENT_MAX_DELIVERY_ATTEMPTS", str(az.event_grid.max_delivery_attempts)
    )
    settings.update(
        {
            "FUNCTIONS_EXTENSION_VERSION": "~4",
            "AzureWebJobsStorage__accountName": account.name,
            "APPLICATIONINSIGHTS_CONNECTION_STRING": (
                f"@Microsoft.KeyVault(SecretUri={vault_uri}/ai4ec-appinsights-connection-string/)"
            ),
            "AI4EC_BACKEND_BASE_URL": Param(PARAM_BACKEND_URL),
            # Every caller's key, generated once by `ai4ec apply`; the runtime checks them.
            "AI4EC_ACCESS_KEYS": (
                f"@Microsoft.KeyVault(SecretUri={vault_uri}/{ACCESS_KEYS_SECRET}/)"
            ),
        }
    )
    if mutual_tls(platform):
        # The gateway client certificate (PEM) dispatch presents to mutual-TLS gateways.
        settings["AI4EC_GATEWAY_CLIENT_CERT"] = (
            f"@Microsoft.KeyVault(SecretUri={vault_uri}/{GATEWAY_CLIENT_PEM_SECRET}/)"
        )
    if ingress_urls is not None:
        # Each cluster's ingress by name: a pipeline step goes to the cluster of its API.
        settings["AI4EC_BACKEND_BASE_URLS"] = ingress_urls
    if consumption:
        settings["WEBSITE_RUN_FROM_PACKAGE"] = Interp(
            (account.ref("primaryEndpoints", "blob"), f"{PACKAGE_CONTAINER}/{PACKAGE_BLOB}")
        )
        settings["WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID"] = "SystemAssigned"
    else:
        settings["WEBSITE_RUN_FROM_PACKAGE"] = "1"
    site_config: dict[str, Any] = {
        "linuxFxVersion": "Python|3.11",
        "ftpsState": "Disabled",
        "minTlsVersion": "1.2",
        "scmMinTlsVersion": "1.2",
        "http20Enabled": True,
        "use32BitWorkerProcess": False,
    }
    site_config["healthCheckPath"] = Note(
        HEALTH_CHECK_PATH,
        "The runtime's anonymous probe: 200 while Redis answers, 503 otherwise. App Service\n"
        "replaces instances that keep failing it (Elastic Premium; Consumption ignores it).",
    )
    if not consumption:
        site_config["minimumElasticInstanceCount"] = Note(
            fn.minimum_instances, "Always-ready instances: no cold start for APIM's calls."
        )
    site_config["appSettings"] = Note(
        [{"name": k, "value": settings[k]} for k in sorted(settings)],
        "Secrets are Key Vault references resolved with the app's identity; storage is\n"
        "identity-based (AzureWebJobsStorage__accountName), so no key is written anywhere.",
    )
    return site_config


def functions(
    spec: AzureSpec,
    platform: Platform,
    storage_account: Resource,
    backend_url_default: str,
    ingress_urls: Any | None = None,
) -> Functions:
    """Event Grid topic, plan and Function App of the task manager (runtime).

    ``ingress_urls`` is the JSON text of the cluster -> ingress URL map (an expression
    over the template parameter), or None when the template has no such parameter.
    """
    az = platform.azure
    fn = az.functions
    module = "functions"
    topic = spec.add(
        new_resource(
            "topic",
            "Microsoft.EventGrid/topics",
            az.event_grid.topic_name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "identity": Note(
                    {"type": "SystemAssigned"}, "Writes dead letters to storage with this identity."
                ),
                "properties": {
                    "inputSchema": "EventGridSchema",
                    "publicNetworkAccess": "Enabled",
                    "minimumTlsVersionAllowed": "1.2",
                    "disableLocalAuth": Note(
                        True,
                        "Keys refused: the runtime publishes with its identity (Data Sender).",
                    ),
                },
            },
            comment="Carries async tasks from the runtime to the cluster (via BackendWebhook).",
        )
    )
    consumption = fn.plan_sku == "Y1"
    plan_props: dict[str, Any] = {"reserved": Note(True, "Linux.")}
    if consumption:
        sku: dict[str, Any] = {"name": "Y1", "tier": "Dynamic"}
        kind = "functionapp"
    else:
        sku = {
            "name": fn.plan_sku,
            "tier": "ElasticPremium",
            "family": "EP",
            "capacity": Note(fn.minimum_instances, "Minimum instances of the plan."),
        }
        kind = "elastic"
        plan_props["maximumElasticWorkerCount"] = max(20, fn.minimum_instances)
    plan = spec.add(
        new_resource(
            "plan",
            "Microsoft.Web/serverfarms",
            fn.plan_name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": sku,
                "kind": kind,
                "properties": plan_props,
            },
            comment=f"{'Consumption' if consumption else 'Elastic Premium'} plan of the runtime.",
        )
    )
    site_config = _site_config(platform, topic, storage_account, consumption, ingress_urls)
    site = spec.add(
        new_resource(
            "site",
            "Microsoft.Web/sites",
            fn.app_name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "kind": "functionapp,linux",
                "identity": {"type": "SystemAssigned"},
                "properties": {
                    "serverFarmId": plan.id(),
                    "reserved": True,
                    "httpsOnly": True,
                    "publicNetworkAccess": "Enabled",
                    "keyVaultReferenceIdentity": "SystemAssigned",
                    "siteConfig": site_config,
                },
            },
            comment="The runtime (functions/): task store API, dispatch webhook, timers.",
        )
    )
    for policy in ("ftp", "scm"):
        spec.add(
            new_resource(
                camel("site", policy, "basic", "auth"),
                "Microsoft.Web/sites/basicPublishingCredentialsPolicies",
                policy,
                module,
                parent=site,
                body={"properties": {"allow": False}},
                comment=f"No {policy.upper()} password: deployments sign in with Entra ID.",
            )
        )
    host = spec.add(
        new_resource(
            "siteHost", "Microsoft.Web/sites/host", "default", module, parent=site, virtual=True
        )
    )
    spec.params.append(
        Parameter(
            PARAM_BACKEND_URL,
            "string",
            backend_url_default,
            "Scheme and host of the cluster's Istio ingress that dispatch posts tasks to "
            "(AI4EC_BACKEND_BASE_URL), e.g. https://ingress.example.org or http://20.1.2.3. "
            "The ingress address exists only once the cluster and its gateway run, so "
            "`ai4ec apply` reads it from the cluster and deploys again with it.",
        )
    )
    return Functions(topic=topic, site=site, host=host)
