"""``apply --prune`` in Azure: the identities, grants and node pools a build dropped.

The real azure-mgmt-resource / azure-core clients run against local HTTPS stand-ins:
:class:`lifecycle.FakeArmLifecycle` (ARM with deletion, paged collections of identities,
role assignments and node pools, refusing an api-version a type was not deployed with),
``support.FakeKube`` and the Key Vault stand-in. No Azure: there is no offline ARM to
run instead. The build is the camera-trap sample's, built for real, then edited the way
a user would: an API and its pool removed, a secret dropped from a kept API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai4ec.apply.builddir import Template
from ai4ec.apply.leftovers import IDENTITY, POOL, ROLE_ASSIGNMENT, declared
from ai4ec.errors import ApplyError
from ai4ec.pipeline import build_platform

from .conftest import SUBSCRIPTION, fake_outputs, run
from .kv_fake import FakeKeyVault
from .lifecycle import FakeArmLifecycle
from .support import FakeKube, Tls
from .test_real_template import DEPLOYER, _apply, _built

#: The removed API and pool, and the secret the detector no longer reads.
DROPPED_API = """  - name: detector-sync
    version: v1
    organization: camera-trap
    displayName: Animal detector (small images, synchronous)
    image: camera-trap/detector:4.1.0
    apiPrefix: /v1/animal_detection
    mode: sync
    pool: gpusync
    endpoints:
      - path: /detect
        timeout: 60s
        maxBodySize: 2Mi
    resources: {cpu: "2", memory: 24Gi, gpu: 1}
    scaling: {minReplicas: 1, maxReplicas: 2, cpuUtilization: 70}
    products: [public, partner]
"""
DROPPED_POOL = """      - name: gpusync
        vmSize: Standard_NC24ads_A100_v4
        autoscale: {min: 1, max: 2}
        labels: {workload: inference}
"""
DROPPED_SECRET = """    secrets:
      RESULTS_STORAGE_KEY: {keyVaultSecret: results-storage-key}
