"""The Kubernetes target built from the samples: every object a cluster receives is valid
for the cluster's Kubernetes version (kubernetes-validate --strict), Istio and KEDA
objects match their CRD schemas, and the generated policies keep the platform's promises
(GPU placement, scale to zero only for async, no inline secrets, APIs reachable only
through the ingress gateway that API Management calls)."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ai4ec.pipeline import check_platform, render_platforms
from ai4ec.render.k8s.chart import chart_archive, chart_dir

from ...conftest import ARTIFACT_CHECK, ROOT, sample_files

CRD_GROUPS = ("networking.istio.io", "security.istio.io", "keda.sh", "secrets-store.csi.x-k8s.io")


@cache
def built(sample: Path) -> dict[str, dict[str, bytes]]:
    """{env: {path: bytes}} for one sample, rendered in memory."""
    result = check_platform(sample)
    out: dict[str, dict[str, bytes]] = {}
    for rendered, _manifest in render_platforms(result):
        out[rendered.environment] = {str(a.path): a.content for a in rendered.artifacts}
    return out


def manifests() -> list[tuple[str, str, str, list[dict[str, Any]], str]]:
    cases = []
    for sample in sample_files():
        result = check_platform(sample)
        versions = {
            p.environment: {c.name: c.kubernetes_version for c in p.clusters}
            for p in result.platforms()
        }
        for env, files in built(sample).items():
            for path, content in files.items():
                if path.endswith("manifests.yaml"):
                    cluster = path.split("/")[1]
                    docs = [d for d in yaml.safe_load_all(content) if d]
                    cases.append((sample.parent.name, env, cluster, docs, versions[env][cluster]))
    return cases


CASES = manifests()
IDS = [f"{s}-{e}-{c}" for s, e, c, _, _ in CASES]


def _kube_version(v: str) -> str:
    return v if v.count(".") == 2 else f"{v}.0"


@pytest.mark.parametrize("sample,env,cluster,docs,version", CASES, ids=IDS)
def test_core_objects_validate_strictly(
    sample: str, env: str, cluster: str, docs: list[dict[str, Any]], version: str
) -> None:
    core = [d for d in docs if d["apiVersion"].split("/")[0] not in CRD_GROUPS]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, _kube_version(version), strict=True)


@pytest.mark.parametrize("sample,env,cluster,docs,version", CASES, ids=IDS)
def test_istio_and_keda_objects_match_models(
    sample: str, env: str, cluster: str, docs: list[dict[str, Any]], version: str
) -> None:
    from cloudcoil.models.istio.networking import v1 as net
    from cloudcoil.models.istio.security import v1 as sec
    from cloudcoil.models.keda import v1alpha1 as keda

    models = {
        "Gateway": net.Gateway,
        "VirtualService": net.VirtualService,
        "DestinationRule": net.DestinationRule,
        "PeerAuthentication": sec.PeerAuthentication,
        "AuthorizationPolicy": sec.AuthorizationPolicy,
        "ScaledObject": keda.ScaledObject,
        "TriggerAuthentication": keda.TriggerAuthentication,
    }
    for doc in docs:
        model = models.get(doc["kind"])
        if model is None:
            continue
        parsed = model.model_validate(doc)
        # The models accept unknown keys; round-tripping shows any key they did not know.
        assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc


@pytest.mark.skipif(not ARTIFACT_CHECK.exists(), reason="../shared/artifact-check is not present")
def test_crd_objects_pass_strict_artifact_check(tmp_path: Path) -> None:
    files = []
    for i, (_s, _e, _c, docs, _v) in enumerate(CASES):
        f = tmp_path / f"{i}.yaml"
        f.write_text(yaml.safe_dump_all(docs))
        files.append(str(f))
    run = subprocess.run(
        [sys.executable, str(ARTIFACT_CHECK), "crd", *files], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 errors" in run.stdout


@pytest.mark.parametrize("sample,env,cluster,docs,version", CASES, ids=IDS)
def test_every_object_carries_prune_labels(
    sample: str, env: str, cluster: str, docs: list[dict[str, Any]], version: str
) -> None:
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/managed-by") == "ai4ec", doc["metadata"]
        assert labels.get("ai4ec.io/environment") == env
        assert labels.get("ai4ec.io/platform")


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _case(sample: str, env: str = "default") -> list[dict[str, Any]]:
    return next(docs for s, e, _c, docs, _v in CASES if s == sample and e == env)


def test_gpu_api_lands_on_its_gpu_pool_and_tolerates_its_taints() -> None:
    docs = _case("camera-trap")
    spec = _by_kind(docs, "Deployment")["detector-v1"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["kubernetes.azure.com/agentpool"] == "gpu"
    limits = spec["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    tolerated = {(t["key"], t.get("value"), t["effect"]) for t in spec["tolerations"]}
    assert ("sku", "gpu", "NoSchedule") in tolerated
    assert ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule") in tolerated


def test_cpu_api_never_schedules_on_gpu_pools() -> None:
    docs = _case("camera-trap")
    spec = _by_kind(docs, "Deployment")["classifier-v1"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["kubernetes.azure.com/agentpool"] == "cpu"
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"].get("limits", {})
    assert not any(t["key"] == "sku" for t in spec.get("tolerations", []))


def test_scale_to_zero_only_for_async() -> None:
    docs = _case("camera-trap")
    scaled = _by_kind(docs, "ScaledObject")
    assert scaled["detector-v1"]["spec"]["minReplicaCount"] == 0
    triggers = [
        t for t in scaled["detector-v1"]["spec"]["triggers"] if t["type"] == "redis-cluster"
    ]
    assert triggers[0]["metadata"]["listName"] == "{ai4ec:0}ai4ec:pending:detector-v1"
    assert triggers[0]["authenticationRef"]["name"] == "ai4ec-redis"
    sync = scaled["detector-sync-v1"]["spec"]
    assert sync["minReplicaCount"] >= 1
    assert all(not t["type"].startswith("redis") for t in sync["triggers"])


def test_no_secret_value_is_inline() -> None:
    runtime_vars = {
        "CACHE_CONNECTOR_UPSERT_URI",
        "CACHE_CONNECTOR_GET_URI",
        "CURRENT_PROCESSING_UPSERT_URI",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPINSIGHTS_INSTRUMENTATIONKEY",
        "RESULTS_STORAGE_KEY",
    }
    for _s, _e, _c, docs, _v in CASES:
        assert not [d for d in docs if d["kind"] == "Secret"], "no Secret objects are generated"
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                for var in c.get("env", []):
                    if var["name"] in runtime_vars:
                        assert "value" not in var and "secretKeyRef" in var["valueFrom"], var
    for files in (built(s) for s in sample_files()):
        for env_files in files.values():
            for path, content in env_files.items():
                if path.endswith(".zip"):
                    continue  # the runtime's own source code; its settings are checked above
                text = content.decode()
                assert "AccountKey=" not in text, path
                # A function key travels as ?code=<key>; it must never be in a file.
                assert not re.search(r"[?&]code=[A-Za-z0-9_\-]{8,}", text), path


def test_apis_reachable_only_through_the_ingress_gateway() -> None:
    for _s, _e, _c, docs, _v in CASES:
        policies = _by_kind(docs, "AuthorizationPolicy")
        # Default deny in the APIs' namespace: an ALLOW policy without rules.
        nothing = policies["ai4ec-allow-nothing"]["spec"]
        assert nothing == {"action": "ALLOW"}
        per_api = [
            p
            for p in policies.values()
            if p["metadata"]["namespace"] != "aks-istio-ingress" and p["spec"].get("rules")
        ]
        assert per_api
        for allow in per_api:
            assert allow["spec"]["action"] == "ALLOW"
            principals = [
                p
                for r in allow["spec"]["rules"]
                for f in r["from"]
                for p in f["source"]["principals"]
            ]
            assert principals and all(
                p.startswith("cluster.local/ns/aks-istio-ingress/sa/aks-istio-ingressgateway-")
                for p in principals
            )
        peer = _by_kind(docs, "PeerAuthentication")["default"]["spec"]
        assert peer["mtls"]["mode"] == "STRICT"
        (gateway_policy,) = [
            p for p in policies.values() if p["metadata"]["namespace"] == "aks-istio-ingress"
        ]
        served = {
            path
            for r in gateway_policy["spec"]["rules"]
            for t in r["to"]
            for path in t["operation"]["paths"]
        }
        routed = {
            m["uri"]["exact"]
            for vs in _by_kind(docs, "VirtualService").values()
            for h in vs["spec"]["http"]
            for m in h["match"]
        }
        assert served == routed


def test_https_gateway_uses_key_vault_certificate() -> None:
    docs = _case("camera-trap")
    server = _by_kind(docs, "Gateway")["ai4ec-gateway"]["spec"]["servers"][0]
    assert server["port"]["number"] == 443 and server["tls"]["mode"] == "MUTUAL"
    assert server["tls"]["credentialName"] == "ai4ec-gateway-credential"
    spc = _by_kind(docs, "SecretProviderClass")["ai4ec-gateway-credential"]
    assert "camera-trap-ingress" in spc["spec"]["parameters"]["objects"]
    assert spc["spec"]["secretObjects"][0]["type"] == "kubernetes.io/tls"


def test_rewrite_to_container_prefix() -> None:
    docs = _case("camera-trap")
    http = _by_kind(docs, "VirtualService")["detector-v1"]["spec"]["http"][0]
    assert http["match"][0]["uri"]["exact"] == "/v1/camera-trap/detector/detect"
    assert http["rewrite"]["uri"] == "/v1/animal_detection/detect"


def test_schema_free_render_matches_helm_with_schema() -> None:
    import helm_python

    from ai4ec.render.k8s.chart import release_values

    result = check_platform(ROOT / "samples/camera-trap/platform.yaml")
    platform = result.platforms()[0]
    cluster = platform.clusters[0]
    with_schema = helm_python.Chart.load(str(chart_dir()))
    without = helm_python.Chart.load_archive(chart_archive(chart_dir()))
    for api in platform.apis:
        values = release_values(platform, cluster, api)
        a = with_schema.render(values, name=api.id, namespace=cluster.namespace)
        b = without.render(values, name=api.id, namespace=cluster.namespace)
        assert {k.split("/", 1)[1]: v for k, v in a.items()} == {
            k.split("/", 1)[1]: v for k, v in b.items()
        }


def test_chart_archive_is_deterministic() -> None:
    assert chart_archive(chart_dir()) == chart_archive(chart_dir())
