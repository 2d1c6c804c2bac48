"""`ai4ec diff DIR_A DIR_B`: comparing two `ai4ec build` output directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ai4ec.pipeline import check_platform, render_platforms

from ..conftest import SAMPLES
from .conftest import run_diff


def _build(tmp_path: Path, name: str, sample: str, edit=None) -> Path:
    src = tmp_path / f"src-{name}" / "platform.yaml"
    src.parent.mkdir(parents=True)
    text = (SAMPLES / sample / "platform.yaml").read_text()
    src.write_text(edit(text) if edit else text)
    out = tmp_path / f"out-{name}"
    # What `ai4ec build` writes, minus its parse-back checks (pycep makes those slow).
    for result, manifest in render_platforms(check_platform(src)):
        for artifact in (*result.artifacts, manifest):
            dest = out / result.environment / str(artifact.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(artifact.content)
    return out


def test_same_build_twice_is_unchanged(tmp_path: Path) -> None:
    a = _build(tmp_path, "a", "camera-trap")
    b = _build(tmp_path, "b", "camera-trap")
    res = run_diff(str(a), str(b))
    assert res.exit_code == 0, res.output
    assert run_diff(str(a / "default"), str(b / "default")).exit_code == 0


def test_changed_build_and_rename_from_artifacts_alone(tmp_path: Path) -> None:
    a = _build(tmp_path, "a", "camera-trap")
    b = _build(
        tmp_path,
        "b",
        "camera-trap",
        lambda t: t.replace("  - name: species\n", "  - name: species-chain\n").replace(
            "vmSize: Standard_DS3_v2", "vmSize: Standard_DS4_v2"
        ),
    )
    res = run_diff(str(a), str(b), "--format", "json")
    assert res.exit_code == 2, res.output
    data = json.loads(res.stdout)
    (env,) = data["environments"]
    assert [(r["entity"], r["from"], r["to"]) for r in env["renames"]] == [
        ("pipeline", "species-v1", "species-chain-v1")
    ]
    actions = {c["action"] for c in env["changes"]}
    assert "added" not in actions and "removed" not in actions
    assert data["summary"]["replaced"] == 1
    assert all(c["sources"] == [] for c in env["changes"])
    assert any("not traced" in n for n in data["notes"])


def test_multi_env_output_and_env_filter(tmp_path: Path) -> None:
    a = _build(tmp_path, "a", "multi-env")
    b = _build(
        tmp_path,
        "b",
        "multi-env",
        lambda t: t.replace(
            "scaling: {minReplicas: 1, maxReplicas: 8}", "scaling: {minReplicas: 2, maxReplicas: 8}"
        ),
    )
    res = run_diff(str(a), str(b), "--format", "json")
    data = json.loads(res.stdout)
    assert [(e["name"], bool(e["changes"])) for e in data["environments"]] == [
        ("dev", False),
        ("prod", True),
    ]
    assert run_diff(str(a), str(b), "-e", "dev").exit_code == 0
    assert run_diff(str(a), str(b), "-e", "prod").exit_code == 2
    assert run_diff(str(a), str(b), "-e", "nope").exit_code == 1
    # Two single environments are compared even when their names differ.
    res = run_diff(str(a / "dev"), str(a / "prod"), "--format", "json")
    assert res.exit_code == 2
    (env,) = json.loads(res.stdout)["environments"]
    assert (env["baseName"], env["headName"]) == ("dev", "prod")


def test_refuses_what_is_not_a_build(tmp_path: Path) -> None:
    a = _build(tmp_path, "a", "minimal")
    b = tmp_path / "copy"
    shutil.copytree(a, b)
    manifest = b / "default" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["schemaVersion"] = 99
    manifest.write_text(json.dumps(data))
    res = run_diff(str(a), str(b))
    assert res.exit_code == 1 and "schemaVersion" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_diff(str(a), str(empty))
    assert res.exit_code == 1 and "not an ai4ec build output" in res.stderr
    assert run_diff(str(a), str(a), "--base", "HEAD").exit_code == 1
