"""Fixtures for the apply tests: TLS material, the fake services, builds to apply.

The build under test is the ``minimal`` sample, built for real, plus a small synthetic
``azure/main.json`` whose resource names come from the sample's model (so the Function
App, AKS cluster and storage account that ``apply`` looks up are the ones it deploys).
manifest.json is rewritten with the template's hashes, as ``ai4ec build`` would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ai4ec.apply import ApplyOptions, ApplyResult, Console, run_apply
from ai4ec.apply.retry import RetrySettings
from ai4ec.digest import ZIP_ENTRIES, is_zip, zip_content_sha256
from ai4ec.pipeline import build_platform, check_platform, require_ok

from .support import FakeAzure, FakeCredential, FakeKube, Tls, make_tls

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "my-platform-rg"
CLIENT_ID = "2c4f6a8b-0000-4000-8000-00000000c11d"
RUNTIME_CLIENT_ID = "2c4f6a8b-0000-4000-8000-00000000c12e"
GATEWAY_CLIENT_ID = "2c4f6a8b-0000-4000-8000-00000000c13f"
API_CLIENT_ID = "2c4f6a8b-0000-4000-8000-00000000c140"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


def fake_outputs() -> dict[str, Any]:
    """What the fake ARM answers as main.json's outputs for the synthetic template."""
    return {
        "tenantId": TENANT_ID,
        "clusters": {
            "main": {
                "keyVaultProviderClientId": CLIENT_ID,
                "runtimeClientId": RUNTIME_CLIENT_ID,
                "gatewayClientId": GATEWAY_CLIENT_ID,
                "ingressHost": "",
            }
        },
        # Issue 13: one workload identity per API (the Azure side's apis.<workload>.clientId).
        "apis": {"hello-v1": {"clientId": API_CLIENT_ID}},
    }


@pytest.fixture
def fakes(tls: Tls) -> Iterator[tuple[FakeAzure, FakeKube]]:
    azure = FakeAzure(tls, SUBSCRIPTION)
    kube = FakeKube(tls)
    azure.kube = kube
    azure.output_values = fake_outputs()
    yield azure, kube
    azure.close()
    kube.close()


