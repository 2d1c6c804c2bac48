"""``ai4ec destroy`` and re-creating a platform after it, end to end.

The real azure-mgmt-resource / azure-core / kubernetes clients run against the local
HTTPS fakes: :class:`lifecycle.FakeArmLifecycle` (ARM as in ``support.py``, plus
deletion, deployment ``outputResources`` and Key Vault soft delete, refusing a plain
create over a soft-deleted vault name with ``ConflictError`` as Azure does) and
``support.FakeKube`` (a kube-apiserver that records server-side apply field managers).
No Azure, no cluster: there is no offline ARM or kube-apiserver to run instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from ai4ec.apply import Console
from ai4ec.apply.destroy import DestroyResult, run_destroy
from ai4ec.errors import ApplyError
from ai4ec.pipeline import check_platform, require_ok

from .conftest import (
    SUBSCRIPTION,
    Project,
    fake_outputs,
    options,
    run,
    synthetic_template,
    write_template,
)
from .lifecycle import SOFT_DELETED_MESSAGE, FakeArmLifecycle
from .support import FakeCredential, FakeKube, Tls, applied_by

ROLE = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def life(tls: Tls) -> Iterator[tuple[FakeArmLifecycle, FakeKube]]:
    azure = FakeArmLifecycle(tls, SUBSCRIPTION)
    kube = FakeKube(tls)
    azure.kube = kube
    azure.output_values = fake_outputs()
    yield azure, kube
    azure.close()
    kube.close()


def lifecycle_template(platform_file: Path, purge_protection: bool) -> dict[str, Any]:
    """The synthetic template plus what destroy must order: a plan, a vault, a role."""
    p = require_ok(check_platform(platform_file))[0]
    kv = p.azure.key_vault.name
    tpl = synthetic_template(platform_file)
    tpl["parameters"]["vaultCreateMode"] = {
        "type": "string",
        "defaultValue": "default",
        "allowedValues": ["default", "recover"],
    }
    props: dict[str, Any] = {
        "createMode": "[parameters('vaultCreateMode')]",
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": 90,
    }
    if purge_protection:
        props["enablePurgeProtection"] = True
    head = [
        {
            "type": "Microsoft.Web/serverfarms",
            "apiVersion": "2025-03-01",
            "name": f"{p.azure.functions.app_name}-plan",
            "location": "[parameters('location')]",
            "sku": {"name": "EP1"},
        },
        {
            "type": "Microsoft.KeyVault/vaults",
            "apiVersion": "2026-02-01",
            "name": kv,
            "location": "[parameters('location')]",
            "properties": props,
        },
    ]
    role = {
        "type": "Microsoft.Authorization/roleAssignments",
        "apiVersion": "2022-04-01",
        "name": ROLE,
        "scope": f"Microsoft.KeyVault/vaults/{kv}",
        "properties": {"principalId": "site-principal", "principalType": "ServicePrincipal"},
    }
    tpl["resources"] = [*head, *tpl["resources"], role]
    return tpl


def _setup(project: Project, purge_protection: bool) -> None:
    write_template(project.env_dir, lifecycle_template(project.platform_file, purge_protection))


def _destroy(
    azure: FakeArmLifecycle, tls: Tls, env_dir: Path, answer: bool | None = None, **kw: Any
) -> tuple[DestroyResult | None, list[str], Exception | None]:
    lines: list[str] = []

    def confirm(question: str) -> bool:
        lines.append(f"? {question}")
        return bool(answer)

    console = Console(lambda text, err: lines.append(("E " if err else "") + text))
    try:
        return run_destroy(options(azure, tls, env_dir, **kw), console, confirm), lines, None
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        lines.append(f"ERROR {exc}")
        return None, lines, exc


def _labels() -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "ai4ec",
        "ai4ec.io/platform": "myplat",
        "ai4ec.io/environment": "default",
    }


def _deletes(azure: FakeArmLifecycle) -> list[str]:
    out = []
    for r in azure.requests:
        if r.method == "DELETE" and "/deployments/" not in r.path:
            tail = r.path.rpartition("/providers/")[2]
            out.append(tail)
    return out


def test_destroy_plan_then_destroy_in_reverse_order_then_apply_again(
    life: tuple[FakeArmLifecycle, FakeKube], tls: Tls, project: Project
) -> None:
    """apply, destroy --plan (writes nothing), destroy (reverse order), apply re-creates all."""
    azure, kube = life
    _setup(project, purge_protection=False)
    first = run(azure, tls, project.env_dir, yes=True)
    assert first.error is None, first.text
    kv = next(k for k in azure.resources if "/microsoft.keyvault/vaults/" in k).rpartition("/")[2]
    # Labelled like ai4ec's objects, but Helm wrote it: destroy keeps it.
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
    ours = {k for k, o in kube.objects.items() if k[1] != "Namespace" and k[3] != "helm-installed"}
    ours = {k for k in ours if (kube.objects[k]["metadata"].get("managedFields") or [])}
    assert ours, "apply should have applied objects"
    azure.reset_log()
    kube.reset_log()

    planned, lines, error = _destroy(azure, tls, project.env_dir, plan=True)
    assert error is None, "\n".join(lines)
    assert planned is not None and planned.pending > 0
    assert azure.writes() == [] and kube.writes() == []
    text = "\n".join(lines)
    assert "    - Microsoft.EventGrid/topics/eventSubscriptions" in text
    assert f"- Microsoft.KeyVault/vaults {kv} (then purged: purge protection is off)" in text
    assert "Namespace ai4ec kept" in text
    assert "helm-installed" not in text

    declined, lines, error = _destroy(azure, tls, project.env_dir, answer=False)
    assert isinstance(error, ApplyError) and "nothing was deleted" in str(error)
    assert azure.writes() == [] and kube.writes() == []

    done, lines, error = _destroy(azure, tls, project.env_dir, answer=True)
    assert error is None, "\n".join(lines)
    assert done is not None and done.purged == [kv]
    assert azure.violations == [] and kube.violations == []
    # Kubernetes first (everything ai4ec applied, nothing Helm wrote, no Namespace) ...
    assert all(k not in kube.objects for k in ours)
    assert kube.get_object("Deployment", "ai4ec", "helm-installed") is not None
    assert kube.get_object("Namespace", "", "ai4ec") is not None
    # ... then the Event Grid subscription, APIM's objects, the role, the resources.
    deletes = _deletes(azure)
    kinds = [d.split("/")[0] + "/" + d.split("/")[1] for d in deletes]
    assert (
        deletes[0].startswith("Microsoft.EventGrid/topics/") and "eventSubscriptions" in deletes[0]
    )
    apim_children = [
        d for d in deletes if d.startswith("Microsoft.ApiManagement/service/") and d.count("/") == 4
    ]
    assert {d.split("/")[3] for d in apim_children} == {"namedValues", "apis"}
    assert deletes.index(apim_children[-1]) < kinds.index("Microsoft.Authorization/roleAssignments")
    top = [d for d in deletes if d.count("/") == 2 and "roleAssignments" not in d]
    assert [t.split("/")[1] for t in top] == [
        "service",
        "sites",
        "topics",
        "managedClusters",
        "storageAccounts",
        "vaults",
        "serverfarms",
    ]
    assert azure.purged == [kv.lower()] and azure.deleted_vaults == {}
    # Nothing of the build is left, and neither are apply's records or its lock.
    assert [k for k in azure.resources if "myplat" in k] == []
    assert azure.deployments == {}
    tags = azure.groups["my-platform-rg"]["tags"]
    assert not [k for k in tags if k.startswith("ai4ec-apply")], tags
    assert "destroy complete:" in lines[-3] or any("destroy complete:" in x for x in lines)

    again = run(azure, tls, project.env_dir, yes=True)
    assert again.error is None, again.text
    assert "no changes since the last apply" not in again.text
    assert any("/microsoft.keyvault/vaults/" in k for k in azure.resources)
    assert azure.violations == []


def test_recreate_recovers_a_soft_deleted_vault_with_purge_protection(
    life: tuple[FakeArmLifecycle, FakeKube], tls: Tls, project: Project
) -> None:
    """Purge protection: destroy leaves the vault soft-deleted, apply recovers it."""
    azure, _kube = life
    _setup(project, purge_protection=True)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    done, lines, error = _destroy(azure, tls, project.env_dir, yes=True)
    assert error is None, "\n".join(lines)
    assert done is not None and done.purged == [] and azure.purged == []
    assert len(azure.deleted_vaults) == 1
    kv = next(iter(azure.deleted_vaults))
    assert any("kept soft-deleted (purge protection)" in x for x in lines)

    # A plain create over the soft-deleted name is what Azure refuses...
    plain = run(azure, tls, project.env_dir, yes=True, parameters=("vaultCreateMode=default",))
    assert isinstance(plain.error, ApplyError)
    assert "ConflictError" in str(plain.error) and SOFT_DELETED_MESSAGE in str(plain.error)
    # ... and apply, left to itself, finds the deleted vault and recovers it.
    again = run(azure, tls, project.env_dir, yes=True)
    assert again.error is None, again.text
    assert f"Key Vault {kv}" in again.text.lower() or "vaultCreateMode=recover" in again.text
    assert azure.recovered == [kv] and azure.deleted_vaults == {}
    data = azure.deployments["ai4ec-default-data"]["params"]  # the part holding the vault
    assert data["vaultCreateMode"] == "recover"
    assert azure.violations == [], azure.violations


def test_destroy_purges_a_vault_an_earlier_destroy_left_soft_deleted(
    life: tuple[FakeArmLifecycle, FakeKube], tls: Tls, project: Project
) -> None:
    """A soft-deleted vault without purge protection (e.g. the group was deleted by hand)."""
    azure, _kube = life
    _setup(project, purge_protection=False)
    p = require_ok(check_platform(project.platform_file))[0]
    name = p.azure.key_vault.name
    for r in lifecycle_template(project.platform_file, False)["resources"]:
        azure.type_api[r["type"].lower()] = r["apiVersion"]  # as if deployed once
    azure.groups["my-platform-rg"] = {"location": "eastus", "tags": {}}
    azure.deleted_vaults[name.lower()] = {"location": "eastus", "purgeProtectionEnabled": False}
    planned, lines, error = _destroy(azure, tls, project.env_dir, plan=True)
    assert error is None, "\n".join(lines)
    assert f"    - deleted Key Vault {name} (purge)" in lines
    done, lines, error = _destroy(azure, tls, project.env_dir, yes=True)
    assert error is None, "\n".join(lines)
    assert done is not None and done.purged == [name] and azure.deleted_vaults == {}
    assert azure.violations == []


def test_lifecycle_fake_is_as_strict_as_azure(
    life: tuple[FakeArmLifecycle, FakeKube], tls: Tls
) -> None:
    """The fake refuses what Azure refuses: purge under protection, recover of nothing."""
    import requests

    azure, _kube = life
    azure.type_api["microsoft.keyvault/vaults"] = "2026-02-01"
    azure.deleted_vaults["kv1"] = {"location": "eastus", "purgeProtectionEnabled": True}
    token = FakeCredential().get_token("https://management.core.windows.net/.default").token
    url = (
        f"{azure.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/"
        "eastus/deletedVaults/kv1/purge?api-version=2026-02-01"
    )
    r = requests.post(
        url, headers={"Authorization": f"Bearer {token}"}, verify=str(tls.ca_file), timeout=10
    )
    assert r.status_code == 409 and "purge protection" in r.json()["error"]["message"]
    assert "kv1" in azure.deleted_vaults
    assert azure.refuse("rg", {"type": "Microsoft.KeyVault/vaults", "name": "kv1"}, {}) == (
        "ConflictError",
        SOFT_DELETED_MESSAGE,
    )
    refused = azure.refuse(
        "rg",
        {"type": "Microsoft.KeyVault/vaults", "name": "kv2"},
        {"properties": {"createMode": "recover"}},
    )
    assert refused is not None and refused[0] == "BadRequest"
    unknown = requests.delete(
        f"{azure.url}/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/"
        "Microsoft.Foo/bars/x?api-version=1",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(tls.ca_file),
        timeout=10,
    )
    assert unknown.status_code == 404
    assert azure.violations  # an api-version no template used is a violation
    azure.violations.clear()


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_life(
    life: tuple[FakeArmLifecycle, FakeKube], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeArmLifecycle, FakeKube]:
    import azure.identity

    azure_fake, _kube = life
    azure_fake.deploy_polls = 0  # the CLI polls at production pace: answer synchronously
    azure_fake.delete_polls = 0
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: FakeCredential())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_file))
    return life


def _cli(azure: FakeArmLifecycle, *args: str, stdin: str | None = None) -> click.testing.Result:
    from ai4ec.cli.app import cli

    return CliRunner().invoke(
        cli, ["destroy", "out", "--arm-endpoint", azure.url, *args], input=stdin
    )


def test_cli_destroy_refuses_without_yes_off_a_terminal(
    cli_life: tuple[FakeArmLifecycle, FakeKube], tls: Tls, project: Project
) -> None:
    """No terminal and no --yes: a clear error, exit 1, and not one request sent."""
    azure, kube = cli_life
    result = _cli(azure)
    assert result.exit_code == 1
    assert "refusing to destroy without confirmation" in result.stderr
    assert "--yes" in result.stderr and "Traceback" not in result.output
    assert azure.requests == [] and kube.requests == []


def test_cli_destroy_plan_confirmation_and_yes(
    cli_life: tuple[FakeArmLifecycle, FakeKube],
    tls: Tls,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--plan lists and exits 0; on a terminal the environment name must be typed."""
    azure, kube = cli_life
    _setup(project, purge_protection=False)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    azure.reset_log()
    kube.reset_log()
    plan = _cli(azure, "--plan")
    assert plan.exit_code == 0, plan.output
    assert "- Microsoft.Web/sites myplat-tasks-e61b8" in plan.stdout
    assert azure.writes() == []

    monkeypatch.setattr("ai4ec.cli.destroy._on_terminal", lambda: True)
    wrong = _cli(azure, stdin="prod\n")
    assert wrong.exit_code == 1
    assert "type the environment name (default)" in wrong.stderr
    assert "destroy not confirmed; nothing was deleted" in wrong.stderr
    assert azure.writes() == [] and kube.writes() == []

    typed = _cli(azure, stdin="default\n")
    assert typed.exit_code == 0, typed.output
    assert "destroy complete:" in typed.stdout
    assert [k for k in azure.resources if "myplat" in k] == []

    # Nothing left: a second destroy with --yes has nothing to delete and succeeds.
    again = _cli(azure, "--yes")
    assert again.exit_code == 0, again.output
    assert "destroy complete: 0 removed" in again.stdout
    assert azure.violations == [] and kube.violations == []


def test_cli_destroy_bad_build_dir_is_a_clear_error(
    cli_life: tuple[FakeArmLifecycle, FakeKube], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that is no build: error naming it, exit 1, no traceback."""
    azure, _kube = cli_life
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    result = _cli(azure, "--yes")
    assert result.exit_code == 1
    assert "error" in result.stderr.lower() and "Traceback" not in result.output
    assert json  # keep the import for readers: outputs are JSON documents
