"""Every generated policy parses (lxml) and validates against schemas/apim-policies.xsd;
policies the service would reject are rejected by the schema too."""

from __future__ import annotations

import pytest
import xmlschema
from lxml import etree

from ai4ec.render.apim.policies import policy_schema_path, validate_policy

from .support import render, sample_models

ALL = [
    (f"{s}-{e}:{path}", content)
    for s, e, platform, ctx in sample_models()
    for path, content in render(platform, ctx).items()
]


def test_schema_is_a_valid_xsd() -> None:
    xmlschema.XMLSchema(policy_schema_path())


@pytest.mark.parametrize(("name", "content"), ALL, ids=[n for n, _ in ALL])
def test_policy_parses_and_validates(name: str, content: bytes) -> None:
    root = etree.fromstring(content)
    assert root.tag == ("fragment" if ":apim/fragments/" in name else "policies")
    assert validate_policy(content) == []


GOOD = """<policies>
    <inbound>
        <base />
        <rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Subscription.Id)" />
    </inbound>
    <backend><base /></backend>
    <outbound><base /></outbound>
    <on-error><base /></on-error>
</policies>"""

BAD = {
    "missing counter-key": ('counter-key="@(context.Subscription.Id)"', ""),
    "negative calls": ('calls="5"', 'calls="-5"'),
    "rate period above 300 s": ('renewal-period="60"', 'renewal-period="3600"'),
    "unknown policy": (
        "<base />\n        <rate",
        "<base />\n        <bogus-policy />\n        <rate",
    ),
    "sections out of order": (
        "<backend><base /></backend>\n    <outbound><base /></outbound>",
        "<outbound><base /></outbound>\n    <backend><base /></backend>",
    ),
    "missing section": ("<on-error><base /></on-error>", ""),
    "condition is not an expression": (
        "<base />\n        <rate",
        '<base />\n        <choose><when condition="true"><base /></when></choose>\n        <rate',
    ),
    "status code out of range": (
        "<base />\n        <rate",
        '<base />\n        <return-response><set-status code="999" />'
        "</return-response>\n        <rate",
    ),
    "send-request children out of order": (
        "<base />\n        <rate",
        '<base />\n        <send-request response-variable-name="x"><set-method>GET</set-method>'
        "<set-url>https://x</set-url></send-request>\n        <rate",
    ),
    "boolean spelled 1": (
        "<base />\n        <rate",
        '<base />\n        <rewrite-uri template="/x" copy-unmatched-params="1" />\n        <rate',
    ),
    "cors without allowed-headers": (
        "<base />\n        <rate",
        "<cors><allowed-origins><origin>https://a</origin></allowed-origins></cors>\n"
        "        <base />\n        <rate",
    ),
    "validate-jwt without audiences": (
        "<base />\n        <rate",
        '<base />\n        <validate-jwt header-name="Authorization">'
        '<openid-config url="https://login.microsoftonline.com/t/v2.0/'
        '.well-known/openid-configuration" />'
        "</validate-jwt>\n        <rate",
    ),
}


def test_good_policy_is_valid() -> None:
    assert validate_policy(GOOD.encode()) == []


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_policy_is_rejected(case: str) -> None:
    old, new = BAD[case]
    assert old in GOOD
    bad = GOOD.replace(old, new, 1)
    etree.fromstring(bad.encode())  # still well-formed XML: the schema must catch it
    assert validate_policy(bad.encode()), f"schema accepted: {case}"


def test_malformed_xml_is_rejected_by_the_parser() -> None:
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(b"<policies><inbound><base /></inbound>")
