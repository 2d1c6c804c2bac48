"""The render cache stays bounded: least recently used entries go first (issue 15).

Real builds of a sample into a real temporary ``$AI4EC_CACHE_DIR``; the bound is set
through ``AI4EC_CACHE_MAX_MB`` as a user would set it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ai4ec import cache
from ai4ec.pipeline import build_platform

from ..conftest import SAMPLES


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AI4EC_NO_CACHE", raising=False)
    monkeypatch.delenv("AI4EC_CACHE_MAX_MB", raising=False)
    return tmp_path / "cache" / "ai4ec"


def _entries(root: Path) -> dict[Path, int]:
    return {
        p: p.stat().st_size
        for ns in ("render", "verified", "helm", "k8s")
        if (root / ns).is_dir()
        for p in (root / ns).rglob("*")
        if p.is_file()
    }


def _fill(ns: str, n: int, size: int) -> list[str]:
    """``n`` entries of ``size`` bytes in namespace ``ns``, oldest first (mtimes 1..n)."""
    store = cache.DiskCache(ns)
    keys = [cache.key_of(ns, str(i)) for i in range(n)]
    for i, key in enumerate(keys):
        store.put(key, bytes(size))
        path = cache.cache_dir() / ns / key[:2] / key
        os.utime(path, (i + 1, i + 1))
    return keys


def test_a_default_build_keeps_everything(cache_root: Path, tmp_path: Path) -> None:
    """Under the default bound (2,048 MB) a build deletes nothing it or others stored."""
    keys = _fill("helm", 5, 1000)
    shutil.copytree(SAMPLES / "minimal", tmp_path / "p")
    build_platform(tmp_path / "p" / "platform.yaml", tmp_path / "out")
    store = cache.DiskCache("helm")
    assert all(store.get(k) is not None for k in keys)
    assert any(p.parts[-3] == "render" for p in _entries(cache_root))


def test_prune_deletes_least_recently_used_first(cache_root: Path) -> None:
    """Over the bound, the oldest entries go until the cache is under 80 % of it; a hit
    refreshes an entry so that it survives."""
    keys = _fill("helm", 10, 100_000)  # 1 MB in all
    store = cache.DiskCache("helm")
    assert store.get(keys[0]) is not None  # used just now: newest
    freed = cache.prune(limit=500_000)
    left = [k for k in keys if store.get(k) is not None]
    assert freed >= 500_000
    assert sum(_entries(cache_root).values()) <= 400_000
    assert keys[0] in left  # refreshed by the hit
    assert keys[1] not in left and keys[9] in left  # oldest gone, newest kept


def test_a_build_over_the_bound_prunes_and_still_builds(
    cache_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AI4EC_CACHE_MAX_MB=1`` with 3 MB of old entries: the build that writes prunes the
    old ones and its output is complete; files outside the namespaces are never touched."""
    old = _fill("helm", 30, 100_000)
    other = cache_root / "fastschema" / "keep.py"
    other.parent.mkdir(parents=True)
    other.write_text("# not an entry\n")
    monkeypatch.setenv("AI4EC_CACHE_MAX_MB", "1")
    shutil.copytree(SAMPLES / "minimal", tmp_path / "p")
    build_platform(tmp_path / "p" / "platform.yaml", tmp_path / "out")
    assert sum(_entries(cache_root).values()) <= 1_000_000
    assert sum(cache.DiskCache("helm").get(k) is not None for k in old) < 30
    assert other.read_text() == "# not an entry\n"
    assert (tmp_path / "out").is_dir() and any((tmp_path / "out").rglob("manifest.json"))


def test_a_read_only_run_does_not_prune(cache_root: Path) -> None:
    """Pruning walks the cache only after this process wrote to it."""
    _fill("helm", 3, 10)
    cache.prune(limit=0)  # resets the written counter, empties the cache
    _fill("helm", 3, 10)
    cache._written = 0  # as in a process that only read
    assert cache.prune() == 0
    assert len(_entries(cache_root)) == 3


@pytest.mark.parametrize("raw", ["", "lots", "-5"])
def test_a_bad_bound_falls_back(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in ``AI4EC_CACHE_MAX_MB`` never breaks a build: the default applies (a
    negative bound is 0, an empty cache)."""
    monkeypatch.setenv("AI4EC_CACHE_MAX_MB", raw)
    expected = 0 if raw == "-5" else cache.DEFAULT_MAX_MB * 1_000_000
    assert cache.max_bytes() == expected
