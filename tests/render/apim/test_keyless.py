"""Tokens on products, and limits for callers without a subscription key (issue 13).

Built from platform.yaml through validate, so what is tested is what a user gets:
``products[].entraId`` puts ``validate-jwt`` in the product policy; an API reachable
without a key limits keyless calls itself (they have no product context), per token
subject, with the strictest limits of its products; on the Consumption tier, which has
no by-key limits, validate refuses such an API instead of leaving it unlimited.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from ai4ec.pipeline import check_platform, require_ok
from ai4ec.render.apim import render_apim
from ai4ec.render.artifact import RenderContext

from ...conftest import ROOT
from .support import xml

TENANT = "11111111-1111-1111-1111-111111111111"
ENTRA = {"tenantId": TENANT, "audiences": ["api://hello"]}


def _platform(tmp_path: Path, edit: Any) -> Path:
    shutil.copytree(ROOT / "samples" / "minimal", tmp_path / "p")
    path = tmp_path / "p" / "platform.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _policies(path: Path) -> dict[str, bytes]:
    (platform,) = require_ok(check_platform(path))
    ctx = RenderContext(source_name="platform.yaml", source_dir=str(path.parent))
    return {str(a.path): a.content for a in render_apim(platform, ctx).artifacts}


def _keyless(data: dict[str, Any]) -> None:
    data["apis"][0]["auth"] = {"subscriptionKey": False, "entraId": ENTRA}
    data["products"].append(
        {
            "name": "partners",
            "rateLimit": {"calls": 5, "period": "60s"},  # stricter than public's 10/60s
            "quota": {"calls": 50000, "period": "30d"},
            "apis": ["hello"],
        }
    )


def test_keyless_calls_are_limited_per_token_subject(tmp_path: Path) -> None:
    files = _policies(_platform(tmp_path, _keyless))
    doc = xml(files["apim/policies/hello-v1/api.xml"])
    inbound = doc.find("inbound")
    assert inbound is not None
    names = [el.tag for el in inbound]
    assert names.index("validate-jwt") < names.index("choose")  # the subject is known first
    (when,) = inbound.find("choose").findall("when")  # type: ignore[union-attr]
    assert when.get("condition") == "@(context.Subscription == null)"
    rate, quota = when.find("rate-limit-by-key"), when.find("quota-by-key")
    assert rate is not None and quota is not None
    assert (rate.get("calls"), rate.get("renewal-period")) == ("5", "60")
    assert (quota.get("calls"), quota.get("renewal-period")) == ("10000", str(30 * 86400))
    for el in (rate, quota):
        assert el.get("counter-key") == '@("sub:" + ((Jwt)context.Variables["ai4ec-jwt"]).Subject)'


def test_keyless_without_a_token_is_limited_per_address(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["apis"][0]["auth"] = {"subscriptionKey": False}

    doc = xml(_policies(_platform(tmp_path, edit))["apim/policies/hello-v1/api.xml"])
    rate = doc.find("inbound/choose/when/rate-limit-by-key")
    assert rate is not None and rate.get("counter-key") == '@("ip:" + context.Request.IpAddress)'


def test_keyed_api_has_no_api_level_limit(tmp_path: Path) -> None:
    doc = xml(_policies(_platform(tmp_path, lambda d: None))["apim/policies/hello-v1/api.xml"])
    assert doc.find("inbound/choose/when/rate-limit-by-key") is None


def test_product_can_require_a_token(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["products"][0]["entraId"] = {**ENTRA, "requiredRoles": ["Hello.Invoke"]}

    doc = xml(_policies(_platform(tmp_path, edit))["apim/products/public.xml"])
    jwt = doc.find("inbound/validate-jwt")
    assert jwt is not None and jwt.get("failed-validation-httpcode") == "401"
    assert [a.text for a in jwt.findall("audiences/audience")] == ["api://hello"]
    assert [v.text for v in jwt.findall("required-claims/claim/value")] == ["Hello.Invoke"]
    names = [el.tag for el in doc.find("inbound")]  # type: ignore[union-attr]
    assert names.index("validate-jwt") < names.index("rate-limit-by-key")


def test_consumption_refuses_a_keyless_api_it_could_not_limit(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        _keyless(data)
        data["azure"]["apiManagement"]["sku"] = "Consumption"

    result = check_platform(_platform(tmp_path, edit))
    codes = [(d.code, d.json_path) for d in result.diagnostics]
    assert ("E-APIM-KEYLESS-LIMIT", "$.apis[0].auth.subscriptionKey") in codes
