"""API Management's rules in validate: the predicates, and their findings located at the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ai4ec.model.apim_rules import (
    Problem,
    cors_problem,
    header_problem,
    id_problem,
    literal_problem,
    neutral_problem,
    parse_openapi,
    path_problem,
    rate_period_problem,
)
from ai4ec.model.types import Endpoint, Mode
from ai4ec.pipeline import check_platform

from ..conftest import ROOT


@pytest.mark.parametrize(
    ("problem", "code"),
    [
        (literal_problem("https://{{x}}.example.org", "CORS origin"), "E-APIM-LITERAL"),
        (literal_problem(" @(context.User)", "audience"), "E-APIM-LITERAL"),
        (literal_problem("api://x\x07", "audience"), "E-APIM-LITERAL"),
        (header_problem("X Header", "CORS header"), "E-APIM-LITERAL"),
        (path_problem("/a{b}", "path"), "E-APIM-PATH"),
        (path_problem("relative", "path"), "E-APIM-PATH"),
        (neutral_problem("/it's", "path"), "E-APIM-EXPRESSION"),
        (id_problem("Upper", "API id"), "E-APIM-ID"),
        (cors_problem(["*"], True), "E-APIM-CORS"),
        (rate_period_problem(301, "rate limit"), "E-APIM-RATE-PERIOD"),
    ],
)
def test_each_rule_refuses_what_api_management_would_misread(
    problem: Problem | None, code: str
) -> None:
    assert problem is not None and problem.code == code


def test_ordinary_values_pass() -> None:
    assert literal_problem("https://ok.example.org", "o") is None
    assert literal_problem("api://a@b", "audience") is None  # '@' only matters in front
    assert header_problem("*", "h") is None and header_problem("X-Trace-Id", "h") is None
    assert path_problem("/v1/a.b~c", "p") is None and neutral_problem("/v1/a:b", "p") is None
    assert id_problem("detector-v1", "API id") is None
    assert cors_problem(["*"], False) is None and cors_problem(["https://a.org"], True) is None
    assert rate_period_problem(300, "r") is None


def _endpoint(path: str, *methods: str) -> Endpoint:
    return Endpoint(
        name="x",
        path=path,
        backend_path=path,
        methods=methods,
        mode=Mode.SYNC,
        timeout_seconds=30,
        max_body_bytes=1,
        description="",
    )


def test_parse_openapi(tmp_path: Path) -> None:
    doc = tmp_path / "api.yaml"
    doc.write_text("openapi: 3.0.1\npaths:\n  /a: {post: {}}\n", encoding="utf-8")
    found = parse_openapi(doc, "api.yaml", "a-v1", [_endpoint("/a", "POST")])
    assert not isinstance(found, Problem) and found.format == "openapi"
    missing = parse_openapi(doc, "api.yaml", "a-v1", [_endpoint("/a", "GET")])
    assert isinstance(missing, Problem) and "GET /a" in missing.message
    swagger = tmp_path / "s.yaml"
    swagger.write_text("swagger: '2.0'\npaths: {}\n", encoding="utf-8")
    assert isinstance(parse_openapi(swagger, "s.yaml", "a", []), Problem)
    garbage = tmp_path / "g.json"
    garbage.write_text("{", encoding="utf-8")
    assert "does not parse" in str(parse_openapi(garbage, "g.json", "a", []))


def test_pipeline_cors_is_located_in_the_pipeline(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "samples/camera-trap/platform.yaml").read_text())
    data["pipelines"][0]["cors"] = {
        "allowedOrigins": ["*"],
        "allowCredentials": True,
    }
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (diag,) = [d for d in check_platform(path).diagnostics if d.severity == "error"]
    assert diag.code == "E-APIM-CORS"
    assert diag.json_path == "$.pipelines[0].cors.allowCredentials" and diag.line
