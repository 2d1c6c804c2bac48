"""Whole environments and per-API Istio objects in the render cache (issue 15).

Real builds into a real temporary cache directory (``$AI4EC_CACHE_DIR``). Counting the
calls of the real renderers proves what was rendered anew; comparing the written trees
with a ``--no-cache`` build proves that a hit is the cold bytes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ai4ec.render
import ai4ec.render.k8s.istio
from ai4ec import cache, resources
from ai4ec import write as write_stage
from ai4ec.cli import cli
from ai4ec.pipeline import build_platform
from ai4ec.render import stored
from ai4ec.render.artifact import Artifact

from ..conftest import SAMPLES


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _project(tmp_path: Path, sample: str = "multi-env") -> Path:
    shutil.copytree(SAMPLES / sample, tmp_path / "p")
    return tmp_path / "p" / "platform.yaml"


def _cold(path: Path, out: Path) -> dict[str, bytes]:
    with cache.disabled():
        build_platform(path, out)
    return _tree(out)


def _entries(tmp_path: Path, namespace: str) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache" / namespace).rglob("*") if p.is_file())


def test_a_hit_renders_nothing_and_is_the_cold_bytes(tmp_path: Path, renders: list[str]) -> None:
    path = _project(tmp_path)
    build_platform(path, tmp_path / "first")
    envs = sorted(renders)
    assert len(envs) > 1, "the sample has several environments"
    renders.clear()
    build_platform(path, tmp_path / "warm")
    assert renders == []
    assert _tree(tmp_path / "warm") == _cold(path, tmp_path / "cold")
    assert sorted(renders) == envs, "--no-cache renders every environment again"


def test_a_changed_platform_renders_again(tmp_path: Path, renders: list[str]) -> None:
    path = _project(tmp_path, "minimal")
    build_platform(path, tmp_path / "a")
    path.write_text(path.read_text().replace("image: hello:1.0.0", "image: hello:1.0.1"))
    renders.clear()
    build_platform(path, tmp_path / "b")
    assert renders == ["default"]
    assert _tree(tmp_path / "b") == _cold(path, tmp_path / "cold")


def test_a_changed_openapi_document_renders_again(tmp_path: Path, renders: list[str]) -> None:
    path = _project(tmp_path, "minimal")
    doc: dict[str, Any] = {
        "openapi": "3.0.1",
        "info": {"title": "t", "version": "1"},
        "paths": {"/echo": {"post": {"responses": {"200": {"description": "ok"}}}}},
    }
    (path.parent / "openapi.json").write_text(json.dumps(doc))
    text = path.read_text().replace(
        "  - name: hello\n", "  - name: hello\n    openapi: openapi.json\n"
    )
    path.write_text(text)
    build_platform(path, tmp_path / "a")
    doc["info"] = {"title": "another title", "version": "1"}
    (path.parent / "openapi.json").write_text(json.dumps(doc))
    renders.clear()
    build_platform(path, tmp_path / "b")
    assert renders == ["default"], "the platform text is the same, the document it names is not"


@pytest.mark.parametrize("damage", ["truncated", "altered", "foreign", "wrong shape"])
def test_a_damaged_entry_is_ignored(tmp_path: Path, renders: list[str], damage: str) -> None:
    path = _project(tmp_path, "minimal")
    build_platform(path, tmp_path / "a")
    [entry] = _entries(tmp_path, "ai4ec/render")
    raw = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(raw[:-100])
    elif damage == "altered":
        entry.write_bytes(raw.replace(b"kind: ", b"kind:  ", 1))
    elif damage == "foreign":
        entry.write_bytes(b"not a cache entry at all")
    else:  # a well-formed, checksummed entry whose payload is no set of artifacts
        cache.DiskCache("render").put(entry.name, b"[[1, 2, 3]]\nxyz")
    renders.clear()
    build_platform(path, tmp_path / "b")
    assert renders == ["default"]
    assert _tree(tmp_path / "b") == _cold(path, tmp_path / "cold")


def test_no_cache_neither_reads_nor_writes(tmp_path: Path, renders: list[str]) -> None:
    path = _project(tmp_path, "minimal")
    for _ in range(2):
        res = CliRunner().invoke(cli, ["build", str(path), "-o", str(tmp_path / "o"), "--no-cache"])
        assert res.exit_code == 0, res.output
    assert renders == ["default", "default"]
    assert not (tmp_path / "cache" / "ai4ec" / "render").exists()


def _fingerprint_after(edit: Callable[[], None]) -> tuple[str, str]:
    cache.code_fingerprint.cache_clear()
    before = cache.code_fingerprint()
    edit()
    cache.code_fingerprint.cache_clear()
    try:
        return before, cache.code_fingerprint()
    finally:
        cache.code_fingerprint.cache_clear()


@pytest.mark.parametrize("where", ["templates", "schemas"])
def test_a_template_or_schema_change_invalidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    copy = tmp_path / where
    real = resources.templates_dir() if where == "templates" else resources.schemas_dir()
    shutil.copytree(real, copy)
    monkeypatch.setattr(resources, f"{where}_dir", lambda: copy)
    some = next(p for p in sorted(copy.rglob("*")) if p.is_file())

    def edit() -> None:
        some.write_bytes(some.read_bytes() + b"\n")

    before, after = _fingerprint_after(edit)
    assert before != after


def test_an_ai4ec_version_change_invalidates(monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = _fingerprint_after(lambda: monkeypatch.setattr(cache, "__version__", "99.0"))
    assert before != after


def test_every_key_part_counts(tmp_path: Path) -> None:
    """The environment key changes with the text, the file's shown name and the code."""
    from ai4ec.pipeline import check_platform, require_ok

    path = _project(tmp_path, "minimal")
    [platform] = require_ok(check_platform(path))
    key = stored.environment_key("text", "platform.yaml", str(path.parent), platform)
    assert key != stored.environment_key("text2", "platform.yaml", str(path.parent), platform)
    assert key != stored.environment_key("text", "other.yaml", str(path.parent), platform)
    assert key == stored.environment_key("text", "platform.yaml", "/elsewhere", platform), (
        "where the file sits is no input (diff mirrors the base in a temporary directory)"
    )


