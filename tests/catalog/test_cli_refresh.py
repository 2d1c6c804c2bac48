"""``ai4ec catalog refresh`` through click's runner, against the local ARM fake.

There is no Azure Resource Manager offline: the command's real SDK clients talk to
test_live's :class:`FakeArm` (a local HTTPS server that answers the ARM reads the way ARM
does and refuses what ARM refuses, recording violations). As in apply's CLI tests,
DefaultAzureCredential is replaced by a fake credential and the fake's CA is trusted
through REQUESTS_CA_BUNDLE; the command signs in through apply's Azure wrapper, which
first reads the custom endpoint's ``/metadata/endpoints`` (served here, as ARM does).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ai4ec.catalog import read_catalog
from ai4ec.catalog.data import catalog_path
from ai4ec.cli import cli

from ..apply.support import ARM_AUDIENCE, FakeCredential, Request, Response, Tls, make_tls
from .test_live import LOCATION, SUB, FakeArm


class MeteredArm(FakeArm):
    """test_live's ARM plus the unauthenticated cloud metadata a custom endpoint serves."""

    def handle(self, req: Request) -> Response:
        if req.path == "/metadata/endpoints":
            return Response(
                200,
                {
                    "authentication": {
                        "loginEndpoint": "https://login.example.test/",
                        "audiences": [ARM_AUDIENCE],
                    }
                },
            )
        return super().handle(req)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def arm(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> Iterator[MeteredArm]:
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: FakeCredential())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_file))
    monkeypatch.setenv("AI4EC_TODAY", "2026-12-05")
    server = MeteredArm(tls)
    yield server
    server.close()


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    target = tmp_path / "azure-catalog.json"
    shutil.copy(catalog_path(), target)
    return target


def _refresh(arm: MeteredArm, path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            "catalog",
            "refresh",
            "--subscription",
            SUB,
            "--location",
            LOCATION,
            "--arm-endpoint",
            arm.url,
            "--file",
            str(path),
            *args,
        ],
    )


def test_plan_prints_changes_and_writes_nothing(arm: MeteredArm, catalog_file: Path) -> None:
    before = catalog_file.read_bytes()
    result = _refresh(arm, catalog_file, "--plan")
    assert result.exit_code == 0, result.output
    assert "change(s) planned, nothing written" in result.output
    assert "added VM size Standard_NC8ads_A10_v4" in result.output  # only the fake has it
    assert catalog_file.read_bytes() == before
    assert arm.violations == []
    reads = {r.path.rsplit("/", 1)[-1] for r in arm.requests if r.method == "GET"}
    assert {"skus", "kubernetesVersions", "meshRevisionProfiles", "locations"} <= reads
    assert {r.method for r in arm.requests} == {"GET"}


def test_refresh_writes_a_valid_catalog_dated_today(arm: MeteredArm, catalog_file: Path) -> None:
    result = _refresh(arm, catalog_file)
    assert result.exit_code == 0, result.output
    assert "written (taken 2026-12-05)" in result.output
    cat = read_catalog(catalog_file)
    assert str(cat.taken_on) == "2026-12-05"
    assert "Standard_NC8ads_A10_v4" in cat.vm_sizes
    assert arm.violations == []
    # A second refresh finds nothing new and leaves the file byte-identical.
    written = catalog_file.read_bytes()
    again = _refresh(arm, catalog_file)
    assert again.exit_code == 0, again.output
    assert "up to date" in again.output
    assert catalog_file.read_bytes() == written


def test_refused_call_is_a_user_error_in_the_services_words(
    arm: MeteredArm, catalog_file: Path
) -> None:
    before = catalog_file.read_bytes()
    result = CliRunner().invoke(
        cli,
        [
            "catalog",
            "refresh",
            "--subscription",
            SUB,
            "--location",
            "atlantis",
            "--arm-endpoint",
            arm.url,
            "--file",
            str(catalog_file),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "atlantis" in result.output
    assert catalog_file.read_bytes() == before


def test_a_bad_today_is_refused(
    arm: MeteredArm, catalog_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI4EC_TODAY", "soon")
    result = _refresh(arm, catalog_file, "--plan")
    assert result.exit_code == 1
    assert "AI4EC_TODAY" in result.output
