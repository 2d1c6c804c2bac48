"""Azure naming: the ``azure:`` section -> :class:`~ai4ec.model.types.Azure`, names derived.

Azure needs globally unique names for several resources; they are derived from the
platform name, the environment and a short hash of where the platform lives, then
checked against Azure's length and character rules (E-AZURE-NAME).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from ..load import JsonPath
from .context import ModelContext
from .defaults import (
    seconds,
)
from .rules import (
    DEFAULT_MANAGED_CACHE_SKU,
    check_apim_capacity,
    check_cache_sku,
    check_event_ttl,
    check_managed_cache,
)
from .types import (
    CACHE_MANAGED,
    Api,
    ApiManagement,
    Azure,
    Cache,
    CustomDomain,
    EventGrid,
    Functions,
    KeyVault,
    Monitoring,
    Platform,
    Registry,
    Storage,
)


def uniq_suffix(*parts: str) -> str:
    """A short, deterministic hash of where the platform lives (5 hex digits)."""
    # Azure needs globally unique names for several resources; a short, deterministic
    # hash of where the platform lives keeps them unique yet stable across builds.
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:5]


def env_part(env: str, width: int) -> str:
    """The environment as a name fragment: empty for ``default``, else [a-z0-9]{<=width}."""
    return "" if env == "default" else re.sub(r"[^a-z0-9]", "", env)[:width]


def read_azure(ctx: ModelContext) -> Azure:
    """The ``azure:`` section with every resource name derived and checked."""
    a = ctx.data["azure"]
    env = ctx.environment
    prefix = a["namePrefix"]
    u = uniq_suffix(a["subscriptionId"].lower(), a["resourceGroup"].lower(), env)
    e4 = env_part(env, 4)
    dash = f"-{env_part(env, 10)}" if e4 else ""

    reg = a.get("registry") or {}
    apim = a["apiManagement"]
    cache = a.get("cache") or {}
    fn = a.get("functions") or {}
    eg = a.get("eventGrid") or {}
    mon = a.get("monitoring") or {}
    kv = a.get("keyVault") or {}
    st = a.get("storage") or {}

    apim_sku = apim.get("sku", "Developer")
    apim_capacity = apim.get("capacity", 0 if apim_sku == "Consumption" else 1)
    check_apim_capacity(ctx, apim_sku, apim_capacity)
    cache_kind = cache.get("kind", CACHE_MANAGED)
    if cache_kind == CACHE_MANAGED:
        cache_sku = cache.get("sku", DEFAULT_MANAGED_CACHE_SKU)
        family, capacity = "", 0
        check_managed_cache(ctx, cache)
    else:
        cache_sku = cache.get("sku", "Basic")
        family = cache.get("family", "P" if cache_sku == "Premium" else "C")
        capacity = cache.get("capacity", 1)
        check_cache_sku(ctx, cache_sku, family, capacity)
    ttl_minutes = math.ceil(seconds(eg.get("eventTtl", "1d")) / 60)
    check_event_ttl(ctx, ttl_minutes)

    azure = Azure(
        subscription_id=a["subscriptionId"].lower(),
        tenant_id=a.get("tenantId"),
        resource_group=a["resourceGroup"],
        location=a["location"],
        name_prefix=prefix,
        registry=Registry(name=reg.get("name", f"{prefix}{e4}acr{u}"), sku=reg.get("sku", "Basic")),
        api_management=ApiManagement(
            name=apim.get("name", f"{prefix}{dash}-apim-{u}"),
            sku=apim_sku,
            capacity=apim_capacity,
            publisher_name=apim["publisherName"],
            publisher_email=apim["publisherEmail"],
            custom_domain=(
                CustomDomain(
                    host_name=apim["customDomain"]["hostName"],
                    key_vault_certificate=apim["customDomain"]["keyVaultCertificate"],
                )
                if "customDomain" in apim
                else None
            ),
        ),
        cache=Cache(
            name=f"{prefix}{dash}-redis-{u}",
            kind=cache_kind,
            sku=cache_sku,
            family=family,
            capacity=capacity,
            location=a["location"],
        ),
        functions=Functions(
            app_name=f"{prefix}{dash}-tasks-{u}",
            plan_name=f"{prefix}{dash}-tasks-plan",
            plan_sku=fn.get("planSku", "EP1"),
            minimum_instances=fn.get("minimumInstances", 1),
        ),
        event_grid=EventGrid(
            topic_name=f"{prefix}{dash}-tasks-{u}",
            max_delivery_attempts=eg.get("maxDeliveryAttempts", 30),
            event_ttl_minutes=min(ttl_minutes, 1440),
        ),
        monitoring=Monitoring(
            workspace_name=f"{prefix}{dash}-logs",
            app_insights_name=f"{prefix}{dash}-appi",
            retention_days=mon.get("retentionDays", 30),
            daily_cap_gb=mon.get("dailyCapGb"),
        ),
        key_vault=KeyVault(
            name=kv.get("name", f"{prefix}-{e4 + '-' if e4 else ''}kv-{u}"),
            sku=kv.get("sku", "standard"),
            soft_delete_retention_days=kv.get("softDeleteRetentionDays", 90),
            purge_protection=kv.get("purgeProtection", True),
        ),
        storage=Storage(
            name=st.get("name", f"{prefix}{e4}st{u}"),
            sku=st.get("sku", "Standard_LRS"),
            results_container=st.get("resultsContainer", "results"),
        ),
    )
    check_azure_names(ctx, azure, a)
    return azure


def check_azure_names(ctx: ModelContext, az: Azure, raw: dict[str, Any]) -> None:
    """Report each derived or overridden name that breaks Azure's naming rules."""

    # (name, rule regex, human rule, path of an override or of namePrefix)
    def where(section: str) -> JsonPath:
        return (
            ("azure", section, "name")
            if "name" in (raw.get(section) or {})
            else ("azure", "namePrefix")
        )

    rules = [
        (
            az.storage.name,
            r"[a-z0-9]{3,24}",
            "storage account names are 3-24 lowercase letters and digits",
            where("storage"),
        ),
        (
            az.key_vault.name,
            r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]",
            "Key Vault names are 3-24 letters, digits and single hyphens, starting with a letter",
            where("keyVault"),
        ),
        (
            az.registry.name,
            r"[a-zA-Z0-9]{5,50}",
            "registry names are 5-50 letters and digits",
            where("registry"),
        ),
        (
            az.api_management.name,
            r"[a-zA-Z](?:[a-zA-Z0-9-]{0,48}[a-zA-Z0-9])?",
            "API Management names are 1-50 letters, digits and hyphens, starting with a letter",
            where("apiManagement"),
        ),
    ]
    for name, pattern, rule, path in rules:
        if not re.fullmatch(pattern, name):
            ctx.report("E-AZURE-NAME", f"invalid Azure name {name!r}: {rule}", path)


