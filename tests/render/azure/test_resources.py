"""What the Azure template contains, resource by resource, read from main.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ai4ec.model.naming import results_container
from ai4ec.model.types import CustomDomain, Platform
from ai4ec.render.azure.common import DEAD_LETTER_CONTAINER, PACKAGE_CONTAINER, ROLES
from ai4ec.render.runtime import app_settings

from ...conftest import ROOT
from .support import load_arm, platforms, render_platform, rendered

#: Types whose resources carry tags (role assignments, containers, policies and the
#: like have none in ARM).
TAGGED = {
    "Microsoft.OperationalInsights/workspaces",
    "Microsoft.Insights/components",
    "Microsoft.Insights/dataCollectionRules",
    "Microsoft.Storage/storageAccounts",
    "Microsoft.KeyVault/vaults",
    "Microsoft.KeyVault/vaults/secrets",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.ContainerService/managedClusters",
    "Microsoft.Cache/redis",
    "Microsoft.Cache/redisEnterprise",
    "Microsoft.EventGrid/topics",
    "Microsoft.Web/serverfarms",
    "Microsoft.Web/sites",
    "Microsoft.ApiManagement/service",
    "Microsoft.ManagedIdentity/userAssignedIdentities",
}


def _platform(sample: str = "camera-trap", env: str = "default") -> Platform:
    return next(
        p
        for p in platforms(str(ROOT / "samples" / sample / "platform.yaml"))
        if p.environment == env
    )


def _arm(platform: Platform) -> dict[str, Any]:
    return load_arm(render_platform(platform))


def _one(arm: dict[str, Any], type_: str, name: str | None = None) -> dict[str, Any]:
    found = [
        r for r in arm["resources"] if r["type"] == type_ and (name is None or r["name"] == name)
    ]
    assert len(found) == 1, (type_, name, [r["name"] for r in found])
    return found[0]


def _all(arm: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r for r in arm["resources"] if r["type"] == type_]


def test_tags_on_everything() -> None:
    plat = _platform()
    arm = load_arm(rendered("camera-trap", "default"))
    assert arm["variables"]["tags"] == dict(plat.tags)
    for r in arm["resources"]:
        if r["type"] in TAGGED:
            assert r["tags"] == "[variables('tags')]", r["name"]
    for pool in _all(arm, "Microsoft.ContainerService/managedClusters/agentPools"):
        assert pool["properties"]["tags"] == "[variables('tags')]"
    cluster = _one(arm, "Microsoft.ContainerService/managedClusters")
    assert cluster["properties"]["agentPoolProfiles"][0]["tags"] == "[variables('tags')]"


def test_monitoring_is_workspace_based() -> None:
    plat = _platform()
    arm = load_arm(rendered("camera-trap", "default"))
    ws = _one(arm, "Microsoft.OperationalInsights/workspaces")
    assert ws["name"] == plat.azure.monitoring.workspace_name
    assert ws["properties"]["retentionInDays"] == 90
    appi = _one(arm, "Microsoft.Insights/components")
    assert appi["properties"]["WorkspaceResourceId"] == (
        f"[resourceId('Microsoft.OperationalInsights/workspaces', '{ws['name']}')]"
    )
    capped = dataclasses.replace(
        plat,
        azure=dataclasses.replace(
            plat.azure,
            monitoring=dataclasses.replace(plat.azure.monitoring, daily_cap_gb=2.5),
        ),
    )
    ws = _one(_arm(capped), "Microsoft.OperationalInsights/workspaces")
    assert ws["properties"]["workspaceCapping"] == {"dailyQuotaGb": 2.5}


def test_storage_account_is_locked_down() -> None:
    plat = _platform()
    arm = load_arm(rendered("camera-trap", "default"))
    st = _one(arm, "Microsoft.Storage/storageAccounts")
    props = st["properties"]
    assert st["name"] == plat.azure.storage.name
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False
    containers = {
        r["name"].split("/")[-1]: r
        for r in _all(arm, "Microsoft.Storage/storageAccounts/blobServices/containers")
    }
    # The dead-letter container and one results container per API (no shared one).
    results = {results_container(plat.azure, a) for a in plat.apis}
    assert set(containers) == results | {DEAD_LETTER_CONTAINER}
    assert all(c["properties"]["publicAccess"] == "None" for c in containers.values())


def test_dead_letter_container_matches_the_runtime() -> None:
    from ai4ec_runtime.app import DEAD_LETTER_CONTAINER as RUNTIME

    assert DEAD_LETTER_CONTAINER == RUNTIME


def test_key_vault_rbac_soft_delete_purge_protection() -> None:
    plat = _platform()
    kv = _one(_arm(plat), "Microsoft.KeyVault/vaults")["properties"]
    assert kv["enableRbacAuthorization"] is True
    assert kv["enableSoftDelete"] is True
    assert kv["softDeleteRetentionInDays"] == plat.azure.key_vault.soft_delete_retention_days
    assert kv["enablePurgeProtection"] is True
    assert "accessPolicies" not in kv
    off = dataclasses.replace(
        plat,
        azure=dataclasses.replace(
            plat.azure,
            key_vault=dataclasses.replace(plat.azure.key_vault, purge_protection=False),
        ),
    )
    # Azure rejects enablePurgeProtection=false; leaving it out is how it stays off.
    assert "enablePurgeProtection" not in _one(_arm(off), "Microsoft.KeyVault/vaults")["properties"]


def test_registry_has_no_admin_user_and_each_kubelet_pulls() -> None:
    arm = load_arm(rendered("camera-trap", "default"))
    acr = _one(arm, "Microsoft.ContainerRegistry/registries")
    assert acr["properties"]["adminUserEnabled"] is False
    pulls = [
        r
        for r in _all(arm, "Microsoft.Authorization/roleAssignments")
        if ROLES["AcrPull"] in r["properties"]["roleDefinitionId"]
    ]
    assert len(pulls) == 1
    assert "kubeletidentity.objectId" in pulls[0]["properties"]["principalId"]
    assert pulls[0]["scope"] == f"Microsoft.ContainerRegistry/registries/{acr['name']}"


def test_aks_cluster() -> None:
    plat = _platform()
    cluster = plat.clusters[0]
    arm = load_arm(rendered("camera-trap", "default"))
    aks = _one(arm, "Microsoft.ContainerService/managedClusters")
    props = aks["properties"]
    assert aks["name"] == cluster.aks_name
    assert aks["identity"] == {"type": "SystemAssigned"}
    assert props["kubernetesVersion"] == cluster.kubernetes_version
    assert props["oidcIssuerProfile"] == {"enabled": True}
    assert props["securityProfile"]["workloadIdentity"] == {"enabled": True}
    assert props["serviceMeshProfile"] == {
        "mode": "Istio",
        "istio": {
            "revisions": [cluster.istio_revision],
            "components": {"ingressGateways": [{"enabled": True, "mode": "External"}]},
        },
    }
    assert props["workloadAutoScalerProfile"] == {"keda": {"enabled": True}}
    addons = props["addonProfiles"]
    assert addons["azureKeyvaultSecretsProvider"]["enabled"] is True
    assert addons["omsagent"]["config"]["logAnalyticsWorkspaceResourceID"].startswith(
        "[resourceId('Microsoft.OperationalInsights/workspaces'"
    )
    (system,) = props["agentPoolProfiles"]
    assert system["mode"] == "System"
    assert system["count"] == 2 and system["enableAutoScaling"] is False
    assert system["availabilityZones"] == ["1", "2", "3"]
    assert system["vmSize"] == "Standard_D4s_v5"
    # Container Insights: a data collection rule bound to the cluster.
    link = _one(arm, "Microsoft.Insights/dataCollectionRuleAssociations")
    assert link["scope"] == f"Microsoft.ContainerService/managedClusters/{cluster.aks_name}"


def test_user_pools_cpu_gpu_spot() -> None:
    arm = load_arm(rendered("camera-trap", "default"))
    pools = {
        r["name"].split("/")[1]: r
        for r in _all(arm, "Microsoft.ContainerService/managedClusters/agentPools")
    }
    assert list(pools) == ["cpu", "gpu", "gpusync"]
    # The sync detector's pool is on-demand: a spot eviction would take every replica.
    assert "scaleSetPriority" not in pools["gpusync"]["properties"]
    cpu, gpu = pools["cpu"]["properties"], pools["gpu"]["properties"]
    assert cpu["mode"] == gpu["mode"] == "User"
    assert (cpu["enableAutoScaling"], cpu["minCount"], cpu["maxCount"]) == (True, 1, 5)
    assert "scaleSetPriority" not in cpu and "nodeTaints" not in cpu
    assert (gpu["minCount"], gpu["maxCount"]) == (0, 4)
    assert gpu["scaleSetPriority"] == "Spot"
    assert gpu["scaleSetEvictionPolicy"] == "Delete"
    assert gpu["spotMaxPrice"] == -1
    assert gpu["nodeTaints"] == [
        "sku=gpu:NoSchedule",
        "kubernetes.azure.com/scalesetpriority=spot:NoSchedule",
    ]
    assert gpu["nodeLabels"] == {"workload": "inference"}
    assert gpu["gpuProfile"] == {"driver": "Install"}
    assert gpu["osDiskSizeGB"] == 128 and gpu["maxPods"] == 30
    # AKS changes one pool of a cluster at a time: the second waits for the first.
    assert any("agentPools', 'camtrap-main-aks', 'cpu'" in d for d in pools["gpu"]["dependsOn"])


def test_fixed_size_pool_spot_price_and_internal_ingress() -> None:
    plat = _platform()
    cluster = plat.clusters[0]
    cpu, gpu, *others = cluster.pools
    assert gpu.spot is not None
    changed = dataclasses.replace(
        cluster,
        pools=(
            dataclasses.replace(cpu, min_count=None, max_count=None, count=3, zones=("1", "2")),
            dataclasses.replace(gpu, spot=dataclasses.replace(gpu.spot, max_price=0.35)),
            *others,
        ),
        ingress=dataclasses.replace(cluster.ingress, external=False),
        keda=False,
    )
    arm = _arm(dataclasses.replace(plat, clusters=(changed,)))
    pools = {
        r["name"].split("/")[1]: r["properties"]
        for r in _all(arm, "Microsoft.ContainerService/managedClusters/agentPools")
    }
    assert pools["cpu"]["enableAutoScaling"] is False and pools["cpu"]["count"] == 3
    assert "minCount" not in pools["cpu"]
    assert pools["cpu"]["availabilityZones"] == ["1", "2"]
    assert pools["gpu"]["spotMaxPrice"] == 0.35
    aks = _one(arm, "Microsoft.ContainerService/managedClusters")["properties"]
    gateways = aks["serviceMeshProfile"]["istio"]["components"]["ingressGateways"]
    assert gateways == [{"enabled": True, "mode": "Internal"}]
    assert aks["workloadAutoScalerProfile"] == {"keda": {"enabled": False}}


def test_two_clusters_get_two_modules_and_roles() -> None:
    plat = _platform()
    second = dataclasses.replace(plat.clusters[0], name="eu", aks_name="camtrap-eu-aks")
    files = render_platform(dataclasses.replace(plat, clusters=(plat.clusters[0], second)))
    assert {"azure/modules/aks-main.bicep", "azure/modules/aks-eu.bicep"} <= set(files)
    arm = load_arm(files)
    assert len(_all(arm, "Microsoft.ContainerService/managedClusters")) == 2
    roles = _all(arm, "Microsoft.Authorization/roleAssignments")
    assert len({r["name"] for r in roles}) == len(roles)
    assert sum(ROLES["AcrPull"] in r["properties"]["roleDefinitionId"] for r in roles) == 2
    outputs = arm["outputs"]["clusters"]["value"]
    assert set(outputs) == {"main", "eu"}


def test_redis_is_tls_only() -> None:
    plat = _platform()
    cache = dataclasses.replace(
        plat.azure.cache, kind="legacy", sku="Standard", family="C", capacity=1
    )
    plat = dataclasses.replace(plat, azure=dataclasses.replace(plat.azure, cache=cache))
    redis = _one(_arm(plat), "Microsoft.Cache/redis")["properties"]
    assert redis["enableNonSslPort"] is False
    assert redis["minimumTlsVersion"] == "1.2"
    assert redis["sku"] == {"name": cache.sku, "family": cache.family, "capacity": cache.capacity}


def test_managed_redis_is_tls_only() -> None:
    arm = _arm(_platform())
    server = _one(arm, "Microsoft.Cache/redisEnterprise")
    assert server["properties"]["minimumTlsVersion"] == "1.2"
    db = _one(arm, "Microsoft.Cache/redisEnterprise/databases")
    assert db["properties"]["clientProtocol"] == "Encrypted"
    assert db["properties"]["port"] == 10000


def test_event_grid_subscription() -> None:
    plat = _platform()
    arm = _arm(plat)
    sub = _one(arm, "Microsoft.EventGrid/topics/eventSubscriptions")
    assert sub["condition"] == "[parameters('deployEventSubscription')]"
    props = sub["properties"]
    assert props["retryPolicy"] == {
        "maxDeliveryAttempts": plat.azure.event_grid.max_delivery_attempts,
        "eventTimeToLiveInMinutes": plat.azure.event_grid.event_ttl_minutes,
    }
    dest = props["destination"]["properties"]
    # No key in the URL: Event Grid presents its own key (not APIM's, not an API's) as a
    # secret header, filled from Key Vault through a secure parameter.
    assert dest["endpointUrl"].startswith("[format('https://{0}/api/BackendWebhook'")
    assert "code=" not in dest["endpointUrl"]
    assert dest["deliveryAttributeMappings"] == [
        {
            "name": "x-functions-key",
            "type": "Static",
            "properties": {"value": "[parameters('eventGridDeliveryKey')]", "isSecret": True},
        }
    ]
    dead = props["deadLetterWithResourceIdentity"]
    assert dead["identity"] == {"type": "SystemAssigned"}
    assert dead["deadLetterDestination"]["properties"]["blobContainerName"] == DEAD_LETTER_CONTAINER
    # The topic's identity may write dead letters before the subscription exists.
    assert any("roleAssignments" in d for d in sub["dependsOn"])


def test_function_app() -> None:
    plat = _platform()
    arm = _arm(plat)
    plan = _one(arm, "Microsoft.Web/serverfarms")
    assert plan["sku"]["name"] == "EP1" and plan["sku"]["tier"] == "ElasticPremium"
    assert plan["properties"]["reserved"] is True
    site = _one(arm, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert site["identity"] == {"type": "SystemAssigned"}
    cfg = site["properties"]["siteConfig"]
    assert cfg["linuxFxVersion"] == "Python|3.11"
    assert cfg["minimumElasticInstanceCount"] == plat.azure.functions.minimum_instances
    # The runtime's keyless probe (tests/runtime/test_rt_health.py pins the route).
    assert cfg["healthCheckPath"] == "/api/health"
    settings = {s["name"]: s["value"] for s in cfg["appSettings"]}
    for name, value in app_settings(plat).items():
        if name != "EVENT_GRID_TOPIC_URI":  # the topic's real endpoint instead of a guess
            assert settings[name] == value, name
    assert settings["EVENT_GRID_TOPIC_URI"].startswith("[reference(")
    assert settings["AI4EC_BACKEND_BASE_URL"] == "[parameters('backendBaseUrl')]"
    assert settings["AzureWebJobsStorage__accountName"] == plat.azure.storage.name
    assert settings["WEBSITE_RUN_FROM_PACKAGE"] == "1"
    assert settings["AI4EC_ACCESS_KEYS"] == (
        f"@Microsoft.KeyVault(SecretUri=https://{plat.azure.key_vault.name}.vault.azure.net"
        "/secrets/ai4ec-access-keys/)"
    )


def test_consumption_plan_runs_from_a_package_blob() -> None:
    plat = _platform()
    y1 = dataclasses.replace(
        plat,
        azure=dataclasses.replace(
            plat.azure, functions=dataclasses.replace(plat.azure.functions, plan_sku="Y1")
        ),
    )
    arm = _arm(y1)
    assert _one(arm, "Microsoft.Web/serverfarms")["sku"] == {"name": "Y1", "tier": "Dynamic"}
    site = _one(arm, "Microsoft.Web/sites")
    settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
    assert PACKAGE_CONTAINER in settings["WEBSITE_RUN_FROM_PACKAGE"]
    assert settings["WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID"] == "SystemAssigned"
    assert "minimumElasticInstanceCount" not in site["properties"]["siteConfig"]


def test_api_management_service() -> None:
    plat = _platform()
    apim = _one(_arm(plat), "Microsoft.ApiManagement/service")
    svc = plat.azure.api_management
    assert apim["sku"] == {"name": svc.sku, "capacity": svc.capacity}
    assert apim["identity"] == {"type": "SystemAssigned"}
    assert apim["properties"]["publisherEmail"] == svc.publisher_email
    assert "hostnameConfigurations" not in apim["properties"]


def test_api_management_custom_domain_reads_key_vault_certificate() -> None:
    plat = _platform()
    domain = CustomDomain(host_name="api.example.org", key_vault_certificate="api-cert")
    with_domain = dataclasses.replace(
        plat,
        azure=dataclasses.replace(
            plat.azure,
            api_management=dataclasses.replace(plat.azure.api_management, custom_domain=domain),
        ),
    )
    arm = _arm(with_domain)
    apim = _one(arm, "Microsoft.ApiManagement/service")
    (host,) = apim["properties"]["hostnameConfigurations"]
    assert host["hostName"] == "api.example.org"
    assert host["certificateSource"] == "KeyVault"
    assert "secrets/api-cert" in host["keyVaultId"]
    assert apim["identity"]["type"] == "SystemAssigned, UserAssigned"
    (uai,) = [
        r
        for r in _all(arm, "Microsoft.ManagedIdentity/userAssignedIdentities")
        if r["name"].endswith("-cert")
    ]
    # The certificate identity is granted before the service is created.
    grant = next(
        r
        for r in _all(arm, "Microsoft.Authorization/roleAssignments")
        if "userAssignedIdentities" in r["properties"]["principalId"]
        and uai["name"] in r["properties"]["principalId"]
    )
    assert any("roleAssignments" in d for d in apim["dependsOn"])
    assert uai["name"] in grant["name"]


def test_role_assignments() -> None:
    arm = load_arm(rendered("camera-trap", "default"))
    roles = _all(arm, "Microsoft.Authorization/roleAssignments")
    assert len({r["name"] for r in roles}) == len(roles)
    seen = set()
    for r in roles:
        if "condition" in r:  # the deployer's grant and single-secret grants: tests below
            continue
        assert r["name"].startswith("[guid(resourceId(")
        assert "reference(" not in r["name"]  # names must be known when deployment starts
        props = r["properties"]
        assert props["principalType"] == "ServicePrincipal"
        role = next(k for k, v in ROLES.items() if v in props["roleDefinitionId"])
        principal = props["principalId"].split("'")[1]  # type of the principal resource
        seen.add((principal, role, r["scope"].split("/")[1]))
    assert seen == {
        ("Microsoft.Web/sites", "Key Vault Secrets User", "vaults"),
        ("Microsoft.Web/sites", "Storage Blob Data Owner", "storageAccounts"),
        ("Microsoft.Web/sites", "Storage Queue Data Contributor", "storageAccounts"),
        ("Microsoft.Web/sites", "EventGrid Data Sender", "topics"),
        ("Microsoft.ApiManagement/service", "Key Vault Secrets User", "vaults"),
        ("Microsoft.ContainerService/managedClusters", "AcrPull", "registries"),
        ("Microsoft.EventGrid/topics", "Storage Blob Data Contributor", "storageAccounts"),
        # Each API's workload identity writes results (the container, not the account).
        (
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            "Storage Blob Data Contributor",
            "storageAccounts",
        ),
    }
    # The clusters' Key Vault add-on (the node identity any pod can borrow) no longer
    # reads the whole vault.
    for r in roles:
        if "managedClusters" in r["properties"]["principalId"]:
            assert "/secrets/" in r["scope"] or "Key Vault" not in str(r)


DEPLOYER_ROLE_ID = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"


@pytest.mark.parametrize(("sample", "env"), [("camera-trap", "default"), ("multi-env", "prod")])
def test_deployer_gets_aks_rbac_admin_on_each_cluster(sample: str, env: str) -> None:
    """Issue 17: the clusters use Azure RBAC, so the deployer needs a role on each one.

    One assignment per cluster, scoped to it, deployed only when ``deployerPrincipalId``
    is set, named from values known when the deployment starts, with the principal and
    its kind taken from the two parameters ``apply`` fills.
    """
    files = rendered(sample, env)
    arm = load_arm(files)
    params = arm["parameters"]
    assert params["deployerPrincipalId"]["type"] == "string"
    assert params["deployerPrincipalId"]["defaultValue"] == ""
    assert params["deployerPrincipalType"]["defaultValue"] == "ServicePrincipal"
    assert params["deployerPrincipalType"]["allowedValues"] == ["User", "Group", "ServicePrincipal"]
    clusters = [r["name"] for r in _all(arm, "Microsoft.ContainerService/managedClusters")]
    grants = [
        r
        for r in _all(arm, "Microsoft.Authorization/roleAssignments")
        if DEPLOYER_ROLE_ID in r["properties"]["roleDefinitionId"]
    ]
    assert sorted(r["scope"] for r in grants) == sorted(
        f"Microsoft.ContainerService/managedClusters/{c}" for c in clusters
    )
    assert ROLES["Azure Kubernetes Service RBAC Cluster Admin"] == DEPLOYER_ROLE_ID
    for r in grants:
        assert r["condition"] == "[not(empty(parameters('deployerPrincipalId')))]"
        assert r["name"].startswith("[guid(resourceId('Microsoft.ContainerService/managedClusters'")
        assert f"parameters('deployerPrincipalId'), '{DEPLOYER_ROLE_ID}')]" in r["name"]
        assert r["properties"]["principalId"] == "[parameters('deployerPrincipalId')]"
        assert r["properties"]["principalType"] == "[parameters('deployerPrincipalType')]"
    defaults = json.loads(files["azure/main.parameters.json"])["parameters"]
    assert defaults["deployerPrincipalId"] == {"value": ""}
    bicep = files["azure/main.bicep"].decode()
    assert "@allowed([" in bicep and "param deployerPrincipalType string" in bicep
    roles_bicep = files["azure/modules/roles.bicep"].decode()
    assert "= if (!(empty(deployerPrincipalId))) {" in roles_bicep


def test_outputs_match_the_kubernetes_placeholders() -> None:
    """docs/contracts.md: $(azure:tenantId), $(azure:clusters.<c>.keyVaultProviderClientId)."""
    plat = _platform()
    arm = load_arm(rendered("camera-trap", "default"))
    assert arm["outputs"]["tenantId"] == {
        "type": "string",
        "value": "[subscription().tenantId]",
        "metadata": arm["outputs"]["tenantId"]["metadata"],
    }
    clusters = arm["outputs"]["clusters"]["value"]
    for cluster in plat.clusters:
        entry = clusters[cluster.name]
        assert "azureKeyvaultSecretsProvider.identity.clientId" in entry["keyVaultProviderClientId"]
        assert entry["ingressHost"] == "camera-trap.example.org"
        # apply checks a --context's server against this (runner._check_context).
        assert entry["apiServerFqdn"] == (
            "[reference(resourceId('Microsoft.ContainerService/managedClusters', "
            f"'{cluster.aks_name}'), '2026-05-01').fqdn]"
        )


def test_backend_url_defaults_to_a_named_ingress_host() -> None:
    plat = _platform()
    cluster = plat.clusters[0]
    named = dataclasses.replace(
        cluster, ingress=dataclasses.replace(cluster.ingress, hosts=("ingress.example.org",))
    )
    files = render_platform(dataclasses.replace(plat, clusters=(named,)))
    params = json.loads(files["azure/main.parameters.json"])["parameters"]
    assert params["backendBaseUrl"] == {"value": "https://ingress.example.org"}
    arm = load_arm(files)
    assert arm["outputs"]["clusters"]["value"]["main"]["ingressHost"] == "ingress.example.org"


@pytest.mark.parametrize("name", ["main.bicep", "modules/secrets.bicep", "modules/aks-main.bicep"])
def test_bicep_files_say_generated(name: str) -> None:
    text = rendered("camera-trap", "default")[f"azure/{name}"].decode()
    assert text.startswith(
        "// generated by ai4ec from samples/camera-trap/platform.yaml — do not edit\n"
    )


def test_admin_groups_get_aks_rbac_admin_beside_the_deployer(tmp_path: Path) -> None:
    """Issue 17: clusters[].adminGroupObjectIds get the deployer's role on that cluster.

    Read through the schema and the model from a real platform.yaml: one assignment per
    group (ids compared case-insensitively, so a repeat is one grant), principal type
    Group, no condition (the ids are literals), and the deployer grant is still there.
    """
    import yaml

    from ai4ec.pipeline import check_platform

    data = yaml.safe_load((ROOT / "samples" / "camera-trap" / "platform.yaml").read_text())
    group = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
    data["clusters"][0]["adminGroupObjectIds"] = [group, "0c5e2a1b-0000-4000-8000-00000000abcd"]
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = check_platform(str(path))
    assert result.ok, result.diagnostics
    plat = next(iter(result.platforms()))
    assert plat.clusters[0].admin_groups[0] == group.lower()
    arm = _arm(plat)
    admin = [
        r
        for r in _all(arm, "Microsoft.Authorization/roleAssignments")
        if DEPLOYER_ROLE_ID in r["properties"]["roleDefinitionId"]
    ]
    groups = [r for r in admin if r["properties"]["principalType"] == "Group"]
    assert sorted(r["properties"]["principalId"] for r in groups) == sorted(
        [group.lower(), "0c5e2a1b-0000-4000-8000-00000000abcd"]
    )
    cluster = plat.clusters[0].aks_name
    for r in groups:
        assert r["scope"] == f"Microsoft.ContainerService/managedClusters/{cluster}"
        assert "condition" not in r
        assert r["properties"]["principalId"] in r["name"]
    assert len(admin) == len(groups) + 1  # the deployer's own grant stays
    assert len({r["name"] for r in admin}) == len(admin)


def test_admin_group_ids_must_be_object_ids(tmp_path: Path) -> None:
    """A group name instead of its object id is refused by the schema, with its path."""
    import yaml

    from ai4ec.pipeline import check_platform

    data = yaml.safe_load((ROOT / "samples" / "camera-trap" / "platform.yaml").read_text())
    data["clusters"][0]["adminGroupObjectIds"] = ["aks-admins"]
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = check_platform(str(path))
    assert not result.ok
    assert any("adminGroupObjectIds" in str(d) for d in result.diagnostics)
