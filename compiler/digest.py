"""The identity of a build artifact: its SHA-256, or for a zip the SHA-256 of its entries.

A deflated zip's bytes depend on the zlib that compressed it (zlib, zlib-ng, Apple's
build), so the same Functions bundle built on two machines can differ byte for byte
while every file in it is the same. Wherever ai4ec asks "is this the same bundle"
(``manifest.json`` and so the golden tree, ``apply``'s "no changes since the last apply",
a saved plan), it asks about the entries: their names and uncompressed bytes. Every
other artifact is text that ai4ec prints itself, so its bytes are its identity.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

#: ``manifest.json``'s ``digest`` of an artifact whose ``sha256`` and ``bytes`` describe
#: the zip's entries (:func:`zip_content_sha256`), not the archive's bytes.
ZIP_ENTRIES = "zip-entries"


def is_zip(path: str) -> bool:
    """Whether artifact ``path`` is identified by its entries (a ``.zip``)."""
    return path.endswith(".zip")


def zip_content_sha256(data: bytes) -> tuple[str, int]:
    """SHA-256 over the entries' names and uncompressed bytes, and their total size.

    Entries are taken in name order, each as its UTF-8 name, a NUL and the SHA-256 of its
    content, so neither compression, timestamps, permissions nor member order count.

    Raises:
        zipfile.BadZipFile: ``data`` is not a zip archive.
    """
    h = hashlib.sha256(b"ai4ec zip entries 1\0")
    size = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.is_dir():
                continue
            content = zf.read(info)
            size += len(content)
            h.update(info.filename.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest(), size


def artifact_identity(path: str, data: bytes) -> tuple[str, int, str | None]:
    """What ``manifest.json`` records for artifact ``path`` with content ``data``.

    Returns:
        ``(sha256, bytes, digest)``: for a zip the entries' SHA-256 and uncompressed size
        with ``digest`` :data:`ZIP_ENTRIES`; otherwise the bytes' own, and ``None``.

    Raises:
        zipfile.BadZipFile: ``path`` is a ``.zip`` but ``data`` is not a zip archive.
    """
    if is_zip(path):
        sha, size = zip_content_sha256(data)
        return sha, size, ZIP_ENTRIES
    return hashlib.sha256(data).hexdigest(), len(data), None


def artifact_sha256(path: str, data: bytes) -> str:
    """The SHA-256 ``manifest.json`` records for artifact ``path`` (:func:`artifact_identity`).

    Raises:
        zipfile.BadZipFile: ``path`` is a ``.zip`` but ``data`` is not a zip archive.
    """
    return artifact_identity(path, data)[0]
