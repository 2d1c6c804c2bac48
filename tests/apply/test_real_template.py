"""``apply`` against the Azure target's real ``main.json`` (every sample).

The Azure renderer (``ai4ec.render.azure``) is developed alongside; these tests use its
output directly when it is importable and are skipped otherwise. They pin the contract
``apply`` relies on: main.json splits into data / clusters / functions / apim-service /
dispatch / apim parts that together hold each resource exactly once, each resource of a
kind in its own part, no part depends on a resource it does not deploy or reads one a
later part deploys, the parameters ``apply`` fills exist, and the outputs name what the
placeholders need.
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

from .conftest import API_CLIENT_ID, ROOT, rehash, run
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
        # Each kind where it belongs: AKS, APIM and the data services apart.
        where = {_key(r): name for name, t in parts.items() for r in t["resources"]}
        expect = {
            "microsoft.cache/redis": arm.DATA,
            "microsoft.keyvault/vaults": arm.DATA,
            "microsoft.storage/storageaccounts": arm.DATA,
            "microsoft.operationalinsights/workspaces": arm.DATA,
            "microsoft.containerservice/managedclusters": arm.CLUSTERS,
            "microsoft.web/sites": arm.FUNCTIONS,
            "microsoft.eventgrid/topics": arm.FUNCTIONS,
            "microsoft.apimanagement/service": arm.APIM_SERVICE,
            "microsoft.eventgrid/topics/eventsubscriptions": arm.DISPATCH,
        }
        for key, name in where.items():
            if key[0] in expect:
                assert name == expect[key[0]], (key, name)
        # A resource never reads (reference/listKeys by resourceId) one of a later part.
        order = {n: i for i, n in enumerate(arm.PARTS)}
        by_form = {
            f.strip("[]"): where[_key(r)]
            for r in main["resources"]
            for f in arm.reference_forms(r)
            if f.startswith("[resourceId(")
        }
        for name, t in parts.items():
            text = "".join(json.dumps(t["resources"]).split())
            for form, other in by_form.items():
                if form in text:
                    assert order[other] <= order[name], (name, form, other)
        assert "outputs" in parts[arm.CLUSTERS]
        assert arm.outputs_part(main) == arm.CLUSTERS
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
        # The deployer's AKS role: one per cluster, in the clusters deployment with it.
        infra = parts[arm.CLUSTERS]
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


def _built(
    azure: FakeAzure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: str, env: str
) -> tuple[Path, Any]:
    """The sample built for real in ``tmp_path``, and the fake ARM's outputs for its model.

    The fake's outputs stand in for what ARM would evaluate: one per API and cluster.
    """
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
    main = azure.output_values["clusters"]["main"]
    azure.output_values["clusters"] = {c.name: dict(main) for c in platform.clusters}
    azure.output_values["apis"] = {a.id: {"clientId": API_CLIENT_ID} for a in platform.apis}
    azure.subscription = platform.azure.subscription_id
    return env_dir, platform


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
    env_dir, platform = _built(azure, tmp_path, monkeypatch, sample, env)
    # Every placeholder of the Kubernetes objects names an output main.json declares
    # (issue 13: the workload identities of the APIs and of each cluster's syncs).
    assert _outputs_the_objects_miss(env_dir) == []
    vault = FakeKeyVault(tls)
    # The vault refuses the deployer until the template's role assignments on it are
    # deployed, and a few requests longer (propagation): apply waits, then writes.
    vault.require_roles, vault.propagation, azure.vault = True, 2, vault
    r = _apply(azure, tls, env_dir, vault)
    assert r.error is None, r.text
    assert vault.roles == {"Key Vault Secrets Officer", "Key Vault Certificates Officer"}
    assert vault.refused == 2 and "not allowed yet" in r.text
    assert azure.violations == [] and kube.violations == []
    infra = [
        q.json()["properties"]["parameters"]
        for q in azure.requests
        if q.method == "PUT" and q.path.endswith(f"/ai4ec-{env}-clusters")
    ]
    assert infra and all(p[arm.PARAM_DEPLOYER] == {"value": DEPLOYER} for p in infra)
    assert DEPLOYER in kube.granted
    deployments = [w.rsplit("/", 1)[1] for w in azure.writes() if "/deployments/" in w]
    # The first run deploys each part exactly once, in order.
    assert deployments == [f"ai4ec-{env}-{p}" for p in arm.PARTS]
    # Keys were written before the grants on them and before anything reads them, and
    # Event Grid's key reaches ARM only as a Key Vault reference.
    assert {"ai4ec-access-keys", "ai4ec-apim-key", "ai4ec-eventgrid-delivery-key"} <= set(
        vault.secrets
    )
    # Mutual TLS (every sample's default): the gateway client certificate and its PEM
    # exist before API Management's certificate and the Functions' reference read them.
    assert set(vault.certificates) == {"ai4ec-gateway-client"}
    assert "ai4ec-gateway-client-pem" in vault.secrets
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
    # --prune on the same build lists API Management (the real template's ownership
    # tags included) and Kubernetes, and finds nothing of ai4ec's to delete; writing
    # nothing, it takes no lock either (docs/apply.md, Lock).
    azure.reset_log()
    vault.writes.clear()
    again = _apply(azure, tls, env_dir, vault, prune=True)
    assert again.error is None and not again.result.changed, again.text  # type: ignore[union-attr]
    assert azure.count("GET", r"/Microsoft\.ApiManagement/service/[^/]+/apis$") == 1
    assert azure.writes() == [] and vault.writes == []
    # A key lost from the vault is written again, with the lock held, although no
    # deployment has anything to do.
    tags = azure.groups[platform.azure.resource_group.lower()]["tags"]
    held: list[bool] = []

    class Watched(list[str]):
        def append(self, name: str) -> None:
            held.append("ai4ec-apply-lock" in tags)
            super().append(name)

    vault.writes = Watched()
    del vault.secrets["ai4ec-apim-key"]
    azure.reset_log()
    restored = _apply(azure, tls, env_dir, vault)
    assert restored.error is None, restored.text
    assert vault.writes == ["ai4ec-apim-key"] and held == [True]
    assert not [w for w in azure.writes() if "/deployments/" in w]
    assert "ai4ec-apply-lock" not in tags  # released at the end
    vault.close()
    assert vault.violations == []


def test_a_vault_that_keeps_refusing_stops_apply_clearly(
    fakes: tuple[FakeAzure, FakeKube],
    tls: Tls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No role ever reaches the vault (local Key Vault stand-in): apply waits for
    --ready-timeout, then names the secret, the role and what to do; nothing written."""
    azure, _kube = fakes
    env_dir, _platform = _built(azure, tmp_path, monkeypatch, "minimal", "default")
    vault = FakeKeyVault(tls)
    vault.require_roles = True  # and azure.vault is not told: the grant never arrives
    r = _apply(azure, tls, env_dir, vault, ready_timeout=0.3)
    assert r.error is not None
    message = str(r.error)
    assert "ai4ec-access-keys" in message and "Key Vault Secrets Officer" in message
    assert "still refused" in message and "rerun apply" in message
    assert vault.secrets == {} and vault.refused >= 1
    vault.close()
    assert vault.violations == []


