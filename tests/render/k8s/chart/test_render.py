"""What the chart renders: objects, labels, selectors, pod settings, determinism."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import yaml

from .support import (
    CHART_DIR,
    CONTRACT_LABELS,
    FIXTURES,
    NAMESPACE,
    STANDARD_LABELS,
    api_container,
    by_kind,
    documents,
    env_by_name,
    load_values,
    pod_spec,
    render,
    render_docs,
    schema_free_archive,
    with_changes,
)

EXPECTED_KINDS = {
    "sync-cpu": {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    },
    "async-gpu-scale-to-zero": {
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "Service",
        "ServiceAccount",
    },
    "async-cpu-hpa": {"Deployment", "HorizontalPodAutoscaler", "Service", "ServiceAccount"},
    "secrets-spc": {
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "SecretProviderClass",
        "Service",
        "ServiceAccount",
        "TriggerAuthentication",
    },
}


def test_every_fixture_has_an_expectation() -> None:
    assert set(EXPECTED_KINDS) == set(FIXTURES)


def test_renders_expected_objects(fixture_name: str, objects: dict[str, dict[str, Any]]) -> None:
    assert set(objects) == EXPECTED_KINDS[fixture_name]


def test_chart_never_creates_secrets(objects: dict[str, dict[str, Any]]) -> None:
    assert "Secret" not in objects


def test_names_and_namespace_come_from_values(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    own_names = {
        "SecretProviderClass": values["secretProviderClass"]["name"],
        "TriggerAuthentication": values["autoscaling"]["keda"]["redis"]["authentication"]["name"],
    }
    for kind, obj in objects.items():
        assert obj["metadata"]["name"] == own_names.get(kind, values["name"]), kind
        assert obj["metadata"]["namespace"] == NAMESPACE, kind


def test_every_object_carries_contract_and_standard_labels(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    expected = {
        "app.kubernetes.io/managed-by": "ai4ec",
        "ai4ec.io/platform": values["platform"],
        "ai4ec.io/environment": values["environment"],
        "ai4ec.io/api": values["name"],
        "app.kubernetes.io/name": values["name"],
        "app.kubernetes.io/instance": values["name"],
        "app.kubernetes.io/version": values["version"],
        "app.kubernetes.io/component": values["component"],
        "app.kubernetes.io/part-of": values["partOf"],
    }
    assert set(expected) == set(CONTRACT_LABELS) | set(STANDARD_LABELS)
    for kind, obj in objects.items():
        labels = obj["metadata"]["labels"]
        assert {k: labels.get(k) for k in expected} == expected, kind
        assert all(isinstance(v, str) for v in labels.values()), kind
    for obj in objects.values():
        assert obj["metadata"]["labels"]["helm.sh/chart"] == "ai4ec-api-0.1.0"
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert {k: pod_labels.get(k) for k in expected} == expected
    # A chart upgrade alone must not roll every pod of every API.
    assert "helm.sh/chart" not in pod_labels


def test_selectors_use_only_stable_labels(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    stable = {"app.kubernetes.io/name": values["name"], "ai4ec.io/api": values["name"]}
    deployment = objects["Deployment"]
    assert deployment["spec"]["selector"] == {"matchLabels": stable}
    assert objects["Service"]["spec"]["selector"] == stable
    if "PodDisruptionBudget" in objects:
        assert objects["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": stable}
    for constraint in pod_spec(objects).get("topologySpreadConstraints", []):
        assert constraint["labelSelector"] == {"matchLabels": stable}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert stable.items() <= pod_labels.items()


def test_selector_does_not_change_with_version_or_chart(chart: helm_python.Chart) -> None:
    values = load_values("sync-cpu")
    before = render_docs(chart, values)["Deployment"]["spec"]["selector"]
    bumped = with_changes(values, {"version": "v9", "image.tag": "9.9.9", "partOf": "other"})
    after = render_docs(chart, bumped)["Deployment"]["spec"]["selector"]
    assert before == after


def test_restricted_security_context(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    spec = pod_spec(objects)
    sc = values["securityContext"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": sc["runAsUser"],
        "runAsGroup": sc["runAsGroup"],
        "fsGroup": sc["fsGroup"],
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert api_container(objects)["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": sc["readOnlyRootFilesystem"],
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["serviceAccountName"] == values["name"]
    assert "hostPath" not in json.dumps(spec)


def test_tmp_is_a_writable_emptydir(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    spec = pod_spec(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tmp"] == {
        "name": "tmp",
        "emptyDir": {"sizeLimit": values["scratch"]["tmpSizeLimit"]},
    }
    mounts = {m["mountPath"]: m for m in api_container(objects)["volumeMounts"]}
    assert mounts["/tmp"]["name"] == "tmp"
    assert not mounts["/tmp"].get("readOnly", False)
    if values["scratch"]["shmSizeLimit"]:
        assert volumes["shm"]["emptyDir"] == {
            "medium": "Memory",
            "sizeLimit": values["scratch"]["shmSizeLimit"],
        }
        assert mounts["/dev/shm"]["name"] == "shm"
    else:
        assert "shm" not in volumes


def test_graceful_shutdown_is_passed_through(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    spec = pod_spec(objects)
    shutdown = values["shutdown"]
    assert spec["terminationGracePeriodSeconds"] == shutdown["terminationGracePeriodSeconds"]
    assert api_container(objects)["lifecycle"] == {
        "preStop": {"sleep": {"seconds": shutdown["preStopSleepSeconds"]}}
    }
    # The fixtures model the compiler's rule: grace >= preStop + longest request timeout.
    assert spec["terminationGracePeriodSeconds"] > shutdown["preStopSleepSeconds"]


def test_probes(values: dict[str, Any], objects: dict[str, dict[str, Any]]) -> None:
    container = api_container(objects)
    probes = values["probes"]
    kinds = ["readiness", "liveness"] + (["startup"] if probes["startup"]["enabled"] else [])
    for kind in kinds:
        probe = container[f"{kind}Probe"]
        settings = {k: v for k, v in probes[kind].items() if k not in ("path", "enabled")}
        assert probe == {"httpGet": {"path": probes[kind]["path"], "port": "http"}, **settings}
    if not probes["startup"]["enabled"]:
        assert "startupProbe" not in container


def test_ports_are_named_http_for_istio(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    assert api_container(objects)["ports"] == [
        {"name": "http", "containerPort": values["container"]["port"], "protocol": "TCP"}
    ]
    assert objects["Service"]["spec"]["ports"] == [
        {
            "name": "http",
            "port": values["service"]["port"],
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    assert objects["Service"]["spec"]["type"] == "ClusterIP"


def test_istio_injection_and_proxy_config(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    template = objects["Deployment"]["spec"]["template"]["metadata"]
    expected_label = {"namespace": None, "enabled": "true", "disabled": "false"}
    assert (
        template["labels"].get("sidecar.istio.io/inject")
        == expected_label[values["istio"]["injection"]]
    )
    annotations = template.get("annotations", {})
    if values["istio"]["proxyConfig"]:
        assert json.loads(annotations["proxy.istio.io/config"]) == values["istio"]["proxyConfig"]
    else:
        assert "proxy.istio.io/config" not in annotations
    for key, value in values["podAnnotations"].items():
        assert annotations[key] == value


def test_workload_identity(values: dict[str, Any], objects: dict[str, dict[str, Any]]) -> None:
    client_id = values["serviceAccount"]["workloadIdentityClientId"]
    sa = objects["ServiceAccount"]
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    if client_id:
        assert sa["metadata"]["annotations"] == {"azure.workload.identity/client-id": client_id}
        assert pod_labels["azure.workload.identity/use"] == "true"
    else:
        assert "annotations" not in sa["metadata"]
        assert "azure.workload.identity/use" not in pod_labels
    assert sa["automountServiceAccountToken"] is False


def test_framework_env(values: dict[str, Any], objects: dict[str, dict[str, Any]]) -> None:
    env = env_by_name(api_container(objects))
    fw = values["framework"]
    plain = {
        "API_PREFIX": fw["apiPrefix"],
        "SERVICE_CLUSTER": fw["serviceCluster"],
        "SERVICE_NAME": fw["serviceName"],
        "SERVICE_VERSION": fw["serviceVersion"],
    }
    if fw["nextApiNameInPipeline"]:
        plain["NEXT_API_NAME_IN_PIPELINE"] = fw["nextApiNameInPipeline"]
    else:
        assert "NEXT_API_NAME_IN_PIPELINE" not in env
    for name, value in plain.items():
        assert env[name] == {"name": name, "value": value}


def test_user_env_goes_to_a_configmap(
    values: dict[str, Any], objects: dict[str, dict[str, Any]]
) -> None:
    container = api_container(objects)
    template = objects["Deployment"]["spec"]["template"]["metadata"]
    if values["env"]:
        assert objects["ConfigMap"]["data"] == values["env"]
        assert container["envFrom"] == [{"configMapRef": {"name": values["name"]}}]
        assert len(template["annotations"]["checksum/config"]) == 64
        assert not set(values["env"]) & set(env_by_name(container))
    else:
        assert "ConfigMap" not in objects
        assert "envFrom" not in container


def test_config_change_rolls_the_pods(chart: helm_python.Chart) -> None:
    values = load_values("sync-cpu")
    changed = with_changes(values, {"env.LOG_LEVEL": "debug"})

    def checksum(v: dict[str, Any]) -> str:
        meta = render_docs(chart, v)["Deployment"]["spec"]["template"]["metadata"]
        return str(meta["annotations"]["checksum/config"])

    assert checksum(values) != checksum(changed)


def test_image_reference(chart: helm_python.Chart) -> None:
    values = load_values("sync-cpu")
    image = api_container(render_docs(chart, values))["image"]
    assert image == f"{values['image']['repository']}:{values['image']['tag']}"
    pinned = load_values("secrets-spc")
    image = api_container(render_docs(chart, pinned))["image"]
    assert image == (
        f"{pinned['image']['repository']}:{pinned['image']['tag']}@{pinned['image']['digest']}"
    )
    container = api_container(render_docs(chart, pinned))
    assert container["command"] == pinned["container"]["command"]
    assert container["args"] == pinned["container"]["args"]
    assert pod_spec(render_docs(chart, pinned))["imagePullSecrets"] == [{"name": "acr-pull"}]


def test_replicas_only_without_autoscaler(chart: helm_python.Chart) -> None:
    values = load_values("sync-cpu")
    assert "replicas" not in render_docs(chart, values)["Deployment"]["spec"]
    fixed = with_changes(values, {"autoscaling.enabled": False, "replicas": 3})
    objects = render_docs(chart, fixed)
    assert objects["Deployment"]["spec"]["replicas"] == 3
    assert not {"HorizontalPodAutoscaler", "ScaledObject"} & set(objects)


def test_rolling_update_and_pdb(values: dict[str, Any], objects: dict[str, dict[str, Any]]) -> None:
    spec = objects["Deployment"]["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {
            "maxSurge": values["deployment"]["maxSurge"],
            "maxUnavailable": values["deployment"]["maxUnavailable"],
        },
    }
    assert spec["revisionHistoryLimit"] == values["deployment"]["revisionHistoryLimit"]
    pdb_values = values["podDisruptionBudget"]
    if pdb_values["enabled"]:
        pdb = objects["PodDisruptionBudget"]["spec"]
        assert pdb["maxUnavailable"] == pdb_values["maxUnavailable"]
        assert pdb["unhealthyPodEvictionPolicy"] == pdb_values["unhealthyPodEvictionPolicy"]
    else:
        assert "PodDisruptionBudget" not in objects


def test_render_is_deterministic(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    first = render(chart, values)
    assert render(chart, values) == first
    # Key order of the input does not matter, and neither does a fresh chart handle.
    reordered = json.loads(json.dumps(values, sort_keys=True))
    reordered = dict(reversed(list(reordered.items())))
    with helm_python.Chart.load(CHART_DIR) as fresh:
        assert render(fresh, reordered) == first
    # Same values -> same bytes, also for the archive-loaded chart used for bulk renders.
    with helm_python.Chart.load_archive(schema_free_archive()) as bulk:
        assert render(bulk, values) == first


def test_large_integers_stay_integers(chart: helm_python.Chart) -> None:
    # Helm reads numbers as float64: without `| int` these would render as 1e+06.
    values = with_changes(
        load_values("async-gpu-scale-to-zero"),
        {
            "shutdown.terminationGracePeriodSeconds": 1000000,
            "autoscaling.keda.cooldownPeriod": 86400,
        },
    )
    rendered = render(chart, values)
    assert "e+" not in "".join(rendered.values())
    objects = by_kind(documents(rendered))
    assert pod_spec(objects)["terminationGracePeriodSeconds"] == 1000000
    assert objects["ScaledObject"]["spec"]["cooldownPeriod"] == 86400


@pytest.mark.parametrize("word", ["true", "no", "null", "1e3", "0x1F"])
def test_yaml_lookalike_strings_stay_strings(chart: helm_python.Chart, word: str) -> None:
    values = with_changes(
        load_values("sync-cpu"),
        {"platform": word, "environment": word, "env": {"YES": word, "ON": word}},
    )
    objects = render_docs(chart, values)
    labels = objects["Deployment"]["metadata"]["labels"]
    assert labels["ai4ec.io/platform"] == word
    assert labels["ai4ec.io/environment"] == word
    assert objects["ConfigMap"]["data"] == {"YES": word, "ON": word}
    assert yaml.safe_load(yaml.safe_dump(objects["ConfigMap"]))["data"]["ON"] == word
