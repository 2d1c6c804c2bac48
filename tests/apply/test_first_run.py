"""Issue 17: what a first real run meets, one test per finding (local HTTPS fakes).

Every test drives the real Azure and Kubernetes SDK clients against the fakes of
``support.py``, which refuse what the real services refuse: ARM 404s actions that do not
exist and 409s a PUT of a running deployment, the Functions host lists functions only
after its restart and only those it could import, Event Grid performs the webhook
validation handshake, the kube-apiserver answers 403 until the caller has a role.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ai4ec.errors import ApplyError

from .conftest import Project, run, synthetic_template, write_template
from .support import FakeAzure, FakeKube, Tls, applied_by, write_kubeconfig

DEPLOYER = "5e1f0c2a-0000-4000-8000-00000000d3p1"


def _clean(azure: FakeAzure, kube: FakeKube) -> None:
    assert azure.violations == [], azure.violations
    assert kube.violations == [], kube.violations


def _puts(azure: FakeAzure) -> list[str]:
    return [w.rsplit("/", 1)[1] for w in azure.writes() if "/deployments/" in w]


# ------------------------------------------------------------------------ readiness


def test_event_grid_waits_for_the_functions_host_to_index(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The subscription is created only once the host lists every function.

    The fake host lists nothing for 4 reads after the publish; Event Grid's handshake
    fails while BackendWebhook is not indexed, so deploying dispatch at once (as before)
    failed with 'Url validation'.
    """
    azure, kube = fakes
    azure.functions_host.index_delay = 4
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert "waiting for the Functions host to index 11 function(s)" in r.text
    assert "Functions host lists all 11 function(s)" in r.text
    assert _puts(azure).count("ai4ec-default-dispatch") == 1  # the handshake passed at once
    listings = [
        i
        for i, q in enumerate(azure.requests)
        if q.method == "GET" and q.path.endswith("/functions")
    ]
    dispatch = next(
        i
        for i, q in enumerate(azure.requests)
        if q.method == "PUT" and q.path.endswith("/ai4ec-default-dispatch")
    )
    assert len(listings) >= 4 and max(listings) < dispatch
    _clean(azure, kube)


