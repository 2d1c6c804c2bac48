"""`ai4ec diff` on real git repositories: a sample committed, edited, diffed vs the work tree."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from .conftest import Repo, changes, find, git, run_diff

RepoFactory = Callable[[str], Repo]
HOURS = 730


def _add_api(text: str) -> str:
    return text.replace(
        "\npipelines:\n",
        "\n  - name: tiny\n"
        "    version: v1\n"
        "    image: camera-trap/tiny:1.0.0\n"
        "    mode: async\n"
        "    pool: cpu\n"
        "    endpoints:\n"
        "      - path: /run\n"
        "    products: [public]\n"
        "\npipelines:\n",
    )


def _line_of(repo: Repo, needle: str) -> int:
    lines = repo.file.read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if needle in ln)


def test_unchanged_platform_diffs_empty(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    res = repo.run()
    assert res.exit_code == 0, res.output
    assert "No changes." in res.stdout
    code, report = repo.json()
    assert code == 0 and report["changed"] is False and report["summary"]["total"] == 0


def test_comments_key_order_and_quoting_only(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")

    def reformat(text: str) -> str:
        text = "# a new header comment\n" + text
        text = text.replace(
            "  location: eastus\n  namePrefix: camtrap\n",
            "  namePrefix: 'camtrap'   # quoted, and moved above location\n"
            '  location: "eastus"\n',
        )
        text = text.replace(
            "  cache: {sku: Balanced_B1}     # Azure Managed Redis",
            "  cache:\n    sku: 'Balanced_B1'",
        )
        return text.replace(
            "products: [public, partner]", "products:\n      - public\n      - partner"
        )

    repo.edit(reformat)
    res = repo.run()
    assert res.exit_code == 0, res.output
    assert "No changes." in res.stdout


def test_add_api(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(_add_api)
    code, report = repo.json()
    assert code == 2
    added = {(c["layer"], c["kind"], c["name"]) for c in changes(report) if c["action"] == "added"}
    assert ("kubernetes", "apps/Deployment", "camera-trap/tiny-v1 (main)") in added
    assert (
        "kubernetes",
        "networking.istio.io/VirtualService",
        "camera-trap/tiny-v1 (main)",
    ) in added
    assert ("apim", "policy", "policies/tiny-v1/api") in added
    assert ("functions", "routing api", "tiny-v1") in added
    assert ("azure", "Microsoft.ApiManagement/service/apis", "camtrap-apim-62e62/tiny-v1") in added
    assert report["summary"]["removed"] == 0 and report["summary"]["replaced"] == 0
    # Every added resource is traced to the new API's lines in the working tree.
    start = _line_of(repo, "- name: tiny")
    dep = find(report, "apps/Deployment", "camera-trap/tiny-v1 (main)")
    src = dep["sources"][0]
    assert (src["line"], src["side"], src["change"]) == (start, "head", "added")
    assert src["endLine"] == start + 7 and src["jsonPath"] == "$.apis[3]"
    # The product now lists the API; the policy file is unchanged, the ARM link is new.
    link = find(
        report, "Microsoft.ApiManagement/service/products/apis", "camtrap-apim-62e62/public/tiny-v1"
    )
    assert link["action"] == "added"
    # Adding an API costs nothing by itself (it runs on existing pools).
    assert report["cost"]["delta"] == {"low": 0.0, "high": 0.0}


def test_pool_vm_size_change_is_a_replacement_with_its_cost(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(lambda t: t.replace("vmSize: Standard_DS3_v2", "vmSize: Standard_DS4_v2"))
    code, report = repo.json()
    assert code == 2
    assert report["summary"]["replaced"] == 1 and report["summary"]["total"] == 1
    pool = find(
        report, "Microsoft.ContainerService/managedClusters/agentPools", "camtrap-main-aks/cpu"
    )
    assert pool["action"] == "replaced" and pool["risk"] == "replacement" and pool["destructive"]
    (field,) = pool["fields"]
    assert field == {
        "path": "properties.vmSize",
        "change": "changed",
        "old": "Standard_DS3_v2",
        "new": "Standard_DS4_v2",
        "risk": "replacement",
        "reason": field["reason"],
    }
    assert "recreated" in field["reason"]
    # autoscale 1..5 nodes: DS3_v2 $0.229/h -> DS4_v2 $0.458/h
    cost = pool["cost"]
    assert cost["before"]["low"] == round(1 * 0.229 * HOURS, 2)
    assert cost["before"]["high"] == round(5 * 0.229 * HOURS, 2)
    assert cost["after"]["low"] == round(1 * 0.458 * HOURS, 2)
    assert cost["after"]["high"] == round(5 * 0.458 * HOURS, 2)
    assert cost["delta"] == {
        "low": round(0.229 * HOURS, 2),
        "high": round(5 * 0.229 * HOURS, 2),
    }
    assert report["cost"]["delta"] == cost["delta"]
    assert pool["sources"][0]["line"] == _line_of(repo, "vmSize: Standard_DS4_v2")
    text = repo.run().stdout
    assert "Destructive changes" in text and "-/+" in text
    assert text.index("Destructive changes") < text.index("Environment default")
    assert "1 to replace" in text


def test_spot_pool_cost_is_a_range_and_marked(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(
        lambda t: t.replace("vmSize: Standard_NC24ads_A100_v4", "vmSize: Standard_NC48ads_A100_v4")
    )
    _, report = repo.json()
    pool = find(
        report, "Microsoft.ContainerService/managedClusters/agentPools", "camtrap-main-aks/gpu"
    )
    assert pool["action"] == "replaced"
    after = pool["cost"]["after"]
    assert after["spot"] is True
    # 0..4 spot nodes: nothing when scaled to zero, at most the list price.
    assert (after["low"], after["high"]) == (0.0, round(4 * 7.346 * HOURS, 2))
    assert "spot, price varies" in repo.run().stdout


def test_rename_pipeline_is_one_rename_per_resource(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(lambda t: t.replace("  - name: species\n", "  - name: species-chain\n"))
    code, report = repo.json()
    assert code == 2
    (env,) = report["environments"]
    assert [(r["entity"], r["from"], r["to"]) for r in env["renames"]] == [
        ("pipeline", "species-v1", "species-chain-v1")
    ]
    assert env["renames"][0]["sources"][0]["line"] == _line_of(repo, "- name: species-chain")
    renamed = [c for c in changes(report) if c["action"] == "renamed"]
    assert {c["oldName"] for c in renamed} >= {
        "species-v1",
        "camtrap-apim-62e62/species-v1",
        "policies/species-v1/submit",
    }
    assert env["renames"][0]["resources"] == len(renamed)
    # Nothing of the pipeline is reported as deleted and re-added.
    for c in changes(report):
        assert c["action"] not in ("added", "removed"), (c["action"], c["name"])
    # The path is explicit in the sample, so the renamed API keeps it: no field changes.
    api = find(
        report, "Microsoft.ApiManagement/service/apis", "camtrap-apim-62e62/species-chain-v1"
    )
    assert api["fields"] == [] and api["destructive"]


def test_rename_api_follows_derived_names(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(lambda t: t.replace("  - name: detector-sync\n", "  - name: detector-small\n"))
    _, report = repo.json()
    (env,) = report["environments"]
    assert [(r["from"], r["to"]) for r in env["renames"]] == [
        ("detector-sync-v1", "detector-small-v1")
    ]
    dep = find(report, "apps/Deployment", "camera-trap/detector-small-v1 (main)")
    assert dep["action"] == "renamed" and dep["oldName"] == "camera-trap/detector-sync-v1 (main)"
    # Labels, selectors and the derived path /v1/camera-trap/detector-sync follow the
    # rename, so the Deployment has no other field change.
    assert dep["fields"] == []
    assert not [c for c in changes(report) if c["action"] in ("added", "removed")]


def test_remove_product_is_flagged_as_data_loss(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")

    def drop_public(text: str) -> str:
        start = text.index("  - name: public\n    displayName: Public")
        end = text.index("  - name: partner\n    displayName: Partner")
        text = text[:start] + text[end:]
        return text.replace("products: [public, partner]", "products: [partner]")

    repo.edit(drop_public)
    code, report = repo.json()
    assert code == 2
    product = find(report, "Microsoft.ApiManagement/service/products", "camtrap-apim-62e62/public")
    assert product["action"] == "removed" and product["risk"] == "data-loss"
    assert "subscriptions" in product["reasons"][0]
    src = product["sources"][0]
    assert (
        src["side"] == "base" and src["change"] == "removed" and src["jsonPath"] == "$.products[0]"
    )
    policy = find(report, "policy", "products/public")
    assert policy["action"] == "removed"
    md = repo.run("--format", "markdown").stdout
    assert "> [!WARNING]" in md and "data-loss" in md


def test_base_and_head_refs(repo_factory: RepoFactory) -> None:
    repo = repo_factory("minimal")
    first = git(repo.root, "rev-parse", "HEAD")
    repo.edit(lambda t: re.sub(r"maxReplicas: \d+", "maxReplicas: 9", t, count=1))
    second = repo.commit()
    assert repo.run().exit_code == 0  # working tree == HEAD
    res = repo.run("--base", first, "--head", second)
    assert res.exit_code == 2, res.output
    assert "maxReplicaCount" in res.stdout
    assert repo.run("--base", second, "--head", second).exit_code == 0
    res = repo.run("--base", "no-such-ref")
    assert res.exit_code == 1 and "no such commit" in res.output


def test_default_base_is_where_the_branch_left_origin(repo_factory: RepoFactory) -> None:
    repo = repo_factory("minimal")
    base = git(repo.root, "rev-parse", "HEAD")
    git(repo.root, "update-ref", "refs/remotes/origin/main", base)
    git(repo.root, "checkout", "-qb", "feature")
    repo.edit(lambda t: re.sub(r"maxReplicas: \d+", "maxReplicas: 9", t, count=1))
    repo.commit()
    _, report = repo.json()
    assert report["base"]["commit"] == base and report["base"]["label"] == "origin/main"
    assert report["changed"] is True


def test_platform_file_added_at_head(repo_factory: RepoFactory) -> None:
    repo = repo_factory("minimal")
    new = repo.root / "other" / "platform.yaml"
    new.parent.mkdir()
    new.write_text(repo.file.read_text())
    res = run_diff("-f", str(new), "--format", "json")
    assert res.exit_code == 2
    assert "does not exist at HEAD" in res.stdout
    report = json.loads(res.stdout)
    assert {c["action"] for c in changes(report)} == {"added"}


def test_openapi_file_is_read_from_the_base_ref(repo_factory: RepoFactory) -> None:
    repo = repo_factory("minimal")
    spec = {
        "openapi": "3.0.1",
        "info": {"title": "hello", "version": "1"},
        "paths": {"/echo": {"post": {"responses": {"200": {"description": "ok"}}}}},
    }
    (repo.root / "openapi.json").write_text(json.dumps(spec))
    repo.edit(
        lambda t: t.replace("  - name: hello\n", "  - name: hello\n    openapi: openapi.json\n")
    )
    git(repo.root, "add", ".")
    repo.commit()
    assert repo.run().exit_code == 0
    # Only the referenced file changes: the base must be built from its committed
    # version (reading it from disk would make both sides equal).
    spec["info"]["title"] = "hello, renamed"
    (repo.root / "openapi.json").write_text(json.dumps(spec))
    code, report = repo.json()
    assert code == 2
    api = find(report, "Microsoft.ApiManagement/service/apis", "myplat-apim-e61b8/hello-v1")
    assert [f["path"] for f in api["fields"]] == ["properties.value"]


def test_errors_exit_1(repo_factory: RepoFactory, tmp_path) -> None:
    repo = repo_factory("minimal")
    repo.edit(lambda t: t.replace("apiVersion: ai4ec/v1", "apiVersion: ai4ec/v9"))
    res = repo.run()
    assert res.exit_code == 1
    assert "error[" in res.stderr
    # An invalid base is reported as such, without a snippet from the working tree.
    repo.commit("broken")
    repo.edit(lambda t: t.replace("ai4ec/v9", "ai4ec/v1"))
    res = repo.run()
    assert res.exit_code == 1 and "(at HEAD)" in res.stderr
    outside = tmp_path / "nogit"
    outside.mkdir()
    (outside / "platform.yaml").write_text("x: 1\n")
    res = run_diff("-f", str(outside / "platform.yaml"))
    assert res.exit_code == 1 and "not in a git repository" in res.stderr
    assert repo.run("-e", "prod", "--all-envs").exit_code == 1
    assert run_diff("only-one-dir").exit_code == 1


# ----------------------------------------------------------------------- environments


#: The legacy cache, whose tiers and prices the diff knows (Azure Managed Redis has none
#: in prices.json yet); the tests below commit it as their base first.
LEGACY_PROD_CACHE = "cache: {kind: legacy, sku: Standard, capacity: 2}"


def _legacy_base(repo: Repo, managed: str, legacy: str) -> None:
    repo.edit(lambda t: t.replace(managed, legacy))
    repo.commit("legacy cache")


def _prod_edit(text: str) -> str:
    text = text.replace(LEGACY_PROD_CACHE, "cache: {kind: legacy, sku: Basic, capacity: 2}")
    return text.replace(
        "          - name: gpu\n            autoscale: {min: 1, max: 8}",
        "          - name: gpu\n"
        "            vmSize: Standard_NC8as_T4_v3\n"
        "            autoscale: {min: 1, max: 8}",
    )


def test_multi_env_prod_overlay(repo_factory: RepoFactory) -> None:
    repo = repo_factory("multi-env")
    _legacy_base(repo, "cache: {sku: Balanced_B3}", LEGACY_PROD_CACHE)
    repo.edit(_prod_edit)
    code, report = repo.json("-e", "prod")
    assert code == 2
    assert [e["name"] for e in report["environments"]] == ["prod"]
    redis = find(report, "Microsoft.Cache/redis", "wildlife-prod-redis-4704a")
    assert redis["action"] == "replaced" and redis["risk"] == "data-loss"
    # Standard C2 -> Basic C2
    assert redis["cost"]["delta"]["low"] == round((0.090 - 0.225) * HOURS, 2)
    # The source is the overlay line, not the base section.
    assert redis["sources"][0]["line"] == _line_of(repo, "cache: {kind: legacy, sku: Basic")
    pool = find(
        report,
        "Microsoft.ContainerService/managedClusters/agentPools",
        "wildlife-prod-main-aks/gpu",
    )
    assert pool["action"] == "replaced"
    assert pool["sources"][0]["line"] == _line_of(repo, "vmSize: Standard_NC8as_T4_v3")
    # dev is untouched by a prod-only overlay change.
    assert repo.run("-e", "dev").exit_code == 0


def test_multi_env_all_envs(repo_factory: RepoFactory) -> None:
    repo = repo_factory("multi-env")
    _legacy_base(repo, "cache: {sku: Balanced_B3}", LEGACY_PROD_CACHE)
    repo.edit(_prod_edit)
    code, report = repo.json("--all-envs")
    assert code == 2
    by_env = {e["name"]: e for e in report["environments"]}
    assert set(by_env) == {"dev", "prod"}
    assert by_env["dev"]["changes"] == [] and len(by_env["prod"]["changes"]) == 2
    assert report["summary"]["replaced"] == 2
    text = repo.run("--all-envs").stdout
    assert "Environment dev" in text and "Environment prod" in text
    # Base edit: both environments change.
    repo.edit(lambda t: t.replace("image: detector:4.1.0", "image: detector:4.2.0"))
    _, report = repo.json()
    assert all(
        any(c["kind"] == "apps/Deployment" for c in e["changes"]) for e in report["environments"]
    )
    assert repo.run("-e", "staging").exit_code == 1


def test_environment_added_at_head(repo_factory: RepoFactory) -> None:
    repo = repo_factory("multi-env")
    repo.edit(
        lambda t: t.replace(
            "  dev: {}\n", "  dev: {}\n  qa:\n    azure: {resourceGroup: wildlife-qa-rg}\n"
        )
    )
    code, report = repo.json("-e", "qa")
    assert code == 2
    (env,) = report["environments"]
    assert env["name"] == "qa" and {c["action"] for c in env["changes"]} == {"added"}
    src = env["changes"][0]["sources"][0]
    assert src["jsonPath"] == "$.environments.qa" and src["line"] == _line_of(repo, "  qa:")


def test_each_change_names_its_own_cause(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    _legacy_base(
        repo,
        "cache: {sku: Balanced_B1}     # Azure Managed Redis",
        "cache: {kind: legacy, sku: Standard, capacity: 1}",
    )
    repo.edit(
        lambda t: (
            t.replace("vmSize: Standard_NC24ads_A100_v4", "vmSize: Standard_NC48ads_A100_v4")
            .replace("  - name: species\n", "  - name: species-chain\n")
            .replace(
                "cache: {kind: legacy, sku: Standard, capacity: 1}",
                "cache: {kind: legacy, sku: Standard, capacity: 2}",
            )
        )
    )
    _, report = repo.json()
    pool_line = _line_of(repo, "vmSize: Standard_NC48ads_A100_v4")
    rename_line = _line_of(repo, "- name: species-chain")
    cache_line = _line_of(repo, "capacity: 2}")

    def lines(kind: str, name: str) -> set[int]:
        return {s["line"] for s in find(report, kind, name)["sources"]}

    agent = "Microsoft.ContainerService/managedClusters/agentPools"
    assert lines(agent, "camtrap-main-aks/gpu") == {pool_line}
    assert lines("Microsoft.Cache/redis", "camtrap-redis-62e62") == {cache_line}
    # detector-v1 runs on the gpu pool and is a stage of the pipeline; its objects were
    # relabelled by the rename, not by the pool's VM size.
    assert lines("apps/Deployment", "camera-trap/detector-v1 (main)") == {rename_line}
    redis = find(report, "Microsoft.Cache/redis", "camtrap-redis-62e62")
    assert redis["action"] == "changed" and redis["risk"] == "disruption"
    assert not redis["destructive"]


def test_registry_name_override_loses_the_images(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(
        lambda t: t.replace(
            "registry: {sku: Standard}", "registry: {sku: Standard, name: ctimages}"
        )
    )
    _, report = repo.json()
    acr = find(report, "Microsoft.ContainerRegistry/registries", "ctimages")
    assert acr["action"] == "renamed" and acr["oldName"] == "camtrapacr62e62"
    assert acr["risk"] == "data-loss" and "images" in acr["reasons"][0]
    assert acr["sources"][0]["jsonPath"] == "$.azure.registry.name"
    assert report["summary"]["destructive"] >= 1


def test_pool_rename_recreates_the_pool(repo_factory: RepoFactory) -> None:
    repo = repo_factory("multi-env")
    repo.edit(
        lambda t: t.replace(
            "      - name: cpu\n        vmSize", "      - name: general\n        vmSize"
        )
    )
    # the prod overlay names the pool too
    repo.edit(lambda t: t.replace("          - name: cpu\n", "          - name: general\n"))
    code, report = repo.json("-e", "dev")
    assert code == 2
    pool = find(
        report,
        "Microsoft.ContainerService/managedClusters/agentPools",
        "wildlife-dev-main-aks/general",
    )
    assert pool["action"] == "renamed" and pool["destructive"]
    assert pool["oldName"] == "wildlife-dev-main-aks/cpu"


def test_name_prefix_change_reads_as_renames(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(lambda t: t.replace("namePrefix: camtrap", "namePrefix: ctrap"))
    _, report = repo.json()
    azure = [c for c in changes(report) if c["layer"] == "azure"]
    bad = [
        (c["kind"], c.get("name"), c["action"])
        for c in azure
        if c["action"] in ("added", "removed")
    ]
    assert azure and not bad, bad
    storage = find(report, "Microsoft.Storage/storageAccounts", "ctrapst62e62")
    assert storage["action"] == "renamed" and storage["risk"] == "data-loss"
    secrets = [c for c in azure if c["kind"] == "Microsoft.KeyVault/vaults/secrets"]
    assert secrets and all(c["action"] == "renamed" for c in secrets)
    # The Key Vault's new name reaches the cluster's secret providers: a real change.
    spc = find(
        report, "secrets-store.csi.x-k8s.io/SecretProviderClass", "camera-trap/ai4ec-runtime (main)"
    )
    assert spc["action"] == "changed"
    assert any(f["path"] == "spec.parameters.keyvaultName" for f in spc["fields"])


def test_platform_file_as_the_argument(repo_factory: RepoFactory) -> None:
    """`ai4ec diff samples/x/platform.yaml --base HEAD` compares that file across refs."""
    repo = repo_factory("camera-trap")
    repo.edit(_add_api)
    res = run_diff(str(repo.file), "--base", "HEAD", "--format", "json")
    assert res.exit_code == 2, res.output
    assert json.loads(res.stdout)["changed"] is True


def test_lone_directory_or_two_platform_files_refused(repo_factory: RepoFactory) -> None:
    """A directory alone, or a file argument disagreeing with -f, is a usage error, not a guess."""
    repo = repo_factory("camera-trap")
    res = run_diff(str(repo.root))
    assert res.exit_code == 1 and "is a directory" in res.output
    res = run_diff(str(repo.file), "-f", "other.yaml")
    assert res.exit_code == 1 and "two platform files" in res.output
