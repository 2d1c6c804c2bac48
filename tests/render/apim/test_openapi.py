"""APIs whose operations API Management imports from an OpenAPI document."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ai4ec.errors import RenderError
from ai4ec.render.apim.policies import validate_policy

from .support import (
    FIXTURES,
    api_of,
    arm,
    assert_rule_bug,
    sample,
    with_api,
    xml,
)
from .support import (
    render_run as render,
)


def _ctx(ctx):
    return dataclasses.replace(ctx, source_dir=str(FIXTURES))


def test_openapi_json_is_imported_with_its_content() -> None:
    platform, ctx = sample("camera-trap")
    ctx = _ctx(ctx)
    changed = with_api(platform, "detector-v1", openapi="detector.json")
    resources = arm(changed, ctx)
    svc = platform.azure.api_management.name
    (api,) = [r for r in resources if r["name"] == f"{svc}/detector-v1"]
    assert api["properties"]["format"] == "openapi+json"
    assert api["properties"]["value"] == (FIXTURES / "detector.json").read_text()
    assert api["properties"]["path"] == "v1/camera-trap/detector"
    # operations come from the import: none generated, no operation policy files
    assert not [r for r in resources if r["name"].startswith(f"{svc}/detector-v1/detect")]
    files = render(changed, ctx)
    assert [p for p in files if p.startswith("apim/policies/detector-v1/")] == [
        "apim/policies/detector-v1/api.xml"
    ]


def test_api_policy_routes_imported_operations_by_template_and_method() -> None:
    platform, ctx = sample("landcover")
    changed = with_api(platform, "landcover-v2", openapi="landcover.yaml")
    resources = arm(changed, _ctx(ctx))
    (api,) = [
        r
        for r in resources
        if r["name"].endswith("/landcover-v2") and r["type"].endswith("/service/apis")
    ]
    assert api["properties"]["format"] == "openapi"
    content = render(changed, _ctx(ctx))["apim/policies/landcover-v2/api.xml"]
    assert validate_policy(content) == []
    root = xml(content)
    inbound = root.find("inbound")
    assert [el.tag for el in inbound] == ["cors", "base", "choose"]
    whens = inbound.find("choose").findall("when")
    conditions = [w.get("condition") for w in whens]
    assert conditions[0] == (
        '@(context.Operation.UrlTemplate == "/classify" && context.Request.Method == "POST")'
    )
    assert len(whens) == 5  # classify, classifybyextent, tile GET, tile POST, tilebyextent
    by_template = dict(zip(conditions, whens, strict=True))
    sync = next(w for c, w in by_template.items() if '"/tile"' in c and '"GET"' in c)
    assert sync.xpath("rewrite-uri/@template") == ["/v2/landcover/tile"]
    async_ = next(w for c, w in by_template.items() if '"/tilebyextent"' in c)
    assert async_.xpath(".//send-request/set-url/text()") == [
        "{{ai4ec-functions-url}}/api/CacheConnectorUpsert"
    ]
    other = inbound.find("choose/otherwise/return-response")
    assert other.find("set-status").get("code") == "404"
    assert json.loads(other.findtext("set-body"))["error"] == "not_found"


def test_openapi_missing_an_endpoint_is_refused() -> None:
    platform, ctx = sample("landcover")
    changed = with_api(platform, "landcover-v2", openapi="incomplete.yaml")
    with pytest.raises(RenderError) as err:
        render(changed, _ctx(ctx))
    diag = err.value.diagnostics[0]
    assert_rule_bug(err.value, "E-APIM-OPENAPI")
    assert "POST /classifybyextent" in diag.message


def test_swagger_yaml_is_refused_and_missing_file_reported() -> None:
    platform, ctx = sample("camera-trap")
    with pytest.raises(RenderError, match="neither OpenAPI 3 nor Swagger 2 JSON"):
        render(with_api(platform, "detector-v1", openapi="swagger.yaml"), _ctx(ctx))
    with pytest.raises(RenderError, match="cannot read OpenAPI file"):
        render(with_api(platform, "detector-v1", openapi="absent.json"), _ctx(ctx))


def test_routed_path_that_is_not_expression_safe_is_refused() -> None:
    platform, ctx = sample("camera-trap")
    api = api_of(platform, "detector-v1")
    odd = dataclasses.replace(api.endpoints[0], path="/it's")
    changed = with_api(platform, "detector-v1", openapi="detector.json", endpoints=(odd,))
    with pytest.raises(RenderError) as err:
        render(changed, _ctx(ctx))
    assert_rule_bug(err.value, "E-APIM-EXPRESSION")
    # the same path is fine on a generated operation: it is only an XML attribute there
    files = render(with_api(platform, "detector-v1", endpoints=(odd,)), ctx)
    assert "apim/policies/detector-v1/detect-post.xml" in files
