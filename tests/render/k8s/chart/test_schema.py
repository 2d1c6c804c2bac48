"""values.schema.json: Helm itself refuses bad values; the interface is explicit."""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import pytest

from .support import FIXTURES, load_values, values_schema

# (id, fixture, dotted changes, fragment of Helm's message)
BAD_VALUES: list[tuple[str, str, dict[str, Any], str]] = [
    ("unknown-top-level-key", "sync-cpu", {"replicaCount": 2}, "replicaCount"),
    ("unknown-nested-key", "sync-cpu", {"image.tags": "x"}, "tags"),
    ("replicas-as-string", "sync-cpu", {"replicas": "2"}, "/replicas"),
    ("integer-as-float", "sync-cpu", {"shutdown.terminationGracePeriodSeconds": 10.5}, "integer"),
    ("memory-in-millibytes", "sync-cpu", {"resources.requests.memory": "500m"}, "memory"),
    ("cpu-as-number", "sync-cpu", {"resources.requests.cpu": 1}, "cpu"),
    (
        "gpu-in-resources",
        "sync-cpu",
        {"resources.limits": {"memory": "2Gi", "nvidia.com/gpu": "1"}},
        "nvidia",
    ),
    ("missing-memory-limit", "sync-cpu", {"resources.limits": {"cpu": "1"}}, "memory"),
    ("name-uppercase", "sync-cpu", {"name": "Landcover-v2"}, "/name"),
    ("name-too-long", "sync-cpu", {"name": "a" * 54}, "/name"),
    ("empty-platform", "sync-cpu", {"platform": ""}, "/platform"),
    ("bad-label-value", "sync-cpu", {"environment": "prod env"}, "/environment"),
    ("unknown-mode", "sync-cpu", {"mode": "batch"}, "/mode"),
    ("empty-image-tag", "sync-cpu", {"image.tag": ""}, "/image/tag"),
    ("bad-digest", "sync-cpu", {"image.digest": "sha256:abc"}, "/image/digest"),
    ("api-prefix-relative", "sync-cpu", {"framework.apiPrefix": "v2/landcover"}, "apiPrefix"),
    ("env-value-not-string", "sync-cpu", {"env": {"WORKERS": 4}}, "/env"),
    ("env-bad-name", "sync-cpu", {"env": {"1BAD": "x"}}, "1BAD"),
    ("runtime-unknown-setting", "sync-cpu", {"runtimeSecret.keys.DEBUG": "debug"}, "DEBUG"),
    (
        "secret-env-missing-key",
        "secrets-spc",
        {"secretEnv": [{"name": "A", "secretName": "s"}]},
        "key",
    ),
    (
        "probe-unknown-knob",
        "sync-cpu",
        {"probes.readiness.successThreshold": 1},
        "successThreshold",
    ),
    ("root-user", "sync-cpu", {"securityContext.runAsUser": 0}, "runAsUser"),
    (
        "toleration-exists-with-value",
        "async-gpu-scale-to-zero",
        {
            "placement.tolerations": [
                {"key": "sku", "operator": "Exists", "value": "gpu", "effect": "NoSchedule"}
            ]
        },
        "tolerations",
    ),
    (
        "toleration-bad-effect",
        "async-gpu-scale-to-zero",
        {
            "placement.tolerations": [
                {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "Never"}
            ]
        },
        "effect",
    ),
    ("gpu-without-pool", "async-gpu-scale-to-zero", {"placement.nodePool": ""}, "nodePool"),
    ("bad-pool-name", "sync-cpu", {"placement.excludeNodePools": ["GPU_pool"]}, "excludeNodePools"),
    (
        "managed-annotation",
        "sync-cpu",
        {"podAnnotations": {"proxy.istio.io/config": "{}"}},
        "proxy.istio.io/config",
    ),
    ("istio-unknown-proxy-knob", "sync-cpu", {"istio.proxyConfig.concurrency": 2}, "concurrency"),
    (
        "no-progress-rollout",
        "sync-cpu",
        {"deployment.maxSurge": 0, "deployment.maxUnavailable": 0},
        "deployment",
    ),
    ("bad-percent", "sync-cpu", {"podDisruptionBudget.maxUnavailable": "50"}, "maxUnavailable"),
    ("next-api-on-plain-api", "sync-cpu", {"framework.nextApiNameInPipeline": "x"}, "component"),
    (
        "hpa-without-metric",
        "async-cpu-hpa",
        {"autoscaling.cpuUtilization": 0, "autoscaling.memoryUtilization": 0},
        "Utilization",
    ),
    (
        "keda-without-trigger",
        "sync-cpu",
        {"autoscaling.keda.enabled": True, "autoscaling.cpuUtilization": 0},
        "autoscaling",
    ),
    (
        "redis-on-sync-api",
        "sync-cpu",
        {
            "autoscaling.keda.enabled": True,
            "autoscaling.keda.redis.enabled": True,
            "autoscaling.keda.redis.address": "r:6380",
            "autoscaling.keda.redis.listName": "ai4ec:pending:landcover-v2",
            "autoscaling.keda.redis.authentication.name": "ai4ec-redis",
        },
        "redis",
    ),
    (
        "redis-list-not-the-contract",
        "async-gpu-scale-to-zero",
        {"autoscaling.keda.redis.listName": "detector-v1_created"},
        "listName",
    ),
    (
        "redis-without-address",
        "async-gpu-scale-to-zero",
        {"autoscaling.keda.redis.address": ""},
        "address",
    ),
    (
        "redis-without-auth",
        "async-gpu-scale-to-zero",
        {"autoscaling.keda.redis.authentication.name": ""},
        "name",
    ),
    (
        "listlength-zero",
        "async-gpu-scale-to-zero",
        {"autoscaling.keda.redis.listLength": 0},
        "listLength",
    ),
    (
        "create-auth-without-secret",
        "secrets-spc",
        {"autoscaling.keda.redis.authentication.secretName": ""},
        "secretName",
    ),
    (
        "create-cluster-auth",
        "secrets-spc",
        {"autoscaling.keda.redis.authentication.kind": "ClusterTriggerAuthentication"},
        "kind",
    ),
    (
        "cron-bad-replicas",
        "secrets-spc",
        {"autoscaling.keda.cron.0.desiredReplicas": 0},
        "desiredReplicas",
    ),
    (
        "prometheus-without-query",
        "sync-cpu",
        {
            "autoscaling.keda.enabled": True,
            "autoscaling.keda.prometheus.enabled": True,
            "autoscaling.keda.prometheus.serverAddress": "http://prometheus:9090",
            "autoscaling.keda.prometheus.threshold": "10",
        },
        "query",
    ),
    (
        "prometheus-threshold-not-decimal",
        "sync-cpu",
        {"autoscaling.keda.prometheus.threshold": "ten"},
        "threshold",
    ),
    ("cron-without-name", "secrets-spc", {"autoscaling.keda.cron.0.name": ""}, "name"),
    (
        "spc-bad-version",
        "secrets-spc",
        {"secretProviderClass.objects.0.version": "latest"},
        "version",
    ),
    ("spc-bad-tenant", "secrets-spc", {"secretProviderClass.tenantId": "contoso"}, "tenantId"),
    ("spc-without-objects", "secrets-spc", {"secretProviderClass.objects": []}, "objects"),
    (
        "spc-bad-vault-name",
        "secrets-spc",
        {"secretProviderClass.keyVaultName": "kv_prod"},
        "keyVaultName",
    ),
    (
        "wi-client-not-guid",
        "async-gpu-scale-to-zero",
        {"serviceAccount.workloadIdentityClientId": "detector"},
        "workloadIdentityClientId",
    ),
]


