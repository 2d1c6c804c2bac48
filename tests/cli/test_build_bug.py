"""A failure of ``build`` on a platform that validated is an ai4ec bug: exit 70, with the hint.

Driven through click's own runner (no :func:`ai4ec.cli.app.main` around it), so the
command class itself must map the failure; a renderer is made to fail by monkeypatching
the name ``render_all`` calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ai4ec.cli import cli
from ai4ec.cli.exits import EXIT_INTERNAL
from ai4ec.errors import Diagnostic, RenderError

from ..conftest import ROOT

MINIMAL = ROOT / "samples" / "minimal" / "platform.yaml"


@pytest.fixture(autouse=True)
def _no_render_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached environment would be served without calling the patched renderer."""
    monkeypatch.setenv("AI4EC_NO_CACHE", "1")


def _chart_rejects(*_args: object, **_kwargs: object) -> None:
    message = "the chart rejected the values of hello-v1: forced by the test"
    raise RenderError(
        message,
        (Diagnostic(code="E-RENDER-CHART", message=message, hint="this is an ai4ec bug"),),
    )


def _crashes(*_args: object, **_kwargs: object) -> None:
    raise KeyError("forced by the test")


@pytest.mark.parametrize("failure", [_chart_rejects, _crashes], ids=["render-error", "crash"])
def test_render_failure_after_validate_exits_70(
    failure: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["validate", str(MINIMAL)]).exit_code == 0
    monkeypatch.setattr("ai4ec.render.render_k8s", failure)
    res = runner.invoke(cli, ["build", str(MINIMAL), "-o", str(tmp_path / "out")])
    assert res.exit_code == EXIT_INTERNAL, res.output
    assert "ai4ec bug" in res.output and "--debug" in res.output
    assert "forced by the test" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("ai4ec.render.render_k8s", _chart_rejects)
    res = CliRunner().invoke(cli, ["--debug", "build", str(MINIMAL), "-o", str(tmp_path / "o")])
    assert res.exit_code == EXIT_INTERNAL
    assert "Traceback" in res.output and "_chart_rejects" in res.output