#: Azure's rule for blob container names: 3-63 lowercase letters, digits and single
#: hyphens, starting and ending with a letter or digit.
CONTAINER_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")


def results_container(azure: Azure, api: Api) -> str:
    """``<storage.resultsContainer>-<api id>``: the one blob container ``api`` writes to.

    One container per API, so that each API's identity can be granted its own results
    and nothing else (issue 13). The name is the prefix and the API id joined, never
    shortened: distinct API ids give distinct names, and a name Azure would refuse is a
    validation error (E-RESULTS-CONTAINER), not a surprise at deployment. It cannot
    meet the platform's own containers (``ai4ec-deadletter``, ``ai4ec-packages``): the
    name holds the API id, and every API id holds ``-v<digit>``, which they do not.
    """
    return f"{azure.storage.results_container}-{api.id}"


def check_results_containers(ctx: ModelContext, azure: Azure, apis: list[Api]) -> None:
    """Report each API whose results container name Azure would refuse (E-RESULTS-CONTAINER).

    API names may hold double hyphens and versions may be long, both of which Kubernetes
    accepts but a blob container name does not. The error points at the API's name.
    """
    prefix = azure.storage.results_container
    for i, api in enumerate(apis):
        name = results_container(azure, api)
        if CONTAINER_NAME.fullmatch(name):
            continue
        hint = (
            "use single hyphens in the API's name (Azure refuses '--' in container names)"
            if "--" in api.id
            else "shorten the API's name or version, or storage.resultsContainer"
        )
        ctx.report(
            "E-RESULTS-CONTAINER",
            f"API {api.id!r} would write to blob container {name!r} ({len(name)} "
            "characters), which Azure refuses: container names are 3-63 lowercase "
            "letters, digits and single hyphens",
            ("apis", i, "name"),
            f"the container is '<storage.resultsContainer ({prefix})>-<name>-<version>'; " + hint,
        )


