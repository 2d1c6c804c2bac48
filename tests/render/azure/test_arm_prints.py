"""Per-API prints of the Azure target in the render cache (issue 15, ``ai4ec diff`` speed).

Real renders (the real APIM target feeding the Azure target) of bench/compile_scale.py's
platform into a real temporary cache directory. Comparing with a render under
``cache.disabled()`` proves that a hit is the cold bytes, for changed and unchanged APIs
alike, with the Bicep files (build) and without them (diff), in one template and cut
into split templates; counting what :func:`~ai4ec.render.azure.prints.print_resources`
really printed proves what came from the cache.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import ai4ec.render.azure.prints as prints
import ai4ec.render.azure.template as template
from ai4ec import cache
from ai4ec.model.types import Platform
from ai4ec.pipeline import check_platform
from ai4ec.render.apim import render_apim
from ai4ec.render.artifact import RenderContext
from ai4ec.render.azure.target import render_azure

from ...conftest import ROOT

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture
def printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A fresh cache directory, and the symbols of the resources really printed."""
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AI4EC_NO_CACHE", raising=False)
    seen: list[str] = []
    real = prints.print_resources

    def counting(items: Any) -> Any:
        seen.extend(res.symbol for res, *_ in items)
        return real(items)

    monkeypatch.setattr(template, "print_resources", counting)
    yield seen


def _platform(tmp_path: Path, n_apis: int, edit: Edit | None = None) -> Platform:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from compile_scale import make_platform
    finally:
        sys.path.remove(str(ROOT / "bench"))
    data = copy.deepcopy(make_platform(n_apis))
    if edit is not None:
        edit(data)
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = check_platform(path, display_name="platform.yaml")
    assert result.ok, result.diagnostics[:3]
    (platform,) = result.platforms()
    return platform


def _azure(platform: Platform, bicep: bool) -> dict[str, bytes]:
    ctx = RenderContext(source_name="platform.yaml", source_dir=".", bicep=bicep)
    apim = render_apim(platform, ctx)
    azure = render_azure(platform, ctx, apim.infrastructure)
    return {str(a.path): a.content for a in azure.artifacts}


def _cold(platform: Platform, bicep: bool) -> dict[str, bytes]:
    with cache.disabled():
        return _azure(platform, bicep)


def _split(monkeypatch: pytest.MonkeyPatch) -> None:
    """ARM's limits lowered so that 12 APIs cut into split templates of every kind."""
    monkeypatch.setattr(template, "ARM_MAX_RESOURCES", 60)
    monkeypatch.setattr(template, "IDENTITY_CHUNK", 12)
    monkeypatch.setattr(template, "APIM_CHUNK", 40)


def _edit_apis(data: dict[str, Any]) -> None:
    """Two APIs edited where the Azure target reads them, and a node pool resized."""
    data["apis"][3]["secrets"]["EXTRA"] = {"keyVaultSecret": "extra-secret"}
    data["apis"][7]["endpoints"][0]["timeout"] = "20s"
    data["clusters"][0]["pools"][0]["vmSize"] = "Standard_D16s_v5"


@pytest.mark.parametrize("bicep", [False, True], ids=["diff", "build"])
@pytest.mark.parametrize("split", [False, True], ids=["one-template", "split"])
def test_a_hit_is_the_cold_render_for_changed_and_unchanged_apis(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    printed: list[str],
    bicep: bool,
    split: bool,
) -> None:
    if split:
        _split(monkeypatch)
    base = _platform(tmp_path, 12)
    first = _azure(base, bicep)
    assert first == _cold(base, bicep)
    if split:
        assert "azure/apim-apis-2.json" in first and "azure/identities-2.json" in first
    everything = len(printed)
    printed.clear()

    again = _azure(base, bicep)
    assert again == first
    # Only what no per-API group holds is printed again (the service, clusters, ...).
    assert 0 < len(printed) < everything / 4
    shared = set(printed)
    printed.clear()

    head = _platform(tmp_path, 12, _edit_apis)
    changed = _azure(head, bicep)
    assert changed == _cold(head, bicep)
    assert changed != first
    anew = set(printed) - shared
    # The two edited APIs' groups (and the others of their cache entries) were printed
    # anew; the resized pool kept every identity: nothing of it is in their slice.
    assert "idApiApi3V1" in anew and "apimApisApi7V1" in anew
    assert len(anew) < everything / 2
    printed.clear()
    assert _azure(head, bicep) == changed
    assert set(printed) == shared


