"""API Management as the only door: keys, tokens, stripping, escaping, no secrets."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from ai4ec.errors import RenderError
from ai4ec.model.types import Auth, Cors, EntraAuth
from ai4ec.render.apim.plan import build_plan

from .support import (
    arm,
    assert_rule_bug,
    sample,
    sample_models,
    with_api,
    xml,
)
from .support import (
    render as render_raw,
)
from .support import (
    render_run as render,
)

TENANT = "11111111-1111-1111-1111-111111111111"
ENTRA = EntraAuth(
    tenant_id=TENANT, audiences=("api://camera-trap",), required_roles=("Detector.Invoke",)
)


def _by_name(resources, kind: str) -> dict[str, dict]:
    return {
        r["name"]: r for r in resources if r["type"] == f"Microsoft.ApiManagement/service/{kind}"
    }


def test_no_secret_in_any_output() -> None:
    """Function keys appear only as {{ai4ec-function-key}}; the named value is a Key Vault ref."""
    for _, _, platform, ctx in sample_models():
        files = render(platform, ctx)
        resources = arm(platform, ctx)
        blob = "\n".join(c.decode() for c in files.values()) + json.dumps(resources)
        assert not re.search(r"[?&]code=", blob)  # upstream put ?code=<key> into URLs
        assert not re.search(r"(?i)(password|secret)=", blob)
        for content in files.values():
            text = content.decode()
            if "x-functions-key" in text:
                assert re.findall(r'name="x-functions-key"[^>]*>\s*<value>([^<]*)<', text) == [
                    "{{ai4ec-function-key}}"
                ] * text.count('name="x-functions-key"')
        (key,) = [
            r
            for r in resources
            if r["type"].endswith("/namedValues") and r["name"].endswith("/ai4ec-function-key")
        ]
        assert key["properties"]["secret"] is True
        assert "value" not in key["properties"]
        assert key["properties"]["keyVault"] == {
            "secretIdentifier": f"https://{platform.azure.key_vault.name}.vault.azure.net"
            "/secrets/ai4ec-apim-key"
        }


def test_subscription_key_is_required_and_names_are_pinned() -> None:
    platform, ctx = sample("camera-trap")
    apis = _by_name(arm(platform, ctx), "apis")
    for name, res in apis.items():
        props = res["properties"]
        assert props["subscriptionRequired"] is True, name
        assert props["subscriptionKeyParameterNames"] == {
            "header": "Ocp-Apim-Subscription-Key",
            "query": "subscription-key",
        }
        assert props["protocols"] == ["https"]


def test_open_api_does_not_require_a_key() -> None:
    platform, ctx = sample("minimal")
    open_ = with_api(platform, "hello-v1", auth=Auth(subscription_key=False, entra_id=None))
    apis = _by_name(arm(open_, ctx), "apis")
    assert (
        apis[f"{platform.azure.api_management.name}/hello-v1"]["properties"]["subscriptionRequired"]
        is False
    )


def test_sync_backend_call_strips_key_and_internal_headers() -> None:
    platform, ctx = sample("camera-trap")
    root = xml(render(platform, ctx)["apim/policies/detector-sync-v1/detect-post.xml"])
    inbound = root.find("inbound")
    deleted = {
        h.get("name") for h in inbound.findall("set-header") if h.get("exists-action") == "delete"
    }
    assert {"Ocp-Apim-Subscription-Key", "taskId", "Forwarded", "X-Forwarded-Host"} <= deleted
    (query,) = inbound.findall("set-query-parameter")
    assert (query.get("name"), query.get("exists-action")) == ("subscription-key", "delete")
    (xff,) = inbound.xpath("set-header[@name='X-Forwarded-For']")
    assert xff.findtext("value") == "@(context.Request.IpAddress)"
    tags = [el.tag for el in inbound]
    # stripping happens in inbound, i.e. before the (global) forward-request
    assert tags.index("set-backend-service") < tags.index("set-query-parameter")
    assert inbound.find("rewrite-uri").get("template") == "/v1/camera-trap/detector-sync/detect"


def test_backend_entity_validates_tls_for_https_ingress() -> None:
    platform, ctx = sample("camera-trap")  # ingress protocol https
    backends = _by_name(arm(platform, ctx), "backends")
    (b,) = backends.values()
    assert b["properties"]["tls"] == {
        "validateCertificateChain": True,
        "validateCertificateName": True,
    }
    assert b["properties"]["url"] == "[parameters('ai4ecIngressUrls').main]"
    # A development environment's plain-HTTP ingress (issue 13: samples are all HTTPS).
    https, ctx = sample("minimal")
    (cluster,) = https.clusters
    plain = dataclasses.replace(
        https,
        development=True,
        clusters=(
            dataclasses.replace(
                cluster, ingress=dataclasses.replace(cluster.ingress, protocol="http")
            ),
        ),
    )
    (b,) = _by_name(arm(plain, ctx), "backends").values()
    assert "tls" not in b["properties"]


def test_jwt_is_validated_where_configured() -> None:
    platform, ctx = sample("camera-trap")
    secured = with_api(
        platform, "detector-sync-v1", auth=Auth(subscription_key=True, entra_id=ENTRA)
    )
    files = render(secured, ctx)
    root = xml(files["apim/policies/detector-sync-v1/api.xml"])
    inbound = root.find("inbound")
    assert [el.tag for el in inbound][:2] == ["base", "validate-jwt"]
    (jwt,) = inbound.findall("validate-jwt")
    assert jwt.get("header-name") == "Authorization" and jwt.get("require-scheme") == "Bearer"
    assert jwt.get("failed-validation-httpcode") == "401"
    assert jwt.get("require-signed-tokens") == "true"
    assert jwt.xpath("openid-config/@url") == [
        f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"
    ]
    assert jwt.xpath("audiences/audience/text()") == ["api://camera-trap"]
    assert jwt.xpath("issuers/issuer/text()") == [
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    ]
    (claim,) = jwt.xpath("required-claims/claim")
    assert (claim.get("name"), claim.get("match")) == ("roles", "any")
    assert claim.xpath("value/text()") == ["Detector.Invoke"]
    # other APIs are untouched
    assert not xml(files["apim/policies/detector-v1/api.xml"]).xpath(".//validate-jwt")


def test_api_is_reachable_only_through_its_products() -> None:
    platform, ctx = sample("camera-trap")
    links = _by_name(arm(platform, ctx), "products/apis")
    svc = platform.azure.api_management.name
    members: dict[str, set[str]] = {}
    for name in links:
        _, product, api = name.split("/")
        members.setdefault(product, set()).add(api)
    assert members == {
        "public": {"detector-sync-v1"},
        "partner": {
            "classifier-v1",
            "detector-sync-v1",
            "detector-v1",
            "species-v1",
            "task-status",
        },
    }
    # detector-v1 is partner-only: a public key cannot reach it (subscription required,
    # and the public product does not contain it)
    assert f"{svc}/public/detector-v1" not in links


ESCAPY = 'Det <b> & "quoted" {{ai4ec-function-key}}'


def test_display_name_is_escaped_and_parses_back() -> None:
    platform, ctx = sample("camera-trap")
    odd = with_api(platform, "detector-v1", display_name=ESCAPY, description=ESCAPY)
    content = render(odd, ctx)["apim/policies/detector-v1/detect-post.xml"]
    text = content.decode()
    assert "Det &lt;b&gt; &amp;" in text
    assert "{{ai4ec-function-key}}" not in text.replace(
        "<value>{{ai4ec-function-key}}</value>", ""
    )  # braces in user text are JSON-escaped, never a named-value reference
    root = xml(content)
    bodies = [b.text for b in root.iter("set-body") if b.text and b.text.startswith("{")]
    assert bodies
    for body in bodies:
        message = json.loads(body).get("message", ESCAPY)
        assert message.startswith(ESCAPY)  # parses back to the original text
    apis = _by_name(arm(odd, ctx), "apis")
    props = apis[f"{platform.azure.api_management.name}/detector-v1"]["properties"]
    assert props["displayName"] == ESCAPY and props["description"] == ESCAPY


#: A label that is JSON, C#, XML and APIM syntax at once, and starts like an expression.
NASTY = '@(1/0) \\ "x" é {{ai4ec-function-key}} <&> @{ }'


def test_label_reaches_the_fragment_answers_as_data() -> None:
    """The operation carries only its label, JSON-escaped once (never an expression, never
    a named value); the fragments' answers built from it are exactly what the local
    gateway serves (the plan's bodies) and parse back to the label."""
    platform, ctx = sample("camera-trap")
    odd = with_api(platform, "detector-v1", display_name=NASTY)
    raw = render_raw(odd, ctx)["apim/policies/detector-v1/detect-post.xml"]
    (prefix,) = xml(raw).xpath(".//set-variable[@name='ai4ec-message-prefix']/@value")
    assert prefix.startswith('"')  # APIM evaluates only values starting with @
    assert "{{" not in prefix and "}}" not in prefix
    assert json.loads(prefix + '"') == f"{NASTY}: "
    op = next(
        op
        for api in build_plan(odd, ctx.source_dir, ctx.source_name).apis
        for op in api.operations
        if op.policy_path == "apim/policies/detector-v1/detect-post.xml"
    )
    root = xml(render(odd, ctx)["apim/policies/detector-v1/detect-post.xml"])
    bodies = {
        int(r.find("set-status").get("code")): r.findtext("set-body")
        for r in root.iter("return-response")
    }
    assert bodies[413] == op.too_large_body
    assert bodies[400] == op.bad_json_body
    assert bodies[503] == op.create_failed_body
    for code in (413, 400, 503):
        assert json.loads(bodies[code])["message"].startswith(f"{NASTY}: ")


def test_cors_origin_is_escaped_and_parses_back() -> None:
    platform, ctx = sample("landcover")
    origin = 'https://a<b>&"c'
    cors = Cors(
        allowed_origins=(origin, "https://ok.example.org"),
        allowed_methods=("GET", "POST"),
        allowed_headers=("Content-Type",),
        allow_credentials=True,
        max_age_seconds=300,
    )
    content = render(with_api(platform, "landcover-v2", cors=cors), ctx)[
        "apim/policies/landcover-v2/api.xml"
    ]
    assert b"https://a&lt;b&gt;&amp;&#34;c" in content
    root = xml(content)
    inbound = root.find("inbound")
    assert inbound[0].tag == "cors" and inbound[1].tag == "base"
    (cors_el,) = inbound.findall("cors")
    assert cors_el.xpath("allowed-origins/origin/text()") == [origin, "https://ok.example.org"]
    assert cors_el.get("allow-credentials") == "true"
    assert cors_el.xpath("allowed-methods/@preflight-result-max-age") == ["300"]
    assert cors_el.xpath("expose-headers/header/text()") == ["Location", "Retry-After"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("origin", "https://{{ai4ec-function-key}}"),
        ("audience", "@(context.Variables)"),
        ("audience", "api://{{ai4ec-function-key}}"),
        ("role", "}}"),
    ],
)
def test_values_apim_would_evaluate_are_refused(field: str, value: str) -> None:
    platform, ctx = sample("landcover")
    if field == "origin":
        changed = with_api(
            platform,
            "landcover-v2",
            cors=dataclasses.replace(api_cors(platform), allowed_origins=(value,)),
        )
    else:
        entra = EntraAuth(
            tenant_id=TENANT,
            audiences=(value,) if field == "audience" else ("api://x",),
            required_roles=(value,) if field == "role" else (),
        )
        changed = with_api(
            platform, "landcover-v2", auth=Auth(subscription_key=True, entra_id=entra)
        )
    with pytest.raises(RenderError) as err:
        render(changed, ctx)
    assert_rule_bug(err.value, "E-APIM-LITERAL")