def workload_name(api: Api) -> str:
    """The name of ``api``'s Kubernetes workload: Deployment, Service and ServiceAccount.

    The Azure side names the API's identity, its federated credential subject
    (``system:serviceaccount:<namespace>:<workload>``), its key secret and its
    ``apis.<workload>.clientId`` output after it, so both sides read it from here.
    """
    return api.id


# ---------------------------------------------------------------- identities both sides name
# The Kubernetes objects sign in to Key Vault as these ServiceAccounts (workload identity);
# the Azure template federates one identity with each and grants it exactly these secrets.
# Both renderers read the names from here so that the subjects always match.

#: Namespace of the AKS Istio add-on's ingress gateway.
INGRESS_NAMESPACE = "aks-istio-ingress"
#: ServiceAccount (in the cluster's namespace) syncing the runtime Secret.
RUNTIME_SERVICE_ACCOUNT = "ai4ec-runtime"
#: ServiceAccount (in :data:`INGRESS_NAMESPACE`) syncing the gateway's credential.
GATEWAY_SERVICE_ACCOUNT = "ai4ec-gateway-credential"
#: Key Vault certificate the gateway serves when platform.yaml names none.
GATEWAY_SERVER_CERT = "ai4ec-gateway-server"
#: Key Vault certificate API Management and dispatch present; its public part is the CA
#: the gateway trusts.
GATEWAY_CLIENT_CERT = "ai4ec-gateway-client"
#: The same certificate and key as PEM text, for the task manager's dispatch: Python's
#: ssl module reads PEM, not PKCS#12, and the Functions bundle carries no compiled code
#: to convert (``ai4ec apply`` writes it from the certificate, see apply/keys.py).
GATEWAY_CLIENT_PEM_SECRET = "ai4ec-gateway-client-pem"
#: Kubernetes keys of the runtime Secret, and the Key Vault secrets they come from. No
#: key is among them: URLs without keys, telemetry, and the Redis password of KEDA.
RUNTIME_SECRET_KEYS: tuple[tuple[str, str], ...] = (
    ("appinsights-connection-string", "ai4ec-appinsights-connection-string"),
    ("appinsights-instrumentation-key", "ai4ec-appinsights-instrumentation-key"),
    ("cache-connector-get-uri", "ai4ec-cache-connector-get-uri"),
    ("cache-connector-upsert-uri", "ai4ec-cache-connector-upsert-uri"),
    ("current-processing-upsert-uri", "ai4ec-current-processing-upsert-uri"),
    ("redis-password", "ai4ec-redis-password"),
)


def service_account_subject(namespace: str, name: str) -> str:
    """The federated credential subject of a Kubernetes ServiceAccount."""
    return f"system:serviceaccount:{namespace}:{name}"


def mutual_tls(platform: Platform) -> bool:
    """Whether any cluster's gateway asks callers for the gateway client certificate."""
    return any(
        c.ingress.protocol == "https" and c.ingress.client_certificate for c in platform.clusters
    )
