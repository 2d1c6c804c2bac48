"""``apply`` of a platform whose per-API identities live in split templates (issue 12/13).

The build is the real one (``build_platform``, the Azure renderer) of bench/compile_scale.py's
platform with 12 APIs; the renderer's limits are lowered (module constants of
``ai4ec.render.azure.template``) so that 12 APIs split as 1,000 do at ARM's real limits,
in seconds. Resource Manager and Key Vault are the local fakes of this package (no Azure
offline); :class:`OrderingArm` adds what real ARM refuses when the order is wrong:

* a federated credential whose cluster does not exist yet (its issuer is read with
  ``reference()``);
* a role assignment whose principal is an identity that does not exist yet;
* a grant on an API's key secret that Key Vault does not hold yet (apply writes the
  keys in its ``keys`` step, between the ``azure`` and ``access`` steps);
* outputs that read (``reference(resourceId(...))``) an identity that does not exist
  when the deployment ends.
"""

from __future__ import annotations

import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai4ec.apply import Console, arm
from ai4ec.apply.builddir import Template, load_build
from ai4ec.apply.destroy import run_destroy
from ai4ec.errors import ApplyError
from ai4ec.pipeline import build_platform
from ai4ec.render.azure import template

from .conftest import (
    API_CLIENT_ID,
    CLIENT_ID,
    GATEWAY_CLIENT_ID,
    ROOT,
    RUNTIME_CLIENT_ID,
    SUBSCRIPTION,
    TENANT_ID,
    options,
    run,
)
from .kv_fake import FakeKeyVault
from .lifecycle import FakeArmLifecycle
from .support import FakeAzure, FakeKube, Request, Response, Tls

DEPLOYER = "0d3a9e51-0000-4000-8000-0000000de917"
_IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities"
_READS = re.compile(r"resourceId\('([^']+)',\s*'([^']+)'\)")
_SECRET_SCOPE = re.compile(r"^Microsoft\.KeyVault/vaults/[^/]+/secrets/(ai4ec-api-key-[^/]+)$")


class OrderingArm(FakeAzure):
    """:class:`FakeAzure` that refuses what ARM refuses when a needed resource is missing."""

    name = "azure-ordering"

    def __init__(self, tls: Tls, subscription: str, vault: FakeKeyVault) -> None:
        super().__init__(tls, subscription)
        self.vault = vault

    def _exists(self, rg: str, kind: str, name: str) -> bool:
        return self._rid(rg, kind, name).lower() in self.resources

    def refuse(self, rg: str, r: dict[str, Any], body: dict[str, Any]) -> tuple[str, str] | None:
        kind = str(r["type"])
        if kind == f"{_IDENTITY}/federatedIdentityCredentials":
            issuer = str(body["properties"]["issuer"])
            for t, n in _READS.findall(issuer):
                if not self._exists(rg, t, n):
                    return "ResourceNotFound", f"{r['name']}: issuer of {n} not found"
        if kind == "Microsoft.Authorization/roleAssignments":
            principal = str(body["properties"]["principalId"])
            for t, n in _READS.findall(principal):
                if t == _IDENTITY and not self._exists(rg, t, n):
                    return "PrincipalNotFound", f"identity {n} does not exist"
            m = _SECRET_SCOPE.match(str(r.get("scope", "")))
            if m and m.group(1) not in self.vault.secrets:
                return "NotFound", f"secret {m.group(1)} does not exist"
        return None

    def _deployment(self, req: Request, rg: str, name: str, action: str) -> Response:
        resp = super()._deployment(req, rg, name, action)
        if req.method == "PUT" and not action and resp.status < 300:
            props = (req.json() or {}).get("properties") or {}
            outputs = str((props.get("template") or {}).get("outputs") or "")
            for t, n in _READS.findall(outputs):
                if not self._exists(rg, t, n):
                    self.violate(f"deployment {name}: outputs read {t} {n}, not deployed yet")
        return resp


