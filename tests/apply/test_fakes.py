"""The fakes' own strictness (issue 17, Proof): each refuses what the real service refuses.

A fake that accepts anything proves nothing, so these tests talk to the fakes of
``support.py`` directly (stdlib HTTPS client, the fakes' CA) and check each refusal:
ARM's 404 to actions that do not exist and 409 ``DeploymentActive``, the Functions host's
import check and restart delay, Event Grid's validation handshake, the kube-apiserver's
403 until a role exists, what-if's ``Deploy``/``NoEffect``/noise.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .conftest import SUBSCRIPTION, Project, run
from .support import (
    TOKENS,
    FakeAzure,
    FakeKube,
    FunctionsHost,
    Tls,
    applied_by,
    without_packages,
)

ARM = TOKENS["https://management.core.windows.net/.default"]
RG = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/my-platform-rg"
SITE = f"{RG}/providers/Microsoft.Web/sites/myplat-tasks-e61b8"


def _call(
    fake: Any,
    tls: Tls,
    method: str,
    path: str,
    body: Any = None,
    token: str = ARM,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(fake.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, context=ctx) as r:  # noqa: S310 - local fake
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def test_arm_404s_unknown_site_actions_and_accepts_the_real_ones(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    azure, _kube = fakes
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    api = "?api-version=2024-04-01"
    assert _call(azure, tls, "POST", f"{SITE}/syncfunctions{api}", {})[0] == 404
    assert _call(azure, tls, "POST", f"{SITE}/syncfunctiontriggers{api}", {})[0] == 200
    assert _call(azure, tls, "POST", f"{SITE}/host/default/sync{api}", {})[0] == 200
    azure.violations.clear()  # the 404 was recorded as a violation, as it should be


def test_arm_409s_a_put_of_a_running_deployment(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    azure, _kube = fakes
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    azure.active["ai4ec-default-clusters"] = 1
    path = (
        f"{RG}/providers/Microsoft.Resources/deployments/ai4ec-default-clusters"
        "?api-version=2025-04-01"
    )
    status, body = _call(azure, tls, "PUT", path, {"properties": {}})
    assert status == 409 and body["error"]["code"] == "DeploymentActive"
    status, body = _call(azure, tls, "GET", path)
    assert body["properties"]["provisioningState"] == "Running"
    assert _call(azure, tls, "GET", path)[1]["properties"]["provisioningState"] == "Succeeded"


def test_functions_host_indexes_after_a_restart_and_only_what_imports(
    built_sample: Path,
) -> None:
    bundle = (built_sample / "out" / "default" / "functions" / "bundle.zip").read_bytes()
    host = FunctionsHost()
    host.index_delay = 2
    host.publish(bundle)
    assert host.listing("app") == []  # restarting
    assert host.listing("app") == []
    names = [f["properties"]["name"] for f in host.listing("app")]
    assert "BackendWebhook" in names
    assert host.dependencies == "bundle"  # only the bundle and its .python_packages
    bare = FunctionsHost()
    bare.index_delay = 0
    bare.publish(without_packages(bundle))
    assert bare.listing("app") == []
    assert "ModuleNotFoundError" in bare.error


def test_event_grid_handshake_needs_the_indexed_webhook(built_sample: Path) -> None:
    bundle = (built_sample / "out" / "default" / "functions" / "bundle.zip").read_bytes()
    host = FunctionsHost()
    host.index_delay = 1
    host.publish(bundle)
    assert "validation handshake failed" in host.handshake()
    assert host.listing("app") == []  # still restarting
    assert host.listing("app") != []  # indexed
    assert host.handshake() == ""
    event = {"data": {"validationCode": "abc"}}
    assert host.webhook(event) == {"validationResponse": "abc"}
    host.unanswered = 1  # listed, but the worker does not answer yet: the handshake fails
    assert "validation handshake failed" in host.handshake()
    assert host.handshake() == ""


def test_kube_answers_403_until_a_role_exists_and_refuses_unlistable_kinds(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls
) -> None:
    _azure, kube = fakes
    kube.caller, kube.propagation = "someone", 1
    assert _call(kube, tls, "GET", "/api/v1", token=kube.token)[0] == 403
    kube.grant("someone")
    assert _call(kube, tls, "GET", "/api/v1", token=kube.token)[0] == 403  # propagating
    assert _call(kube, tls, "GET", "/api/v1", token=kube.token)[0] == 200
    kube.unlistable.add("configmaps")
    assert _call(kube, tls, "GET", "/api/v1/configmaps", token=kube.token)[0] == 403


def test_arm_leaves_out_a_role_whose_condition_is_false(
    fakes: tuple[FakeAzure, FakeKube],
) -> None:
    """The deployer role's ``condition``: no principal id, no assignment (as ARM does)."""
    azure, _kube = fakes
    role = {
        "type": "Microsoft.Authorization/roleAssignments",
        "name": "g",
        "condition": "[not(empty(parameters('deployerPrincipalId')))]",
        "properties": {"principalId": "[parameters('deployerPrincipalId')]"},
    }
    template = {"resources": [role]}
    assert azure._expand(template, {"deployerPrincipalId": ""}) == []
    [(_, body)] = azure._expand(template, {"deployerPrincipalId": "abc"})
    assert body["properties"]["principalId"] == "abc"