def test_a_bundle_the_host_cannot_import_fails_clearly(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The host imports only what the bundle carries: nothing indexed is a clear error."""
    azure, kube = fakes
    azure.functions_host.strip_packages = True  # the host gets no azure-functions & co.
    r = run(azure, tls, project.env_dir, yes=True, ready_timeout=0.3)
    assert isinstance(r.error, ApplyError), r.text
    message = str(r.error)
    assert "the host lists 0 of 11 functions" in message
    assert "BackendWebhook" in message and "could not load the bundle" in message
    assert "ai4ec-default-dispatch" not in _puts(azure)  # no handshake against a dead host
    _clean(azure, kube)


def test_rerun_after_a_rollout_timeout_keeps_waiting(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A rerun with nothing to change still waits for workloads not rolled out."""
    azure, kube = fakes
    kube.slow["hello-v1"] = 10**6
    stuck = run(azure, tls, project.env_dir, yes=True, timeout=0.2)
    assert isinstance(stuck.error, ApplyError)
    assert "rerun apply to keep waiting" in str(stuck.error)

    kube.slow["hello-v1"] = 2
    again = run(azure, tls, project.env_dir, yes=True)
    assert again.error is None, again.text
    assert "Deployment ai4ec/hello-v1: 0/1 updated, 0 available" in again.text
    assert "Deployment ai4ec/hello-v1 ready" in again.text
    _clean(azure, kube)


# --------------------------------------------------------------------------- access


def _with_deployer_role(project: Project) -> None:
    """The render side's AKS RBAC role for the deployer, in the real main.json's shape.

    Same parameters, scope, condition, name and role as ``ai4ec.render.azure.roles``
    writes (tests/apply/test_real_template.py runs apply against the real template).
    """
    template = synthetic_template(project.platform_file)
    template["parameters"]["deployerPrincipalId"] = {"type": "string", "defaultValue": ""}
    template["parameters"]["deployerPrincipalType"] = {
        "type": "string",
        "defaultValue": "ServicePrincipal",
        "allowedValues": ["User", "Group", "ServicePrincipal"],
    }
    aks = next(
        r["name"]
        for r in template["resources"]
        if r["type"] == "Microsoft.ContainerService/managedClusters"
    )
    aks_id = f"resourceId('Microsoft.ContainerService/managedClusters', '{aks}')"
    role = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"
    template["resources"].append(
        {
            "type": "Microsoft.Authorization/roleAssignments",
            "apiVersion": "2022-04-01",
            "name": f"[guid({aks_id}, parameters('deployerPrincipalId'), '{role}')]",
            "scope": f"Microsoft.ContainerService/managedClusters/{aks}",
            "condition": "[not(empty(parameters('deployerPrincipalId')))]",
            "dependsOn": [f"[{aks_id}]"],
            "properties": {
                "principalId": "[parameters('deployerPrincipalId')]",
                "principalType": "[parameters('deployerPrincipalType')]",
                "roleDefinitionId": "[subscriptionResourceId("
                f"'Microsoft.Authorization/roleDefinitions', '{role}')]",
            },
        }
    )
    write_template(project.env_dir, template)


def test_kubernetes_403_is_waited_out_while_the_role_propagates(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The deployer gets an AKS role from the template; 403 until it arrives is waited."""
    azure, kube = fakes
    _with_deployer_role(project)
    kube.caller, kube.propagation = DEPLOYER, 3
    r = run(azure, tls, project.env_dir, yes=True, deployer_principal_id=DEPLOYER)
    assert r.error is None, r.text
    infra = [
        q.json()["properties"]["parameters"]
        for q in azure.requests
        if q.method == "PUT" and q.path.endswith("/ai4ec-default-clusters")
    ]
    assert infra[0]["deployerPrincipalId"] == {"value": DEPLOYER}
    assert "forbidden (HTTP 403); waiting for the role assignment" in r.text
    assert kube.get_object("Deployment", "ai4ec", "hello-v1") is not None
    _clean(azure, kube)


def test_kubernetes_403_without_a_role_fails_after_the_deadline(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """No role ever arrives: a clear error naming the contract, after --ready-timeout."""
    azure, kube = fakes
    kube.caller = DEPLOYER
    r = run(azure, tls, project.env_dir, yes=True, ready_timeout=0.3)
    assert isinstance(r.error, ApplyError)
    assert "forbidden (HTTP 403)" in str(r.error)
    assert "deployerPrincipalId" in str(r.error)


# ----------------------------------------------------------------- transient failures


def test_a_running_deployment_of_the_same_name_is_waited_for(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A deployment left running (Ctrl-C) is waited for instead of a 409 DeploymentActive."""
    azure, kube = fakes
    azure.active["ai4ec-default-clusters"] = 3
    r = run(azure, tls, project.env_dir, yes=True, targets=("azure",))
    assert r.error is None, r.text
    assert "deployment ai4ec-default-clusters is still running (running): waiting" in r.text
    assert not any(
        q.method == "PUT" and q.path.endswith("/ai4ec-default-clusters") for q in azure.requests[:3]
    )
    _clean(azure, kube)


def test_transient_arm_codes_are_retried_with_backoff(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """AnotherOperationInProgress, PrincipalNotFound, a failed handshake: deployed again."""
    azure, kube = fakes
    azure.transient = {
        "ai4ec-default-clusters": ("AnotherOperationInProgress", 1),
        "ai4ec-default-dispatch": ("Url validation", 1),
        "ai4ec-default-apim": ("PrincipalNotFound", 2),
    }
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert "transient failure (AnotherOperationInProgress)" in r.text
    assert "transient failure (Url validation)" in r.text
    assert _puts(azure).count("ai4ec-default-apim") == 3
    _clean(azure, kube)


def test_transient_arm_codes_are_given_up_after_the_ready_timeout(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """ARM keeps answering AnotherOperationInProgress: apply retries until --ready-timeout,
    then stops with an error that says it gave up and how to go on (not a hang, and not
    a bare ARM message that reads like a permanent failure)."""
    azure, kube = fakes
    azure.transient = {"ai4ec-default-clusters": ("AnotherOperationInProgress", 10**6)}
    r = run(azure, tls, project.env_dir, yes=True, ready_timeout=0.3)
    assert isinstance(r.error, ApplyError), r.text
    message = str(r.error)
    assert "deployment ai4ec-default-clusters: gave up after" in message
    assert "transient failure for --ready-timeout (0.3s)" in message
    assert "rerun apply (or raise --ready-timeout) to keep trying" in message
    assert "AnotherOperationInProgress" in message
    assert "transient failure (AnotherOperationInProgress); deploying again" in r.text
    puts = _puts(azure)
    assert puts.count("ai4ec-default-clusters") >= 2  # retried before giving up
    assert "ai4ec-default-functions" not in puts  # nothing after the failed part
    assert "ai4ec-apply-lock" not in azure.groups["my-platform-rg"]["tags"]  # released
    _clean(azure, kube)


def test_a_host_runtime_failure_of_the_functions_part_is_retried(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A ``listKeys`` of a site whose host is restarting fails with ARM's code
    ``BadRequest`` (permanent by code) and the text "from host runtime": retried by text."""
    azure, kube = fakes
    azure.transient = {
        "ai4ec-default-functions": (
            "BadRequest",
            2,
            "Encountered an error (ServiceUnavailable) from host runtime.",
        )
    }
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert "ai4ec-default-functions: transient failure (BadRequest); deploying again" in r.text
    assert _puts(azure).count("ai4ec-default-functions") == 3
    _clean(azure, kube)


def test_a_failed_event_grid_handshake_is_retried_until_it_passes(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The host lists BackendWebhook but its worker does not answer the first two
    validation handshakes yet: Event Grid fails the subscription (the fake performs the
    handshake; no error code is injected), and apply deploys dispatch again until the
    webhook answers."""
    azure, kube = fakes
    azure.functions_host.unanswered = 2
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert "ai4ec-default-dispatch: transient failure (Url validation); deploying again" in r.text
    assert _puts(azure).count("ai4ec-default-dispatch") == 3
    assert azure.functions_host.unanswered == 0  # both cold handshakes were really made
    assert any(k.endswith("/eventsubscriptions/ai4ec-dispatch") for k in azure.resources)
    _clean(azure, kube)


def test_permanent_codes_are_not_retried_and_errors_are_this_runs(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """Every failed operation is reported (nextLink followed); a later preflight 400
    does not show the previous run's failures."""
    azure, kube = fakes
    apim = "myplat-apim-e61b8"
    azure.operations_page = 1
    azure.fail_resources = {
        ("Microsoft.ApiManagement/service/apis", f"{apim}/hello-v1"),
        ("Microsoft.ApiManagement/service/apis/policies", f"{apim}/hello-v1/policy"),
        ("Microsoft.ApiManagement/service/namedValues", f"{apim}/ai4ec-ingress-main"),
    }
    first = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(first.error, ApplyError)
    message = str(first.error)
    for _kind, name in azure.fail_resources:
        assert name in message
    assert _puts(azure).count("ai4ec-default-apim") == 1  # BadRequest is permanent

    azure.fail_resources = set()
    azure.fail(
        "PUT",
        r"/deployments/ai4ec-default-apim$",
        400,
        body={"error": {"code": "InvalidTemplate", "message": "preflight says no"}},
    )
    second = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(second.error, ApplyError)
    assert "preflight says no" in str(second.error)
    assert "hello-v1" not in str(second.error)  # the previous run's failures are not ours


def test_whatif_noise_deploys_nothing(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """What-if NoEffect and Modify-of-NoEffect-only noise are not changes."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    azure.reset_log()
    azure.whatif_noise = True
    azure.whatif_forced = {"Microsoft.EventGrid/topics": "NoEffect"}
    r = run(azure, tls, project.env_dir, yes=True, refresh=True)
    assert r.error is None, r.text
    assert _puts(azure) == []
    _clean(azure, kube)


# ---------------------------------------------------------------------- safety rails


def test_prune_refuses_a_kind_it_cannot_list_unless_told_to_skip(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """403 on a list is an error (it read as 'nothing to prune'); or a named skip."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    kube.unlistable.add("configmaps")
    refused = run(azure, tls, project.env_dir, yes=True, prune=True)
    assert isinstance(refused.error, ApplyError)
    assert "cannot list ConfigMap (v1): HTTP 403" in str(refused.error)
    assert "--prune-skip-forbidden" in str(refused.error)
    skipped = run(azure, tls, project.env_dir, yes=True, prune=True, prune_skip_forbidden=True)
    assert skipped.error is None, skipped.text
    assert "prune skips ConfigMap (v1)" in skipped.text


def test_pruning_a_namespace_needs_its_own_flag(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """--prune --yes keeps a Namespace ai4ec applied; --prune-namespaces deletes it."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    labels = {
        "app.kubernetes.io/managed-by": "ai4ec",
        "ai4ec.io/platform": "my-platform",
        "ai4ec.io/environment": "default",
    }
    kube.seed(
        applied_by(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "old", "labels": labels}}
        )
    )
    kept = run(azure, tls, project.env_dir, yes=True, prune=True)
    assert kept.error is None, kept.text
    assert "Namespace old is no longer in the build; kept" in kept.text
    assert kube.get_object("Namespace", "", "old") is not None
    gone = run(azure, tls, project.env_dir, yes=True, prune=True, prune_namespaces=True)
    assert gone.error is None, gone.text
    assert "- Namespace old (prune; deletes everything in it)" in gone.text
    assert kube.get_object("Namespace", "", "old") is None


def test_a_context_that_is_not_the_builds_cluster_is_refused(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project, tmp_path: Path
) -> None:
    """--context main=ci is checked against the AKS cluster's fqdn before any write."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    config = str(write_kubeconfig(tmp_path / "kubeconfig", kube, tls))
    azure.aks_fqdn = "myplat-main-aks-dns-1a2b.hcp.westeurope.azmk8s.io"
    kw: dict[str, Any] = {"targets": ("k8s",), "contexts": {"main": "ci"}, "kubeconfig": config}
    wrong = run(azure, tls, project.env_dir, yes=True, **kw)
    assert isinstance(wrong.error, ApplyError)
    assert "is not the AKS cluster of the build" in str(wrong.error)
    assert kube.writes() == []
    azure.aks_fqdn = None  # now the fqdn is the fake's own address
    right = run(azure, tls, project.env_dir, yes=True, **kw)
    assert right.error is None, right.text
    _clean(azure, kube)


def _two_clusters(azure: FakeAzure, project: Project) -> str:
    """The project with a second cluster ``west`` (same shape as ``main``); its AKS name."""
    project.edit(
        "\napis:\n",
        "  - name: west\n"
        '    kubernetesVersion: "1.35"\n'
        "    pools:\n"
        "      - name: cpu\n"
        "        vmSize: Standard_DS2_v2\n"
        "        autoscale: {min: 1, max: 3}\n"
        "    istio:\n"
        "      ingress:\n"
        "        protocol: http\n"
        "\napis:\n",
    )
    project.edit("    image: hello:1.0.0", "    cluster: main\n    image: hello:1.0.0")
    project.build()
    template = synthetic_template(project.platform_file)
    main_aks = next(
        r
        for r in template["resources"]
        if r["type"] == "Microsoft.ContainerService/managedClusters"
    )
    west_aks = str(main_aks["name"]).replace("-main-", "-west-")
    assert west_aks != main_aks["name"]
    template["resources"].append({**main_aks, "name": west_aks})
    write_template(project.env_dir, template)
    clusters = azure.output_values["clusters"]
    clusters["west"] = dict(clusters["main"])
    return west_aks


def test_a_cluster_falling_back_to_the_current_context_is_refused_before_any_write(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project, tmp_path: Path
) -> None:
    """Two clusters, ``--context main=ci`` only: ``west`` falls back to the current
    context, which is main's API server, not west's. Every cluster's context is
    checked before the first Kubernetes write, so main is not written either (checked
    one step at a time, main's objects were applied before west was refused)."""
    azure, kube = fakes
    west_aks = _two_clusters(azure, project)
    assert (project.env_dir / "k8s" / "west").is_dir()
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    config = str(write_kubeconfig(tmp_path / "kubeconfig", kube, tls))  # current: ci
    azure.aks_fqdns[west_aks] = "myplat-west-aks-dns-9a0b.hcp.westeurope.azmk8s.io"
    kube.reset_log()
    azure.reset_log()
    kw: dict[str, Any] = {"targets": ("k8s",), "contexts": {"main": "ci"}, "kubeconfig": config}
    r = run(azure, tls, project.env_dir, yes=True, **kw)
    assert isinstance(r.error, ApplyError), r.text
    message = str(r.error)
    assert "--context (current) for cluster west" in message
    assert "is not the AKS cluster of the build" in message
    assert "myplat-west-aks-dns-9a0b.hcp.westeurope.azmk8s.io" in message
    assert "name its context with --context west=CONTEXT" in message
    assert kube.writes() == [] and azure.writes() == []
    _clean(azure, kube)


def test_a_second_concurrent_apply_is_refused(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The resource group's lock tag held by another run stops this one before writing."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True, targets=("azure",)).error is None
    tags = azure.groups["my-platform-rg"]["tags"]
    tags["ai4ec-apply-lock"] = "other-run 99999999999"
    project.edit("image: hello:1.0.0", "image: hello:2.0.0")
    project.build()
    azure.reset_log()
    refused = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(refused.error, ApplyError)
    assert "is locked by another apply" in str(refused.error)
    assert _puts(azure) == [] and azure.kudu == []
    broken = run(azure, tls, project.env_dir, yes=True, break_lock=True)
    assert broken.error is None, broken.text
    assert "ai4ec-apply-lock" not in tags  # released at the end


def test_runs_that_write_nothing_take_no_lock(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """A second identical run, and --prune with nothing to prune, write nothing to Azure
    or the cluster: not even the lock tag (docs/apply.md, Lock). With --prune the APIM
    step always lists the service (leftovers are found only so), and it took the lock
    although it deleted and deployed nothing."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    for kw in ({}, {"prune": True}):
        azure.reset_log()
        kube.reset_log()
        r = run(azure, tls, project.env_dir, yes=True, **kw)
        assert r.error is None, r.text
        assert "apply complete: no changes" in r.text, kw
        assert azure.writes() == [], (kw, azure.writes())
        assert kube.writes() == [], (kw, kube.writes())
    assert "ai4ec-apply-lock" not in azure.groups["my-platform-rg"]["tags"]
    _clean(azure, kube)


def test_the_lock_is_taken_before_the_first_write_only(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The lock is taken once, before a run's first write, and released at the end: a
    changed API (Kubernetes writes), and a step that deploys nothing but must write its
    record (the record tag was lost) both write only between the two lock tag writes."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None

    def tag_writes() -> list[str]:
        out = []
        for q in azure.requests:
            if q.method == "PATCH" and q.path.endswith("/tags/default"):
                body = q.json()
                out += [f"{body['operation']} {k}" for k in sorted(body["properties"]["tags"])]
        return out

    project.edit("image: hello:1.0.0", "image: hello:2.0.0")
    project.build()
    azure.reset_log()
    kube.reset_log()
    changed = run(azure, tls, project.env_dir, yes=True)
    assert changed.error is None, changed.text
    assert tag_writes() == ["Merge ai4ec-apply-lock", "Delete ai4ec-apply-lock"], changed.text
    assert [w.rsplit("/", 1)[1] for w in kube.writes()] == ["hello-v1"]

    del azure.groups["my-platform-rg"]["tags"]["ai4ec-apply.default.azure"]
    azure.reset_log()
    again = run(azure, tls, project.env_dir, yes=True)
    assert again.error is None, again.text
    assert _puts(azure) == []  # what-if: nothing to deploy
    assert tag_writes() == [
        "Merge ai4ec-apply-lock",
        "Merge ai4ec-apply.default.azure",
        "Delete ai4ec-apply-lock",
    ]
    _clean(azure, kube)


def test_a_resource_group_of_another_environment_is_refused(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """Tags naming another platform or environment stop the run before any write."""
    azure, kube = fakes
    azure.groups["my-platform-rg"] = {
        "location": "westeurope",
        "tags": {"ai4ec-platform": "my-platform", "ai4ec-environment": "prod"},
    }
    r = run(azure, tls, project.env_dir, yes=True)
    assert isinstance(r.error, ApplyError)
    assert "tagged ai4ec-environment=prod, but this build is default" in str(r.error)
    assert azure.writes() == [] and kube.writes() == []


def test_a_saved_plan_is_applied_exactly_or_refused_as_stale(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project, tmp_path: Path
) -> None:
    """--plan -o saves a plan bound to the build and live state; --from-plan applies it,
    and refuses it once the live state or the build moved on."""
    azure, kube = fakes
    assert run(azure, tls, project.env_dir, yes=True).error is None
    project.edit("image: hello:1.0.0", "image: hello:2.0.0")
    project.build()
    saved = tmp_path / "plan.json"
    plan = run(azure, tls, project.env_dir, plan=True, targets=("k8s",), plan_output=saved)
    assert plan.error is None, plan.text
    doc = json.loads(saved.read_text())
    assert doc["targets"] == ["k8s"] and len(doc["build"]) == 64

    # Someone changes the cluster after the review: the plan is stale.
    live = kube.get_object("Deployment", "ai4ec", "hello-v1")
    assert live is not None
    before = json.loads(json.dumps(live))
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    kube.reset_log()
    stale = run(azure, tls, project.env_dir, yes=True, from_plan=saved)
    assert isinstance(stale.error, ApplyError), stale.text
    assert "stale: step k8s:main would now do something else" in str(stale.error)
    assert kube.writes() == []

    # Live state back as reviewed: exactly the plan is applied.
    kube.objects[kube.key(before)] = before
    ok = run(azure, tls, project.env_dir, yes=True, from_plan=saved)
    assert ok.error is None, ok.text
    assert [w.rsplit("/", 1)[1] for w in kube.writes()] == ["hello-v1"]

    # Another build: refused before anything is read.
    project.edit("image: hello:2.0.0", "image: hello:3.0.0")
    project.build()
    other = run(azure, tls, project.env_dir, yes=True, from_plan=saved)
    assert isinstance(other.error, ApplyError)
    assert "made from another build" in str(other.error)


def test_a_saved_plan_of_an_azure_step_is_refused_once_what_if_changed(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project, tmp_path: Path
) -> None:
    """--plan -o of the azure step saves what-if's listing; when Azure changed after the
    review (what-if now shows another change), --from-plan refuses the step before any
    deployment, and applies exactly the plan once Azure is back as reviewed."""
    azure, kube = fakes
    template = synthetic_template(project.platform_file)
    write_template(project.env_dir, template)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    write_template(project.env_dir, template, {"nodeCount": 3})
    saved = tmp_path / "plan.json"
    plan = run(azure, tls, project.env_dir, plan=True, targets=("azure",), plan_output=saved)
    assert plan.error is None, plan.text
    step = next(s for s in json.loads(saved.read_text())["steps"] if s["step"] == "azure")
    assert [c["kind"] for c in step["changes"] if c["action"] == "update"] == [
        "Microsoft.ContainerService/managedClusters"
    ]

    # Someone changes the storage account in the portal after the review.
    account = next(k for k in azure.resources if "/microsoft.storage/storageaccounts/" in k)
    reviewed = json.loads(json.dumps(azure.resources[account]))
    azure.resources[account]["sku"] = {"name": "Premium_LRS"}
    azure.reset_log()
    stale = run(azure, tls, project.env_dir, yes=True, from_plan=saved)
    assert isinstance(stale.error, ApplyError), stale.text
    message = str(stale.error)
    assert "stale: step azure would now do something else than planned" in message
    assert "now update Microsoft.Storage/storageAccounts" in message
    assert "planned noop Microsoft.Storage/storageAccounts" in message
    assert azure.writes() == []  # no deployment, not even the lock

    # Azure back as reviewed: exactly the plan is applied, the clusters' part only.
    azure.resources[account] = reviewed
    ok = run(azure, tls, project.env_dir, yes=True, from_plan=saved)
    assert ok.error is None, ok.text
    assert _puts(azure) == ["ai4ec-default-clusters"]
    _clean(azure, kube)


# ------------------------------------------------------------------ only what changed


@pytest.mark.parametrize(
    ("change", "part"),
    [("nodeCount", "clusters"), ("storage", "data"), ("apim", "apim-service")],
)
def test_a_change_to_one_part_puts_that_deployment_only(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project, change: str, part: str
) -> None:
    """AKS, the data services and API Management are separate deployments: what-if
    decides which to PUT (the ARM fake counts PUTs), so a change to one never re-PUTs
    the others, and the first run PUT each exactly once."""
    azure, kube = fakes
    template = synthetic_template(project.platform_file)
    write_template(project.env_dir, template)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    first = _puts(azure)
    assert sorted(first) == sorted(set(first))  # each deployment once
    assert len(first) == 6
    azure.reset_log()
    if change == "nodeCount":
        write_template(project.env_dir, template, {"nodeCount": 3})
    else:
        kind = {
            "storage": "Microsoft.Storage/storageAccounts",
            "apim": "Microsoft.ApiManagement/service",
        }[change]
        res = next(r for r in template["resources"] if r["type"] == kind)
        res["sku"] = {"name": "Premium_LRS" if change == "storage" else "Standard", "capacity": 1}
        write_template(project.env_dir, template)
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert _puts(azure) == [f"ai4ec-default-{part}"]
    _clean(azure, kube)
