"""The async flow: task creation through CacheConnectorUpsert, answered at once.

Checks the upsert body field by field against the upstream wire contract
(docs/contracts.md; upstream-platform.md §1.3, §2.5), and the answers around it.
"""

from __future__ import annotations

import re

from .support import (
    assigned_fields,
    sample,
    upsert_body_code,
    with_api,
    with_pipeline,
    xml,
)
from .support import (
    render_run as render,
)

API_FIELDS = {
    "Status": '"created"',
    "BackendStatus": '"created"',
    "Endpoint": '(string)context.Variables["ai4ec-endpoint"]',
    "Body": '(string)context.Variables["ai4ec-body"]',
    "PublishToGrid": "true",
}


def _policy(sample_name: str, path: str, env: str = "default"):
    platform, ctx = sample(sample_name, env)
    return xml(render(platform, ctx)[path])


def _variable(root, name: str) -> str:
    (el,) = root.xpath(f".//set-variable[@name='{name}']")
    return str(el.get("value"))


def test_api_upsert_body_has_exactly_the_upstream_fields() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    code = upsert_body_code(root)
    assert code.strip().startswith("@{") and code.strip().endswith("}")
    assert assigned_fields(code) == API_FIELDS
    assert list(assigned_fields(code)) == list(API_FIELDS)  # upstream's field order
    assert "return task.ToString(Newtonsoft.Json.Formatting.None);" in code


def test_pipeline_upsert_body_adds_the_pipeline_id() -> None:
    root = _policy("camera-trap", "apim/policies/species-v1/submit.xml")
    fields = assigned_fields(upsert_body_code(root))
    assert fields == {**API_FIELDS, "Pipeline": '(string)context.Variables["ai4ec-pipeline"]'}
    assert _variable(root, "ai4ec-pipeline") == "species-v1"


def test_endpoint_is_ingress_base_url_plus_backend_path_plus_query() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    assert _variable(root, "ai4ec-ingress") == "{{ai4ec-ingress-main}}"
    assert _variable(root, "ai4ec-backend-path") == "/v1/camera-trap/detector/detect"
    code = _variable(root, "ai4ec-endpoint")
    assert 'context.Variables["ai4ec-ingress"]' in code
    assert 'context.Variables["ai4ec-backend-path"]' in code
    assert "context.Request.OriginalUrl.Query" in code
    # the subscription key never reaches Endpoint (upstream leaked it there)
    assert '!string.Equals(p.Key, "subscription-key", StringComparison.OrdinalIgnoreCase)' in code
    assert 'url + "?" + query' in code


def test_pipeline_endpoint_is_the_first_step() -> None:
    root = _policy("camera-trap", "apim/policies/species-v1/submit.xml")
    assert _variable(root, "ai4ec-backend-path") == "/v1/camera-trap/detector/detect"


def test_body_is_the_callers_json_serialised_compactly_or_rejected() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    code = _variable(root, "ai4ec-body")
    assert "JToken.Parse(raw)" in code
    assert "ToString(Newtonsoft.Json.Formatting.None)" in code
    assert "JTokenType.Object" in code and "JTokenType.Array" in code
    (when,) = root.xpath(
        ".//when[contains(@condition, 'ai4ec-body') and contains(@condition, 'Length == 0')]"
    )
    assert when.xpath("return-response/set-status/@code") == ["400"]
    # 400 comes before any call to the task manager: nothing is created
    order = [el.tag for el in root.find("inbound")]
    assert order.index("choose") < order.index("retry")


def test_upsert_call_uses_named_values_and_passes_idempotency_key() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    (send,) = root.xpath(".//send-request")
    assert send.get("mode") == "new"  # a fresh request: no caller header is copied
    assert send.get("ignore-error") == "true"
    assert send.findtext("set-url") == "{{ai4ec-functions-url}}/api/CacheConnectorUpsert"
    assert send.findtext("set-method") == "POST"
    headers = {h.get("name"): h.findtext("value") for h in send.findall("set-header")}
    assert headers["x-functions-key"] == "{{ai4ec-function-key}}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == '@((string)context.Variables["ai4ec-idempotency-key"])'
    assert headers["X-Ai4ec-Caller"] == '@((string)context.Variables["ai4ec-caller"])'
    key = _variable(root, "ai4ec-idempotency-key")
    assert 'GetValueOrDefault("Idempotency-Key", "")' in key
    assert "context.RequestId" in key  # retries of APIM itself are deduplicated too
    caller = _variable(root, "ai4ec-caller")
    assert "context.Subscription.Id" in caller


def test_retry_is_bounded_and_only_on_missing_or_5xx_answers() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    (retry,) = root.xpath(".//retry")
    assert retry.get("count") == "2"
    assert "upsert == null || upsert.StatusCode >= 500" in retry.get("condition")
    assert [c.tag for c in retry] == ["send-request"]


