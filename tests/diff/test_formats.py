"""Text, markdown and JSON reports: layout, colour, size limit and the JSON schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ai4ec.diff import SCHEMA_VERSION, diff_builds
from ai4ec.diff.compare import EnvSide
from ai4ec.diff.formats import MARKDOWN_LIMIT, MARKER, format_markdown, format_text
from ai4ec.diff.records import Side

from .conftest import Repo

RepoFactory = Callable[[str], Repo]


def _configmaps(n: int, value: str) -> bytes:
    docs = [
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: ns}}\n"
        f"data: {{setting: {value}-{i}, other: same}}\n"
        for i in range(n)
    ]
    return "".join(docs).encode()


def _big_report(n: int = 3000):
    return diff_builds(
        {"default": EnvSide("default", {"k8s/main/manifests.yaml": _configmaps(n, "a")})},
        {"default": EnvSide("default", {"k8s/main/manifests.yaml": _configmaps(n, "b")})},
        Side("base"),
        Side("head"),
    )


def test_markdown_stays_under_the_comment_limit() -> None:
    report = _big_report()
    assert len(report.changes) == 3000
    md = format_markdown(report)
    assert len(md) < MARKDOWN_LIMIT
    assert md.startswith(MARKER)
    assert "> [!NOTE]" in md and "left out" in md
    assert "3000 to change" in md  # the summary still counts everything
    assert md.rstrip().endswith("</sub>")
    # Small reports are not cut.
    small = format_markdown(_big_report(3))
    assert "[!NOTE]" not in small and small.count("<details>") == 3


def test_text_layout_and_colour() -> None:
    report = _big_report(2)
    plain = format_text(report)
    assert "\x1b[" not in plain
    assert "~ kubernetes: ConfigMap ns/cm-0 (main) will be updated in place" in plain
    assert '~ data.setting: "a-0" -> "b-0"' in plain
    assert "(5 unchanged fields hidden)" in plain
    assert plain.rstrip().splitlines()[-1].startswith("Plan: 0 to add, 2 to change")
    assert "\x1b[" in format_text(report, color=True)


def test_cli_formats_and_output_file(repo_factory: RepoFactory, tmp_path: Path) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(lambda t: t.replace("vmSize: Standard_DS3_v2", "vmSize: Standard_DS4_v2"))
    res = repo.run()
    assert res.exit_code == 2 and "\x1b[" not in res.stdout  # not a terminal: no colour
    out = tmp_path / "report" / "plan.md"
    res = repo.run("--format", "markdown", "--output", str(out))
    assert res.exit_code == 2 and res.stdout == ""
    assert "wrote" in res.stderr and "1 to replace" in res.stderr
    md = out.read_text()
    assert md.startswith(MARKER)
    assert "| environment | add | change | replace | rename | remove |" in md
    assert "> [!WARNING]" in md and "<details><summary>" in md
    assert "monthly cost increases by" in md
    assert "`platform.yaml:" in md or ".yaml:" in md


def test_json_schema(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(lambda t: t.replace("maxReplicas: 6", "maxReplicas: 7"))
    code, data = repo.json()
    assert code == 2
    assert data["schemaVersion"] == SCHEMA_VERSION
    assert set(data) == {
        "schemaVersion",
        "generator",
        "base",
        "head",
        "changed",
        "exitCode",
        "summary",
        "cost",
        "environments",
        "notes",
    }
    assert data["exitCode"] == 2 and data["changed"] is True
    assert set(data["summary"]) == {
        "added",
        "removed",
        "changed",
        "replaced",
        "renamed",
        "destructive",
        "total",
    }
    assert set(data["cost"]) == {"currency", "hoursPerMonth", "before", "after", "delta"}
    (env,) = data["environments"]
    assert set(env) == {
        "name",
        "baseName",
        "headName",
        "unchanged",
        "cost",
        "renames",
        "clients",
        "notes",
        "changes",
    }
    for change in env["changes"]:
        assert set(change) == {
            "key",
            "layer",
            "kind",
            "name",
            "oldName",
            "action",
            "destructive",
            "risk",
            "reasons",
            "fields",
            "unchangedFields",
            "sources",
            "cost",
            "files",
            "note",
        }
        assert change["sources"], change["key"]
        for src in change["sources"]:
            assert set(src) == {"file", "line", "endLine", "jsonPath", "side", "change", "indirect"}
    scaled = [c for c in env["changes"] if c["kind"] == "keda.sh/ScaledObject"]
    assert scaled and scaled[0]["fields"][0]["new"] == 7
    assert scaled[0]["sources"][0]["jsonPath"].endswith(".scaling.maxReplicas")
    json.dumps(data)  # plain JSON all the way down


def test_no_change_reports(repo_factory: RepoFactory) -> None:
    repo = repo_factory("minimal")
    md = repo.run("--format", "markdown").stdout
    assert md.startswith(MARKER) and "No changes" in md
    code, data = repo.json()
    assert code == 0 and data["environments"][0]["changes"] == []


def test_exit_codes_through_the_console_entry_point(repo_factory: RepoFactory, monkeypatch) -> None:
    """`ai4ec.cli.main` (what the `ai4ec` script runs) must keep 0 / 1 / 2."""
    import click
    import pytest

    from ai4ec.cli import app as cli_module
    from ai4ec.cli.diff import diff

    group = click.Group("ai4ec", commands={"diff": diff})
    monkeypatch.setattr(cli_module, "cli", group)
    repo = repo_factory("minimal")

    def code(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            cli_module.main(["diff", "-f", str(repo.file), *args])
        return int(exc.value.code or 0)

    assert code() == 0
    assert code("--base", "no-such-ref") == 1
    assert code("--no-such-option") == 1
    repo.edit(lambda t: t.replace("maxReplicas: 3", "maxReplicas: 4"))
    assert code() == 2


def test_help_keeps_the_examples() -> None:
    from .conftest import run_diff

    res = run_diff("--help")
    assert "  ai4ec diff --base main --head HEAD  two commits\n" in res.output
