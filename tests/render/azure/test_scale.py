"""Large platforms: ARM's per-template resource and size limits hold for 1,000 APIs.

No wall-clock bound here (a busy machine is not a bug): the timing lives in
bench/compile_scale.py, which prints it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai4ec.apply.arm import reference_forms
from ai4ec.model.naming import results_container
from ai4ec.model.types import Platform
from ai4ec.pipeline import check_platform
from ai4ec.render.azure import template
from ai4ec.render.azure.template import APIM_CHUNK, ARM_MAX_RESOURCES

from ...conftest import ROOT
from .support import arm_resources, load_arm, render_platform, split_files, variant_files


def test_many_apim_children_move_to_split_templates() -> None:
    files = variant_files("apim-large")  # 801 APIM children + the platform
    main = load_arm(files)
    assert len(main["resources"]) <= ARM_MAX_RESOURCES
    assert not any(
        r["type"].startswith("Microsoft.ApiManagement/service/") for r in main["resources"]
    )
    parts = split_files(files, ".json")
    assert parts == ["azure/apim-apis-1.json", "azure/apim-apis-2.json"]
    sizes = [len(json.loads(files[p])["resources"]) for p in parts]
    assert sizes == [APIM_CHUNK, 801 - APIM_CHUNK]
    for p in parts:
        compact = json.dumps(json.loads(files[p]), separators=(",", ":"))
        assert len(compact) < 4_000_000
    assert {"azure/apim-apis-1.bicep", "azure/apim-apis-2.bicep"} <= set(files)
    assert not any(n.startswith("azure/modules/apim-apis") for n in files)
    assert "apimApis" not in files["azure/main.bicep"].decode()
    assert len(arm_resources(files)) > ARM_MAX_RESOURCES


@pytest.mark.slow
def _bench_platform(tmp_path: Path, n_apis: int) -> Platform:
    """bench/compile_scale.py's platform with ``n_apis`` APIs, validated."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from compile_scale import make_platform
    finally:
        sys.path.remove(str(ROOT / "bench"))
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(make_platform(n_apis), sort_keys=False))
    result = check_platform(path)
    assert result.ok, result.diagnostics[:3]
    (platform,) = result.platforms()
    return platform


def _key(r: dict[str, Any]) -> tuple[str, str]:
    return (str(r["type"]), str(r["name"]))


_IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities"
_GRANT_CONDITION = "[parameters('deployAccessGrants')]"


def test_api_identities_move_to_split_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ARM's limit the per-API identities leave main.json in two kinds of chunks.

    The limits are lowered (module constants) so that 12 APIs split in a second; what
    is cut where is the same rule 1,000 APIs meet at the real limits.
    """
    platform = _bench_platform(tmp_path, 12)
    whole = render_platform(platform)
    assert split_files(whole, ".json") == []  # 12 APIs fit: one template
    monkeypatch.setattr(template, "ARM_MAX_RESOURCES", 60)
    monkeypatch.setattr(template, "IDENTITY_CHUNK", 12)
    files = render_platform(platform)
    parts = split_files(files, ".json")
    idents = [p for p in parts if p.startswith("azure/identities-")]
    grants = [p for p in parts if p.startswith("azure/identity-grants-")]
    # 4 resources per API in identities-<n> (results container, identity, federated
    # credential, results grant: 12 = 3 APIs), 2 grants per API in identity-grants-<n>
    # (its key and its one user secret: 6 APIs per 12).
    assert idents == [f"azure/identities-{n}.json" for n in (1, 2, 3, 4)]
    assert grants == [f"azure/identity-grants-{n}.json" for n in (1, 2)]
    main = json.loads(files["azure/main.json"])
    docs = {p: json.loads(files[p]) for p in parts}
    # Nothing is lost or doubled: main plus the splits hold what one template held.
    before = json.loads(whole["azure/main.json"])
    union = [_key(r) for d in [main, *docs.values()] for r in d["resources"]]
    assert sorted(union) == sorted(_key(r) for r in before["resources"])
    assert main["outputs"] == before["outputs"]  # apis.*.clientId by resourceId still
    # Per-API identities have left main; the clusters' sync identities stay.
    names = {r["name"] for r in main["resources"] if r["type"] == _IDENTITY}
    assert names == {"bench-main-runtime", "bench-main-gateway"}
    for p in idents:
        rs = docs[p]["resources"]
        assert len(rs) <= 12 and len(rs) % 4 == 0, p  # whole APIs only
        _results_grants_stay_with_their_containers(rs)
        assert not any("condition" in r for r in rs)
        assert "deployAccessGrants" not in docs[p]["parameters"]
        assert "identities" in docs[p]["metadata"]["description"]
    for p in grants:
        rs = docs[p]["resources"]
        assert rs and all(r["condition"] == _GRANT_CONDITION for r in rs), p
        assert docs[p]["parameters"]["deployAccessGrants"]["defaultValue"] is False
    # A template's dependsOn names only its own resources (ARM refuses others).
    for p, d in [("azure/main.json", main), *docs.items()]:
        mine = {f for r in d["resources"] for f in reference_forms(r)}
        for r in d["resources"]:
            for dep in r.get("dependsOn") or []:
                assert "".join(dep.split()) in mine, (p, r["name"], dep)
    for p in parts:
        assert p.replace(".json", ".bicep") in files
        assert p.replace(".json", ".parameters.json") in files
    assert "idApiApi0V1" not in files["azure/modules/identities.bicep"].decode()


_CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"


def _results_grants_stay_with_their_containers(resources: list[dict[str, Any]]) -> None:
    """Each API's container and its one data-role grant travel in the same template."""
    containers = [r["name"].rsplit("/", 1)[1] for r in resources if r["type"] == _CONTAINER]
    scopes = [
        r["scope"].rsplit("/containers/", 1)[1]
        for r in resources
        if r["type"] == "Microsoft.Authorization/roleAssignments"
        and "/containers/" in r.get("scope", "")
    ]
    assert containers and sorted(containers) == sorted(scopes)


def test_thousand_apis_fit_arm_limits(tmp_path: Path) -> None:
    """Every template of a 1,000-API build is one Azure accepts: <= 800 resources, < 4 MB."""
    platform = _bench_platform(tmp_path, 1000)
    files = render_platform(platform)
    arm = load_arm(files)
    assert len(arm_resources(files)) > ARM_MAX_RESOURCES
    parts = split_files(files, ".json")
    assert any(p.startswith("azure/identities-") for p in parts)
    assert any(p.startswith("azure/identity-grants-") for p in parts)
    for name in ["azure/main.json", *parts]:
        doc = json.loads(files[name])
        assert len(doc["resources"]) <= ARM_MAX_RESOURCES, name
        assert len(json.dumps(doc, separators=(",", ":"))) < 4_000_000, name
    assert arm["resources"]
    assert len(arm["outputs"]["apis"]["value"]) == 1000
    # One results container per API, each granted to its API's identity alone.
    every = arm_resources(files)
    containers = {r["name"].rsplit("/", 1)[1] for r in every if r["type"] == _CONTAINER}
    assert {results_container(platform.azure, a) for a in platform.apis} <= containers
    for p in parts:
        if p.startswith("azure/identities-"):
            _results_grants_stay_with_their_containers(json.loads(files[p])["resources"])