"""


@pytest.fixture
def life(tls: Tls) -> Iterator[tuple[FakeArmLifecycle, FakeKube]]:
    azure = FakeArmLifecycle(tls, SUBSCRIPTION)
    kube = FakeKube(tls)
    azure.kube = kube
    azure.output_values = fake_outputs()
    yield azure, kube
    azure.close()
    kube.close()


def _templates(env_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((env_dir / "azure").glob("*.json"))]


def _deletes(azure: FakeArmLifecycle) -> list[str]:
    return [
        r.path.rpartition("/providers/")[2]
        for r in azure.requests
        if r.method == "DELETE" and "/deployments/" not in r.path
    ]


def test_prune_deletes_only_what_the_build_dropped(
    life: tuple[FakeArmLifecycle, FakeKube],
    tls: Tls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Remove an API and its pool, drop a secret from a kept API: a plain apply deletes
    nothing; ``--plan --prune`` lists the removed API's identity and every grant of it,
    the kept API's grant on the dropped secret, and the pool; declining deletes nothing;
    ``--prune --yes`` deletes exactly those (grants first); a rerun finds nothing. Never
    listed: a user's untagged identity, another environment's, the deployer's grant, a
    grant above the resource group, an untagged pool, and a tagged System pool (a note)."""
    azure, kube = life
    kube.caller = DEPLOYER
    azure.page_size = 3  # every listing takes several pages
    env_dir, platform = _built(azure, tmp_path, monkeypatch, "camera-trap", "default")
    vault = FakeKeyVault(tls)
    first = _apply(azure, tls, env_dir, vault)
    assert first.error is None, first.text

    rg = platform.azure.resource_group
    base = f"/subscriptions/{azure.subscription}/resourceGroups/{rg}".lower()
    tags = json.loads((env_dir / "azure" / "main.json").read_text())["variables"]["tags"]
    cluster = next(
        t["name"]
        for tpl in _templates(env_dir)
        for t in tpl.get("resources", [])
        if t["type"] == "Microsoft.ContainerService/managedClusters"
    )
    before = {k: v for k, v in azure.resources.items()}
    old_identities = {str(b["name"]) for b in before.values() if b.get("type") == IDENTITY}
    # What ai4ec did not make, or made for another environment: never listed.
    others = {
        "users-own": {"owner": "me"},
        "other-env-api": {**tags, "ai4ec-environment": "staging"},
    }
    for name, t in others.items():
        azure.resources[f"{base}/providers/{IDENTITY}/{name}".lower()] = {
            "type": IDENTITY,
            "name": name,
            "location": "westeurope",
            "tags": t,
        }
    # A cache an earlier build made (tagged, top-level, holds data): a note, never deleted;
    # the same kind untagged or another environment's: not even a note.
    cache = "Microsoft.Cache/redisEnterprise"
    for name, t in {"old-cache": dict(tags), "their-cache": others["other-env-api"]}.items():
        azure.resources[f"{base}/providers/{cache}/{name}".lower()] = {
            "type": cache,
            "name": name,
            "location": "westeurope",
            "tags": t,
        }
    secret_scope = f"Microsoft.KeyVault/vaults/{platform.azure.key_vault.name}/secrets/x"
    azure.resources[f"{base}/providers/{ROLE_ASSIGNMENT}/deployer-grant".lower()] = {
        "type": ROLE_ASSIGNMENT,
        "name": "deployer-grant",
        "scope": secret_scope,
        "properties": {"principalId": DEPLOYER, "roleDefinitionId": "r"},
    }
    pool_base = f"{base}/providers/Microsoft.ContainerService/managedClusters/{cluster}"
    azure.resources[f"{pool_base}/agentPools/byhand".lower()] = {
        "type": POOL,
        "name": f"{cluster}/byhand",
        "properties": {"mode": "User"},
    }
    azure.resources[f"{pool_base}/agentPools/oldsys".lower()] = {
        "type": POOL,
        "name": f"{cluster}/oldsys",
        "properties": {"mode": "System", "tags": dict(tags)},
    }

    # The user's edit: detector-sync and its pool go, the detector stops reading a secret.
    text = Path("platform.yaml").read_text()
    for block in (DROPPED_API, DROPPED_POOL, DROPPED_SECRET):
        assert block in text
        text = text.replace(block, "")
    Path("platform.yaml").write_text(text)
    build_platform(Path("platform.yaml"), Path("out"))
    new = declared([Template("t", t, {}) for t in _templates(env_dir)])
    gone = sorted(old_identities - {n for n in new.identities})
    assert len(gone) == 1 and "detector-sync" in gone[0], gone
    gone_principal = azure.principal(rg, gone[0])
    # Above the resource group (a subscription-level grant of a removed identity): kept.
    azure.inherited.append(
        {
            "id": f"/subscriptions/{azure.subscription}/providers/{ROLE_ASSIGNMENT}/above",
            "name": "above",
            "properties": {
                "scope": f"/subscriptions/{azure.subscription}",
                "principalId": gone_principal,
                "roleDefinitionId": "/x/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            },
        }
    )

    plain = _apply(azure, tls, env_dir, vault)
    assert plain.error is None, plain.text
    assert _deletes(azure) == [], plain.text
    assert "azure-prune" not in plain.text

    expected_grants = sorted(
        k
        for k, b in before.items()
        if b.get("type") == ROLE_ASSIGNMENT
        and (
            gone[0] in json.dumps(b.get("properties"))
            or ("results-storage-key" in str(b.get("scope")) and "detector-v1" in json.dumps(b))
        )
    )
    assert len(expected_grants) >= 3, expected_grants  # results, api key, storage key

    preview = _apply(azure, tls, env_dir, vault, prune=True, plan=True)
    assert preview.error is None, preview.text
    listed = [ln.strip() for ln in preview.lines if ln.strip().startswith("- Microsoft.")]
    azure_listed = [ln for ln in listed if not ln.startswith("- Microsoft.ApiManagement")]
    grants = [ln for ln in azure_listed if ln.startswith(f"- {ROLE_ASSIGNMENT}")]
    assert len(grants) == len(expected_grants), preview.text
    assert f"- {IDENTITY} {gone[0]} (with its federated credentials)" in azure_listed
    assert f"- {POOL} {cluster}/gpusync (its nodes are drained)" in azure_listed
    assert len(azure_listed) == len(expected_grants) + 2, preview.text
    assert f"node pool {cluster}/oldsys is no longer in the build but is a System pool" in (
        preview.text
    )
    for kept in ("users-own", "other-env-api", "byhand", "deployer-grant", "above"):
        assert kept not in "\n".join(azure_listed)
    assert f"{cache} old-cache is no longer in the build; kept" in preview.text
    assert f"--ids {base}/providers/{cache}/old-cache".lower() in preview.text.lower()
    assert "their-cache" not in preview.text
    # Nothing else of the build is reported as dropped (the declared ones all match).
    assert preview.text.count("is no longer in the build; kept") == 1, preview.text
    assert _deletes(azure) == []

    declined = run(
        azure,
        tls,
        env_dir,
        answers=[True, True, True, False],
        prune=True,
        deployer_principal_id=DEPLOYER,
        key_vault_endpoint=vault.url,
    )
    assert declined.error is not None, declined.text
    assert "deletion not confirmed" in str(declined.error), declined.text
    assert not any(ROLE_ASSIGNMENT in d or IDENTITY in d for d in _deletes(azure))

    # One target alone: the Kubernetes step may still run pods that use the identity or
    # pool, so Azure prune says why it does nothing.
    partial = _apply(azure, tls, env_dir, vault, prune=True, targets=("azure",))
    assert partial.error is None, partial.text
    assert "azure-prune" in partial.text and "rerun apply --prune with every target" in (
        partial.text
    )
    assert not any(ROLE_ASSIGNMENT in d or IDENTITY in d for d in _deletes(azure))

    azure.reset_log()
    pruned = _apply(azure, tls, env_dir, vault, prune=True)
    assert pruned.error is None, pruned.text
    deleted = [d for d in _deletes(azure) if not d.startswith("Microsoft.ApiManagement")]
    kinds = [d.split("/")[1] for d in deleted]
    # Grants first, then the identity, then the pool (Kubernetes stopped using it).
    assert kinds == ["roleAssignments"] * len(expected_grants) + [
        "userAssignedIdentities",
        "managedClusters",
    ], deleted
    for key in expected_grants:
        assert key not in azure.resources, (deleted, key)
    assert not any(gone[0].lower() in k for k in azure.resources)  # its federation too
    assert f"{pool_base}/agentpools/gpusync".lower() not in azure.resources
    for kept in ("users-own", "other-env-api"):
        assert f"{base}/providers/{IDENTITY}/{kept}".lower() in azure.resources
    assert f"{pool_base}/agentpools/byhand".lower() in azure.resources
    assert f"{pool_base}/agentpools/oldsys".lower() in azure.resources
    assert f"{base}/providers/{ROLE_ASSIGNMENT}/deployer-grant".lower() in azure.resources
    assert f"{base}/providers/{cache}/old-cache".lower() in azure.resources
    # Every grant the build still declares is still there.
    still = [k for k, b in before.items() if b.get("type") == ROLE_ASSIGNMENT]
    assert all(k in azure.resources for k in still if k not in expected_grants)

    azure.reset_log()
    again = _apply(azure, tls, env_dir, vault, prune=True)
    assert again.error is None, again.text
    assert _deletes(azure) == [], again.text
    vault.close()
    assert azure.violations == [] and kube.violations == [] and vault.violations == []


def test_a_grant_prune_cannot_match_stops_it() -> None:
    """A role assignment to an identity whose scope is an expression: prune refuses to
    guess which grants the build keeps, and names the template."""
    tpl = {
        "resources": [
            {
                "type": ROLE_ASSIGNMENT,
                "apiVersion": "2022-04-01",
                "name": "[guid('x')]",
                "scope": "[format('Microsoft.KeyVault/vaults/{0}', parameters('kv'))]",
                "properties": {
                    "principalId": "[reference(resourceId("
                    "'Microsoft.ManagedIdentity/userAssignedIdentities', 'id-a'), "
                    "'2024-11-30').principalId]",
                    "roleDefinitionId": "[subscriptionResourceId("
                    "'Microsoft.Authorization/roleDefinitions', "
                    "'4633458b-17de-408a-b874-0445c86b69e6')]",
                },
            }
        ]
    }
    with pytest.raises(ApplyError, match="identities-2: role assignment .* id-a"):
        declared([Template("identities-2", tpl, {})])


def test_declared_reads_grants_pools_and_identities() -> None:
    """What prune compares: an identity's grants by (scope, role, identity), other
    principals' grants ignored, inline and child pools, names lower-cased."""
    ref = (
        "[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', "
        "'{}'), '2024-11-30').principalId]"
    )
    role = (
        "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
        "'4633458B-17de-408a-b874-0445c86b69e6')]"
    )
    tpl = {
        "resources": [
            {"type": IDENTITY, "apiVersion": "2024-11-30", "name": "Id-A"},
            {
                "type": "Microsoft.ContainerService/managedClusters",
                "apiVersion": "2026-05-01",
                "name": "aks",
                "properties": {"agentPoolProfiles": [{"name": "system", "mode": "System"}]},
            },
            {"type": POOL, "apiVersion": "2026-05-01", "name": "aks/gpu"},
            {
                "type": ROLE_ASSIGNMENT,
                "apiVersion": "2022-04-01",
                "name": "[guid('a')]",
                "scope": "Microsoft.KeyVault/vaults/KV/secrets/s",
                "properties": {"principalId": ref.format("Id-A"), "roleDefinitionId": role},
            },
            {
                "type": ROLE_ASSIGNMENT,
                "apiVersion": "2022-04-01",
                "name": "[guid('b')]",
                "properties": {"principalId": ref.format("id-b"), "roleDefinitionId": role},
            },
            {
                "type": ROLE_ASSIGNMENT,
                "apiVersion": "2022-04-01",
                "name": "[guid('c')]",
                "scope": "[variables('anything')]",
                "properties": {"principalId": "[parameters('deployerPrincipalId')]"},
            },
        ]
    }
    d = declared([Template("main", tpl, {})])
    assert d.identities == {"id-a"}
    assert d.pools == {("aks", "system"), ("aks", "gpu")}
    assert d.clusters == ("aks",)
    guid = "4633458b-17de-408a-b874-0445c86b69e6"
    assert d.grants == {
        ("microsoft.keyvault/vaults/kv/secrets/s", guid, "id-a"),
        ("", guid, "id-b"),
    }
    assert d.api[ROLE_ASSIGNMENT.lower()] == "2022-04-01"
