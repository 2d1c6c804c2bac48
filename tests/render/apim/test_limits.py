"""Product limits apply to every call, async and status included (upstream skipped them)."""

from __future__ import annotations

import dataclasses

import pytest

from ai4ec.errors import RenderError
from ai4ec.model.types import Limit

from .support import SECTIONS, assert_rule_bug, render, sample, sample_models, xml

SCOPED = [
    (f"{s}-{e}:{path}", content)
    for s, e, platform, ctx in sample_models()
    for path, content in render(platform, ctx).items()
    if path != "apim/policies/global.xml" and not path.startswith("apim/fragments/")
]


@pytest.mark.parametrize(("name", "content"), SCOPED, ids=[n for n, _ in SCOPED])
def test_base_is_in_every_section(name: str, content: bytes) -> None:
    root = xml(content)
    assert [el.tag for el in root] == list(SECTIONS)
    for section in root:
        assert section.find("base") is not None, f"{name}: <{section.tag}> lacks <base />"


@pytest.mark.parametrize(("name", "content"), SCOPED, ids=[n for n, _ in SCOPED])
def test_base_comes_before_anything_that_can_answer(name: str, content: bytes) -> None:
    """Rate limits and quotas run before a task is created or a status is read.

    Only ``cors`` may precede ``<base />`` (preflights never reach the limits).
    """
    inbound = [el.tag for el in xml(content).find("inbound")]
    assert inbound.index("base") <= inbound.count("cors")


def test_status_and_async_policies_inherit_product_limits() -> None:
    platform, ctx = sample("camera-trap")
    files = render(platform, ctx)
    for path in (
        "apim/policies/task-status/get-task.xml",
        "apim/policies/task-status/api.xml",
        "apim/policies/detector-v1/detect-post.xml",
        "apim/policies/species-v1/submit.xml",
    ):
        assert xml(files[path]).find("inbound")[0].tag == "base", path


def test_global_policy_forwards_once_with_the_operation_timeout() -> None:
    platform, ctx = sample("camera-trap")
    files = render(platform, ctx)
    root = xml(files["apim/policies/global.xml"])
    (fwd,) = root.xpath("backend/forward-request")
    assert 'GetValueOrDefault<int>("ai4ec-timeout-seconds", 300)' in fwd.get("timeout")
    sync = xml(files["apim/policies/detector-sync-v1/detect-post.xml"])
    assert sync.xpath(".//set-variable[@name='ai4ec-timeout-seconds']/@value") == ["@(60)"]
    # nobody else forwards: exactly one forward-request in the effective policy
    for path, content in files.items():
        if path != "apim/policies/global.xml":
            assert not xml(content).xpath(".//forward-request"), path


@pytest.mark.parametrize(
    ("product", "rate", "quota"),
    [("public", (5, 60), (1000, 604800)), ("partner", (60, 60), (100000, 2592000))],
)
def test_product_policy_has_the_models_limits(product, rate, quota) -> None:
    platform, ctx = sample("camera-trap")
    root = xml(render(platform, ctx)[f"apim/products/{product}.xml"])
    inbound = root.find("inbound")
    assert inbound[0].tag == "base"
    (rl,) = inbound.findall("rate-limit-by-key")
    (qt,) = inbound.findall("quota-by-key")
    assert (int(rl.get("calls")), int(rl.get("renewal-period"))) == rate
    assert (int(qt.get("calls")), int(qt.get("renewal-period"))) == quota
    for el in (rl, qt):
        assert "context.Subscription.Id" in el.get("counter-key")


def test_product_without_quota_has_only_a_rate_limit() -> None:
    platform, ctx = sample("multi-env", "dev")
    inbound = xml(render(platform, ctx)["apim/products/default.xml"]).find("inbound")
    assert [el.tag for el in inbound] == ["base", "rate-limit-by-key"]
    prod, ctx = sample("multi-env", "prod")
    inbound = xml(render(prod, ctx)["apim/products/default.xml"]).find("inbound")
    assert [el.tag for el in inbound] == ["base", "rate-limit-by-key", "quota-by-key"]
    assert inbound.find("quota-by-key").get("calls") == "500000"


def test_consumption_tier_uses_per_subscription_limits() -> None:
    platform, ctx = sample("camera-trap")
    apim = dataclasses.replace(platform.azure.api_management, sku="Consumption", capacity=0)
    consumption = dataclasses.replace(
        platform, azure=dataclasses.replace(platform.azure, api_management=apim), _index={}
    )
    inbound = xml(render(consumption, ctx)["apim/products/public.xml"]).find("inbound")
    assert [el.tag for el in inbound] == ["base", "rate-limit", "quota"]
    assert inbound.find("rate-limit").attrib == {"calls": "5", "renewal-period": "60"}


def test_rate_limit_period_above_300s_is_refused() -> None:
    platform, ctx = sample("minimal")
    products = tuple(
        dataclasses.replace(p, rate_limit=Limit(calls=10, period_seconds=3600))
        for p in platform.products
    )
    with pytest.raises(RenderError) as err:
        render(dataclasses.replace(platform, products=products, _index={}), ctx)
    assert_rule_bug(err.value, "E-APIM-RATE-PERIOD")
    assert err.value.diagnostics[0].json_path == "$.products[0].rateLimit"