def test_credentials_with_any_origin_are_refused() -> None:
    platform, ctx = sample("landcover")
    cors = dataclasses.replace(api_cors(platform), allowed_origins=("*",), allow_credentials=True)
    with pytest.raises(RenderError) as err:
        render(with_api(platform, "landcover-v2", cors=cors), ctx)
    assert_rule_bug(err.value, "E-APIM-CORS")


def api_cors(platform) -> Cors:
    cors = next(a for a in platform.apis if a.id == "landcover-v2").cors
    assert cors is not None
    return cors


def test_only_known_named_values_are_referenced() -> None:
    for _, _, platform, ctx in sample_models():
        resources = arm(platform, ctx)
        declared = {
            r["properties"]["displayName"] for r in resources if r["type"].endswith("/namedValues")
        }
        for path, content in render(platform, ctx).items():
            refs = set(re.findall(r"\{\{([^{}]+)\}\}", content.decode()))
            assert refs <= declared, path


def test_api_management_presents_the_gateway_client_certificate() -> None:
    """Every mutual-TLS ingress backend presents ai4ec-gateway-client, read from Key Vault,
    and the Function App gets its PEM for dispatch (issue 13 item 1)."""
    from ai4ec.render import render_targets

    for _, _, platform, ctx in sample_models():
        resources = arm(platform, ctx)
        certs = _by_name(resources, "certificates")
        svc = platform.azure.api_management.name
        mutual = [
            c
            for c in platform.clusters
            if c.ingress.protocol == "https" and c.ingress.client_certificate
        ]
        assert mutual, "every sample uses the default mutual TLS"
        cert = certs[f"{svc}/ai4ec-gateway-client"]["properties"]
        assert cert["keyVault"]["secretIdentifier"] == (
            f"https://{platform.azure.key_vault.name}.vault.azure.net/secrets/ai4ec-gateway-client"
        )
        backends = _by_name(resources, "backends")
        for c in mutual:
            (backend,) = [b for n, b in backends.items() if n.endswith(f"/ai4ec-ingress-{c.name}")]
            ids = backend["properties"]["credentials"]["certificateIds"]
            assert ids == [
                f"[resourceId('Microsoft.ApiManagement/service/certificates', '{svc}', "
                "'ai4ec-gateway-client')]"
            ]
        files = {str(a.path): a.content for a in render_targets(platform, ctx).azure.artifacts}
        main = json.loads(files["azure/main.json"])
        (site,) = [r for r in main["resources"] if r["type"] == "Microsoft.Web/sites"]
        settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
        assert settings["AI4EC_GATEWAY_CLIENT_CERT"].endswith("/secrets/ai4ec-gateway-client-pem/)")


def test_published_products_are_visible_to_developers() -> None:
    """Without a group no one sees or subscribes to a product in the developer portal:
    published products are linked to `developers` by default (issue 13 item 6)."""
    for _, _, platform, ctx in sample_models():
        links = {r["name"] for r in arm(platform, ctx) if r["type"].endswith("/products/groups")}
        svc = platform.azure.api_management.name
        for p in platform.products:
            expected = {f"{svc}/{p.name}/{g}" for g in p.groups}
            if p.published:
                assert p.groups == ("developers",)
            assert expected <= links
    consumption = dataclasses.replace(
        platform,
        azure=dataclasses.replace(
            platform.azure,
            api_management=dataclasses.replace(platform.azure.api_management, sku="Consumption"),
        ),
    )
    assert not [r for r in arm(consumption, ctx) if r["type"].endswith("/products/groups")]