def synthetic_template(platform_file: Path) -> dict[str, Any]:
    """A small main.json in the Azure target's shape, named after the platform's model."""
    p = require_ok(check_platform(platform_file))[0]
    az = p.azure
    site, aks, apim = az.functions.app_name, p.clusters[0].aks_name, az.api_management.name
    topic, account = az.event_grid.topic_name, az.storage.name

    def rid(kind: str, *names: str) -> str:
        return "[resourceId(" + ", ".join(f"'{x}'" for x in (kind, *names)) + ")]"

    aks_id = rid("Microsoft.ContainerService/managedClusters", aks)

    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "location": {"type": "string", "defaultValue": az.location},
            "ai4ecIngressUrls": {
                "type": "object",
                "defaultValue": {"main": "http://main.ingress.invalid"},
            },
            "backendBaseUrl": {"type": "string", "defaultValue": ""},
            "deployEventSubscription": {"type": "bool", "defaultValue": False},
            "nodeCount": {"type": "int", "defaultValue": 1},
        },
        "variables": {"tags": {"ai4ec-platform": p.name}},
        "resources": [
            {
                "type": "Microsoft.Storage/storageAccounts",
                "apiVersion": "2023-05-01",
                "name": account,
                "location": "[parameters('location')]",
                "kind": "StorageV2",
                "sku": {"name": "Standard_LRS"},
            },
            {
                "type": "Microsoft.KeyVault/vaults/secrets",
                "apiVersion": "2023-07-01",
                "name": f"{az.key_vault.name}/ai4ec-redis-url",
                "properties": {
                    "value": "[concat('rediss://:', listKeys(resourceId('Microsoft.Cache/redis',"
                    " 'r'), '2024-11-01').primaryKey, '@r:6380/0')]"
                },
            },
            {
                "type": "Microsoft.ContainerService/managedClusters",
                "apiVersion": "2026-05-01",
                "name": aks,
                "location": "[parameters('location')]",
                "properties": {
                    "agentPoolProfiles": [{"name": "system", "count": "[parameters('nodeCount')]"}]
                },
            },
            {
                "type": "Microsoft.EventGrid/topics",
                "apiVersion": "2025-02-15",
                "name": topic,
                "location": "[parameters('location')]",
            },
            {
                "type": "Microsoft.Web/sites",
                "apiVersion": "2025-03-01",
                "name": site,
                "location": "[parameters('location')]",
                "kind": "functionapp,linux",
                "dependsOn": [rid("Microsoft.Storage/storageAccounts", account)],
                "properties": {
                    "siteConfig": {
                        "appSettings": [
                            {
                                "name": "AI4EC_BACKEND_BASE_URL",
                                "value": "[parameters('backendBaseUrl')]",
                            },
                            {"name": "WEBSITE_RUN_FROM_PACKAGE", "value": "1"},
                        ]
                    }
                },
            },
            {
                "type": "Microsoft.EventGrid/topics/eventSubscriptions",
                "apiVersion": "2025-02-15",
                "name": f"{topic}/ai4ec-dispatch",
                "condition": "[parameters('deployEventSubscription')]",
                "dependsOn": [
                    rid("Microsoft.EventGrid/topics", topic),
                    rid("Microsoft.Web/sites", site),
                ],
                "properties": {"destination": {"endpointType": "WebHook"}},
            },
            {
                "type": "Microsoft.ApiManagement/service",
                "apiVersion": "2024-05-01",
                "name": apim,
                "location": "[parameters('location')]",
                "sku": {"name": "Developer", "capacity": 1},
            },
            {
                "type": "Microsoft.ApiManagement/service/namedValues",
                "apiVersion": "2024-05-01",
                "name": f"{apim}/ai4ec-ingress-main",
                "dependsOn": [rid("Microsoft.ApiManagement/service", apim)],
                "properties": {
                    "displayName": "ai4ec-ingress-main",
                    "value": "[parameters('ai4ecIngressUrls').main]",
                },
            },
            {
                "type": "Microsoft.ApiManagement/service/apis",
                "apiVersion": "2024-05-01",
                "name": f"{apim}/hello-v1",
                "dependsOn": [
                    rid("Microsoft.ApiManagement/service", apim),
                    rid("Microsoft.KeyVault/vaults/secrets", az.key_vault.name, "ai4ec-redis-url"),
                ],
                "properties": {"path": "v1/hello", "protocols": ["https"]},
            },
            {
                "type": "Microsoft.ApiManagement/service/apis/policies",
                "apiVersion": "2024-05-01",
                "name": f"{apim}/hello-v1/policy",
                "dependsOn": [rid("Microsoft.ApiManagement/service/apis", apim, "hello-v1")],
                "properties": {
                    "format": "xml",
                    "value": "<policies><inbound><base /></inbound></policies>",
                },
            },
        ],
        "outputs": {
            "tenantId": {"type": "string", "value": "[subscription().tenantId]"},
            "clusters": {
                "type": "object",
                "value": {
                    "main": {
                        "keyVaultProviderClientId": (
                            f"[reference({aks_id[1:-1]}"
                            ", '2026-05-01').addonProfiles.azureKeyvaultSecretsProvider.identity"
                            ".clientId]"
                        ),
                        "ingressHost": "",
                    }
                },
            },
            "apis": {"type": "object", "value": {"hello-v1": {"clientId": ""}}},
        },
    }


