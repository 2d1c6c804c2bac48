"""The compiler's fast chart path renders exactly what Helm renders from the chart on disk.

The compiler renders a schema-free archive of the chart (checking values once with a
compiled validator) and may render releases from several threads; both must be
invisible in the output. How fast each path is lives in ``bench/compile_scale.py``
(``--chart``), which prints it beside Helm's own path measured in the same run.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import helm_python

from .support import FIXTURES, NAMESPACE, load_values, schema_free_archive


def _many_values(n: int) -> list[dict[str, Any]]:
    """n distinct releases cycling through the fixtures, each with its own apiId."""
    bases = [load_values(name) for name in FIXTURES]
    out = []
    for i in range(n):
        values = copy.deepcopy(bases[i % len(bases)])
        api_id = f"api{i:04d}-v1"
        values["name"] = api_id
        values["framework"]["serviceName"] = f"api{i:04d}"
        values["autoscaling"]["maxReplicas"] = 2 + i % 7
        redis = values["autoscaling"]["keda"]["redis"]
        if redis["enabled"]:
            redis["listName"] = f"ai4ec:pending:{api_id}"
        out.append(values)
    return out


def test_schema_free_archive_renders_identically(chart: helm_python.Chart) -> None:
    archive = schema_free_archive()
    assert archive == schema_free_archive()  # deterministic bytes
    with helm_python.Chart.load_archive(archive) as fast:
        assert fast.schema is None
        assert fast.metadata == chart.metadata
        for name in FIXTURES:
            values = load_values(name)
            assert fast.render(values, name=values["name"], namespace=NAMESPACE) == chart.render(
                values, name=values["name"], namespace=NAMESPACE
            )


def test_threads_render_identically(chart: helm_python.Chart) -> None:
    releases = _many_values(40)
    sequential = [chart.render(v, name=v["name"], namespace=NAMESPACE) for v in releases]
    with ThreadPoolExecutor(2) as pool:
        threaded = list(
            pool.map(lambda v: chart.render(v, name=v["name"], namespace=NAMESPACE), releases)
        )
    assert threaded == sequential