def test_a_platform_wide_change_misses_every_identity(tmp_path: Path, printed: list[str]) -> None:
    """The name prefix is in every identity's slice: all are printed anew, rightly."""

    def prefix(data: dict[str, Any]) -> None:
        data["azure"]["namePrefix"] = "other"

    _azure(_platform(tmp_path, 12), bicep=False)
    printed.clear()
    head = _platform(tmp_path, 12, prefix)
    files = _azure(head, bicep=False)
    assert sum(s.startswith("idApiApi") and not s.endswith("Federation") for s in printed) == 12
    assert files == _cold(head, bicep=False)


def test_a_code_change_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, printed: list[str]
) -> None:
    platform = _platform(tmp_path, 12)
    first = _azure(platform, bicep=False)
    everything = len(printed)
    printed.clear()
    monkeypatch.setattr(prints, "code_fingerprint", lambda: "another ai4ec")
    assert _azure(platform, bicep=False) == first
    assert len(printed) == everything


@pytest.mark.parametrize("damage", ["truncated", "foreign", "garbage", "unknown-dependency"])
def test_a_damaged_entry_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, printed: list[str], damage: str
) -> None:
    _split(monkeypatch)
    platform = _platform(tmp_path, 12)
    first = _azure(platform, bicep=False)
    everything = len(printed)
    store = cache.DiskCache(prints.NAMESPACE)
    entries = sorted((tmp_path / "cache" / "ai4ec" / prints.NAMESPACE).rglob("*"))
    entries = [e for e in entries if e.is_file()]
    assert entries
    keys = [e.name for e in entries]
    payloads = [store.get(k) for k in keys]
    for n, (key, entry) in enumerate(zip(keys, entries, strict=True)):
        payload = payloads[n]
        assert payload is not None
        if damage == "truncated":
            raw = entry.read_bytes()
            entry.write_bytes(raw[: len(raw) - 10])
        elif damage == "foreign":  # another entry's prints, properly stored under this key
            store.put(key, payloads[(n + 1) % len(payloads)] or b"")
        elif damage == "garbage":
            store.put(key, b'[[1,2,[],[],[]]]\n{"not": "a print"}')
        else:  # a dependency this template does not have
            head, _, body = payload.partition(b"\n")
            store.put(key, head.replace(b'["', b'["noSuchResource","', 1) + b"\n" + body)
    printed.clear()
    assert _azure(platform, bicep=False) == first
    if damage != "foreign" or len(set(payloads)) > 1:
        assert len(printed) == everything


def test_printing_from_prints_is_the_whole_document_printed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main.json and the split templates assembled from prints = json_artifact of the dicts."""
    from ai4ec.render.artifact import json_artifact
    from ai4ec.render.azure.arm import arm_template, split_template

    _split(monkeypatch)
    platform = _platform(tmp_path, 12)
    with cache.disabled():
        ctx = RenderContext(source_name="platform.yaml", source_dir=".", bicep=False)
        apim = render_apim(platform, ctx)
        result = render_azure(platform, ctx, apim.infrastructure)
    files = {str(a.path): a.content for a in result.artifacts}
    tpl = result.template
    assert files["azure/main.json"] == json_artifact("x", arm_template(tpl)).content
    for m in tpl.split:
        assert files[f"azure/{m}.json"] == json_artifact("x", split_template(tpl, m)).content