def write_template(
    env_dir: Path, template: dict[str, Any], parameters: dict[str, Any] | None = None
) -> None:
    """Put ``template`` (and its parameters file) into a build, updating manifest.json."""
    azure = env_dir / "azure"
    azure.mkdir(exist_ok=True)
    (azure / "main.json").write_text(json.dumps(template, indent=2, sort_keys=True) + "\n")
    values = {k: {"value": v.get("defaultValue")} for k, v in template["parameters"].items()}
    for k, v in (parameters or {}).items():
        values[k] = {"value": v}
    doc = {"$schema": "x", "contentVersion": "1.0.0.0", "parameters": values}
    (azure / "main.parameters.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    rehash(env_dir)


def rehash(env_dir: Path) -> None:
    """Rewrite manifest.json's artifact list from the files present (as build would)."""
    manifest = json.loads((env_dir / "manifest.json").read_text())
    entries = []
    for f in sorted(env_dir.rglob("*")):
        if f.is_file() and f.name != "manifest.json":
            data = f.read_bytes()
            rel = f.relative_to(env_dir).as_posix()
            entry = {"path": rel, "kind": "x", "bytes": len(data), "sha256": "", "digest": ""}
            if is_zip(rel):  # known by its entries, as the build lists it
                entry["sha256"], entry["bytes"] = zip_content_sha256(data)
                entry["digest"] = ZIP_ENTRIES
            else:
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                del entry["digest"]
            entries.append(entry)
    manifest["artifacts"] = entries
    (env_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@dataclass
class Project:
    """A copy of the minimal sample, built into ``out/default`` with a synthetic template."""

    root: Path
    platform_file: Path
    out: Path
    extra_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def env_dir(self) -> Path:
        return self.out / "default"

    def build(self) -> Path:
        build_platform(self.platform_file, self.out)
        write_template(self.env_dir, synthetic_template(self.platform_file), self.extra_parameters)
        return self.env_dir

    def edit(self, old: str, new: str) -> None:
        text = self.platform_file.read_text()
        assert old in text, old
        self.platform_file.write_text(text.replace(old, new))


def plain_http_for_development(platform_file: Path) -> None:
    """Turn the minimal sample's HTTPS ingress into plain HTTP in a development environment.

    These tests drive the flow where apply learns the ingress address only once the
    cluster exists (a second infra deployment); the sample itself is HTTPS with a host
    name known at build time (issue 13), so the copy declares itself for development.
    """
    text = platform_file.read_text()
    old = (
        "        hosts: [api.my-platform.example.org]  # DNS name of the gateway's address\n"
        "        certificate: {keyVaultCertificate: hello-ingress}\n"
    )
    assert old in text
    platform_file.write_text(
        text.replace(old, "        protocol: http\n") + "\ndevelopment: true\n"
    )


@pytest.fixture(scope="session")
def built_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The minimal sample, built once per session (copied for each test)."""
    root = tmp_path_factory.mktemp("sample") / "proj"
    shutil.copytree(ROOT / "samples" / "minimal", root)
    plain_http_for_development(root / "platform.yaml")
    proj = Project(root=root, platform_file=root / "platform.yaml", out=root / "out")
    build_platform(proj.platform_file, proj.out, display_name="platform.yaml")
    write_template(proj.env_dir, synthetic_template(proj.platform_file))
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_sample: Path) -> Project:
    root = tmp_path / "proj"
    shutil.copytree(built_sample, root)
    monkeypatch.chdir(root)
    return Project(root=root, platform_file=Path("platform.yaml"), out=Path("out"))


@dataclass
class Run:
    result: ApplyResult | None
    lines: list[str]
    error: Exception | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


FAST = RetrySettings(attempts=4, backoff=0.01, max_delay=0.05, max_retry_after=2.0)


def options(fake: FakeAzure, tls: Tls, env_dir: Path, **kw: Any) -> ApplyOptions:
    base: dict[str, Any] = {
        "build_dir": env_dir,
        "arm_endpoint": fake.url,
        "credential": FakeCredential(),
        "connection_verify": str(tls.ca_file),
        "retry": FAST,
        "poll_interval": 0.01,
        "timeout": 5.0,
        "ready_timeout": 5.0,
    }
    base.update(kw)
    return ApplyOptions(**base)


def run(
    fake: FakeAzure,
    tls: Tls,
    env_dir: Path,
    answers: list[bool] | None = None,
    **kw: Any,
) -> Run:
    """Run apply with captured output; ``answers`` feed the confirmation prompts."""
    lines: list[str] = []
    questions: list[str] = []

    def confirm(question: str) -> bool:
        questions.append(question)
        lines.append(f"? {question}")
        return (answers or []).pop(0) if answers else False

    console = Console(lambda text, err: lines.append(("E " if err else "") + text))
    try:
        return Run(run_apply(options(fake, tls, env_dir, **kw), console, confirm), lines)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        lines.append(f"ERROR {exc}")
        return Run(None, lines, exc)


@pytest.fixture(autouse=True)
def _debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    # Everything every library logs is captured, so tests can assert no secret leaks.
    caplog.set_level(logging.DEBUG)
