"""Fixtures for the ai4ec-api chart tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python
import pytest

from .support import CHART_DIR, FIXTURES, load_values, render_docs


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    """The chart loaded once: every render reuses this handle (thread-safe, immutable)."""
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(params=FIXTURES)
def fixture_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def values(fixture_name: str) -> dict[str, Any]:
    return load_values(fixture_name)


@pytest.fixture
def objects(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rendered objects of one fixture, indexed by kind."""
    return render_docs(chart, values)
