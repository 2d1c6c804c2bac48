"""``apply`` against the Azure target's real ``main.json`` (every sample).

The Azure renderer (``ai4ec.render.azure``) is developed alongside; these tests use its
output directly when it is importable and are skipped otherwise. They pin the contract
``apply`` relies on: main.json splits into infra / dispatch / apim parts that together
hold each resource exactly once, no part depends on a resource it does not deploy, the
parameters ``apply`` fills exist, and the outputs name what the placeholders need.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ai4ec.apply import arm
from ai4ec.apply.builddir import Template
from ai4ec.pipeline import build_platform, check_platform, require_ok
from ai4ec.render import render_targets
from ai4ec.render.artifact import RenderContext

from .conftest import ROOT, rehash, run
from .kv_fake import FakeKeyVault
from .support import FakeAzure, FakeKube, Tls

SAMPLES = sorted((ROOT / "samples").glob("*/platform.yaml"))
#: Azure Kubernetes Service RBAC Cluster Admin (the deployer's role on each cluster).
DEPLOYER_ROLE = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"
#: Object id apply is told to grant; the Kubernetes fake refuses it until a role exists.
DEPLOYER = "0d3a9e51-0000-4000-8000-0000000de917"


def _artifacts(platform_file: Path) -> list[Any]:
    out = []
    for p in require_ok(check_platform(platform_file)):
        ctx = RenderContext(source_name=str(platform_file), source_dir=str(platform_file.parent))
        out.append((p, render_targets(p, ctx).azure.artifacts))
    return out


def _key(r: dict[str, Any]) -> tuple[str, str]:
    return (str(r["type"]).lower(), str(r["name"]).lower())


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.parent.name)
def test_split_holds_every_resource_once(sample: Path) -> None:
    """main.json of each sample (no server): the parts partition it; dependencies hold."""
    for platform, artifacts in _artifacts(sample):
        files = {str(a.path): json.loads(a.content) for a in artifacts if a.path.suffix == ".json"}
        main = files["azure/main.json"]
        params = {
            k: v.get("value")
            for k, v in files["azure/main.parameters.json"]["parameters"].items()
            if "value" in v  # Key Vault references are resolved by ARM
        }
        parts = arm.split_main(Template("main", main, params))
        union = [_key(r) for t in parts.values() for r in t["resources"]]
        assert sorted(union) == sorted(_key(r) for r in main["resources"]), platform.environment
        assert len(set(union)) == len(union)
        # Every dependsOn of main names a resource of main, in a form apply recognizes...
        forms = {f: _key(r) for r in main["resources"] for f in arm.reference_forms(r)}
        for r in main["resources"]:
            for d in r.get("dependsOn") or []:
                assert "".join(d.split()) in forms, d
        # ...and no part keeps a dependency on a resource another part deploys.
        for name, t in parts.items():
            mine = {_key(r) for r in t["resources"]}
            for r in t["resources"]:
                for d in r.get("dependsOn") or []:
                    assert forms["".join(d.split())] in mine, (name, r["name"], d)
        assert "outputs" in parts[arm.INFRA]
        outputs = main["outputs"]
        assert {"tenantId", "clusters"} <= set(outputs)
        clusters = outputs["clusters"]["value"]
        assert set(clusters) == {c.name for c in platform.clusters}
        for c in clusters.values():
            assert {"keyVaultProviderClientId", "ingressHost", "apiServerFqdn"} <= set(c)
            # What --context is checked against (runner._check_context reads this).
            assert c["apiServerFqdn"].endswith(").fqdn]")
        declared = set(main["parameters"])
        assert {
            arm.PARAM_EVENT_SUBSCRIPTION,
            arm.PARAM_BACKEND_URL,
            arm.PARAM_INGRESS_URLS,
            arm.PARAM_DEPLOYER,
            arm.PARAM_DEPLOYER_TYPE,
        } <= declared
        # The deployer's AKS role: one per cluster, in the infra deployment with it.
        infra = parts[arm.INFRA]
        aks = {
            f"Microsoft.ContainerService/managedClusters/{r['name']}"
            for r in infra["resources"]
            if r["type"] == "Microsoft.ContainerService/managedClusters"
        }
        grants = [
            r
            for r in infra["resources"]
            if r["type"] == "Microsoft.Authorization/roleAssignments"
            and DEPLOYER_ROLE in r["properties"]["roleDefinitionId"]
        ]
        assert {r["scope"] for r in grants} == aks and len(grants) == len(aks)
        assert len(aks) == len(platform.clusters)
        for r in grants:
            assert r["properties"]["principalId"] == f"[parameters('{arm.PARAM_DEPLOYER}')]"
            assert r["condition"] == f"[not(empty(parameters('{arm.PARAM_DEPLOYER}')))]"
            assert {arm.PARAM_DEPLOYER, arm.PARAM_DEPLOYER_TYPE} <= set(infra["parameters"])


CASES = [
    ("camera-trap", "default"),
    ("landcover", "default"),
    ("minimal", "default"),
    ("multi-env", "dev"),
    ("multi-env", "prod"),
]


@pytest.mark.parametrize(("sample", "env"), CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_sample_applies_against_the_fakes(
    fakes: tuple[FakeAzure, FakeKube],
    tls: Tls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sample: str,
    env: str,
) -> None:
    """A sample's real build (local HTTPS fakes): deployments in order, clean, then no-op.

    The Kubernetes fake answers 403 to the deployer until a role assignment for it is
    deployed, so the Kubernetes step succeeding proves the real template's deployer role
    (issue 17) reaches Azure with the principal apply passed as ``deployerPrincipalId``.
    """
    azure, kube = fakes
    kube.caller = DEPLOYER
    root = tmp_path / sample
    shutil.copytree(ROOT / "samples" / sample, root)
    monkeypatch.chdir(root)
    build_platform(Path("platform.yaml"), Path("out"), [env] if env != "default" else None)
    env_dir = Path("out") / env
    if not (env_dir / "azure" / "main.json").exists():  # renderer not registered in build
        for platform, artifacts in _artifacts(Path("platform.yaml")):
            if platform.environment != env:
                continue
            for a in artifacts:
                dest = env_dir / a.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(a.content)
        rehash(env_dir)
    platform = next(
        p for p in require_ok(check_platform(Path("platform.yaml"))) if p.environment == env
    )
    azure.subscription = platform.azure.subscription_id
    vault = FakeKeyVault(tls)
    r = run(
        azure,
        tls,
        env_dir,
        yes=True,
        deployer_principal_id=DEPLOYER,
        key_vault_endpoint=vault.url,
    )
    assert r.error is None, r.text
    assert azure.violations == [] and kube.violations == []
    infra = [
        q.json()["properties"]["parameters"]
        for q in azure.requests
        if q.method == "PUT" and q.path.endswith(f"/ai4ec-{env}-infra")
    ]
    assert infra and all(p[arm.PARAM_DEPLOYER] == {"value": DEPLOYER} for p in infra)
    assert DEPLOYER in kube.granted
    deployments = [w.rsplit("/", 1)[1] for w in azure.writes() if "/deployments/" in w]
    assert deployments[-2:] == [f"ai4ec-{env}-dispatch", f"ai4ec-{env}-apim"]
    parts = ("infra", "access", "dispatch", "apim")
    assert set(deployments) == {f"ai4ec-{env}-{p}" for p in parts}
    # Keys were written before the grants on them and before anything reads them, and
    # Event Grid's key reaches ARM only as a Key Vault reference.
    assert {"ai4ec-access-keys", "ai4ec-apim-key", "ai4ec-eventgrid-delivery-key"} <= set(
        vault.secrets
    )
    dispatch = next(
        q.json()["properties"]["parameters"]
        for q in azure.requests
        if q.method == "PUT" and q.path.endswith(f"/ai4ec-{env}-dispatch")
    )
    assert dispatch["eventGridDeliveryKey"]["reference"]["secretName"] == (
        "ai4ec-eventgrid-delivery-key"
    )
    for secret in vault.secrets.values():
        assert secret not in r.text
        assert not any(secret.encode() in q.body for q in azure.requests)
    access = next(
        q.json()["properties"]["parameters"]
        for q in azure.requests
        if q.method == "PUT" and q.path.endswith(f"/ai4ec-{env}-access")
    )
    assert access["deployAccessGrants"] == {"value": True}
    namespace = platform.clusters[0].namespace
    spc = kube.get_object("SecretProviderClass", namespace, "ai4ec-runtime")
    assert spc is not None
    assert "$(azure:" not in json.dumps(spc)
    again = run(
        azure,
        tls,
        env_dir,
        yes=True,
        deployer_principal_id=DEPLOYER,
        key_vault_endpoint=vault.url,
    )
    assert again.error is None and not again.result.changed  # type: ignore[union-attr]
    vault.close()
    assert vault.violations == []


def test_package_blob_matches_the_azure_target() -> None:
    """The Consumption package path apply uploads to is the one the template runs from."""
    from ai4ec.apply.runner import PACKAGE_PATH
    from ai4ec.render.azure import common as azure_resources

    assert PACKAGE_PATH == f"{azure_resources.PACKAGE_CONTAINER}/{azure_resources.PACKAGE_BLOB}"
