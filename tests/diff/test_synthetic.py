"""The comparison on small hand-written builds: ARM templates, policies, manifests, zips.

These pin the per-layer rules (identity, risk, redaction, noise) independently of what
the renderers happen to produce today.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from typing import Any

import pytest

from ai4ec.diff import diff_builds
from ai4ec.diff.compare import EnvSide
from ai4ec.diff.formats import format_json, format_markdown, format_text
from ai4ec.diff.records import ChangeKind, DiffReport, Risk, Side

SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
Files = dict[str, bytes]


def arm(*resources: dict[str, Any], **sections: Any) -> bytes:
    doc = {"$schema": SCHEMA, "contentVersion": "1.0.0.0", "resources": list(resources)}
    doc.update(sections)
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def res(type_: str, name: str, **body: Any) -> dict[str, Any]:
    return {"type": type_, "name": name, "apiVersion": "2024-01-01", **body}


def redis(sku: str, family: str, capacity: int, name: str = "p-redis") -> dict[str, Any]:
    return res(
        "Microsoft.Cache/redis",
        name,
        properties={"sku": {"name": sku, "family": family, "capacity": capacity}},
    )


def pool(name: str, vm: str, lo: int, hi: int, **props: Any) -> dict[str, Any]:
    return res(
        "Microsoft.ContainerService/managedClusters/agentPools",
        f"p-aks/{name}",
        properties={
            "vmSize": vm,
            "enableAutoScaling": True,
            "minCount": lo,
            "maxCount": hi,
            "count": lo,
            **props,
        },
    )


def compare(base: Files, head: Files) -> DiffReport:
    return diff_builds(
        {"default": EnvSide("default", base)},
        {"default": EnvSide("default", head)},
        Side("base"),
        Side("head"),
    )


def only(report: DiffReport) -> Any:
    (change,) = report.changes
    return change


def zip_bytes(members: dict[str, bytes], level: int | None = None) -> bytes:
    """A zip of ``members``: stored, or deflated at zlib ``level``."""
    method = zipfile.ZIP_STORED if level is None else zipfile.ZIP_DEFLATED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method, compresslevel=level) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ------------------------------------------------------------------------------ Azure


def test_redis_downgrade_loses_data_and_upgrade_does_not() -> None:
    down = only(
        compare(
            {"azure/main.json": arm(redis("Premium", "P", 1))},
            {"azure/main.json": arm(redis("Standard", "C", 1))},
        )
    )
    assert down.action is ChangeKind.REPLACED and down.risk is Risk.DATA_LOSS
    up = only(
        compare(
            {"azure/main.json": arm(redis("Basic", "C", 0))},
            {"azure/main.json": arm(redis("Standard", "C", 0))},
        )
    )
    assert up.action is ChangeKind.CHANGED and up.risk is Risk.DISRUPTION and not up.destructive
    assert up.cost.before.low == pytest.approx(0.022 * 730)
    assert up.cost.after.low == pytest.approx(0.055 * 730)


def test_removing_stateful_resources_is_data_loss() -> None:
    base = arm(
        res("Microsoft.KeyVault/vaults", "p-kv"),
        res("Microsoft.ContainerService/managedClusters", "p-aks", sku={"tier": "Free"}),
        res("Microsoft.Web/serverfarms", "p-plan", sku={"name": "EP1", "capacity": 1}),
    )
    head = arm(res("Microsoft.Web/serverfarms", "p-plan", sku={"name": "EP1", "capacity": 1}))
    report = compare({"azure/main.json": base}, {"azure/main.json": head})
    risks = {c.name: (c.action, c.risk) for c in report.changes}
    assert risks == {
        "p-kv": (ChangeKind.REMOVED, Risk.DATA_LOSS),
        "p-aks": (ChangeKind.REMOVED, Risk.DATA_LOSS),
    }


def test_storage_rename_is_one_rename_with_data_loss_and_children_follow() -> None:
    def storage(name: str) -> list[dict[str, Any]]:
        return [
            res(
                "Microsoft.Storage/storageAccounts",
                name,
                kind="StorageV2",
                sku={"name": "Standard_LRS"},
            ),
            res(
                "Microsoft.Storage/storageAccounts/blobServices/containers",
                f"{name}/default/results",
            ),
        ]

    report = compare(
        {"azure/main.json": arm(*storage("oldst1234"))},
        {"azure/main.json": arm(*storage("newst1234"))},
    )
    by_kind = {c.kind: c for c in report.changes}
    account = by_kind["Microsoft.Storage/storageAccounts"]
    assert account.action is ChangeKind.RENAMED and account.risk is Risk.DATA_LOSS
    assert account.old_name == "oldst1234" and account.name == "newst1234"
    container = by_kind["Microsoft.Storage/storageAccounts/blobServices/containers"]
    assert (
        container.action is ChangeKind.RENAMED and container.old_name == "oldst1234/default/results"
    )
    assert report.counts()["removed"] == report.counts()["added"] == 0


def test_location_change_replaces_and_dependson_is_not_state() -> None:
    a = res("Microsoft.Insights/components", "p-appi", location="eastus", dependsOn=["x", "y"])
    b = res("Microsoft.Insights/components", "p-appi", location="westus", dependsOn=["y"])
    change = only(compare({"azure/main.json": arm(a)}, {"azure/main.json": arm(b)}))
    assert change.action is ChangeKind.REPLACED
    assert [f.path for f in change.fields] == ["location"]
    a2 = dict(a, dependsOn=["y", "x", "z"])
    assert not compare({"azure/main.json": arm(a)}, {"azure/main.json": arm(a2)}).has_changes


def test_resources_moving_between_template_files_are_unchanged() -> None:
    api = res("Microsoft.ApiManagement/service/apis", "p-apim/a-v1", properties={"path": "a"})
    base = {"azure/main.json": arm(api), "azure/main.bicep": b"resource x 'y' = {}\n"}
    head = {
        "azure/main.json": arm(),
        "azure/apim-apis-1.json": arm(dict(api, dependsOn=["[resourceId('x')]"])),
        "azure/main.bicep": b"// reformatted bicep\nresource x 'y' = {}\n",
        "azure/modules/apim.bicep": b"// new module file\n",
    }
    assert not compare(base, head).has_changes


def test_cluster_system_pool_vm_size_and_sku_cost() -> None:
    def aks(vm: str) -> dict[str, Any]:
        return res(
            "Microsoft.ContainerService/managedClusters",
            "p-aks",
            sku={"name": "Base", "tier": "Standard"},
            properties={"agentPoolProfiles": [{"name": "system", "vmSize": vm, "count": 2}]},
        )

    change = only(
        compare(
            {"azure/main.json": arm(aks("Standard_DS2_v2"))},
            {"azure/main.json": arm(aks("Standard_D4s_v5"))},
        )
    )
    assert change.action is ChangeKind.REPLACED and change.risk is Risk.REPLACEMENT
    assert change.fields[0].path == "properties.agentPoolProfiles[name=system].vmSize"
    # control plane $0.10/h + 2 nodes
    assert change.cost.before.low == pytest.approx((0.10 + 2 * 0.114) * 730)
    assert change.cost.after.low == pytest.approx((0.10 + 2 * 0.192) * 730)


def test_unknown_vm_size_is_named_not_guessed() -> None:
    report = compare(
        {"azure/main.json": arm(pool("cpu", "Standard_DS2_v2", 1, 1))},
        {"azure/main.json": arm(pool("cpu", "Standard_Imaginary_v9", 1, 1))},
    )
    env = report.environments[0]
    assert env.after.unpriced == (
        "Microsoft.ContainerService/managedClusters/agentPools p-aks/cpu",
    )
    assert env.after.cost.low == 0
    assert "price unknown" in format_text(report)


def test_price_override(tmp_path) -> None:
    from ai4ec.diff import cost

    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"vmSizes": {"Standard_DS2_v2": 1.0}, "hoursPerMonth": 100}))
    prices = cost.load_prices(table)
    c = cost.pool_cost({"vmSize": "Standard_DS2_v2", "count": 3}, prices)
    assert (c.low, c.high) == (300.0, 300.0)
    assert prices["redis"]["perHour"]["Basic"]["C0"] == 0.022  # the rest is kept
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    from ai4ec.errors import DiffError

    with pytest.raises(DiffError):
        cost.load_prices(bad)


def test_functions_premium_plan_cost_range() -> None:
    from ai4ec.diff import cost

    plan = res(
        "Microsoft.Web/serverfarms",
        "p-plan",
        sku={"name": "EP1", "capacity": 1},
        properties={"maximumElasticWorkerCount": 4},
    )
    c = cost.resource_cost(plan, cost.load_prices())
    per_hour = 1 * 0.173 + 3.5 * 0.0123
    assert c.low == pytest.approx(per_hour * 730) and c.high == pytest.approx(4 * per_hour * 730)
    acr = cost.resource_cost(
        res("Microsoft.ContainerRegistry/registries", "r", sku={"name": "Basic"}),
        cost.load_prices(),
    )
    assert acr.low == pytest.approx(0.167 * 730 / 24)
    apim = cost.resource_cost(
        res("Microsoft.ApiManagement/service", "a", sku={"name": "Developer", "capacity": 1}),
        cost.load_prices(),
    )
    assert apim.low == pytest.approx(0.07 * 730)
    storage = cost.resource_cost(res("Microsoft.Storage/storageAccounts", "s"), cost.load_prices())
    assert storage.usage_based and storage.low == 0


# ---------------------------------------------------------------------------- secrets


def test_secrets_are_never_printed() -> None:
    secret_old, secret_new = "old-s3cret-value", "new-s3cret-value"
    kv_old = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/a/)"
    kv_new = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/b/)"

    def build(secret: str, kv: str) -> Files:
        return {
            "azure/main.json": arm(
                res("Microsoft.KeyVault/vaults/secrets", "kv/x", properties={"value": secret}),
                res(
                    "Microsoft.ApiManagement/service/namedValues",
                    "apim/nv",
                    properties={"secret": True, "value": secret},
                ),
                res(
                    "Microsoft.Web/sites",
                    "fn",
                    properties={
                        "siteConfig": {
                            "appSettings": [
                                {"name": "EVENT_GRID_KEY", "value": secret},
                                {"name": "AI4EC_REDIS_URL", "value": kv},
                            ]
                        }
                    },
                ),
            ),
            "functions/settings.json": json.dumps(
                {"AI4EC_REDIS_URL": kv, "MY_API_TOKEN": secret, "PLAIN": "1"}
            ).encode(),
            "k8s/main/manifests.yaml": (
                "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\n"
                f"data: {{anything: {secret}}}\n"
            ).encode(),
        }

    report = compare(build(secret_old, kv_old), build(secret_new, kv_new))
    assert len(report.changes) == 6
    for text in (format_text(report), format_markdown(report), format_json(report)):
        for value in (secret_old, secret_new, "secrets/a/", "secrets/b/"):
            assert value not in text
    assert "(sensitive value changed)" in format_text(report)
    data = json.loads(format_json(report))
    fields = [f for e in data["environments"] for c in e["changes"] for f in c["fields"]]
    assert all(f["redacted"] == "secret" and "old" not in f for f in fields)


def test_bundle_shows_file_names_only() -> None:
    base = zip_bytes({"function_app.py": b"print(1)", "routing.json": b"{}", "host.json": b"{}"})
    head = zip_bytes({"function_app.py": b"print(2)", "routing.json": b"{}", "new.py": b"x=1"})
    change = only(compare({"functions/bundle.zip": base}, {"functions/bundle.zip": head}))
    assert change.note.startswith("changed (3 files:")
    assert {f.path for f in change.fields} == {
        '["function_app.py"]',
        '["host.json"]',
        '["new.py"]',
    }
    assert all(f.old in (None,) or f.kind == "added" for f in change.fields)
    text = format_text(compare({"functions/bundle.zip": base}, {"functions/bundle.zip": head}))
    assert "print(" not in text
    # A zip rebuilt with other timestamps or member order is unchanged.
    again = zip_bytes({"routing.json": b"{}", "host.json": b"{}", "function_app.py": b"print(1)"})
    assert not compare({"functions/bundle.zip": base}, {"functions/bundle.zip": again}).has_changes
    # So is the same bundle deflated by another zlib (or at another level).
    files = {"function_app.py": b"print(1)" * 50, "routing.json": b"{}", "host.json": b"{}"}
    fast, small = zip_bytes(files, level=1), zip_bytes(files, level=9)
    assert fast != small
    assert not compare({"functions/bundle.zip": fast}, {"functions/bundle.zip": small}).has_changes


# ------------------------------------------------------------------------------- APIM

POLICY = """<!-- generated by ai4ec from {src} - do not edit -->
<policies>
    <inbound>
        <base />
        <rate-limit-by-key calls="{calls}" renewal-period="60"
            counter-key="@(context.Subscription.Id)" />
    </inbound>
    <backend><base /></backend>
