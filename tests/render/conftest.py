"""Fixtures shared by the render tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ai4ec.render


@pytest.fixture
def renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A fresh cache directory, and the environments really rendered (not served)."""
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AI4EC_NO_CACHE", raising=False)
    seen: list[str] = []
    real = ai4ec.render.render_all

    def counting(platform: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(platform.environment)
        return real(platform, *args, **kwargs)

    monkeypatch.setattr(ai4ec.render, "render_all", counting)
    yield seen
