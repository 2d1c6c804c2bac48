"""The task manager's zip in the render cache: a hit is the zip a cold render writes.

Real renders of the camera-trap sample into a real temporary cache directory; the zip
is compared with one made under ``cache.disabled()``, and with the routing table
changed (one of its entries) the cached zip is not served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ai4ec.render.runtime as runtime
from ai4ec import cache
from ai4ec.pipeline import check_platform
from ai4ec.render.artifact import RenderContext
from ai4ec_runtime import bundle

from ..conftest import SAMPLES


def _zip(platform: Any) -> bytes:
    ctx = RenderContext(source_name="platform.yaml", source_dir=".")
    files = {str(a.path): a.content for a in runtime.render_runtime(platform, ctx)}
    return files["functions/bundle.zip"]


def test_a_cached_zip_is_the_cold_zip_and_a_changed_entry_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AI4EC_NO_CACHE", raising=False)
    zipped: list[int] = []
    real = bundle.zip_bytes

    def counting(routing: Any, settings: Any) -> bytes:
        zipped.append(1)
        return real(routing, settings)

    monkeypatch.setattr(bundle, "zip_bytes", counting)
    result = check_platform(SAMPLES / "camera-trap" / "platform.yaml")
    assert result.ok, result.diagnostics
    [platform] = result.platforms()[:1]
    first = _zip(platform)
    again = _zip(platform)
    assert again == first and len(zipped) == 1  # the second came from the cache
    with cache.disabled():
        assert _zip(platform) == first
    assert len(zipped) == 2

    routing = runtime.routing_table(platform)
    monkeypatch.setattr(
        runtime, "routing_table", lambda p: {**routing, "defaults": {"changed": True}}
    )
    changed = _zip(platform)
    assert changed != first and len(zipped) == 3
    with cache.disabled():
        assert _zip(platform) == changed