def test_pack_round_trips_and_refuses_other_shapes() -> None:
    from pathlib import PurePosixPath

    arts = (
        Artifact(PurePosixPath("a/b.yaml"), b"x: 1\n"),
        Artifact(PurePosixPath("empty.txt"), b""),
        Artifact(PurePosixPath("z.bin"), bytes(range(256)) * 3),
    )
    assert stored.unpack(stored.pack(arts)) == arts
    payload = stored.pack(arts)
    assert stored.unpack(payload[:-1]) is None
    assert stored.unpack(payload + b"x") is None
    assert stored.unpack(b"no index line") is None


def test_a_hit_is_not_parsed_back_twice(
    tmp_path: Path, renders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _project(tmp_path, "minimal")
    checked: list[str] = []
    real = write_stage.verify_artifact

    def counting(artifact: Artifact, full: bool = False) -> None:
        checked.append(str(artifact.path))
        real(artifact, full)

    monkeypatch.setattr(write_stage, "verify_artifact", counting)
    build_platform(path, tmp_path / "a")
    assert len(checked) > 10
    checked.clear()
    build_platform(path, tmp_path / "b")
    assert checked == ["manifest.json"], "the same bytes already parsed back"
    build_platform(path, tmp_path / "c", verify=True)
    assert len(checked) > 10, "--verify parses Bicep too, which the first build did not"


def test_one_changed_api_renders_its_istio_objects_only(
    tmp_path: Path, renders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _project(tmp_path, "camera-trap")
    templates: list[str] = []
    real = ai4ec.render.k8s.istio.render_template

    def counting(name: str, **kwargs: Any) -> str:
        templates.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(ai4ec.render.k8s.istio, "render_template", counting)
    build_platform(path, tmp_path / "a")
    per_api = [t for t in templates if "virtualservice" in t]
    assert len(per_api) > 1
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("maxReplicas: 6,", "maxReplicas: 7,", 1), encoding="utf-8")
    templates.clear()
    build_platform(path, tmp_path / "b")
    # The API is the unit: its VirtualService and DestinationRule, and no other API's.
    again = sorted(t for t in templates if "virtualservice" in t or "destinationrule" in t)
    assert again == ["k8s/istio/destinationrule.yaml.j2", "k8s/istio/virtualservice.yaml.j2"]
    assert _tree(tmp_path / "b") == _cold(path, tmp_path / "cold")
