"""Whole environments in the render cache: an unchanged platform is not rendered again.

A rebuild of the same platform.yaml, and the base side of ``ai4ec diff`` (usually the
last build's input), find every artifact of an environment under one key: the platform
text, the environment's name, the name the file is shown by (it is in the headers), the
bytes of every OpenAPI document it references, and :func:`~ai4ec.cache.code_fingerprint`
(ai4ec's code, templates, schemas, runtime and output libraries). Nothing else reaches
the renderers, so a hit is byte for byte what rendering would give; a test proves it.

The write stage parses every artifact back before writing. It marks an entry whose bytes
passed (``verified`` namespace, same key), so a hit skips that too: the same bytes
parsed before.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ..cache import DiskCache, code_fingerprint, key_of
from ..model.types import Platform
from .artifact import Artifact

#: Bumped when the payload's layout changes.
_FORMAT = "environment/1"

#: Marks of a verified entry: the basic parse-back, or that plus Bicep (``--verify``).
VERIFIED_BASIC = b"basic"
VERIFIED_BICEP = b"bicep"


def environment_key(text: str, source_name: str, source_dir: str, platform: Platform) -> str:
    """The cache key of ``platform``'s environment rendered from ``text``."""
    parts: list[str | bytes] = [_FORMAT, code_fingerprint(), text, source_name]
    parts.append(platform.environment)
    for api in platform.apis:
        if api.openapi is None:
            continue
        try:
            content = (Path(source_dir) / api.openapi).read_bytes()
        except OSError:
            content = b"\0missing"
        parts += [api.openapi, content]
    return key_of(*parts)


def partial_key(key: str) -> str:
    """Key of the entry rendered under ``key`` without the Bicep files (``ai4ec diff``).

    Its own key, so a partial render is never served as the complete one a build
    writes.
    """
    return key_of(_FORMAT, "without-bicep", key)


def pack(artifacts: tuple[Artifact, ...]) -> bytes:
    """Artifacts as one payload: a JSON index line, then every content back to back."""
    index = [[str(a.path), len(a.content)] for a in artifacts]
    head = json.dumps(index, separators=(",", ":")).encode("utf-8")
    return b"".join([head, b"\n", *(a.content for a in artifacts)])


def unpack(payload: bytes) -> tuple[Artifact, ...] | None:
    """The artifacts of :func:`pack`, or None when the payload is not of that shape."""
    head, sep, body = payload.partition(b"\n")
    if not sep:
        return None
    try:
        index = json.loads(head)
        pairs = [(str(path), int(size)) for path, size in index]
    except (ValueError, TypeError):
        return None
    out: list[Artifact] = []
    at = 0
    for path, size in pairs:
        if size < 0 or at + size > len(body):
            return None
        out.append(Artifact(PurePosixPath(path), body[at : at + size]))
        at += size
    return tuple(out) if at == len(body) else None


def load(key: str) -> tuple[tuple[Artifact, ...], bytes] | None:
    """The artifacts stored under ``key`` and their verification mark (b"" if none)."""
    payload = DiskCache("render").get(key)
    artifacts = unpack(payload) if payload is not None else None
    if artifacts is None:
        return None
    return artifacts, DiskCache("verified").get(key) or b""


def store(key: str, artifacts: tuple[Artifact, ...]) -> None:
    """Keep ``artifacts`` under ``key`` (best effort, like every cache write)."""
    DiskCache("render").put(key, pack(artifacts))


def mark_verified(key: str, mark: bytes) -> None:
    """Record that the entry under ``key`` parsed back (``mark`` says how thoroughly)."""
    DiskCache("verified").put(key, mark)


__all__ = [
    "VERIFIED_BASIC",
    "VERIFIED_BICEP",
    "environment_key",
    "load",
    "mark_verified",
    "pack",
    "partial_key",
    "store",
    "unpack",
]
