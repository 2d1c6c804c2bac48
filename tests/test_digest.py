"""An artifact's identity: a zip is known by its entries, whatever compressed them."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from ai4ec.digest import artifact_sha256, zip_content_sha256

FILES = {"b.py": b"print('b')\n" * 40, "a/host.json": b"{}\n", "c.txt": b""}


def _zip(files: dict[str, bytes], method: int, level: int | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 5, 17, 1, 2, 4))
            zf.writestr(info, data, compress_type=method, compresslevel=level)
    return buf.getvalue()


def test_compression_timestamps_and_order_do_not_count() -> None:
    stored = _zip(FILES, zipfile.ZIP_STORED)
    fast = _zip(dict(reversed(FILES.items())), zipfile.ZIP_DEFLATED, 1)
    small = _zip(FILES, zipfile.ZIP_DEFLATED, 9)
    assert len({stored, fast, small}) == 3
    digest = zip_content_sha256(stored)
    assert zip_content_sha256(fast) == zip_content_sha256(small) == digest
    assert digest[1] == sum(len(d) for d in FILES.values())
    assert artifact_sha256("functions/bundle.zip", small) == digest[0]


@pytest.mark.parametrize(
    "changed",
    [
        {**FILES, "b.py": b"print('B')\n" * 40},  # content
        {"B.py" if k == "b.py" else k: v for k, v in FILES.items()},  # name
        {**FILES, "d.py": b""},  # an entry more
        {k: v for k, v in FILES.items() if k != "c.txt"},  # an empty entry less
    ],
)
def test_names_and_content_do_count(changed: dict[str, bytes]) -> None:
    base = zip_content_sha256(_zip(FILES, zipfile.ZIP_DEFLATED, 6))[0]
    assert zip_content_sha256(_zip(changed, zipfile.ZIP_DEFLATED, 6))[0] != base


def test_other_artifacts_are_known_by_their_bytes() -> None:
    data = _zip(FILES, zipfile.ZIP_STORED)
    assert artifact_sha256("apim/bundle.zip.txt", data) == hashlib.sha256(data).hexdigest()
