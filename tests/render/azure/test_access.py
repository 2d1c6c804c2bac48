"""Least privilege on Azure, checked on the generated templates of every sample (issue 13).

* The key API Management holds, the key Event Grid presents and each API's pod
  credential are three different Key Vault secrets, and no template reads the Functions
  host's keys (one key that opened every function).
* Each API has its own workload identity, federated with exactly its service account,
  allowed its own secrets only (secret-level scope) and its own results container: no
  identity holds a data role on another API's container, on the blob service or on the
  account.
* The clusters' Key Vault add-on (the node identity any pod can borrow from the metadata
  endpoint) has no vault-wide grant.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ai4ec.model.naming import mutual_tls, results_container
from ai4ec.render.apim.plan import APIM_KEY_SECRET as APIM_SIDE_SECRET
from ai4ec.render.azure.access import (
    ACCESS_KEYS_SECRET,
    APIM_KEY_SECRET,
    EVENT_GRID_KEY_SECRET,
    PARAM_ACCESS_GRANTS,
    api_key_secret,
)

from .support import (
    ROOT,
    arm_resources,
    case_files,
    load_arm,
    platforms,
    render_platform,
    sample_envs,
)

SAMPLES = sample_envs()
GRANT = f"[parameters('{PARAM_ACCESS_GRANTS}')]"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"


def _platform(sample: str, env: str) -> Any:
    path = str(ROOT / "samples" / sample / "platform.yaml")
    return next(p for p in platforms(path) if p.environment == env)


def _files(sample: str, env: str) -> dict[str, bytes]:
    return case_files(f"{sample}/{env}")


def _roles(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["type"] == "Microsoft.Authorization/roleAssignments"]


def test_apim_side_names_the_same_secret() -> None:
    # The APIM room may not import the Azure room; both spell the name, pinned here.
    assert APIM_SIDE_SECRET == APIM_KEY_SECRET


@pytest.mark.parametrize(("sample", "env"), SAMPLES)
def test_three_holders_three_different_keys(sample: str, env: str) -> None:
    files = _files(sample, env)
    plat = _platform(sample, env)
    resources = arm_resources(files)
    text = "\n".join(data.decode() for name, data in files.items() if name.startswith("azure/"))
    assert "functionKeys" not in text and "Microsoft.Web/sites/host" not in text
    # API Management: one Key Vault named value, its own key.
    apim_kv = [
        r["properties"]["keyVault"]["secretIdentifier"]
        for r in resources
        if r["type"] == "Microsoft.ApiManagement/service/namedValues"
        and "keyVault" in r["properties"]
    ]
    assert apim_kv == [
        f"https://{plat.azure.key_vault.name}.vault.azure.net/secrets/{APIM_KEY_SECRET}"
    ]
    # Event Grid: its own key, from Key Vault through the parameters file.
    params = json.loads(files["azure/main.parameters.json"])["parameters"]
    eg_secret = params["eventGridDeliveryKey"]["reference"]["secretName"]
    assert eg_secret == EVENT_GRID_KEY_SECRET
    # Each API's pods: their own key.
    pod_secrets = {api_key_secret(a.id) for a in plat.apis}
    holders = [APIM_KEY_SECRET, EVENT_GRID_KEY_SECRET, *sorted(pod_secrets)]
    assert len(set(holders)) == len(holders) == 2 + len(plat.apis)
    # The Function App reads the whole document: the only holder of every key.
    site = next(r for r in resources if r["type"] == "Microsoft.Web/sites")
    settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
    assert settings["AI4EC_ACCESS_KEYS"].endswith(f"/secrets/{ACCESS_KEYS_SECRET}/)")
    assert ACCESS_KEYS_SECRET not in holders
    # URLs handed to pods carry no key.
    for r in resources:
        if r["type"] == "Microsoft.KeyVault/vaults/secrets" and r["name"].endswith("-uri"):
            assert "code=" not in r["properties"]["value"], r["name"]


@pytest.mark.parametrize(("sample", "env"), SAMPLES)
def test_each_api_has_its_own_identity_and_only_its_secrets(sample: str, env: str) -> None:
    files = _files(sample, env)
    plat = _platform(sample, env)
    arm = load_arm(files)
    resources = arm_resources(files)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["type"], []).append(r)
    fics = by_type.get(
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials", []
    )
    clusters = {c.name: c for c in plat.clusters}
    outputs = arm["outputs"]["apis"]["value"]
    assert set(outputs) == {a.id for a in plat.apis}
    roles = _roles(resources)
    for api in plat.apis:
        ident = next(
            r
            for r in by_type["Microsoft.ManagedIdentity/userAssignedIdentities"]
            if r["name"].endswith(f"-api-{api.id}")
        )
        name = ident["name"]
        assert outputs[api.id]["clientId"] == (
            f"[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', "
            f"'{name}'), '2024-11-30').clientId]"
        )
        (fic,) = [f for f in fics if f["name"].startswith(f"{name}/")]
        cluster = clusters[api.cluster]
        assert fic["properties"]["subject"] == (
            f"system:serviceaccount:{cluster.namespace}:{api.id}"
        )
        assert fic["properties"]["audiences"] == ["api://AzureADTokenExchange"]
        assert "oidcIssuerProfile.issuerURL" in fic["properties"]["issuer"]
        assert cluster.aks_name in fic["properties"]["issuer"]
        mine = [r for r in roles if f"'{name}'" in r["properties"]["principalId"]]
        vault_grants = [r for r in mine if SECRETS_USER in r["properties"]["roleDefinitionId"]]
        allowed = {api_key_secret(api.id)} | {ref.key_vault_secret for _, ref in api.secrets}
        scoped = set()
        for r in vault_grants:
            assert r["condition"] == GRANT  # the secret exists only once apply wrote it
            m = re.fullmatch(r"Microsoft\.KeyVault/vaults/[^/]+/secrets/(.+)", r["scope"])
            assert m, r["scope"]  # a single secret, never the vault
            scoped.add(m.group(1))
        assert scoped == allowed
        blob = [r for r in mine if BLOB_CONTRIBUTOR in r["properties"]["roleDefinitionId"]]
        assert [r["scope"] for r in blob] == [
            f"Microsoft.Storage/storageAccounts/{plat.azure.storage.name}/blobServices/default"
            f"/containers/{results_container(plat.azure, api)}"
        ]
        assert len(mine) == len(vault_grants) + len(blob)
    # No other API's key is readable by anyone but its own identity (and the runtime,
    # which holds the whole document).
    for api in plat.apis:
        readers = [
            r["properties"]["principalId"]
            for r in roles
            if r.get("scope", "").endswith(f"/secrets/{api_key_secret(api.id)}")
        ]
        assert len(readers) == 1 and f"-api-{api.id}'" in readers[0]


@pytest.mark.parametrize(("sample", "env"), SAMPLES)
def test_each_api_owns_one_results_container_and_no_other(sample: str, env: str) -> None:
    """One container per API, private, named after it; on it, only its identity holds a
    role, and API identities hold no role anywhere else in the storage account."""
    files = _files(sample, env)
    plat = _platform(sample, env)
    resources = arm_resources(files)
    account = f"Microsoft.Storage/storageAccounts/{plat.azure.storage.name}"
    containers = {
        r["name"].rsplit("/", 1)[1]: r
        for r in resources
        if r["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers"
    }
    wanted = {results_container(plat.azure, a): a for a in plat.apis}
    assert len(wanted) == len(plat.apis)  # distinct APIs, distinct containers
    assert set(wanted) <= set(containers)
    # Nothing else is left for results (no shared container any more).
    assert plat.azure.storage.results_container not in containers
    for name, api in wanted.items():
        assert containers[name]["properties"] == {"publicAccess": "None"}, api.id
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]+[a-z0-9]", name)
    roles = _roles(resources)
    storage_roles = [r for r in roles if r.get("scope", "").startswith(account)]
    for r in storage_roles:
        principal = r["properties"]["principalId"]
        scope = r["scope"]
        owner = wanted.get(scope.rsplit("/containers/", 1)[-1]) if "/containers/" in scope else None
        if owner is not None:
            # Its own identity, and no one else (not another API, not the runtime).
            assert f"-api-{owner.id}'" in principal, (scope, principal)
        else:
            assert "-api-" not in principal, (scope, principal)  # no API on shared scopes
    for name in wanted:
        on_own = [
            r
            for r in storage_roles
            if r["scope"] == f"{account}/blobServices/default/containers/{name}"
        ]
        assert len(on_own) == 1 and BLOB_CONTRIBUTOR in on_own[0]["properties"]["roleDefinitionId"]


@pytest.mark.parametrize(("sample", "env"), SAMPLES)
def test_node_identity_has_no_vault_wide_access(sample: str, env: str) -> None:
    """The identities any node could use (kubelet, secrets-provider add-on) read no secret:
    the kubelet only pulls images (AcrPull), the add-on is granted nothing; the secret
    syncs have workload identities of their own."""
    resources = arm_resources(_files(sample, env))
    node_grants = [
        r["properties"]["roleDefinitionId"]
        for r in _roles(resources)
        if "azureKeyvaultSecretsProvider" in r["properties"]["principalId"]
        or "kubeletidentity" in r["properties"]["principalId"]
    ]
    assert node_grants, "the kubelet identity pulls from the registry"
    assert all(ACR_PULL in g for g in node_grants), node_grants


SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
CERTIFICATES_OFFICER = "a4417e6f-fecd-4de8-b567-7b0420556985"


def _deployer_vault_roles(resources: list[dict[str, Any]]) -> set[str]:
    """Roles the template gives the deployer on the Key Vault (only when it is known)."""
    found = set()
    for r in _roles(resources):
        if r["properties"]["principalId"] != "[parameters('deployerPrincipalId')]":
            continue
        if not re.fullmatch(r"Microsoft\.KeyVault/vaults/[^/]+", r["scope"]):
            continue
        assert r["condition"] == "[not(empty(parameters('deployerPrincipalId')))]"
        found.add(r["properties"]["roleDefinitionId"].split("'")[-2])
    return found


@pytest.mark.parametrize(("sample", "env"), SAMPLES)
def test_deployer_may_write_the_keys_and_no_more(sample: str, env: str) -> None:
    """apply's keys step writes secrets (and the gateway certificate with mutual TLS):
    the template grants exactly those roles on the vault to the deployer, so a first
    run needs nothing granted by hand (tests/apply/test_real_template.py proves apply
    waits for the grant to take effect)."""
    wanted = {SECRETS_OFFICER}
    if mutual_tls(_platform(sample, env)):
        wanted.add(CERTIFICATES_OFFICER)
    assert _deployer_vault_roles(arm_resources(_files(sample, env))) == wanted


def test_deployer_gets_no_certificate_role_without_mutual_tls() -> None:
    import dataclasses

    p = _platform("camera-trap", "default")
    plain = dataclasses.replace(
        p,
        clusters=tuple(
            dataclasses.replace(c, ingress=dataclasses.replace(c.ingress, client_certificate=False))
            for c in p.clusters
        ),
    )
    assert not mutual_tls(plain)
    files = render_platform(plain, "samples/camera-trap/platform.yaml")
    assert _deployer_vault_roles(arm_resources(files)) == {SECRETS_OFFICER}
