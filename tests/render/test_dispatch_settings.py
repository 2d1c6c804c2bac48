"""Settings that must reach their reader: each cluster's ingress reaches dispatch, queue
timeouts reach the routing table, and the Framework's telemetry key reaches the API
containers (issue 12 item 10, issue 14 bounded recovery)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from ai4ec.pipeline import check_platform, render_platforms
from ai4ec.render.runtime import routing_table

from ..conftest import ROOT
from .azure.support import load_arm, platforms, render_platform

SAMPLE = ROOT / "samples" / "camera-trap" / "platform.yaml"


def _camera_trap() -> Any:
    return platforms(str(SAMPLE))[0]


def test_routing_table_names_each_apis_cluster_and_queue_timeout() -> None:
    plat = _camera_trap()
    east = dataclasses.replace(plat.clusters[0], name="east", aks_name="camtrap-east-aks")
    west = dataclasses.replace(plat.clusters[0], name="west", aks_name="camtrap-west-aks")
    apis = tuple(
        dataclasses.replace(
            a,
            cluster="west" if a.id == "classifier-v1" else "east",
            tasks=dataclasses.replace(a.tasks, queue_timeout_seconds=120)
            if a.id == "detector-v1"
            else a.tasks,
        )
        for a in plat.apis
    )
    table = routing_table(dataclasses.replace(plat, clusters=(east, west), apis=apis))
    assert table["apis"]["classifier-v1"]["cluster"] == "west"
    assert table["apis"]["detector-v1"]["cluster"] == "east"
    assert table["apis"]["detector-v1"]["queueTimeoutSeconds"] == 120
    # The default is in minutes (tasks.queueTimeout: 15m), not the runtime's old day.
    assert table["apis"]["classifier-v1"]["queueTimeoutSeconds"] == 900


def test_queue_timeout_comes_from_platform_yaml(tmp_path: Path) -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    assert "      cooldown: 10m\n    tasks:\n" in text
    text = text.replace(
        "      cooldown: 10m\n    tasks:\n",
        "      cooldown: 10m\n    tasks:\n      queueTimeout: 5m\n",
    )
    (tmp_path / "platform.yaml").write_text(text, encoding="utf-8")
    for src in SAMPLE.parent.iterdir():
        if src.name != "platform.yaml" and src.is_file():
            (tmp_path / src.name).write_bytes(src.read_bytes())
    result = check_platform(tmp_path / "platform.yaml")
    assert result.ok, result.diagnostics
    (rendered, _m) = render_platforms(result)[0]
    files = {str(a.path): a.content for a in rendered.artifacts}
    table = json.loads(files["functions/routing.json"])
    assert table["apis"]["detector-v1"]["queueTimeoutSeconds"] == 300


def test_function_app_gets_every_clusters_ingress() -> None:
    plat = _camera_trap()
    second = dataclasses.replace(plat.clusters[0], name="eu", aks_name="camtrap-eu-aks")
    arm = load_arm(render_platform(dataclasses.replace(plat, clusters=(plat.clusters[0], second))))
    (site,) = [r for r in arm["resources"] if r["type"] == "Microsoft.Web/sites"]
    settings = {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}
    # The same parameter API Management's backends read, and apply fills per cluster.
    assert settings["AI4EC_BACKEND_BASE_URLS"] == "[string(parameters('ai4ecIngressUrls'))]"
    assert settings["AI4EC_BACKEND_BASE_URL"] == "[parameters('backendBaseUrl')]"
    assert set(arm["parameters"]["ai4ecIngressUrls"]["defaultValue"]) == {"main", "eu"}


def test_instrumentation_key_reaches_the_api_containers() -> None:
    result = check_platform(SAMPLE)
    (rendered, _m) = render_platforms(result)[0]
    files = {str(a.path): a.content for a in rendered.artifacts}
    docs = [d for d in yaml.safe_load_all(files["k8s/main/manifests.yaml"]) if d]
    spc = next(
        d
        for d in docs
        if d["kind"] == "SecretProviderClass" and d["metadata"]["name"] == "ai4ec-runtime"
    )
    synced = spc["spec"]["secretObjects"][0]
    assert {
        "objectName": "ai4ec-appinsights-instrumentation-key",
        "key": "appinsights-instrumentation-key",
    } in synced["data"]
    assert (
        "objectName: ai4ec-appinsights-instrumentation-key" in spc["spec"]["parameters"]["objects"]
    )
    apis = {a.id for a in next(iter(result.platforms())).apis}
    deployments = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] in apis]
    assert len(deployments) == len(apis)
    for d in deployments:
        api = d["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in api["env"]}
        ref = env["APPINSIGHTS_INSTRUMENTATIONKEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": synced["secretName"], "key": "appinsights-instrumentation-key"}
        assert "value" not in env["APPINSIGHTS_INSTRUMENTATIONKEY"]
