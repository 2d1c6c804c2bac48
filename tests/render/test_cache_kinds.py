"""Both cache kinds end to end: ARM resources, Key Vault secrets, the Function App's Redis
settings and KEDA's triggers follow ``azure.cache.kind``.

Azure Managed Redis (the default) is a Redis Cluster with the OSS policy: the runtime runs
with ``AI4EC_REDIS_MODE=cluster`` and keeps one pending set per index shard, so KEDA reads
each shard with a ``redis-cluster`` trigger and scales on their sum. The legacy Azure Cache
for Redis is one node: one ``redis`` trigger, ``AI4EC_REDIS_MODE=single``. The KEDA objects
are checked against KEDA's CRD schema (../shared/artifact-check, strict) and the core
objects with kubernetes-validate --strict; the ARM resource types and API versions against
the published ones (artifact-check ``arm``). No ARM or Kubernetes API server runs here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ai4ec.errors import Severity
from ai4ec.pipeline import check_platform, render_platforms
from ai4ec.render.runtime import app_settings
from ai4ec_runtime import keys

from ..conftest import ARTIFACT_CHECK, ROOT

SAMPLE = ROOT / "samples" / "camera-trap"
SAMPLE_CACHE = "cache: {sku: Balanced_B1}     # Azure Managed Redis"
# the line of the sample's ``azure.cache`` (diagnostics point there)
CACHE_LINE = next(
    number
    for number, line in enumerate(
        (SAMPLE / "platform.yaml").read_text(encoding="utf-8").splitlines(), start=1
    )
    if SAMPLE_CACHE in line
)


def _platform_dir(tmp_path: Path, cache: str, extra: str = "") -> Path:
    """camera-trap with ``cache`` as its ``azure.cache`` line (and ``extra`` replacements)."""
    shutil.copytree(SAMPLE, tmp_path / "p")
    path = tmp_path / "p" / "platform.yaml"
    text = path.read_text(encoding="utf-8")
    assert SAMPLE_CACHE in text
    text = text.replace(SAMPLE_CACHE, cache)
    if extra:
        old, new = extra.split("=>")
        assert old in text
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def _build(path: Path) -> tuple[Any, dict[str, bytes]]:
    result = check_platform(path)
    assert result.ok, result.diagnostics
    (rendered, _manifest) = render_platforms(result)[0]
    return result, {str(a.path): a.content for a in rendered.artifacts}


def _resources(files: dict[str, bytes], type_: str) -> list[dict[str, Any]]:
    arm = json.loads(files["azure/main.json"])
    return [r for r in arm["resources"] if r["type"] == type_]


def _secret(files: dict[str, bytes], name: str) -> str:
    for r in _resources(files, "Microsoft.KeyVault/vaults/secrets"):
        if r["name"].endswith(f"/{name}')]") or r["name"].endswith(f"/{name}"):
            return str(r["properties"]["value"])
    raise AssertionError(name)


def _app_settings(files: dict[str, bytes]) -> dict[str, Any]:
    (site,) = _resources(files, "Microsoft.Web/sites")
    return {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}


def _docs(files: dict[str, bytes]) -> list[dict[str, Any]]:
    text = files["k8s/main/manifests.yaml"].decode()
    return [d for d in yaml.safe_load_all(text) if d]


def _scaled(files: dict[str, bytes], name: str) -> dict[str, Any]:
    return next(
        d["spec"]
        for d in _docs(files)
        if d["kind"] == "ScaledObject" and d["metadata"]["name"] == name
    )


def _strict_checks(files: dict[str, bytes], tmp_path: Path) -> None:
    """Every object against its schema: CRDs via artifact-check, core kinds strictly."""
    docs = _docs(files)
    for doc in docs:
        if "." not in doc["apiVersion"].split("/")[0]:
            kubernetes_validate.validate(doc, "1.35.0", strict=True)
    if not ARTIFACT_CHECK.exists():
        pytest.skip("../shared/artifact-check is not present")
    manifests = tmp_path / "manifests.yaml"
    manifests.write_bytes(files["k8s/main/manifests.yaml"])
    main = tmp_path / "main.json"
    main.write_bytes(files["azure/main.json"])
    for kind, target in (("crd", manifests), ("arm", main)):
        run = subprocess.run(
            [sys.executable, str(ARTIFACT_CHECK), kind, str(target)],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert " 0 errors" in run.stdout


def test_managed_redis_is_the_default(tmp_path: Path) -> None:
    result, files = _build(_platform_dir(tmp_path, "cache: {}"))
    assert not [d for d in result.diagnostics if d.severity is Severity.WARNING]
    plat = next(iter(result.platforms()))
    cache = plat.azure.cache
    assert (cache.kind, cache.sku, cache.port, cache.shards) == ("managed", "Balanced_B1", 10000, 8)
    assert not _resources(files, "Microsoft.Cache/redis")
    (server,) = _resources(files, "Microsoft.Cache/redisEnterprise")
    assert server["apiVersion"] == "2025-07-01"
    assert server["sku"] == {"name": "Balanced_B1"}
    assert server["properties"]["minimumTlsVersion"] == "1.2"
    (db,) = _resources(files, "Microsoft.Cache/redisEnterprise/databases")
    assert db["name"].endswith("/default')]") or db["name"].endswith("/default")
    props = db["properties"]
    assert props["clusteringPolicy"] == "OSSCluster"
    assert (props["port"], props["clientProtocol"]) == (10000, "Encrypted")
    assert props["evictionPolicy"] == "NoEviction"
    assert props["accessKeysAuthentication"] == "Enabled"
    # Keys come from the database, the host name from the cluster; port 10000, TLS.
    url = _secret(files, "ai4ec-redis-url")
    assert "listKeys(resourceId('Microsoft.Cache/redisEnterprise/databases'" in url
    assert "hostName" in url and ":10000/0" in url and url.startswith("[format('rediss://")
    password = _secret(files, "ai4ec-redis-password")
    assert "Microsoft.Cache/redisEnterprise/databases" in password
    settings = _app_settings(files)
    assert settings["AI4EC_REDIS_MODE"] == "cluster"
    assert settings["AI4EC_REDIS_SHARDS"] == "8"
    assert settings["AI4EC_REDIS_URL"].startswith("@Microsoft.KeyVault(")
    assert app_settings(plat)["AI4EC_REDIS_MODE"] == "cluster"
    bundled = json.loads(files["functions/settings.json"])
    assert bundled["AI4EC_REDIS_MODE"] == "cluster"


def test_managed_redis_keda_sums_every_shard(tmp_path: Path) -> None:
    _result, files = _build(_platform_dir(tmp_path, "cache: {sku: Balanced_B0}"))
    spec = _scaled(files, "detector-v1")
    triggers = [t for t in spec["triggers"] if t["type"] == "redis-cluster"]
    assert not [t for t in spec["triggers"] if t["type"] == "redis"]
    # Exactly the runtime's key names (functions/ai4ec_runtime/keys.py), one per shard.
    assert [t["metadata"]["listName"] for t in triggers] == [
        keys.pending("detector-v1", keys.shard_tag(i)) for i in range(8)
    ]
    assert triggers[0]["metadata"]["listName"] == "{ai4ec:0}ai4ec:pending:detector-v1"
    for t in triggers:
        assert t["metadata"]["addresses"].endswith(".eastus.redis.azure.net:10000")
        assert t["metadata"]["enableTLS"] == "true"
        assert t["authenticationRef"] == {"kind": "TriggerAuthentication", "name": "ai4ec-redis"}
    modifiers = spec["advanced"]["scalingModifiers"]
    assert modifiers["formula"] == " + ".join(f"pending_{i}" for i in range(8))
    per_replica = triggers[0]["metadata"]["listLength"]
    assert modifiers["target"] == per_replica
    assert modifiers["metricType"] == "AverageValue"
    # The password KEDA sends comes from the synced secret, never inline.
    auth = next(d for d in _docs(files) if d["kind"] == "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "ai4ec-runtime", "key": "redis-password"}
    ]
    _strict_checks(files, tmp_path)


def test_managed_redis_keda_keeps_schedules_in_the_formula(tmp_path: Path) -> None:
    """A composite metric replaces every external metric: schedules are folded into it."""
    schedule = (
        "      cooldown: 10m\n=>      cooldown: 10m\n      schedules:\n"
        '        - {name: office-hours, start: "0 8 * * 1-5", end: "0 18 * * 1-5",'
        " timezone: Europe/Paris, minReplicas: 1}\n"
    )
    _result, files = _build(_platform_dir(tmp_path, "cache: {}", schedule))
    spec = _scaled(files, "detector-v1")
    crons = [t for t in spec["triggers"] if t["type"] == "cron"]
    assert [t["name"] for t in crons] == ["cron_0"]
    assert crons[0]["metadata"]["desiredReplicas"] == "1"
    modifiers = spec["advanced"]["scalingModifiers"]
    backlog = " + ".join(f"pending_{i}" for i in range(8))
    assert modifiers["formula"] == f"max(({backlog}) / 2, cron_0)"
    assert modifiers["target"] == "1"
    _strict_checks(files, tmp_path)


def test_legacy_cache_is_selectable_and_warns(tmp_path: Path) -> None:
    path = _platform_dir(tmp_path, "cache: {kind: legacy, sku: Standard, capacity: 1}")
    result, files = _build(path)
    (warning,) = [d for d in result.diagnostics if d.severity is Severity.WARNING]
    assert warning.code == "W-AZ-CACHE-LEGACY"
    assert warning.json_path == "$.azure.cache.kind"
    assert warning.line == CACHE_LINE
    (legacy,) = _resources(files, "Microsoft.Cache/redis")
    assert legacy["properties"]["sku"] == {"name": "Standard", "family": "C", "capacity": 1}
    assert not _resources(files, "Microsoft.Cache/redisEnterprise")
    url = _secret(files, "ai4ec-redis-url")
    assert "listKeys(resourceId('Microsoft.Cache/redis'" in url and ":6380/0" in url
    settings = _app_settings(files)
    assert settings["AI4EC_REDIS_MODE"] == "single"
    assert "AI4EC_REDIS_SHARDS" not in settings
    spec = _scaled(files, "detector-v1")
    (trigger,) = [t for t in spec["triggers"] if t["type"].startswith("redis")]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == keys.pending("detector-v1")
    assert trigger["metadata"]["address"].endswith(".redis.cache.windows.net:6380")
    assert "scalingModifiers" not in spec["advanced"]
    _strict_checks(files, tmp_path)


@pytest.mark.parametrize(
    "cache,code,where",
    [
        ("cache: {sku: Standard}", "E-CACHE-SKU", "$.azure.cache.sku"),
        ("cache: {sku: Balanced_B1, capacity: 2}", "E-CACHE-SKU", "$.azure.cache.capacity"),
        ("cache: {kind: legacy, sku: Balanced_B1}", "E-CACHE-SKU", "$.azure.cache.sku"),
        ("cache: {sku: Balanced_B2}", "E-AZ-CACHE-SKU", "$.azure.cache.sku"),
    ],
)
def test_cache_kind_and_sku_must_agree(tmp_path: Path, cache: str, code: str, where: str) -> None:
    result = check_platform(_platform_dir(tmp_path, cache))
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert [(d.code, d.json_path, d.line) for d in errors] == [(code, where, CACHE_LINE)]
