"""Secrets only ever travel by reference: secretKeyRef, CSI sync, TriggerAuthentication."""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from .spc_schema import KEY_VAULT_OBJECT_SCHEMA, SECRET_PROVIDER_CLASS_SCHEMA
from .support import (
    RUNTIME_SECRET_SETTINGS,
    api_container,
    env_by_name,
    load_values,
    pod_spec,
    render,
    render_docs,
    with_changes,
)


def test_runtime_settings_come_from_the_runtime_secret(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    env = env_by_name(api_container(objects))
    keys = values["runtimeSecret"]["keys"]
    assert keys, "every fixture wires the task-manager settings"
    for name in RUNTIME_SECRET_SETTINGS:
        if name not in keys:
            assert name not in env
            continue
        assert env[name] == {
            "name": name,
            "valueFrom": {
                "secretKeyRef": {"name": values["runtimeSecret"]["name"], "key": keys[name]}
            },
        }


def test_user_secrets_are_secret_key_refs(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    env = env_by_name(api_container(objects))
    for item in values["secretEnv"]:
        assert env[item["name"]] == {
            "name": item["name"],
            "valueFrom": {"secretKeyRef": {"name": item["secretName"], "key": item["key"]}},
        }


def test_no_inline_secret_values_anywhere(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    secret_names = set(RUNTIME_SECRET_SETTINGS) | {e["name"] for e in values["secretEnv"]}
    container = api_container(objects)
    for entry in container["env"]:
        if entry["name"] in secret_names:
            assert set(entry) == {"name", "valueFrom"}, entry
            assert set(entry["valueFrom"]) == {"secretKeyRef"}, entry
    # Nothing secret is inlined in a ConfigMap either, and no Secret object is rendered.
    if "ConfigMap" in objects:
        assert not secret_names & set(objects["ConfigMap"]["data"])
    assert "Secret" not in objects
    # Every valueFrom in the pod is a secretKeyRef to a Secret named in values.
    allowed = {values["runtimeSecret"]["name"]} | {e["secretName"] for e in values["secretEnv"]}
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs <= allowed


def test_no_secret_material_in_rendered_text(chart: helm_python.Chart) -> None:
    # The fixtures hold no secret values; make sure the templates do not invent any either.
    for name in ("sync-cpu", "secrets-spc"):
        text = "".join(render(chart, load_values(name)).values()).lower()
        for marker in ("code=", "instrumentationkey=", "password:", "rediss://", "accountkey"):
            assert marker not in text, marker


@pytest.mark.parametrize(
    "changes",
    [
        {"env": {"CACHE_CONNECTOR_UPSERT_URI": "https://x/api/CacheConnectorUpsert?code=k"}},
        {"env": {"APPINSIGHTS_INSTRUMENTATIONKEY": "0000"}},
        {"secretEnv": [{"name": "CACHE_CONNECTOR_GET_URI", "secretName": "s", "key": "k"}]},
        {"runtimeSecret.keys": {"CACHE_CONNECTOR_UPSERT_URI": "https://x?code=k"}},
    ],
)
def test_secret_settings_cannot_be_inlined_through_values(
    chart: helm_python.Chart, changes: dict[str, Any]
) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(chart, with_changes(load_values("sync-cpu"), changes))


def test_runtime_secret_provider_class_is_mounted(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    spc = values["runtimeSecret"]["secretProviderClass"]
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    mounts = {m["name"]: m for m in api_container(objects)["volumeMounts"]}
    if spc:
        assert volumes["runtime-secrets"]["csi"] == {
            "driver": "secrets-store.csi.k8s.io",
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": spc},
        }
        assert mounts["runtime-secrets"]["readOnly"] is True
    else:
        assert "runtime-secrets" not in volumes


def test_secret_provider_class_shape(chart: helm_python.Chart) -> None:
    values = load_values("secrets-spc")
    spc_values = values["secretProviderClass"]
    objects = render_docs(chart, values)
    spc = objects["SecretProviderClass"]
    jsonschema.Draft202012Validator(SECRET_PROVIDER_CLASS_SCHEMA).validate(spc)
    params = spc["spec"]["parameters"]
    assert params["clientID"] == spc_values["clientId"]
    assert "useVMManagedIdentity" not in params and "userAssignedIdentityID" not in params
    assert params["tenantId"] == spc_values["tenantId"]
    assert params["keyvaultName"] == spc_values["keyVaultName"]
    assert params["cloudName"] == spc_values["cloudName"]
    # `objects` is the provider's YAML-in-a-string: an `array` of YAML documents.
    parsed = yaml.safe_load(params["objects"])
    assert set(parsed) == {"array"}
    entries = [yaml.safe_load(item) for item in parsed["array"]]
    for entry in entries:
        jsonschema.validate(entry, KEY_VAULT_OBJECT_SCHEMA)
    expected = []
    for obj in spc_values["objects"]:
        entry = {"objectName": obj["objectName"], "objectType": "secret"}
        if obj["version"]:
            entry["objectVersion"] = obj["version"]
        expected.append(entry)
    assert entries == expected
    assert any("objectVersion" in e for e in entries)  # the fixture pins one version
    (synced,) = spc["spec"]["secretObjects"]
    assert synced["secretName"] == spc_values["secretName"]
    assert synced["data"] == [
        {"objectName": o["objectName"], "key": o["key"]} for o in spc_values["objects"]
    ]
    # The CSI driver owns the synced Secret: it must not carry the labels `apply --prune`
    # selects on, or a prune would delete it.
    assert "app.kubernetes.io/managed-by" not in synced["labels"]
    assert "ai4ec.io/platform" not in synced["labels"]


def test_secret_provider_class_volume_and_env_wiring(chart: helm_python.Chart) -> None:
    values = load_values("secrets-spc")
    spc_values = values["secretProviderClass"]
    objects = render_docs(chart, values)
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["kv-secrets"]["csi"] == {
        "driver": "secrets-store.csi.k8s.io",
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": spc_values["name"]},
    }
    mounts = {m["name"]: m for m in api_container(objects)["volumeMounts"]}
    assert mounts["kv-secrets"] == {
        "name": "kv-secrets",
        "mountPath": spc_values["mountPath"],
        "readOnly": True,
    }
    # Every user secret env reads a key the SecretProviderClass syncs.
    synced = {(spc_values["secretName"], o["key"]) for o in spc_values["objects"]}
    assert {(e["secretName"], e["key"]) for e in values["secretEnv"]} <= synced
    # The CSI driver authenticates as the pod's service account (workload identity).
    assert values["serviceAccount"]["workloadIdentityClientId"] == spc_values["clientId"]


def test_secret_provider_class_off_by_default(chart: helm_python.Chart) -> None:
    objects = render_docs(chart, load_values("sync-cpu"))
    assert "SecretProviderClass" not in objects
    assert "kv-secrets" not in {v["name"] for v in pod_spec(objects)["volumes"]}


def test_same_spc_for_runtime_and_user_secrets_is_mounted_once(chart: helm_python.Chart) -> None:
    values = load_values("secrets-spc")
    values = with_changes(values, {"runtimeSecret.secretProviderClass": "geocoder-v3-kv"})
    volumes = [v["name"] for v in pod_spec(render_docs(chart, values))["volumes"]]
    assert volumes.count("kv-secrets") == 1
    assert "runtime-secrets" not in volumes