def _apply(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Fixture values with dotted changes; numeric parts index lists ("cron.0.x")."""
    values = load_values(name)
    for dotted, value in changes.items():
        node: Any = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[leaf] = value
    return values


def test_fixtures_are_valid(chart: helm_python.Chart) -> None:
    for name in FIXTURES:
        chart.validate_schema(load_values(name))


def test_defaults_alone_are_refused(chart: helm_python.Chart) -> None:
    # values.yaml is safe: without explicit identity and image nothing renders.
    with pytest.raises(helm_python.HelmValuesError) as error:
        chart.render({}, name="x", namespace="default")
    for field in ("/name", "/platform", "/image/repository", "/image/tag", "/framework/apiPrefix"):
        assert field in str(error.value)


@pytest.mark.parametrize(
    ("fixture", "changes", "fragment"),
    [pytest.param(f, c, m, id=i) for i, f, c, m in BAD_VALUES],
)
def test_schema_rejects_bad_values(
    chart: helm_python.Chart, fixture: str, changes: dict[str, Any], fragment: str
) -> None:
    bad = _apply(fixture, changes)
    with pytest.raises(helm_python.HelmValuesError) as error:
        chart.validate_schema(bad)
    assert fragment in str(error.value)
    # render() enforces the same schema, so a bad release can never be produced.
    with pytest.raises(helm_python.HelmValuesError):
        chart.render(bad, name="x", namespace="default")


@pytest.mark.parametrize(
    ("fixture", "changes"),
    [pytest.param(f, c, id=i) for i, f, c, _ in BAD_VALUES],
)
def test_python_validator_agrees_with_helm(
    chart: helm_python.Chart, fixture: str, changes: dict[str, Any]
) -> None:
    # The bulk path (docs/chart.md) validates in Python with the same schema, on values merged
    # with the chart defaults exactly as Helm merges them.
    validator = jsonschema.Draft7Validator(values_schema())
    assert not validator.is_valid(chart.merge_values(_apply(fixture, changes)))


def test_python_validator_accepts_the_fixtures(chart: helm_python.Chart) -> None:
    validator = jsonschema.Draft7Validator(values_schema())
    jsonschema.Draft7Validator.check_schema(values_schema())
    for name in FIXTURES:
        validator.validate(chart.merge_values(load_values(name)))


# Maps whose keys are data, not interface (resource lists are open quantity maps).
FREE_FORM = {
    "env",
    "podAnnotations",
    "runtimeSecret.keys",
    "istio.proxyConfig",
    "resources.requests",
    "resources.limits",
}


def _paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict) and path not in FREE_FORM:
            out |= _paths(value, f"{path}.")
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_fixtures_spell_out_every_value(chart: helm_python.Chart, name: str) -> None:
    # The compiler contract: every key of values.yaml is given explicitly, so no chart default
    # silently decides anything. The fixtures model that contract.
    assert _paths(chart.values) <= _paths(load_values(name))


def test_schema_and_defaults_describe_the_same_keys(chart: helm_python.Chart) -> None:
    schema = values_schema()

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            resolved: dict[str, Any] = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
            return resolved
        return node

    def schema_paths(node: dict[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for key, sub in node.get("properties", {}).items():
            path = f"{prefix}{key}"
            out.add(path)
            sub = resolve(sub)
            if path not in FREE_FORM and "properties" in sub:
                out |= schema_paths(sub, f"{path}.")
        return out

    assert _paths(chart.values) == schema_paths(schema)
    assert set(schema["required"]) == set(chart.values)
