"""``ai4ec apply`` end to end: the real SDK clients against local fake services.

Every test here runs the real azure-mgmt-resource / azure-mgmt-containerservice /
azure-core pipelines and the real kubernetes client against the stdlib HTTPS servers of
``support.py`` (ThreadingHTTPServer on free 127.0.0.1 ports, TLS from a throwaway CA).
Those servers check each request (method, path, api-version, bearer token, template,
SSA content type, ``fieldManager``, ``dryRun``, ``force``) and answer the way ARM, Kudu,
AKS and a kube-apiserver do, including long-running operations and what-if polling.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ai4ec.errors import ApplyError

from .conftest import RUNTIME_CLIENT_ID, Project, options, rehash, run
from .support import (
    ADMIN_TOKEN,
    FUNCTION_KEY,
    REDIS_KEY,
    TOKENS,
    FakeAzure,
    FakeKube,
    Tls,
    applied_by,
    write_kubeconfig,
)

ARM_TOKEN = TOKENS["https://management.core.windows.net/.default"]
SECRETS = [*TOKENS.values(), ADMIN_TOKEN, FUNCTION_KEY, REDIS_KEY]


def _no_violations(azure: FakeAzure, kube: FakeKube) -> None:
    assert azure.violations == [], azure.violations
    assert kube.violations == [], kube.violations


def _deploy_bodies(azure: FakeAzure, name: str) -> list[dict[str, Any]]:
    return [
        r.json()["properties"]
        for r in azure.requests
        if r.method == "PUT" and r.path.endswith(f"/deployments/{name}")
    ]


def _order(azure: FakeAzure, kube: FakeKube) -> list[str]:
    """Writes of both fakes, merged in time order (request lists are appended live)."""
    events = [(i, f"azure {w}") for i, w in enumerate(azure.writes())]
    return [e for _i, e in events] + [f"kube {w}" for w in kube.writes()]


def test_first_apply_deploys_everything_in_order(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A first apply (local HTTPS fakes): every step, in order, with checked requests."""
    azure, kube = fakes
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    _no_violations(azure, kube)

    writes = azure.writes()
    rg = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/my-platform-rg"
    assert writes[0].lower() == f"put {rg}"  # resource group created first
    puts = [w.rsplit("/", 1)[1] for w in writes if "/deployments/" in w]
    # Each part once, in order: the ingress address, known only once the cluster
    # exists, is looked up before the functions part, which is the one that reads it.
    assert puts == [
        "ai4ec-default-data",
        "ai4ec-default-clusters",
        "ai4ec-default-functions",
        "ai4ec-default-apim-service",
        "ai4ec-default-dispatch",
        "ai4ec-default-apim",
    ]
    zip_at = next(i for i, w in enumerate(writes) if w.endswith("/api/zipdeploy"))
    dispatch_at = next(i for i, w in enumerate(writes) if w.endswith("/ai4ec-default-dispatch"))
    apim_at = next(i for i, w in enumerate(writes) if w.endswith("/ai4ec-default-apim"))
    assert zip_at < dispatch_at < apim_at
    assert len(azure.kudu) == 1

    kinds = {
        part: [
            res["type"]
            for res in _deploy_bodies(azure, f"ai4ec-default-{part}")[0]["template"]["resources"]
        ]
        for part in ("data", "clusters", "functions", "apim-service")
    }
    assert kinds == {
        "data": ["Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults/secrets"],
        "clusters": ["Microsoft.ContainerService/managedClusters"],
        "functions": ["Microsoft.EventGrid/topics", "Microsoft.Web/sites"],
        "apim-service": ["Microsoft.ApiManagement/service"],
    }
    clusters = _deploy_bodies(azure, "ai4ec-default-clusters")[0]
    assert "outputs" in clusters["template"]
    # A part declares only the parameters it reads: the address changes the functions
    # part alone.
    assert set(clusters["parameters"]) == {"location", "nodeCount"}
    functions = _deploy_bodies(azure, "ai4ec-default-functions")[0]
    assert functions["parameters"]["backendBaseUrl"]["value"] == "http://20.1.2.3"
    dispatch = _deploy_bodies(azure, "ai4ec-default-dispatch")[0]
    assert dispatch["parameters"]["deployEventSubscription"]["value"] is True
    assert [res["type"] for res in dispatch["template"]["resources"]] == [
        "Microsoft.EventGrid/topics/eventSubscriptions"
    ]
    apim = _deploy_bodies(azure, "ai4ec-default-apim")[0]
    assert apim["parameters"]["ai4ecIngressUrls"]["value"] == {"main": "http://20.1.2.3"}
    assert "outputs" not in apim["template"]

    # Kubernetes: server-side apply, after a dry-run, placeholders filled from outputs.
    spc = kube.get_object("SecretProviderClass", "ai4ec", "ai4ec-runtime")
    assert spc is not None
    assert spc["spec"]["parameters"]["clientID"] == RUNTIME_CLIENT_ID
    real = [w for w in kube.writes() if w.startswith("PATCH")]
    # 14 objects, plus (issue 13) the NetworkPolicy, the runtime ServiceAccount, the API's
    # own SecretProviderClass and its AuthorizationPolicy.
    assert len(real) == 18
    assert real[0].endswith("/api/v1/namespaces/ai4ec")
    # Dry-runs only where the namespace exists: the new Namespace, and the policy in
    # aks-istio-ingress; objects in the new namespace cannot be dry-run before it exists.
    assert kube.count("PATCH", ".", {"dryRun": "All"}) == 2
    assert "ready" in r.text and "apply complete" in r.text
    group = azure.groups["my-platform-rg"]
    assert {k for k in group["tags"] if k.startswith("ai4ec-apply.")} == {
        "ai4ec-apply.default.azure",
        "ai4ec-apply.default.functions",
        "ai4ec-apply.default.dispatch",
        "ai4ec-apply.default.apim",
    }