def test_whatif_returns_deploy_noeffect_and_noise(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    azure, _kube = fakes
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    azure.whatif_noise = True
    azure.whatif_forced = {
        "Microsoft.ContainerService/managedClusters": "Deploy",
        "Microsoft.EventGrid/topics": "NoEffect",
    }
    for part in ("clusters", "functions"):
        body = next(
            q.json()
            for q in azure.requests
            if q.method == "PUT" and q.path.endswith(f"/ai4ec-default-{part}")
        )
        path = (
            f"{RG}/providers/Microsoft.Resources/deployments/ai4ec-default-{part}/whatIf"
            "?api-version=2025-04-01"
        )
        status, _ = _call(azure, tls, "POST", path, body)
        assert status == 202
    kinds = {
        c["changeType"]
        for o in azure.operations.values()
        for c in o["result"].get("properties", {}).get("changes", [])
    }
    assert {"Deploy", "NoEffect", "Modify"} <= kinds  # Modify: NoEffect-only noise


def test_kube_merges_server_side_apply_by_field_manager(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls
) -> None:
    """Fields KEDA owns survive an apply that omits them; claiming one is a 409 naming
    KEDA unless forced; a field ai4ec stops sending is removed."""
    _azure, kube = fakes
    kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}})
    seeded = applied_by(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns1", "annotations": {"a": "1"}},
            "spec": {"template": {"x": "1"}},
        }
    )
    seeded["spec"]["replicas"] = 3
    seeded["metadata"]["managedFields"].append(
        {"manager": "keda", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    )
    kube.seed(seeded)
    path = "/apis/apps/v1/namespaces/ns1/deployments/d?fieldManager=ai4ec"
    ssa = "application/apply-patch+yaml"

    def apply(spec: dict[str, Any], force: bool = False) -> tuple[int, Any]:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns1"},
            "spec": spec,
        }
        kube.expect_force = force
        q = path + ("&force=true" if force else "")
        return _call(kube, tls, "PATCH", q, body, token=kube.token, content_type=ssa)

    status, obj = apply({"template": {"x": "2"}})
    assert status == 200
    assert obj["spec"]["replicas"] == 3  # KEDA's field kept
    assert "annotations" not in obj["metadata"]  # ai4ec's dropped field removed
    status, obj = apply({"template": {"x": "2"}, "replicas": 1})
    assert status == 409 and 'conflict with "keda"' in obj["message"]
    status, obj = apply({"template": {"x": "2"}, "replicas": 1}, force=True)
    assert status == 200 and obj["spec"]["replicas"] == 1
    assert [m["manager"] for m in obj["metadata"]["managedFields"]] == ["ai4ec"]
    assert kube.violations == []


def test_apim_refuses_deletes_without_if_match_or_of_what_policies_use(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """API Management: If-Match is required on DELETE; a named value a policy uses
    cannot go; deleting the API (and so its policy) first lets it go; no service, 404."""
    azure, _kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    svc = f"{RG}/providers/Microsoft.ApiManagement/service/myplat-apim-e61b8"
    api = "?api-version=2024-05-01"
    base = f"/subscriptions/{SUBSCRIPTION}/resourcegroups/my-platform-rg/providers/"
    policy = (
        f"{base}microsoft.apimanagement/service/myplat-apim-e61b8/apis/hello-v1/policies/policy"
    )
    azure.resources[policy.lower()]["properties"]["value"] = "<p>{{ai4ec-ingress-main}}</p>"
    nv = f"{svc}/namedValues/ai4ec-ingress-main{api}"
    status, body = _call(azure, tls, "DELETE", nv)
    assert status == 400 and "If-Match" in body["error"]["message"]
    status, body = _call(azure, tls, "DELETE", nv, headers={"If-Match": "*"})
    assert status == 400 and "used in policies" in body["error"]["message"]
    status, _ = _call(azure, tls, "DELETE", f"{svc}/apis/hello-v1{api}", headers={"If-Match": "*"})
    assert status == 200
    assert _call(azure, tls, "DELETE", nv, headers={"If-Match": "*"})[0] == 200
    status, body = _call(azure, tls, "GET", f"{svc}/apis{api}")
    assert status == 200 and body["value"] == []
    other = f"{RG}/providers/Microsoft.ApiManagement/service/nope/apis{api}"
    assert _call(azure, tls, "GET", other)[0] == 404
