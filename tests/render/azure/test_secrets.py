"""No secret in any generated file: keys travel from resources to Key Vault as expressions."""

from __future__ import annotations

import json
import re

import pytest

from ai4ec.render.azure.common import SECRET_NAMES

from .support import all_arm, all_cases, case_bicep, case_files, load_arm

CASES = all_cases()

#: Things that only appear when a key was written out as a value.
LEAKS = [
    re.compile(r"AccountKey=", re.I),
    re.compile(r"SharedAccessKey=", re.I),
    re.compile(r"password=[^{$]", re.I),
    re.compile(r"code=[A-Za-z0-9_-]"),  # function keys: code={0} / code=${...} only
    re.compile(r"rediss?://:[^{$]"),  # a literal password in a Redis URL
    re.compile(r"InstrumentationKey=[0-9a-f]", re.I),
]


@pytest.mark.parametrize("case", CASES)
def test_no_key_in_any_file(case: str) -> None:
    for name, data in case_files(case).items():
        text = data.decode()
        for leak in LEAKS:
            assert not leak.search(text), f"{name}: {leak.pattern}"


@pytest.mark.parametrize("case", CASES)
def test_every_contract_secret_is_an_expression(case: str) -> None:
    arm = load_arm(case_files(case))
    secrets = {
        r["name"].split("/")[1]: r["properties"]["value"]
        for r in arm["resources"]
        if r["type"] == "Microsoft.KeyVault/vaults/secrets"
    }
    # docs/contracts.md, "Key Vault secrets": every one is created.
    assert set(secrets) == set(SECRET_NAMES)
    for name, value in secrets.items():
        assert value.startswith("[") and not value.startswith("[["), name
        assert "listKeys(" in value or "reference(" in value, name
    # No secret reads the Functions host's keys (they open every function; issue 13).
    text = json.dumps(arm)
    assert "Microsoft.Web/sites/host" not in text and "functionKeys" not in text
    bicep = case_bicep(case)
    for r in bicep.resources:
        if r.type == "Microsoft.KeyVault/vaults/secrets" and not r.existing:
            value = r.config["properties"]["value"]
            # Bicep: either an expression node or an interpolated string, never a literal.
            assert not isinstance(value, str) or "${" in value, r.symbol


@pytest.mark.parametrize("case", CASES)
def test_outputs_and_parameters_hold_no_secret(case: str) -> None:
    files = case_files(case)
    arm = load_arm(files)
    outputs = json.dumps(arm["outputs"])
    assert "listKeys" not in outputs
    assert "ConnectionString" not in outputs and "InstrumentationKey" not in outputs
    for name, doc in all_arm(files)[1:]:  # split APIM parts: no outputs, harmless params
        assert "outputs" not in doc, name
        assert not any(re.search(r"key|secret|password|token", n, re.I) for n in doc["parameters"])
    params = json.loads(files["azure/main.parameters.json"])["parameters"]
    # Ours, plus whatever the APIM target declares (the ingress URLs of the clusters).
    assert {"location", "backendBaseUrl", "deployEventSubscription"} <= set(params)
    assert set(params) == set(arm["parameters"])
    # One secret parameter: Event Grid's delivery key, secure, empty by default, and
    # in the parameters file a Key Vault reference, never a value.
    secure = {n for n, p in arm["parameters"].items() if p["type"] == "securestring"}
    assert secure == {"eventGridDeliveryKey"}
    assert arm["parameters"]["eventGridDeliveryKey"]["defaultValue"] == ""
    vault = next(r for r in arm["resources"] if r["type"] == "Microsoft.KeyVault/vaults")
    ref = params["eventGridDeliveryKey"]["reference"]
    assert set(params["eventGridDeliveryKey"]) == {"reference"}
    assert ref["secretName"] == "ai4ec-eventgrid-delivery-key"
    assert re.fullmatch(
        r"/subscriptions/[0-9a-f-]+/resourceGroups/[^/]+/providers/Microsoft\.KeyVault/vaults/"
        + re.escape(vault["name"]),
        ref["keyVault"]["id"],
    )
    for name, p in arm["parameters"].items():
        if name in secure:
            continue
        assert p["type"] in ("string", "bool", "object", "int", "array"), name
        assert not re.search(r"key|secret|password|token", name, re.I), name
    bicep = case_bicep(case)
    for mod in [bicep.main, *bicep.modules.values()]:
        for name, p in (mod.get("parameters") or {}).items():
            is_secure = any(d["type"] == "secure" for d in p["decorators"])
            assert is_secure == (name in secure), name


@pytest.mark.parametrize("case", CASES)
def test_function_app_settings_reference_key_vault(case: str) -> None:
    arm = load_arm(case_files(case))
    site = next(r for r in arm["resources"] if r["type"] == "Microsoft.Web/sites")
    settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
    for name in ("AI4EC_REDIS_URL", "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        assert settings[name].startswith("@Microsoft.KeyVault(SecretUri=https://"), name
    # Event Grid takes no key at all: the runtime publishes with its identity.
    assert "EVENT_GRID_KEY" not in settings
    topic = next(r for r in arm["resources"] if r["type"] == "Microsoft.EventGrid/topics")
    assert topic["properties"]["disableLocalAuth"] is True
    names = {r["name"].rsplit("/", 1)[-1] for r in arm["resources"]}
    assert "ai4ec-eventgrid-key" not in names
    # Host storage through the managed identity: no connection string, no key.
    assert "AzureWebJobsStorage" not in settings
    assert settings["AzureWebJobsStorage__accountName"]
    assert not any(k.startswith("WEBSITE_CONTENTAZUREFILE") for k in settings)
