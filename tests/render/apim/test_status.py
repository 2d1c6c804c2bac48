"""The shared task-status API: GET /task/{taskId} -> CacheConnectorGet?taskId=."""

from __future__ import annotations

import json

from ai4ec.model.types import Auth, EntraAuth

from .support import arm, render, sample, with_api, with_pipeline, xml

TENANT = "22222222-2222-2222-2222-222222222222"


def _get_task(platform, ctx):
    return xml(render(platform, ctx)["apim/policies/task-status/get-task.xml"])


def test_status_operation_and_api_objects() -> None:
    platform, ctx = sample("camera-trap")
    svc = platform.azure.api_management.name
    resources = {r["name"]: r for r in arm(platform, ctx)}
    api = resources[f"{svc}/task-status"]["properties"]
    assert api["path"] == "taskmanagement"
    assert api["subscriptionRequired"] is True
    op = resources[f"{svc}/task-status/get-task"]["properties"]
    assert (op["method"], op["urlTemplate"]) == ("GET", "/task/{taskId}")
    assert op["templateParameters"][0]["name"] == "taskId"


def test_status_calls_cache_connector_get_with_the_task_id() -> None:
    platform, ctx = sample("camera-trap")
    root = _get_task(platform, ctx)
    assert root.find("inbound")[0].tag == "base"
    assert root.xpath(".//set-variable[@name='ai4ec-get-url']/@value") == [
        "{{ai4ec-functions-url}}/api/CacheConnectorGet?taskId="
    ]
    (send,) = root.xpath(".//send-request")
    assert send.findtext("set-method") == "GET"
    assert 'Uri.EscapeDataString(context.Request.MatchedParameters["taskId"])' in send.findtext(
        "set-url"
    )
    assert send.xpath("set-header[@name='x-functions-key']/value/text()") == [
        "{{ai4ec-function-key}}"
    ]


def _answers(root) -> dict[str, str]:
    choose = root.find("inbound/choose")
    out = {}
    for when in choose.findall("when"):
        out[when.get("condition")] = when.find("return-response/set-status").get("code")
    out["otherwise"] = choose.find("otherwise/return-response/set-status").get("code")
    return out


def test_status_answers_200_404_and_503() -> None:
    platform, ctx = sample("camera-trap")
    answers = _answers(_get_task(platform, ctx))
    assert list(answers.values()) == ["200", "404", "503"]
    root = _get_task(platform, ctx)
    nf = root.find("inbound/choose").findall("when")[1]
    assert "== 404 ||" in nf.get("condition") and "== 204" in nf.get("condition")
    assert "not_found" in nf.findtext("return-response/set-body")
    unavailable = root.find("inbound/choose/otherwise/return-response")
    assert json.loads(unavailable.findtext("set-body"))["error"] == "task_status_unavailable"


def test_upstream_switch_makes_unknown_ids_204_platform_wide() -> None:
    platform, ctx = sample("camera-trap")
    compat = with_pipeline(platform, "species-v1", upstream_status_codes=True)
    answers = _answers(_get_task(compat, ctx))
    assert list(answers.values()) == ["200", "204", "503"]
    nf = _get_task(compat, ctx).find("inbound/choose").findall("when")[1]
    assert nf.find("return-response/set-body") is None


def test_sync_only_members_do_not_switch_the_status_api() -> None:
    platform, ctx = sample("camera-trap")
    sync_only = with_api(platform, "detector-sync-v1", upstream_status_codes=True)
    assert list(_answers(_get_task(sync_only, ctx)).values()) == ["200", "404", "503"]


def test_no_status_api_without_async_work() -> None:
    platform, ctx = sample("minimal")
    assert not [p for p in render(platform, ctx) if "task-status" in p]
    assert not [r for r in arm(platform, ctx) if "task-status" in r["name"]]


def test_status_api_is_in_every_product_with_async_members_only() -> None:
    platform, ctx = sample("camera-trap")
    links = {r["name"] for r in arm(platform, ctx) if r["type"].endswith("products/apis")}
    svc = platform.azure.api_management.name
    assert f"{svc}/partner/task-status" in links
    assert f"{svc}/public/task-status" not in links  # public only has a sync API


def test_status_jwt_only_when_every_async_member_requires_one() -> None:
    platform, ctx = sample("multi-env", "dev")  # one async API
    entra = EntraAuth(tenant_id=TENANT, audiences=("api://wildlife",), required_roles=("X",))
    secured = with_api(platform, "detector-v1", auth=Auth(subscription_key=False, entra_id=entra))
    files = render(secured, ctx)
    (jwt,) = xml(files["apim/policies/task-status/api.xml"]).xpath(".//validate-jwt")
    assert jwt.xpath("audiences/audience/text()") == ["api://wildlife"]
    assert not jwt.xpath("required-claims")  # roles are per API, not checked when polling
    svc = platform.azure.api_management.name
    status = next(r for r in arm(secured, ctx) if r["name"] == f"{svc}/task-status")
    assert status["properties"]["subscriptionRequired"] is False
    camera, cctx = sample("camera-trap")
    partly = with_api(camera, "detector-v1", auth=Auth(subscription_key=True, entra_id=entra))
    assert not xml(render(partly, cctx)["apim/policies/task-status/api.xml"]).xpath(
        ".//validate-jwt"
    )
