"""Normalisation, redaction and small parsers of the diff engine."""

from __future__ import annotations

import pytest

from ai4ec.diff.normalize import (
    Rewriter,
    canonical_quantity,
    drop_k8s_defaults,
    flatten,
    format_path,
    is_secret,
    looks_secret,
    normalise_k8s,
)
from ai4ec.diff.resources import split_documents, xml_content
from ai4ec.diff.trace import data_changes, parse_json_path


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1024Mi", "1Gi"),
        ("0.5", "500m"),
        ("2", 2),
        ("2000m", "2"),
        (2.0, "2"),
        ("1536Mi", "1536Mi"),
        ("1000", "1k"),
    ],
)
def test_equal_quantities(a: object, b: object) -> None:
    assert canonical_quantity(a) == canonical_quantity(b)


def test_quantities_stay_readable() -> None:
    assert canonical_quantity("8192Mi") == "8Gi"
    assert canonical_quantity("0.25") == "250m"
    assert canonical_quantity("not-a-quantity") == "not-a-quantity"
    assert canonical_quantity("1Gi") != canonical_quantity("1G")


def test_flatten_keys_named_items_and_drops_empties() -> None:
    a = {
        "spec": {
            "containers": [
                {"name": "api", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "y:1"},
            ],
            "labels": {},
            "tolerations": [],
            "note": None,
            "args": ["--a", "--b"],
        }
    }
    b = {
        "spec": {
            "containers": [
                {"name": "sidecar", "image": "y:1"},
                {"env": [{"value": "1", "name": "A"}], "image": "x:1", "name": "api"},
            ],
            "args": ["--a", "--b"],
        }
    }
    assert flatten(a) == flatten(b)
    flat = flatten(a)
    assert format_path(next(iter(flat))) == "spec.containers[name=api].image"
    assert flat[("spec", "args")] == ("--a", "--b")
    # list order of scalars is meaningful
    assert flatten({"args": ["--b", "--a"]}) != flatten({"args": ["--a", "--b"]})
    # numbers written two ways
    assert flatten({"n": 1.0}) == flatten({"n": 1})
    # a bool is not a number
    assert flatten({"n": True}) != flatten({"n": 1}) or type(flatten({"n": True})[("n",)]) is bool


def test_k8s_normalisation() -> None:
    obj = {
        "kind": "Deployment",
        "metadata": {"labels": {"helm.sh/chart": "ai4ec-api-0.1.0", "app": "x"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "resources": {"requests": {"memory": "1024Mi", "cpu": 0.5}},
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        }
                    ],
                    "restartPolicy": "Always",
                }
            }
        },
    }
    flat = drop_k8s_defaults("Deployment", flatten(normalise_k8s(obj)))
    text = {format_path(p): v for p, v in flat.items()}
    assert "metadata.labels.app" in text
    assert not any("helm.sh/chart" in p for p in text)
    assert text["spec.template.spec.containers[name=api].resources.requests.memory"] == "1Gi"
    assert text["spec.template.spec.containers[name=api].resources.requests.cpu"] == "500m"
    assert not any(p.endswith("protocol") or p.endswith("restartPolicy") for p in text)


@pytest.mark.parametrize(
    "name",
    [
        "EVENT_GRID_KEY",
        "AI4EC_REDIS_PASSWORD",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "primaryKey",
        "clientSecret",
        "apiKey",
        "STORAGE_ACCOUNT_KEY",
        "sasToken",
        "password",
    ],
)
def test_secret_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "secretName",
        "secretKeyRef",
        "keyVaultSecret",
        "key",
        "subscriptionKeyParameterNames",
        "nodeTaints",
        "objectName",
        "AzureWebJobsStorage__accountName",
        "secretObjects",
        "keyvaultName",
        "enableSoftDelete",
    ],
)
def test_not_secret_names(name: str) -> None:
    assert not looks_secret(name)


def test_is_secret_by_value_and_item_name() -> None:
    kv = "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/x/)"
    assert is_secret(("properties", "x"), kv, kv)
    assert is_secret(("appSettings", ("name", "EVENT_GRID_KEY"), "value"), "a", "b")
    assert not is_secret(("appSettings", ("name", "EVENT_GRID_TOPIC_URI"), "value"), "a", "b")
    assert is_secret(("url",), "https://x/api/f?code=abc123", None)
    assert is_secret(("url",), "rediss://:hunter2@host:6380/0", None)
    assert not is_secret(("url",), "https://example.org/api", None)


def test_rewriter_is_one_pass_and_respects_name_edges() -> None:
    rw = Rewriter([("species-v1", "species-chain-v1", False), ("species", "species-chain", True)])
    assert rw("apim/policies/species-v1/api.xml") == "apim/policies/species-chain-v1/api.xml"
    assert rw("/v1/camera-trap/species") == "/v1/camera-trap/species-chain"
    assert rw("species-sync-v1") == "species-sync-v1"
    assert rw("detector-v1-secrets") == "detector-v1-secrets"
    loose = Rewriter([("detector-v1", "animal-v1", False)])
    assert loose("detector-v1-secrets") == "animal-v1-secrets"
    assert loose("detector-v10") == "detector-v10"


def test_split_documents_without_parsing() -> None:
    text = "# header\n# more\n---\na: 1\n---\nb: |\n  ---x\n  y\n---\n"
    assert split_documents(text) == ["a: 1\n", "b: |\n  ---x\n  y\n"]


def test_xml_content_ignores_comments_layout_and_attribute_order() -> None:
    a = """<!-- generated from a.yaml -->
<policies><inbound><base />
  <set-variable name="x" value="1" /><set-variable name="y" value="2" />
  <rate-limit calls="5" renewal-period="60" /></inbound></policies>"""
    b = """<!-- generated from b.yaml -->
<policies>
    <inbound>
        <base/>
        <set-variable value="1" name="x"/>
        <set-variable name="y" value="2"/>
        <rate-limit renewal-period="60" calls="5"/>
    </inbound>
</policies>
"""
    assert xml_content(a) == xml_content(b)
    flat = {format_path(p): v for p, v in flatten(xml_content(a)).items()}
    assert flat['policies.inbound["set-variable[x]"].@value'] == "1"


def test_data_changes_match_named_items_and_detect_renames() -> None:
    base = {
        "apis": [
            {"name": "a", "version": "v1", "image": "a:1"},
            {"name": "b", "version": "v1", "image": "b:1"},
        ]
    }
    head = {
        "apis": [
            {"name": "new", "version": "v1", "image": "new:1"},
            {"name": "b", "version": "v1", "image": "b:2"},
            {"name": "a2", "version": "v1", "image": "a:1"},
        ]
    }
    renames: list = []
    found = {(c.kind, c.base, c.head) for c in data_changes(base, head, renames)}
    assert ("changed", ("apis", 1, "image"), ("apis", 1, "image")) in found
    assert ("added", None, ("apis", 0)) in found
    assert ("renamed", ("apis", 0, "name"), ("apis", 2, "name")) in found
    assert [(r.old["name"], r.new["name"]) for r in renames] == [("a", "a2")]


def test_parse_json_path() -> None:
    assert parse_json_path("$.apis[2].endpoints[0]") == ("apis", 2, "endpoints", 0)
    assert parse_json_path("$.env['A.B']") == ("env", "A.B")
