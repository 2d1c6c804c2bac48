"""Stage 5: verify rendered artifacts and write them atomically with a manifest.

Every artifact is parsed back by its kind before anything touches the disk (a file
assembled from parts its renderer parsed back one by one, a cluster's manifests.yaml,
gets its joints checked instead, and a full parse under ``build --verify``). The output
of each environment is written into a temporary directory next to the target and
swapped in with renames, so an interrupted or failed build never leaves a half-written
``out/<env>/``. ``manifest.json`` lists every artifact with its SHA-256; it contains no
timestamps, so the same input gives byte-identical output.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import xml.parsers.expat
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from . import __version__
from .digest import artifact_identity
from .errors import BuildError, Diagnostic, RenderError
from .render import RenderResult
from .render.artifact import Artifact, json_artifact, parse_yaml_through
from .render.stored import VERIFIED_BASIC, VERIFIED_BICEP, mark_verified

MANIFEST_SCHEMA_VERSION = 1


def verify_artifact(artifact: Artifact, full: bool = False) -> None:
    """Parse ``artifact`` back according to its kind.

    YAML, JSON and XML are always parsed back: their parsers are C and cheap. A YAML
    file whose renderer already parsed back every document on its own
    (:attr:`~ai4ec.render.artifact.Artifact.checked_documents`, a cluster's
    ``manifests.yaml``) gets only its joints checked, unless ``full``. Bicep is parsed
    back (with pycep's pure-Python grammar, seconds per large file) only when ``full`` is
    set - ``ai4ec build --verify``, which CI and the tests use; the Bicep printer is
    otherwise proven by round-tripping every golden file through pycep.

    Raises:
        RenderError: when the content does not parse (a renderer or template bug).
    """
    text = ""
    try:
        if artifact.kind == "zip":
            with zipfile.ZipFile(io.BytesIO(artifact.content)) as zf:
                bad = zf.testzip()
                if bad:
                    raise ValueError(f"corrupt member {bad}")
            return
        if artifact.kind == "yaml" and artifact.checked_documents and not full:
            _check_joints(artifact.content, artifact.checked_documents)
            return
        text = artifact.content.decode("utf-8")
        if artifact.kind == "yaml":
            parse_yaml_through(text)
        elif artifact.kind == "json":
            json.loads(text)
        elif artifact.kind == "xml":
            # expat with no handlers checks well-formedness without building a DOM.
            xml.parsers.expat.ParserCreate().Parse(text, True)
        elif artifact.kind == "bicep" and full:
            _parse_bicep(text)
    except Exception as exc:  # noqa: BLE001 - any parser failure means the same thing
        raise RenderError(
            f"generated {artifact.path} does not parse: {exc}",
            (
                Diagnostic(
                    code="E-RENDER-PARSE",
                    message=f"generated {artifact.path} does not parse back: {exc}",
                    hint="this is an ai4ec bug; please report it with your platform.yaml",
                ),
            ),
        ) from exc


#: A line that opens or closes a YAML document: "---" or "..." alone or before content.
_DOC_MARKER = re.compile(rb"^(?:---|\.\.\.)(?=[ \t\n]|\Z)", re.M)


def _check_joints(content: bytes, documents: int) -> None:
    """The joints of a YAML file made of ``documents`` separately parsed documents.

    Each part parsed back alone and holds no marker (the renderer's check), so the file
    parses as those documents exactly when everything before the first marker is
    comments and there is one marker per document - a regex over the bytes, not a parse.

    Raises:
        ValueError: the joints do not hold (caught by :func:`verify_artifact`).
    """
    markers = [m.start() for m in _DOC_MARKER.finditer(content)]
    head = content[: markers[0]] if markers else content
    for line in head.decode("utf-8").splitlines():  # every break libyaml knows, and more
        if line.strip() and not line.lstrip().startswith("#"):
            raise ValueError(f"content before the first document: {line[:60]!r}")
    if len(markers) != documents:
        raise ValueError(f"{len(markers)} document markers for {documents} checked documents")


@cache
def _bicep_parser() -> Any:
    # Building the parser compiles its grammar; one per process serves every file.
    from pycep import BicepParser

    return BicepParser()


def _parse_bicep(text: str) -> None:
    _bicep_parser().parse(text=text)


def _manifest_entry(path: str, kind: str, content: bytes) -> dict[str, Any]:
    """One artifact of ``manifest.json``: its size and SHA-256.

    A zip is described by its entries (``digest: zip-entries``, see
    :func:`~compiler.digest.artifact_identity`), so the manifest, and with it the golden
    tree and ``apply``'s checks, do not change with the zlib that deflated it.
    """
    sha, size, digest = artifact_identity(path, content)
    entry: dict[str, Any] = {"path": path, "kind": kind, "bytes": size, "sha256": sha}
    if digest is not None:
        entry["digest"] = digest
    return entry


def manifest(
    result: RenderResult, platform_name: str, source_name: str, source_sha: str
) -> Artifact:
    """``manifest.json``: what was built, from what, with every artifact's hash."""
    entries = [_manifest_entry(str(a.path), a.kind, a.content) for a in result.artifacts]
    data: dict[str, Any] = {
        "schemaVersion": MANIFEST_SCHEMA_VERSION,
        "generator": f"ai4ec {__version__}",
        "platform": platform_name,
        "environment": result.environment,
        "source": {"file": source_name, "sha256": source_sha},
        "artifacts": entries,
    }
    return json_artifact("manifest.json", data)


def write_build(
    out_dir: Path, results: Sequence[tuple[RenderResult, Artifact]], verify: bool = False
) -> list[Path]:
    """Write each environment's artifacts plus manifest under ``out_dir/<env>/``.

    ``verify`` also parses back every Bicep file, and in full every file whose parts were
    parsed back by their renderer (see :func:`verify_artifact`).

    All artifacts are verified first; then each environment is staged in a temporary
    sibling directory and renamed into place.

    Returns:
        The environment directories written.
    """
    wanted = VERIFIED_BICEP if verify else VERIFIED_BASIC
    for result, man in results:
        verify_artifact(man)
        if result.verified in (wanted, VERIFIED_BICEP):
            continue  # these very bytes parsed back before (render cache)
        for a in result.artifacts:
            verify_artifact(a, full=verify)
        if result.cache_key:
            mark_verified(result.cache_key, wanted)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(
            f"cannot create output directory {out_dir}: {exc.strerror}",
            (Diagnostic(code="E-BUILD-WRITE", message=f"cannot create {out_dir}: {exc.strerror}"),),
        ) from None
    written = []
    for result, man in results:
        target = out_dir / result.environment
        stage = Path(tempfile.mkdtemp(prefix=f".{result.environment}.", dir=out_dir))
        try:
            for a in (*result.artifacts, man):
                dest = stage.joinpath(*a.path.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(a.content)
            _swap_in(stage, target)
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise BuildError(
                f"cannot write {target}: {exc.strerror}",
                (Diagnostic(code="E-BUILD-WRITE", message=f"cannot write {target}: {exc}"),),
            ) from None
        written.append(target)
    return written


def _swap_in(stage: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    stage.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
