"""The on-disk render cache: work whose inputs did not change is not done again.

It lives in ``$AI4EC_CACHE_DIR``, else ``$XDG_CACHE_HOME/ai4ec`` or ``~/.cache/ai4ec``.

An entry is found by a key that hashes *everything* its output depends on (the caller
builds it: for a Helm release, ai4ec's version, the chart's files, the engine's version,
the release name and its values), so a hit is byte-identical to a cold render; a test
proves it. Each entry carries its key and the SHA-256 of its payload: a truncated,
corrupt or foreign file is ignored (and replaced), never trusted. Writes are atomic
(a temporary file renamed into place), so concurrent builds share the cache safely.

``--no-cache`` on ``build`` and ``diff`` (or ``AI4EC_NO_CACHE=1``) neither reads nor writes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from . import __version__

_MAGIC = b"ai4ec-cache 1\n"
_enabled: ContextVar[bool] = ContextVar("ai4ec_cache_enabled", default=True)


def cache_dir() -> Path:
    """Root of ai4ec's caches."""
    root = os.environ.get("AI4EC_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "ai4ec" if root else Path.home() / ".cache" / "ai4ec"


def enabled() -> bool:
    """Whether this context may read and write the cache."""
    return _enabled.get() and os.environ.get("AI4EC_NO_CACHE") != "1"


@contextmanager
def disabled() -> Iterator[None]:
    """Within the block, the cache is neither read nor written (``--no-cache``)."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


def key_of(*parts: str | bytes) -> str:
    """A cache key: SHA-256 of ai4ec's version and every part (parts kept apart)."""
    h = hashlib.sha256(__version__.encode())
    for p in parts:
        data = p if isinstance(p, bytes) else p.encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


class DiskCache:
    """One namespace of the cache (``helm``, ...): bytes by key.

    Whether it may be used is decided when it is made, in the caller's context: worker
    threads (Helm renders on a pool) do not inherit ``disabled()``'s context.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.active = enabled()

    def _path(self, key: str) -> Path:
        return cache_dir() / self.namespace / key[:2] / key

    def get(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or None (absent, disabled, or not trustworthy)."""
        if not self.active:
            return None
        try:
            raw = self._path(key).read_bytes()
        except OSError:
            return None
        head = _MAGIC + key.encode() + b"\n"
        if not raw.startswith(head):
            return None
        digest, sep, payload = raw[len(head) :].partition(b"\n")
        if not sep or hashlib.sha256(payload).hexdigest().encode() != digest:
            return None  # truncated or altered: ignored, and overwritten by the next put
        return payload

    def put(self, key: str, payload: bytes) -> None:
        """Store ``payload`` under ``key`` (best effort: a read-only cache is no error)."""
        if not self.active:
            return
        path = self._path(key)
        data = _MAGIC + key.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode()
        data += b"\n" + payload
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            Path(tmp).replace(path)
        except OSError:
            return


__all__ = ["DiskCache", "cache_dir", "disabled", "enabled", "key_of"]
