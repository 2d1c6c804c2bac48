"""The API Management children as deployed: real types, versions, names, links.

Read from the Azure target's ``main.json`` (the APIM target hands over typed resources,
see :mod:`ai4ec.render.apim.resources`), so these pin what ARM really receives.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from ai4ec.render.apim import APIM_API_VERSION, INGRESS_PARAMETER, POLICY_FORMAT
from ai4ec.render.apim.resources import ingress_parameter

from ...conftest import ARTIFACT_CHECK, ARTIFACT_CHECK_DIR
from .support import arm, render, sample, sample_models

VALIDATOR = ARTIFACT_CHECK
CASES = list(sample_models())
IDS = [f"{s}-{e}" for s, e, _, _ in CASES]


def _apim_dependencies(resource: dict) -> list[str]:
    """dependsOn without the Key Vault role and secrets (not part of this mini template)."""
    return [
        d for d in resource["dependsOn"] if d.startswith("[resourceId('Microsoft.ApiManagement/")
    ]


def _apim_only(resource: dict) -> dict:
    return {**resource, "dependsOn": _apim_dependencies(resource)}


def _template(platform, resources) -> dict:
    service = {
        "type": "Microsoft.ApiManagement/service",
        "apiVersion": APIM_API_VERSION,
        "name": platform.azure.api_management.name,
        "location": "[resourceGroup().location]",
        "sku": {"name": platform.azure.api_management.sku, "capacity": 1},
        "identity": {"type": "SystemAssigned"},
        "properties": {"publisherEmail": "ai4e@example.org", "publisherName": "AI for Earth"},
    }
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            INGRESS_PARAMETER: {
                "type": "object",
                "defaultValue": ingress_parameter(platform).default,
            }
        },
        "resources": [service, *(_apim_only(r) for r in resources)],
    }


@pytest.mark.skipif(not VALIDATOR.is_file(), reason="../shared/artifact-check is absent")
@pytest.mark.parametrize(("sample_name", "env", "platform", "ctx"), CASES, ids=IDS)
def test_resources_pass_the_strict_arm_validator(sample_name, env, platform, ctx, tmp_path) -> None:
    path = tmp_path / "main.json"
    path.write_text(json.dumps(_template(platform, arm(platform, ctx)), indent=2))
    proc = subprocess.run(
        [sys.executable, str(VALIDATOR), "arm", "--strict-nested", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 errors, 0 warnings" in proc.stdout, proc.stdout


def _rid(resource: dict) -> str:
    parts = resource["name"].split("/")
    args = ", ".join(f"'{x}'" for x in (resource["type"], *parts))
    return f"[resourceId({args})]"


@pytest.mark.parametrize(("sample_name", "env", "platform", "ctx"), CASES, ids=IDS)
def test_names_versions_and_dependencies(sample_name, env, platform, ctx) -> None:
    resources = arm(platform, ctx)
    svc = platform.azure.api_management.name
    service_id = f"[resourceId('Microsoft.ApiManagement/service', '{svc}')]"
    known = {_rid(r) for r in resources} | {service_id}
    names = [(r["type"], r["name"]) for r in resources]
    assert len(names) == len(set(names))
    for r in resources:
        assert r["type"].startswith("Microsoft.ApiManagement/service/")
        assert r["apiVersion"] == APIM_API_VERSION
        # plain "<service>/<child>..." names, one segment per type level
        assert r["name"].startswith(f"{svc}/")
        assert r["name"].count("/") == r["type"].count("/") - 1
        assert not r["name"].startswith("[")
        deps = _apim_dependencies(r)
        assert deps and set(deps) <= known, r["name"]
        assert len(deps) == len(set(deps)), r["name"]


def test_policies_embed_exactly_the_policy_files() -> None:
    platform, ctx = sample("camera-trap")
    files = render(platform, ctx)
    svc = platform.azure.api_management.name
    policies = {r["name"]: r for r in arm(platform, ctx) if r["type"].endswith("/policies")}
    expected = {
        f"{svc}/policy": "apim/policies/global.xml",
        f"{svc}/detector-v1/policy": "apim/policies/detector-v1/api.xml",
        f"{svc}/detector-v1/detect-post/policy": "apim/policies/detector-v1/detect-post.xml",
        f"{svc}/species-v1/submit/policy": "apim/policies/species-v1/submit.xml",
        f"{svc}/task-status/get-task/policy": "apim/policies/task-status/get-task.xml",
        f"{svc}/partner/policy": "apim/products/partner.xml",
    }
    for name, path in expected.items():
        props = policies[name]["properties"]
        assert props["format"] == POLICY_FORMAT == "xml"
        assert props["value"].encode("utf-8") == files[path]
    # every policy and fragment file is embedded once, fragments with ai4ec's marker
    fragments = [r for r in arm(platform, ctx) if r["type"].endswith("/policyFragments")]
    assert {r["name"] for r in fragments} == {
        f"{svc}/ai4ec-create-task",
        f"{svc}/ai4ec-proxy-headers",
        f"{svc}/ai4ec-size-check",
    }
    for r in fragments:
        path = f"apim/fragments/{r['name'].split('/')[1]}.xml"
        assert r["properties"]["value"].encode("utf-8") == files[path]
        assert r["properties"]["format"] == "xml"
        assert r["properties"]["description"].startswith("ai4ec: ")
    embedded = [r["properties"]["value"].encode() for r in [*policies.values(), *fragments]]
    assert sorted(embedded) == sorted(files.values())


def test_policy_depends_on_the_named_values_and_backends_it_uses() -> None:
    platform, ctx = sample("camera-trap")
    svc = platform.azure.api_management.name
    res = {r["name"]: r for r in arm(platform, ctx)}
    deps = res[f"{svc}/detector-sync-v1/detect-post/policy"]["dependsOn"]
    assert (
        f"[resourceId('Microsoft.ApiManagement/service/backends', '{svc}', 'ai4ec-ingress-main')]"
        in deps
    )
    deps = res[f"{svc}/detector-v1/detect-post/policy"]["dependsOn"]
    nv = "ai4ec-ingress-main"
    assert f"[resourceId('Microsoft.ApiManagement/service/namedValues', '{svc}', '{nv}')]" in deps
    # the task manager's named values are used by the fragment, which the policy waits for
    for fragment in ("ai4ec-size-check", "ai4ec-create-task"):
        kind = "Microsoft.ApiManagement/service/policyFragments"
        assert f"[resourceId('{kind}', '{svc}', '{fragment}')]" in deps
    deps = res[f"{svc}/ai4ec-create-task"]["dependsOn"]
    for nv in ("ai4ec-function-key", "ai4ec-functions-url"):
        assert (
            f"[resourceId('Microsoft.ApiManagement/service/namedValues', '{svc}', '{nv}')]" in deps
        )
    # every fragment is declared before every policy that includes it
    order = [r["name"] for r in arm(platform, ctx)]
    for fragment in ("ai4ec-size-check", "ai4ec-create-task", "ai4ec-proxy-headers"):
        first_user = min(
            i
            for i, name in enumerate(order)
            if f'fragment-id="{fragment}"' in str(res[name].get("properties", {}).get("value"))
            and name.endswith("/policy")
        )
        assert order.index(f"{svc}/{fragment}") < first_user


def test_apis_operations_and_products() -> None:
    platform, ctx = sample("landcover")
    svc = platform.azure.api_management.name
    res = {r["name"]: r for r in arm(platform, ctx)}
    api = res[f"{svc}/landcover-v2"]["properties"]
    assert api["path"] == "v2/landcover" and api["type"] == "http"
    assert api["displayName"] == "landcover v2"
    ops = {
        n.split("/")[-1]: r["properties"]
        for n, r in res.items()
        if r["type"].endswith("/apis/operations") and n.startswith(f"{svc}/landcover-v2/")
    }
    assert sorted(ops) == [
        "classify-post",
        "classifybyextent-post",
        "tile-get",
        "tile-post",
        "tilebyextent-post",
    ]
    assert (ops["tile-get"]["method"], ops["tile-get"]["urlTemplate"]) == ("GET", "/tile")
    product = res[f"{svc}/research"]["properties"]
    assert product == {
        "displayName": "Research",
        "subscriptionRequired": True,
        "approvalRequired": False,
        "state": "published",
    }


def test_named_values_and_ingress_parameter() -> None:
    platform, ctx = sample("camera-trap")
    svc = platform.azure.api_management.name
    res = {r["name"]: r for r in arm(platform, ctx) if r["type"].endswith("/namedValues")}
    url = res[f"{svc}/ai4ec-functions-url"]["properties"]
    assert url == {
        "displayName": "ai4ec-functions-url",
        "secret": False,
        "value": f"https://{platform.azure.functions.app_name}.azurewebsites.net",
        "tags": ["ai4ec"],
    }
    ingress = res[f"{svc}/ai4ec-ingress-main"]["properties"]
    assert ingress["value"] == f"[parameters('{INGRESS_PARAMETER}').main]"
    param = ingress_parameter(platform)
    assert (param.name, param.type) == (INGRESS_PARAMETER, "object")
    assert param.default == {"main": "https://camera-trap.example.org"}
    # Without a concrete host (plain HTTP only: E-INGRESS-HOSTS refuses it for HTTPS) the
    # address is known after deployment, and '.invalid' fails loudly until apply sets it.
    minimal, _ = sample("minimal")
    cluster = minimal.clusters[0]
    http = dataclasses.replace(cluster.ingress, protocol="http", hosts=(), certificate=None)
    minimal = dataclasses.replace(minimal, clusters=(dataclasses.replace(cluster, ingress=http),))
    assert ingress_parameter(minimal).default == {"main": "http://main.ingress.invalid"}


def test_api_version_is_the_newest_stable_published() -> None:
    data = ARTIFACT_CHECK_DIR / "data" / "arm" / "api-versions.json"
    if not data.is_file():
        pytest.skip("../shared/artifact-check is absent")
    versions = json.loads(data.read_text())
    stable = [
        v for v in versions["Microsoft.ApiManagement/service/apis"] if not re.search("preview", v)
    ]
    assert APIM_API_VERSION == stable[-1]


@pytest.mark.parametrize(("sample_name", "env", "platform", "ctx"), CASES, ids=IDS)
def test_plan_names_exactly_what_each_policy_refers_to(sample_name, env, platform, ctx) -> None:
    """The dependencies come from the plan; the policy text must agree with them.

    (Reading the XML here, in the test, is what the renderer no longer does.)
    """
    from ai4ec.render.apim.plan import build_plan
    from ai4ec.render.apim.resources import policy_needs

    plan = build_plan(platform, ctx.source_dir, ctx.source_name)
    needs = policy_needs(plan)
    files = render(platform, ctx)
    assert set(needs) == set(files)
    for path, content in files.items():
        text = content.decode("utf-8")
        assert set(re.findall(r"\{\{([^{}]+)\}\}", text)) == needs[path].named_values, path
        assert set(re.findall(r'backend-id="([^"]+)"', text)) == needs[path].backends, path
        assert set(re.findall(r'fragment-id="([^"]+)"', text)) == needs[path].fragments, path


@pytest.mark.parametrize(("sample_name", "env", "platform", "ctx"), CASES, ids=IDS)
def test_every_api_product_and_named_value_carries_the_owner_tag(
    sample_name, env, platform, ctx
) -> None:
    """Issue 17: ``apply --prune`` deletes only APIM objects ai4ec created; the marker is
    an API Management tag linked to each API and product, and a tag on each named value."""
    from ai4ec.render.apim.resources import OWNER_TAG

    svc = platform.azure.api_management.name
    rs = arm(platform, ctx)
    by_type: dict[str, list[dict]] = {}
    for r in rs:
        by_type.setdefault(r["type"].removeprefix("Microsoft.ApiManagement/service"), []).append(r)
    [tag] = by_type["/tags"]
    assert tag["name"] == f"{svc}/{OWNER_TAG}"
    assert tag["properties"] == {"displayName": OWNER_TAG}
    for kind in ("apis", "products"):
        owned = {r["name"] for r in by_type[f"/{kind}"]}
        links = {r["name"].rsplit("/", 1)[0] for r in by_type[f"/{kind}/tags"]}
        assert links == owned and owned, kind
        for link in by_type[f"/{kind}/tags"]:
            assert link["name"].endswith(f"/{OWNER_TAG}")
            assert f"'{OWNER_TAG}')]" in " ".join(link["dependsOn"])
    for nv in by_type["/namedValues"]:
        assert nv["properties"]["tags"] == [OWNER_TAG]