def test_second_apply_writes_nothing(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """Re-apply with nothing changed (local HTTPS fakes): no write to Azure or Kubernetes."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    azure.reset_log()
    kube.reset_log()
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert azure.writes() == []
    assert kube.writes() == []
    assert r.result is not None and not r.result.changed
    assert azure.count("POST", "/whatIf$") == 0  # recorded steps are not even previewed
    assert "apply complete: no changes" in r.text
    assert r.text.count("no changes since the last apply") == 4
    _no_violations(azure, kube)


def _recompress(zip_path: Path, level: int) -> None:
    """Rewrite a zip with the same entries at another zlib level: what another zlib (zlib-ng,
    Apple's) does to the same bundle."""
    with zipfile.ZipFile(zip_path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info, data in members:
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
    assert buf.getvalue() != zip_path.read_bytes()
    zip_path.write_bytes(buf.getvalue())


def test_a_bundle_deflated_by_another_zlib_is_not_published_again(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The bundle is known by its entries (local HTTPS fakes): other compressed bytes of the
    same files keep manifest.json as it was, and the next apply publishes nothing."""
    azure, _kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None

    def listed() -> dict[str, Any]:
        manifest = json.loads((project.env_dir / "manifest.json").read_text())
        (entry,) = [a for a in manifest["artifacts"] if a["path"] == "functions/bundle.zip"]
        return {k: entry[k] for k in ("bytes", "sha256", "digest")}

    built = listed()
    _recompress(project.env_dir / "functions" / "bundle.zip", level=1)
    rehash(project.env_dir)
    assert listed() == built
    azure.reset_log()
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert azure.writes() == []
    assert r.text.count("no changes since the last apply") == 4


def test_an_edited_bundle_member_is_refused(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A member changed after the build (the manifest kept) is caught by its entry digest."""
    azure, _kube = fakes
    path = project.env_dir / "functions" / "bundle.zip"
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("function_app.py.orig", b"x = 1\n")
    r = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(r.error, ApplyError)
    assert "bundle.zip differs from the build's manifest.json" in str(r.error)


def test_refresh_compares_live_and_writes_only_the_bundle(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """--refresh ignores records (local HTTPS fakes): what-if NoChange deploys nothing."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    azure.reset_log()
    kube.reset_log()
    r = run(azure, tls, project.env_dir, yes=True, refresh=True)
    assert r.error is None, r.text
    assert azure.count("POST", "/whatIf$") == 6  # four azure parts, dispatch, apim
    assert [w for w in azure.writes() if "/deployments/" in w] == []
    # The bundle cannot be compared with what runs, so --refresh publishes it again,
    # under the resource group's lock (a tag taken before and removed after).
    assert [w.rsplit("/", 1)[1] for w in azure.writes()] == ["default", "zipdeploy", "default"]
    assert "ai4ec-apply-lock" not in azure.groups["my-platform-rg"]["tags"]
    assert kube.writes() == []
    _no_violations(azure, kube)


def test_changed_api_updates_only_its_deployment(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A new image tag (local HTTPS fakes): plan shows one change; apply writes one object."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    project.edit("image: hello:1.0.0", "image: hello:1.1.0")
    project.build()
    azure.reset_log()
    kube.reset_log()

    plan = run(azure, tls, project.env_dir, plan=True)
    assert plan.error is None, plan.text
    assert azure.writes() == [] and kube.writes() == []
    assert "~ Deployment ai4ec/hello-v1: spec.template.spec.containers[0].image" in plan.text
    assert plan.result is not None and plan.result.changed

    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert kube.writes() == ["PATCH /apis/apps/v1/namespaces/ai4ec/deployments/hello-v1"]
    assert [w for w in azure.writes() if "/deployments/" in w] == []
    live = kube.get_object("Deployment", "ai4ec", "hello-v1")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"].endswith("hello:1.1.0")
    assert "Deployment ai4ec/hello-v1 ready" in r.text
    _no_violations(azure, kube)


def test_plan_on_an_empty_subscription_writes_nothing(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """--plan before anything exists (local HTTPS fakes): a listing, and no write at all."""
    azure, kube = fakes
    r = run(azure, tls, project.env_dir, plan=True)
    assert r.error is None, r.text
    assert azure.writes() == [] and kube.requests == []
    assert "resource group my-platform-rg does not exist yet" in r.text
    assert "+ Microsoft.Web/sites myplat-tasks-e61b8" in r.text
    assert "+ Functions bundle myplat-tasks-e61b8" in r.text
    assert "values from Azure ($(azure:...)) are known only after the azure step" in r.text
    assert "plan:" in r.text
    _no_violations(azure, kube)


def _labels(env: str = "default") -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "ai4ec",
        "ai4ec.io/platform": "my-platform",
        "ai4ec.io/environment": env,
    }


def _seed_prune_candidates(kube: FakeKube) -> None:
    """Labelled leftovers; only ``old-v1`` was applied by ai4ec (see its managedFields).

    ``helm-installed`` carries the same labels (the shipped chart sets them) but Helm's
    field manager wrote it: prune must keep it.
    """
    kube.seed(
        applied_by(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "helm-installed", "namespace": "ai4ec", "labels": _labels()},
            },
            manager="helm",
            operation="Update",
        )
    )
    kube.seed(
        applied_by(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "old-v1", "namespace": "ai4ec", "labels": _labels()},
            }
        )
    )
    kube.seed(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "keda-hpa-hello-v1",
                "namespace": "ai4ec",
                "labels": _labels(),
                "ownerReferences": [
                    {
                        "apiVersion": "keda.sh/v1alpha1",
                        "kind": "ScaledObject",
                        "name": "hello-v1",
                        "uid": "u",
                        "controller": True,
                    }
                ],
            },
        }
    )
    kube.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "hello-v1-secrets",
                "namespace": "ai4ec",
                "labels": {**_labels(), "secrets-store.csi.k8s.io/managed": "true"},
            },
        }
    )
    kube.seed(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "other-env", "namespace": "ai4ec", "labels": _labels("prod")},
        }
    )
    kube.seed(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "not-ours", "namespace": "ai4ec", "labels": {"app": "x"}},
        }
    )


def test_prune_lists_asks_and_deletes_only_labelled_leftovers(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """--prune (local HTTPS fakes): listed first, asked, and KEDA/CSI/foreign objects kept."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    _seed_prune_candidates(kube)
    kube.reset_log()

    declined = run(azure, tls, project.env_dir, prune=True, answers=[False])
    assert isinstance(declined.error, ApplyError)
    assert "nothing was deleted" in str(declined.error)
    listing = declined.lines.index("    - VirtualService ai4ec/old-v1 (prune)")
    question = next(i for i, line in enumerate(declined.lines) if line.startswith("? k8s:main"))
    assert listing < question
    assert [line for line in declined.lines if line.strip().startswith("- ")] == [
        "    - VirtualService ai4ec/old-v1 (prune)"
    ]
    assert kube.writes() == []

    accepted = run(azure, tls, project.env_dir, prune=True, answers=[True])
    assert accepted.error is None, accepted.text
    assert kube.writes() == [
        "DELETE /apis/networking.istio.io/v1/namespaces/ai4ec/virtualservices/old-v1"
    ]
    assert kube.get_object("HorizontalPodAutoscaler", "ai4ec", "keda-hpa-hello-v1") is not None
    assert kube.get_object("Secret", "ai4ec", "hello-v1-secrets") is not None
    assert kube.get_object("VirtualService", "ai4ec", "other-env") is not None
    assert kube.get_object("Deployment", "ai4ec", "not-ours") is not None
    assert kube.get_object("Deployment", "ai4ec", "helm-installed") is not None
    assert "deleted VirtualService ai4ec/old-v1" in accepted.text

    again = run(azure, tls, project.env_dir, prune=True)  # nothing left: no question
    assert again.error is None and not any(line.startswith("?") for line in again.lines)
    _no_violations(azure, kube)


def test_prune_with_yes_does_not_ask(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """--prune --yes (local HTTPS fakes): deletions listed, no prompt, removed API pruned."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    _seed_prune_candidates(kube)
    r = run(azure, tls, project.env_dir, prune=True, yes=True)
    assert r.error is None, r.text
    assert not any(line.startswith("?") for line in r.lines)
    assert "    - VirtualService ai4ec/old-v1 (prune)" in r.lines
    assert kube.get_object("VirtualService", "ai4ec", "old-v1") is None


def test_interrupted_kubernetes_apply_resumes(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A cluster failing mid-apply (local HTTPS fakes): rerun skips done work, finishes."""
    azure, kube = fakes
    # Every attempt at the real apply of one Deployment fails (4 attempts in FAST);
    # its dry-run gets through, as it would when the failure is in admission or etcd.
    kube.fail(
        "PATCH",
        r"/deployments/hello-v1$",
        503,
        times=5,
        when=lambda q: q.query.get("dryRun") != "All",
    )
    first = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(first.error, ApplyError)
    assert "Deployment ai4ec/hello-v1" in str(first.error)
    assert "still failing after 4 attempts: HTTP 503" in str(first.error)
    applied_before = {w for w in kube.writes()}
    assert "PATCH /apis/apps/v1/namespaces/ai4ec/deployments/ai4ec-runtime-sync" in applied_before

    kube.faults.clear()
    azure.reset_log()
    kube.reset_log()
    second = run(azure, tls, project.env_dir, yes=True)
    assert second.error is None, second.text
    # azure, functions, dispatch: recorded, skipped. APIM opens only after the clusters,
    # so the failed run never reached it: the rerun deploys it now.
    deployments = [w.rsplit("/", 1)[1] for w in azure.writes() if "/deployments/" in w]
    assert deployments == ["ai4ec-default-apim"]
    resumed = [w.split("/")[-2:] for w in kube.writes()]
    # Only what the failed run had not applied yet, kinds in manifest order (objects of
    # one kind go out together, in any order).
    assert resumed[:4] == [
        ["deployments", "hello-v1"],
        ["poddisruptionbudgets", "hello-v1"],
        ["scaledobjects", "hello-v1"],
        ["peerauthentications", "default"],
    ]
    assert sorted(map(tuple, resumed[4:7])) == [
        ("authorizationpolicies", "ai4ec-allow-nothing"),
        ("authorizationpolicies", "ai4ec-my-platform-default-routes"),
        ("authorizationpolicies", "hello-v1"),
    ]
    assert resumed[7:] == [
        ["destinationrules", "hello-v1"],
        ["gateways", "ai4ec-gateway"],
        ["virtualservices", "hello-v1"],
    ]
    assert "PATCH /apis/apps/v1/namespaces/ai4ec/deployments/hello-v1" in kube.writes()
    _no_violations(azure, kube)


def test_interrupted_azure_apply_resumes_and_names_the_resource(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A failed APIM deployment (local HTTPS fakes): named cause; rerun deploys only APIM."""
    azure, kube = fakes
    azure.fail_resource = ("Microsoft.ApiManagement/service/apis", "myplat-apim-e61b8/hello-v1")
    first = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(first.error, ApplyError)
    message = str(first.error)
    assert "deployment ai4ec-default-apim" in message
    assert "Microsoft.ApiManagement/service/apis myplat-apim-e61b8/hello-v1: BadRequest" in message
    assert FUNCTION_KEY not in first.text and "code=***" in message
    # Clusters come before APIM: the public door opens last, after its backends.
    assert kube.get_object("Deployment", "ai4ec", "hello-v1") is not None

    azure.fail_resource = None
    azure.reset_log()
    second = run(azure, tls, project.env_dir, yes=True)
    assert second.error is None, second.text
    deployments = [w.rsplit("/", 1)[1] for w in azure.writes() if "/deployments/" in w]
    assert deployments == ["ai4ec-default-apim"]
    assert azure.kudu and len(azure.kudu) == 1  # the bundle was not published again
    _no_violations(azure, kube)


def test_transient_faults_are_retried(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """429 + Retry-After, 503 and dropped connections (local HTTPS fakes) are retried."""
    azure, kube = fakes
    azure.fail("PUT", r"/deployments/ai4ec-default-clusters$", 429, headers={"Retry-After": "1"})
    azure.fail("POST", r"/whatIf$", 503)
    azure.drop("HEAD", r"/resource[gG]roups/my-platform-rg$")
    azure.drop("POST", r"/api/zipdeploy$")
    kube.fail("GET", r"/api/v1$", 429, headers={"Retry-After": "1"})
    kube.drop("PATCH", r"/namespaces/ai4ec/services/hello-v1$")
    kube.fail("PATCH", r"/deployments/hello-v1$", 500)
    started = time.monotonic()
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert all(f.times == 0 for f in [*azure.faults, *kube.faults])
    assert "retrying" in r.text
    assert len(azure.kudu) == 1
    _no_violations(azure, kube)


def test_permanent_azure_error_stops_with_the_cause(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A preflight 400 from ARM (local HTTPS fakes) is not retried; says what and why."""
    azure, kube = fakes
    azure.fail(
        "PUT",
        r"/deployments/ai4ec-default-data$",
        400,
        body={
            "error": {
                "code": "InvalidTemplateDeployment",
                "message": "The template deployment 'ai4ec-default-data' is not valid",
            }
        },
    )
    r = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(r.error, ApplyError)
    assert "deployment ai4ec-default-data in my-platform-rg: HTTP 400" in str(r.error)
    assert "InvalidTemplateDeployment" in str(r.error)
    assert azure.count("PUT", r"/deployments/ai4ec-default-data$") == 1


def test_conflict_needs_force(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A field another manager owns (local HTTPS fakes): 409 explained; --force-conflicts."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    kube.conflicts.add(("Deployment", "hello-v1"))  # someone ran kubectl edit since
    project.edit("image: hello:1.0.0", "image: hello:1.1.0")
    project.build()
    kube.reset_log()
    r = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(r.error, ApplyError)
    assert "--force-conflicts" in str(r.error) and "kubectl-edit" in str(r.error)
    assert kube.writes() == []  # found by the dry-run, before anything was written

    kube.expect_force = True
    forced = run(azure, tls, project.env_dir, yes=True, force_conflicts=True)
    assert forced.error is None, forced.text
    assert kube.get_object("Deployment", "ai4ec", "hello-v1") is not None
    _no_violations(azure, kube)


def test_unresolved_placeholder_is_never_sent(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """An output missing (local HTTPS fakes): error names object and placeholder; no PATCH."""
    azure, kube = fakes
    azure.output_values["clusters"] = {"main": {"ingressHost": ""}}
    r = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(r.error, ApplyError)
    assert str(r.error).startswith(
        "SecretProviderClass ai4ec/ai4ec-runtime: unresolved placeholder "
        "$(azure:clusters.main.runtimeClientId)"
    )
    assert kube.count("PATCH", ".") == 0
    _no_violations(azure, kube)


def test_no_secret_in_any_output(
    fakes: tuple[FakeAzure, FakeKube],
    tls: Tls,
    project: Project,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tokens, kubeconfig credentials, keys (local HTTPS fakes) never printed or logged."""
    azure, kube = fakes
    kube.token = ADMIN_TOKEN  # admin kubeconfig: a static token
    azure.fail_resource = ("Microsoft.ApiManagement/service/apis", "myplat-apim-e61b8/hello-v1")
    azure.fail(
        "POST",
        r"/whatIf$",
        400,
        body={
            "error": {
                "code": "InvalidTemplate",
                "message": f"bad: https://x.azurewebsites.net/api/X?code={FUNCTION_KEY}&a=1 "
                f"AccountKey={REDIS_KEY}; Authorization: Bearer {ARM_TOKEN}",
            }
        },
    )
    outputs: list[str] = []
    outputs.append(run(azure, tls, project.env_dir, yes=True, admin_credentials=True).text)
    outputs.append(run(azure, tls, project.env_dir, yes=True, admin_credentials=True).text)
    azure.fail_resource = None
    outputs.append(
        run(azure, tls, project.env_dir, yes=True, admin_credentials=True, refresh=True).text
    )
    outputs.append(
        run(azure, tls, project.env_dir, plan=True, admin_credentials=True, refresh=True).text
    )
    captured = capsys.readouterr()
    everything = "\n".join([*outputs, captured.out, captured.err, caplog.text])
    assert "InvalidTemplate" in everything and "code=***" in everything
    for secret in SECRETS:
        assert secret not in everything, secret
    assert kube.get_object("Deployment", "ai4ec", "hello-v1") is not None  # it did run
    _no_violations(azure, kube)


def test_tampered_build_is_refused(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A manifests.yaml edited after the build (local HTTPS fakes): refused, nothing sent."""
    azure, kube = fakes
    path = project.env_dir / "k8s" / "main" / "manifests.yaml"
    path.write_text(path.read_text().replace("hello:1.0.0", "evil:latest"))
    r = run(azure, tls, project.env_dir, yes=True, targets=("k8s",))
    assert isinstance(r.error, ApplyError)
    assert "differs from the build's manifest.json" in str(r.error)
    assert kube.requests == []


def test_stale_platform_file_is_refused(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """platform.yaml changed since the build (no server is reached): apply refuses."""
    azure, _kube = fakes
    project.edit("maxReplicas: 3", "maxReplicas: 4")
    r = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(r.error, ApplyError)
    assert "changed since out/default was built" in str(r.error)
    assert azure.requests == []


def test_kubernetes_only_with_context_and_outputs(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project, tmp_path: Path
) -> None:
    """--target k8s --context --outputs (local HTTPS kube fake): Azure is never called."""
    azure, kube = fakes
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube, tls)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "tenantId": {"type": "String", "value": "t-1"},
                "clusters": {
                    "type": "Object",
                    "value": {
                        "main": {
                            "runtimeClientId": "c-1",
                            "gatewayClientId": "c-2",
                            "apiServerFqdn": "127.0.0.1",
                        }
                    },
                },
                "apis": {"type": "Object", "value": {"hello-v1": {"clientId": "c-3"}}},
            }
        )
    )
    r = run(
        azure,
        tls,
        project.env_dir,
        yes=True,
        targets=("k8s",),
        contexts={"main": "ci"},
        kubeconfig=str(kubeconfig),
        outputs_file=outputs,
    )
    assert r.error is None, r.text
    assert azure.requests == []
    spc = kube.get_object("SecretProviderClass", "ai4ec", "ai4ec-runtime")
    assert spc is not None and spc["spec"]["parameters"]["tenantId"] == "t-1"
    assert kube.token not in r.text
    _no_violations(azure, kube)


def test_consumption_plan_publishes_a_package_blob(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """planSku Y1 (local HTTPS fakes): blob upload with a storage token, restart, sync."""
    azure, kube = fakes
    project.edit("  apiManagement:", "  functions: {planSku: Y1}\n  apiManagement:")
    project.build()
    r = run(azure, tls, project.env_dir, yes=True, targets=("azure", "functions"))
    assert r.error is None, r.text
    assert list(azure.blobs) == ["/ai4ec-packages/functions.zip"]
    assert azure.kudu == []
    actions = [w.rsplit("/", 1)[1] for w in azure.writes() if "/sites/" in w]
    assert actions == ["restart", "syncfunctiontriggers"]
    _no_violations(azure, kube)


def test_rollout_wait_reports_progress_and_times_out(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A Deployment not becoming ready (local HTTPS fakes): progress, then a timeout error."""
    azure, kube = fakes
    kube.slow["hello-v1"] = 3
    ok = run(azure, tls, project.env_dir, yes=True)
    assert ok.error is None, ok.text
    assert "Deployment ai4ec/hello-v1: 0/1 updated, 0 available" in ok.text
    assert "Deployment ai4ec/hello-v1 ready" in ok.text

    project.edit("image: hello:1.0.0", "image: hello:2.0.0")
    project.build()
    kube.slow["hello-v1"] = 10**6
    stuck = run(azure, tls, project.env_dir, yes=True, timeout=0.2)
    assert isinstance(stuck.error, ApplyError)
    assert "not rolled out after 0s: Deployment ai4ec/hello-v1" in str(stuck.error)


def test_options_are_validated(
    tls: Tls, project: Project, fakes: tuple[FakeAzure, FakeKube]
) -> None:
    """Bad --parameter names and unknown clouds (local HTTPS fakes) fail before any write."""
    azure, _kube = fakes
    bad = run(azure, tls, project.env_dir, parameters=("nope=1",))
    assert isinstance(bad.error, ApplyError) and "--parameter nope" in str(bad.error)
    cloud = run(azure, tls, project.env_dir, arm_endpoint=None, cloud="Mars")
    assert isinstance(cloud.error, ApplyError) and "unknown cloud 'Mars'" in str(cloud.error)
    assert azure.writes() == []
    assert options(azure, tls, project.env_dir).arm_endpoint == azure.url


def test_kind_not_served_is_planned_but_not_applied(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A cluster without KEDA (local HTTPS fakes): plan says so; apply stops before writing."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    del kube.discovery["keda.sh/v1alpha1"]
    plan = run(azure, tls, project.env_dir, plan=True, targets=("k8s",))
    assert plan.error is None, plan.text
    assert (
        "? ScaledObject ai4ec/hello-v1 (cluster main does not serve ScaledObject (keda.sh/v1alpha1)"
        in plan.text
    )
    assert "enable the AKS KEDA add-on" in plan.text
    applied = run(azure, tls, project.env_dir, yes=True, targets=("k8s",))
    assert isinstance(applied.error, ApplyError) and "does not serve ScaledObject" in str(
        applied.error
    )
    assert kube.writes() == []


def test_long_deployment_shows_it_is_alive(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ARM deployment that keeps running (local HTTPS fakes): 'still running' lines."""
    azure, kube = fakes
    monkeypatch.setattr("ai4ec.apply.azure.HEARTBEAT", 0.02)
    azure.deploy_polls = 15
    r = run(azure, tls, project.env_dir, yes=True, targets=("azure",))
    assert r.error is None, r.text
    assert "deployment ai4ec-default-clusters: still running (0 min)" in r.text


def test_ingress_lookup_failure_is_an_error(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """Cluster credentials refused (local HTTPS fakes): a clear error before any deployment.

    Before, a warning let API Management and dispatch deploy with the stand-in address,
    and the Kubernetes step then failed the same way.
    """
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    azure.reset_log()
    azure.fail(
        "POST",
        r"/listClusterUserCredential$",
        403,
        times=99,
        body={"error": {"code": "AuthorizationFailed", "message": "no"}},
    )
    project.edit("image: hello:1.0.0", "image: hello:2.0.0")
    project.build()
    r = run(azure, tls, project.env_dir, yes=True, refresh=True)
    assert isinstance(r.error, ApplyError)
    assert "cluster main: cannot read the ingress address" in str(r.error)
    assert "AuthorizationFailed" in str(r.error)
    assert not any("warning" in line for line in r.lines)
    assert [w for w in azure.writes() if "/deployments/" in w] == []