def _apply(azure: FakeAzure, tls: Tls, env_dir: Path, vault: FakeKeyVault, **kw: Any) -> Any:
    """apply --yes as the deployer, with the local Key Vault stand-in."""
    return run(
        azure,
        tls,
        env_dir,
        yes=True,
        deployer_principal_id=DEPLOYER,
        key_vault_endpoint=vault.url,
        **kw,
    )


def _outputs_the_objects_miss(env_dir: Path) -> list[str]:
    """Placeholders of the built Kubernetes objects that main.json's outputs do not name."""
    from ai4ec.apply.placeholders import PLACEHOLDER

    outputs = json.loads((env_dir / "azure" / "main.json").read_text())["outputs"]
    wanted = {
        m
        for f in sorted((env_dir / "k8s").glob("*/manifests.yaml"))
        for m in PLACEHOLDER.findall(f.read_text())
    }
    missing = []
    for path in sorted(wanted):
        head, *rest = path.split(".")
        node: Any = outputs.get(head, {}).get("value") if head in outputs else None
        for key in rest:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            missing.append(path)
    return missing


def test_package_blob_matches_the_azure_target() -> None:
    """The Consumption package path apply uploads to is the one the template runs from."""
    from ai4ec.apply.runner import PACKAGE_PATH
    from ai4ec.render.azure import common as azure_resources

    assert PACKAGE_PATH == f"{azure_resources.PACKAGE_CONTAINER}/{azure_resources.PACKAGE_BLOB}"