def _final_choose(root):
    return root.find("inbound").findall("choose")[-1]


def _success(root):
    """The task-created answer: the last step of inbound, after every failure answered."""
    last = root.find("inbound")[-1]
    assert last.tag == "return-response"
    return last


def test_success_is_202_with_location_and_retry_after() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    ok = _success(root)
    assert ok.find("set-status").get("code") == "202"
    assert ok.find("set-status").get("reason") == "Accepted"
    headers = {h.get("name"): h.findtext("value") for h in ok.findall("set-header")}
    assert headers["Retry-After"] == "20"  # 10 min timeout / 30
    assert headers["Location"].startswith('@("/taskmanagement/task/" + ')
    assert "Uri.EscapeDataString" in headers["Location"]
    assert ok.findtext("set-body") == '@((string)context.Variables["ai4ec-task"])'


def test_no_success_without_a_task_id_never_a_half_created_task() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    task_id = _variable(root, "ai4ec-task-id")
    assert "status < 200 || status > 299" in task_id  # non-2xx: no task
    assert '["TaskId"]' in task_id and "catch (Exception)" in task_id  # no/invalid body
    whens = _final_choose(root).findall("when")
    assert "== 422" in whens[0].get("condition")  # reused Idempotency-Key: caller's error
    assert whens[0].find("return-response/set-status").get("code") == "422"
    failed = whens[1]
    assert "ai4ec-task-id" in failed.get("condition") and "Length == 0" in failed.get("condition")
    resp = failed.find("return-response")
    assert resp.find("set-status").get("code") == "503"
    assert resp.xpath("set-header[@name='Retry-After']/value/text()") == ["5"]
    import json

    body = json.loads(resp.findtext("set-body"))
    assert body["error"] == "task_create_failed"


def test_upstream_status_codes_switch_keeps_200() -> None:
    platform, ctx = sample("camera-trap")
    compat = with_api(platform, "detector-v1", upstream_status_codes=True)
    compat = with_pipeline(compat, "species-v1", upstream_status_codes=True)
    for path in (
        "apim/policies/detector-v1/detect-post.xml",
        "apim/policies/species-v1/submit.xml",
    ):
        root = xml(render(compat, ctx)[path])
        status = _success(root).find("set-status")
        assert (status.get("code"), status.get("reason")) == ("200", "OK")
    # the untouched API keeps 202
    root = xml(render(compat, ctx)["apim/policies/classifier-v1/classify-post.xml"])
    assert _success(root).find("set-status").get("code") == "202"


def test_async_operations_never_forward_to_the_backend() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    assert not root.xpath(".//set-backend-service | .//forward-request | .//rewrite-uri")
    # every path through inbound ends in return-response
    final = _final_choose(root)
    assert _success(root) is not None
    assert all(w.find("return-response") is not None for w in final.findall("when"))


def test_mixed_api_routes_each_endpoint_by_its_mode() -> None:
    platform, ctx = sample("landcover")
    files = render(platform, ctx)
    sync = xml(files["apim/policies/landcover-v2/classify-post.xml"])
    async_ = xml(files["apim/policies/landcover-v2/classifybyextent-post.xml"])
    assert sync.xpath(".//set-backend-service/@backend-id") == ["ai4ec-ingress-main"]
    assert not sync.xpath(".//send-request")
    assert async_.xpath(".//send-request") and not async_.xpath(".//set-backend-service")
    # timeout 30m -> Retry-After 30 s (capped)
    assert _success(async_).xpath("set-header[@name='Retry-After']/value/text()") == ["30"]


def test_request_size_limit_from_max_body_bytes() -> None:
    root = _policy("camera-trap", "apim/policies/detector-v1/detect-post.xml")
    (when,) = root.xpath(".//when[contains(@condition, 'ai4ec-body-bytes')]")
    assert re.search(r"> 8388608L\)$", when.get("condition"))  # maxBodySize 8Mi
    assert when.find("return-response/set-status").get("code") == "413"
    size = _variable(root, "ai4ec-body-bytes")
    assert 'GetValueOrDefault("Content-Length", "")' in size
    assert "As<byte[]>(preserveContent: true).Length" in size  # chunked bodies too
    pipe = _policy("camera-trap", "apim/policies/species-v1/submit.xml")
    (when,) = pipe.xpath(".//when[contains(@condition, 'ai4ec-body-bytes')]")
    assert when.get("condition").endswith("> 4194304L)")  # pipeline default 4Mi
    # the size check is the first thing after <base /> (its variables, then its choose)
    first = [el.tag for el in root.find("inbound")][:5]
    assert first == ["base", "set-variable", "set-variable", "set-variable", "choose"]
    assert root.find("inbound")[3].get("name") == "ai4ec-body-bytes"
