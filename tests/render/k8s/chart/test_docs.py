"""docs/chart.md stays true: its examples are the fixtures and render cleanly."""

from __future__ import annotations

import re

import helm_python
import yaml

from .support import REPO, load_values, render_docs

DOC = REPO / "docs" / "chart.md"
EXAMPLE = re.compile(r"<!-- fixture: (?P<name>[-a-z0-9]+) -->\n```yaml\n(?P<body>.*?)```", re.S)


def test_docs_examples_are_the_fixtures(chart: helm_python.Chart) -> None:
    examples = {m["name"]: yaml.safe_load(m["body"]) for m in EXAMPLE.finditer(DOC.read_text())}
    assert set(examples) == {"sync-cpu", "async-gpu-scale-to-zero"}
    for name, values in examples.items():
        assert values == load_values(name), name
        chart.validate_schema(values)
        assert render_docs(chart, values)


def test_docs_name_every_top_level_key(chart: helm_python.Chart) -> None:
    rows = [line.split("|")[1] for line in DOC.read_text().splitlines() if line.startswith("| `")]
    for key in chart.values:
        assert any(f"`{key}`" in first_cell for first_cell in rows), key
