"""The ``ai4ec apply`` command line: options, exit codes, prompts, missing extras.

The command runs the real SDK clients against the local HTTPS fakes of ``support.py``
(ThreadingHTTPServer on 127.0.0.1 free ports): DefaultAzureCredential is replaced by a
fake credential and the fakes' CA is trusted through REQUESTS_CA_BUNDLE, the variable
azure-core's requests transport honours, exactly as behind a TLS-inspecting proxy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from ai4ec.cli.apply import _contexts, apply

from .conftest import Project
from .support import TOKENS, FakeAzure, FakeCredential, FakeKube, Tls
from .test_apply import _seed_prune_candidates

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_env(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeAzure, FakeKube]:
    import azure.identity

    azure_fake, _kube = fakes
    azure_fake.deploy_polls = 0  # the CLI polls at production pace: answer synchronously
    azure_fake.kudu_polls = 0
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kw: FakeCredential())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_file))
    return fakes


def _invoke(azure: FakeAzure, *args: str, stdin: str | None = None) -> click.testing.Result:
    group = click.Group(commands={"apply": apply})
    return CliRunner().invoke(
        group, ["apply", "out", "--arm-endpoint", azure.url, *args], input=stdin
    )


def test_cli_plan_json_and_detailed_exitcode(
    cli_env: tuple[FakeAzure, FakeKube], project: Project
) -> None:
    """--plan --format json --detailed-exitcode (local HTTPS fakes): exit 2, JSON, no write."""
    azure, kube = cli_env
    result = _invoke(azure, "--plan", "--format", "json", "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)  # the same versioned schema as `ai4ec diff --format json`
    assert doc["changed"] is True and doc["exitCode"] == 2
    changes = doc["environments"][0]["changes"]
    site = next(c for c in changes if c["kind"] == "Microsoft.Web/sites")
    assert site["name"] == "myplat-tasks-e61b8"
    assert site["action"] == "added" and site["layer"] == "azure"
    assert {c["layer"] for c in changes} >= {"azure", "kubernetes"}
    text = _invoke(azure, "--plan")
    assert text.exit_code == 0, text.output
    assert "Plan:" in text.stdout and "Microsoft.Web/sites myplat-tasks-e61b8" in text.stdout
    markdown = _invoke(azure, "--plan", "--format", "markdown")
    assert "<!-- ai4ec-diff -->" in markdown.stdout
    assert azure.writes() == [] and kube.requests == []
    assert "[1/5] azure" in result.stderr  # progress moves to stderr in JSON mode


def test_cli_apply_twice(cli_env: tuple[FakeAzure, FakeKube], project: Project) -> None:
    """Two CLI applies (local HTTPS fakes): everything, then 'no changes' with no write."""
    azure, kube = cli_env
    first = _invoke(azure, "--yes")
    assert first.exit_code == 0, first.output
    assert "apply complete: " in first.stdout
    azure.reset_log()
    kube.reset_log()
    second = _invoke(azure, "--yes")
    assert second.exit_code == 0, second.output
    assert "apply complete: no changes" in second.stdout
    assert azure.writes() == [] and kube.writes() == []
    plan = _invoke(azure, "--plan", "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
    for token in TOKENS.values():
        assert token not in first.output + second.output + plan.output
    assert azure.violations == [] and kube.violations == []


def test_cli_prune_refuses_without_a_terminal(
    cli_env: tuple[FakeAzure, FakeKube], project: Project
) -> None:
    """--prune without --yes in CI (local HTTPS fakes): listed, refused, nothing deleted."""
    azure, kube = cli_env
    assert _invoke(azure, "--yes").exit_code == 0
    _seed_prune_candidates(kube)
    kube.reset_log()
    result = _invoke(azure, "--prune", "-t", "k8s")
    assert result.exit_code == 1
    assert "- VirtualService ai4ec/old-v1 (prune)" in result.stdout
    assert "cannot ask: not a terminal; rerun with --yes" in result.stderr
    assert "error: k8s:main: deletion not confirmed; nothing was deleted" in result.stderr
    assert kube.writes() == []


def test_cli_prune_asks_on_a_terminal(
    cli_env: tuple[FakeAzure, FakeKube], project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--prune on a terminal (local HTTPS fakes): the question is asked; 'y' deletes."""
    azure, kube = cli_env
    assert _invoke(azure, "--yes").exit_code == 0
    _seed_prune_candidates(kube)
    monkeypatch.setattr(
        "ai4ec.cli.apply.sys", SimpleNamespace(stdin=SimpleNamespace(isatty=lambda: True))
    )
    result = _invoke(azure, "--prune", "-t", "k8s", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "delete the 1 object(s) marked '-' above? [y/N]" in result.stderr
    assert kube.get_object("VirtualService", "ai4ec", "old-v1") is None


def test_cli_names_the_missing_extras(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the azure extra (import blocked, no server): a one-line install hint."""
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    result = CliRunner().invoke(click.Group(commands={"apply": apply}), ["apply", "out", "--plan"])
    assert result.exit_code == 1
    assert "pip install 'ai4ec[azure,k8s]'" in result.stderr
    assert "azure.identity is missing" in result.stderr


def test_cli_usage_errors(project: Project) -> None:
    """Bad option values (no server) are rejected by click before anything runs."""
    group = click.Group(commands={"apply": apply})
    assert CliRunner().invoke(group, ["apply", "out", "--target", "dns"]).exit_code == 2
    assert CliRunner().invoke(group, ["apply", "out", "--cloud", "Mars"]).exit_code == 2
    missing = CliRunner().invoke(group, ["apply", "nowhere", "--plan"])
    assert missing.exit_code == 1
    assert "nowhere is not a build directory" in missing.stderr


def test_context_option_parsing() -> None:
    """--context CLUSTER=CONTEXT or CONTEXT for every cluster (no server)."""
    assert _contexts(("main=aks-prod", "gpu=aks-gpu")) == {"main": "aks-prod", "gpu": "aks-gpu"}
    assert _contexts(("kind-ci",)) == {"": "kind-ci"}


def test_validate_and_apply_import_without_extras() -> None:
    """In a fresh interpreter with azure/kubernetes blocked (no server): validate works,
    and importing the apply command loads neither SDK (the CLI starts fast)."""
    code = (
        "import sys\n"
        "for m in ('azure', 'kubernetes'): sys.modules[m] = None\n"
        "import ai4ec.cli.apply, ai4ec.apply, ai4ec.apply.runner\n"
        "from ai4ec.cli import main\n"
        "main(['validate', 'samples/minimal/platform.yaml'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ai4ec.cli.apply, ai4ec.apply; print(sorted(m for m in sys.modules"
            " if m.split('.')[0] in ('azure', 'kubernetes')))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.strip() == "[]", check.stdout + check.stderr