</policies>
"""


def _apim(calls: int, src: str = "a.yaml", fmt: str = "rawxml") -> Files:
    xml = POLICY.format(calls=calls, src=src)
    policy = res(
        "Microsoft.ApiManagement/service/products/policies",
        "p-apim/public/policy",
        properties={"format": fmt, "value": xml},
    )
    return {"azure/main.json": arm(policy), "apim/products/public.xml": xml.encode()}


def test_policy_file_and_its_arm_resource_are_one_change() -> None:
    change = only(compare(_apim(5), _apim(60)))
    assert change.layer == "apim" and change.name == "products/public"
    assert change.files == ("apim/products/public.xml", "azure/main.json")
    (field,) = change.fields
    assert field.path.endswith("@calls") and (field.old, field.new) == ("5", "60")
    # The generated comment names the source file: not a change.
    assert not compare(_apim(5, "a.yaml"), _apim(5, "b.yaml")).has_changes
    # An ARM-only difference shows on the same entry.
    change = only(compare(_apim(5), _apim(5, fmt="xml")))
    assert [f.path for f in change.fields] == ["arm.properties.format"]


def test_policy_removed_with_its_product() -> None:
    change = only(compare(_apim(5), {"azure/main.json": arm()}))
    assert change.action is ChangeKind.REMOVED and change.name == "products/public"


# -------------------------------------------------------------------------- Kubernetes

DEPLOY = """# generated
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: a-v1
  namespace: ns
  labels: {{"ai4ec.io/api": "a-v1", "helm.sh/chart": "{chart}"}}
