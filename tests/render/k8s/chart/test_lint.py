"""helm lint --strict (Helm v4 SDK) is clean for realistic values."""

from __future__ import annotations

import helm_python
import pytest

from .support import CHART_DIR, FIXTURES, NAMESPACE, VARIANTS, load_case

# Helm's only remaining note is informational: Chart.yaml has no icon (we have none to give).
ALLOWED_INFO = {("Chart.yaml", "icon is recommended")}


@pytest.mark.parametrize("kube_version", ["v1.30.0", "v1.32.0"])
@pytest.mark.parametrize("name", [*FIXTURES, *VARIANTS])
def test_lint_strict_is_clean(name: str, kube_version: str) -> None:
    report = helm_python.lint(
        CHART_DIR,
        load_case(name),
        strict=True,
        namespace=NAMESPACE,
        kube_version=kube_version,
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []
    infos = {(m["path"], m["error"]) for m in report["messages"]}
    assert infos <= ALLOWED_INFO


def test_lint_reports_missing_identity() -> None:
    # With only the chart defaults, lint fails on the schema: nothing deploys by accident.
    report = helm_python.lint(CHART_DIR, None, strict=True, kube_version="v1.32.0")
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


def test_chart_declares_its_minimum_kubernetes(chart: helm_python.Chart) -> None:
    # preStop `sleep` (beta, on by default) and ContainerResource HPA metrics (GA) need 1.30.
    # Helm enforces kubeVersion at install time against the cluster; lint does not check it.
    assert chart.metadata["kubeVersion"] == ">=1.30.0-0"
    assert chart.metadata["apiVersion"] == "v2"