def test_prune_deletes_only_this_environments_stale_secrets(
    fakes: tuple[FakeAzure, FakeKube],
    tls: Tls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Key Vault prune against local HTTPS stand-ins (ARM, Kubernetes, Key Vault data
    plane with paged listings and soft delete): what an earlier ai4ec left tagged as this
    environment's goes with --prune, after its plan and confirmation; a user's secret,
    another environment's and a certificate's stay."""
    azure, kube = fakes
    kube.caller = DEPLOYER
    env_dir, _platform = _built(azure, tmp_path, monkeypatch, "camera-trap", "default")
    main = json.loads((env_dir / "azure" / "main.json").read_text())
    tags = main["variables"]["tags"]
    owner = {k: tags[k] for k in ("ai4ec-platform", "ai4ec-environment")}
    vault = FakeKeyVault(tls)
    vault.page_size = 3
    first = _apply(azure, tls, env_dir, vault)
    assert first.error is None, first.text
    # Every secret apply wrote carries the owner tags (the certificate's is Key Vault's).
    assert all(vault.tags[n] == owner for n in vault.secrets if n not in vault.certificates)
    # ARM writes the template's own secrets, tagged as the template says (the ARM
    # stand-in does not reach the vault, so they are put there as ARM would).
    declared = [
        str(r["name"]).split("/", 1)[1]
        for r in main["resources"]
        if r["type"] == "Microsoft.KeyVault/vaults/secrets"
    ]
    assert declared
    for name in declared:
        vault.secrets[name], vault.tags[name] = "from-arm", dict(tags)
    # An earlier ai4ec's template made ai4ec-eventgrid-key, tagged as every template
    # secret is; an API since removed had its key. Neither is in this build.
    stale = {"ai4ec-eventgrid-key": dict(tags), "ai4ec-api-key-gone-v1": dict(owner)}
    # Not this environment's: a user's secret and another environment's same-named key.
    others = {"results-storage-key": {}, "ai4ec-apim-key-x": {**owner, "ai4ec-environment": "x"}}
    for name, t in {**stale, **others}.items():
        vault.secrets[name], vault.tags[name] = "old-value-7c1e", t

    # A key an earlier ai4ec wrote without tags gets them (its value untouched), so prune
    # can find it later; the certificate's own secret is Key Vault's and is left alone.
    apim_key = vault.secrets["ai4ec-apim-key"]
    vault.tags["ai4ec-apim-key"] = {"note": "by hand"}
    vault.writes.clear()

    plain = _apply(azure, tls, env_dir, vault)
    assert plain.error is None and vault.deleted == [], plain.text
    assert vault.writes == ["tags ai4ec-apim-key"]
    assert vault.tags["ai4ec-apim-key"] == {"note": "by hand", **owner}
    assert vault.secrets["ai4ec-apim-key"] == apim_key

    preview = _apply(azure, tls, env_dir, vault, prune=True, plan=True)
    assert preview.error is None, preview.text
    listed = [ln.strip() for ln in preview.lines if ln.strip().startswith("- Key Vault secret")]
    assert listed == [f"- Key Vault secret {n}" for n in sorted(stale)], preview.text
    assert vault.deleted == []

    declined = run(
        azure,
        tls,
        env_dir,
        answers=[False],
        prune=True,
        deployer_principal_id=DEPLOYER,
        key_vault_endpoint=vault.url,
    )
    assert declined.error is not None and "keys: deletion not confirmed" in str(declined.error)
    assert vault.deleted == []

    pruned = _apply(azure, tls, env_dir, vault, prune=True)
    assert pruned.error is None, pruned.text
    assert sorted(vault.deleted) == sorted(stale)
    assert set(others) <= set(vault.secrets) and "ai4ec-gateway-client" in vault.secrets
    assert set(declared) <= set(vault.secrets)
    assert all("old-value-7c1e" not in ln for ln in pruned.lines)
    again = _apply(azure, tls, env_dir, vault, prune=True)
    assert again.error is None and sorted(vault.deleted) == sorted(stale), again.text
    vault.close()
    assert vault.violations == []
