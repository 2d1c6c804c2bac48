"""``apply --plan`` runs the catalog rules live: sizes, Kubernetes, mesh revisions, quota.

The real azure-mgmt-compute / azure-mgmt-containerservice clients run inside the CLI
against the apply fake (``support.FakeAzure``), whose ``catalog_reads`` answers the four
ARM reads and refuses a wrong api-version, ``$filter`` or location (catalog_reads.py);
there is no offline Azure to ask instead.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ai4ec.cli.apply import apply

from .conftest import Project
from .support import FakeAzure, FakeCredential, FakeKube, Tls


@pytest.fixture
def cli_env(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeAzure, FakeKube]:
    import azure.identity

    azure_fake, _kube = fakes
    azure_fake.deploy_polls = 0
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: FakeCredential())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_file))
    return fakes


def _plan(azure: FakeAzure, *args: str) -> click.testing.Result:
    group = click.Group(commands={"apply": apply})
    return CliRunner().invoke(group, ["apply", "out", "--arm-endpoint", azure.url, "--plan", *args])


def test_plan_live_checks_clean(cli_env: tuple[FakeAzure, FakeKube], project: Project) -> None:
    """The region offers everything the sample needs: the checks say so, exit 0."""
    azure, _kube = cli_env
    result = _plan(azure)
    assert result.exit_code == 0, result.output
    assert "everything the build needs is offered, within quota" in result.stderr
    reads = {
        r.path.rpartition("/")[2]
        for r in azure.requests
        if "/resourceGroups/" not in r.path and "/providers/Microsoft.C" in r.path
    }
    assert reads == {"skus", "kubernetesVersions", "meshRevisionProfiles"}  # no GPU pool
    assert azure.violations == [] and azure.writes() == []


def test_plan_live_checks_fail_the_plan(
    cli_env: tuple[FakeAzure, FakeKube], project: Project
) -> None:
    """A restricted size, a version and a revision AKS dropped: listed, exit 1."""
    azure, _kube = cli_env
    offer = azure.catalog_reads
    offer.restricted.add("Standard_DS2_v2")
    offer.versions.remove("1.35")
    offer.revisions.remove("asm-1-30")
    result = _plan(azure, "--format", "json")
    assert result.exit_code == 1, result.output
    err = result.stderr
    assert (
        "error E-AZ-VM-SIZE: cluster main, pool cpu: VM size Standard_DS2_v2 is not offered to "
        "this subscription in eastus (live resource SKUs)"
    ) in err
    assert "error E-AZ-K8S-VERSION: cluster main: Kubernetes 1.35 is not offered" in err
    assert "error E-AZ-MESH-REVISION: cluster main: Istio add-on revision asm-1-30" in err
    assert "the live checks found 3 problem(s)" in err
    assert '"environments"' in result.stdout  # the plan itself is still printed
    assert azure.violations == [] and azure.writes() == []
    skipped = _plan(azure, "--no-live-checks")
    assert skipped.exit_code == 0, skipped.output
    assert "live checks" not in skipped.stderr