class GuidLifecycle(FakeArmLifecycle):
    """:class:`FakeArmLifecycle` that names role assignments by a GUID, as ARM does.

    The base fake keeps a ``[guid(...)]`` name unevaluated, which makes the id of a role
    assignment an expression destroy cannot read back; ARM evaluates it to a GUID.
    """

    def _expand(
        self, template: dict[str, Any], params: dict[str, Any]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        out = []
        for r, body in super()._expand(template, params):
            name = str(r["name"])
            if name.startswith("[guid("):
                r = {**r, "name": str(uuid.uuid5(uuid.NAMESPACE_URL, name))}
                body = {**body, "name": r["name"]}
            out.append((r, body))
        return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-API platform built once, identities cut into split templates (read-only)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from compile_scale import make_platform
    finally:
        sys.path.remove(str(ROOT / "bench"))
    root = tmp_path_factory.mktemp("idsplit")
    (root / "platform.yaml").write_text(yaml.safe_dump(make_platform(12), sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(template, "ARM_MAX_RESOURCES", 60)
        # 3 APIs per identities-<n> (results container, identity, federated credential,
        # results grant), 6 per identity-grants-<n> (2 grants each).
        mp.setattr(template, "IDENTITY_CHUNK", 12)
        build_platform(root / "platform.yaml", root / "out")
    return root / "out" / "default"


@pytest.fixture
def split_build(built: Path, tmp_path: Path) -> Path:
    """A copy of :func:`built` for one test (apply may write beside the build)."""
    return Path(shutil.copytree(built, tmp_path / "default"))


def test_build_lists_split_templates_in_deployment_order(split_build: Path) -> None:
    names = [t.name for t in load_build(split_build).templates()]
    assert names[0] == "main"
    identities = [f"identities-{n}" for n in (1, 2, 3, 4)]
    grants = [f"identity-grants-{n}" for n in (1, 2)]
    assert names[1:7] == identities + grants
    assert all(n.startswith("apim-apis-") for n in names[7:])  # APIM split too at 60


def test_identity_chunks_deploy_after_clusters_and_grants_after_keys(
    tls: Tls, split_build: Path
) -> None:
    """Order and deployAccessGrants of every deployment on a first run, then a no-op rerun."""
    vault = FakeKeyVault(tls)
    # The user's own secrets (apis[].secrets) exist before apply, as docs/apply.md asks.
    vault.secrets.update({f"storage-key-{i}": "user-secret" for i in range(10)})
    azure = OrderingArm(tls, SUBSCRIPTION, vault)
    try:
        r = run(
            azure,
            tls,
            split_build,
            yes=True,
            targets=("azure",),
            deployer_principal_id=DEPLOYER,
            key_vault_endpoint=vault.url,
        )
        assert r.error is None, r.text
        assert azure.violations == [] and vault.violations == []
        puts = [
            (q.path.rsplit("/", 1)[1].removeprefix("ai4ec-default-"), q.json()["properties"])
            for q in azure.requests
            if q.method == "PUT" and "/deployments/" in q.path
        ]
        order = [n for n, _ in puts]
        identities = [f"identities-{n}" for n in (1, 2, 3, 4)]
        grants = [f"identity-grants-{n}" for n in (1, 2)]
        assert order == [
            arm.DATA,
            arm.CLUSTERS,
            *identities,
            arm.FUNCTIONS,
            arm.APIM_SERVICE,
            arm.ACCESS,
            *grants,
        ]
        params = {n: p["parameters"] for n, p in puts}
        for n in [arm.DATA, arm.CLUSTERS, arm.FUNCTIONS, arm.APIM_SERVICE]:
            flag = params[n].get(arm.PARAM_ACCESS_GRANTS)
            assert flag in (None, {"value": False}), n
        for n in identities:
            assert arm.PARAM_ACCESS_GRANTS not in params[n]  # nothing conditional there
        for n in [arm.ACCESS, *grants]:
            assert params[n][arm.PARAM_ACCESS_GRANTS] == {"value": True}, n
        # Every API's key was written before the grants on it (the fake refuses others),
        # and every grant of every API reached ARM.
        assert {f"ai4ec-api-key-api{i}-v1" for i in range(12)} <= set(vault.secrets)
        granted = [
            res
            for n in grants
            for res in dict(puts)[n]["template"]["resources"]
            if res["type"] == "Microsoft.Authorization/roleAssignments"
        ]
        assert len(granted) == 24  # its key and its one user secret, per API
        # The outputs ride on functions, deployed after the identities they read.
        with_outputs = [n for n, p in puts if "outputs" in p["template"]]
        assert with_outputs == [arm.FUNCTIONS]
        assert arm.outputs_part(load_build(split_build).templates()[0].template) == arm.FUNCTIONS
        apis = dict(puts)[arm.FUNCTIONS]["template"]["outputs"]["apis"]["value"]
        assert len(apis) == 12
        # A rerun of the same build deploys nothing (every step's record matches).
        azure.reset_log()
        again = run(
            azure,
            tls,
            split_build,
            yes=True,
            targets=("azure",),
            deployer_principal_id=DEPLOYER,
            key_vault_endpoint=vault.url,
        )
        assert again.error is None, again.text
        assert not [w for w in azure.writes() if "/deployments/" in w]
        assert azure.violations == []
    finally:
        azure.close()
        vault.close()


def test_destroy_removes_what_the_split_deployments_made(tls: Tls, split_build: Path) -> None:
    """destroy reads the ``identities-<n>``/``identity-grants-<n>`` deployments too.

    Their role assignments have expression names: destroy finds them only in those
    deployments' ``outputResources`` (the lifecycle fake lists them, as ARM does).
    """
    vault = FakeKeyVault(tls)
    vault.secrets.update({f"storage-key-{i}": "user-secret" for i in range(10)})
    azure = GuidLifecycle(tls, SUBSCRIPTION)
    kube = FakeKube(tls)
    kube.caller = DEPLOYER
    azure.kube = kube
    # The fake cannot evaluate reference(): its outputs stand in for what ARM returns.
    main = {"keyVaultProviderClientId": CLIENT_ID, "runtimeClientId": RUNTIME_CLIENT_ID}
    main |= {"gatewayClientId": GATEWAY_CLIENT_ID, "ingressHost": "api.bench.example.org"}
    azure.output_values = {
        "tenantId": TENANT_ID,
        "clusters": {"main": main},
        "apis": {f"api{i}-v1": {"clientId": API_CLIENT_ID} for i in range(12)},
    }
    try:
        kw: dict[str, Any] = {
            "yes": True,
            "deployer_principal_id": DEPLOYER,
            "key_vault_endpoint": vault.url,
        }
        r = run(azure, tls, split_build, **kw)
        assert r.error is None, r.text
        split = [d for d in azure.deployments if "-identit" in d]
        assert len(split) == 6
        grants = [k for k in azure.resources if "/microsoft.authorization/roleassignments/" in k]
        assert len(grants) > 36  # 12 APIs x (results, key, user secret) and main's own
        lines: list[str] = []
        console = Console(lambda text, err: lines.append(text))
        done = run_destroy(options(azure, tls, split_build, **kw), console, lambda q: True)
        assert done is not None
        assert azure.violations == [] and kube.violations == [] and vault.violations == []
        deletes = [q.path for q in azure.requests if q.method == "DELETE"]
        # The identities (literal names: from the templates) ...
        assert sum(f"{_IDENTITY}/bench-api-" in d for d in deletes) == 12
        # ... and every grant of the split deployments, found only in their
        # outputResources.
        roles = [
            q.path
            for q in azure.requests
            if q.method == "DELETE" and "/Microsoft.Authorization/roleAssignments/" in q.path
        ]
        assert sum("/secrets/ai4ec-api-key-" in d for d in roles) == 12
        assert sum("/secrets/storage-key-" in d for d in roles) == 12
        # Each API's grant on its own results container (results-api<i>-v1).
        assert (
            sum(f"/containers/results-api{i}-v1/providers/" in d for d in roles for i in range(12))
            == 12
        )
        assert not [k for k in azure.resources if f"/{_IDENTITY.lower()}/" in k]
        assert not [k for k in azure.resources if "/microsoft.authorization/" in k]
        assert azure.deployments == {}  # records of split deployments removed too
    finally:
        azure.close()
        kube.close()
        vault.close()


def test_unknown_split_kind_is_a_clear_error() -> None:
    """A split template apply has no step for stops the run before anything is sent."""
    main = Template("main", {"resources": [], "parameters": {}}, {})
    other = Template("gadgets-1", {"resources": [], "parameters": {}}, {})
    with pytest.raises(ApplyError, match=r"azure/gadgets-1\.json: not a template kind"):
        arm.build_parts([main, other], {}, {})