spec:
  selector: {{matchLabels: {{app: "{sel}"}}}}
  template:
    spec:
      containers:
        - name: api
          image: "a:1"
          resources:
            requests: {{cpu: {cpu}, memory: {mem}}}
          ports: [{{containerPort: 80{proto}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: a-v1, namespace: ns}}
spec:
  ports:
    - {{port: 80, name: http}}
"""


def _k8s(**kw: Any) -> Files:
    values = {"chart": "ai4ec-api-0.1.0", "sel": "a", "cpu": '"500m"', "mem": "1Gi", "proto": ""}
    values.update(kw)
    return {"k8s/main/manifests.yaml": DEPLOY.format(**values).encode()}


def test_k8s_noise_is_normalised() -> None:
    assert not compare(
        _k8s(), _k8s(chart="ai4ec-api-0.2.0", cpu="0.5", mem="1024Mi", proto=", protocol: TCP")
    ).has_changes


def test_k8s_selector_change_forces_replacement() -> None:
    change = only(compare(_k8s(), _k8s(sel="b")))
    assert change.action is ChangeKind.REPLACED and change.kind == "apps/Deployment"
    assert change.name == "ns/a-v1 (main)"


def test_k8s_parts_next_to_manifests_are_not_compared_twice() -> None:
    base = {**_k8s(), "k8s/main/values/a-v1.yaml": b"replicas: 1\n"}
    head = {**_k8s(mem="2Gi"), "k8s/main/values/a-v1.yaml": b"replicas: 2\n"}
    change = only(compare(base, head))
    assert change.fields[0].path.endswith("requests.memory")


def test_other_files_are_compared_structurally() -> None:
    a = {"docs/x.yaml": b"a: 1\nb: [1, 2]\n", "notes.txt": b"one\ntwo\n"}
    b = {"docs/x.yaml": b"{b: [1, 2], a: 1.0}\n", "notes.txt": b"one\nthree\n"}
    change = only(compare(a, b))
    assert change.layer == "files" and change.name == "notes.txt"


def test_two_environments_are_compared_by_name() -> None:
    files = {"azure/main.json": arm(redis("Basic", "C", 0))}
    changed = {"azure/main.json": arm(redis("Basic", "C", 1))}
    report = diff_builds(
        {"dev": EnvSide("dev", files), "prod": EnvSide("prod", files)},
        {"dev": EnvSide("dev", files), "prod": EnvSide("prod", changed)},
        Side("a"),
        Side("b"),
    )
    assert [(e.name, len(e.changes)) for e in report.environments] == [("dev", 0), ("prod", 1)]
    before, after = report.cost_totals()
    assert after.low - before.low == pytest.approx((0.055 - 0.022) * 730)


def test_input_is_not_modified() -> None:
    base = {"azure/main.json": arm(redis("Basic", "C", 0))}
    snapshot = copy.deepcopy(base)
    compare(base, {"azure/main.json": arm(redis("Basic", "C", 1))})
    assert base == snapshot
