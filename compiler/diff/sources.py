"""The two sides of a diff, built in memory.

A side is platform.yaml at a git ref or in the working tree, or an existing build
output directory.

Input: a platform file and git refs, or two directories. Output: per environment, an
:class:`~ai4ec.diff.compare.EnvSide` (artifacts by path, plus the merged data, source
map and model when built from platform.yaml).

Nothing is written to the build output or the repository. A ref is read with
``git show REF:path``; the files platform.yaml references (OpenAPI documents) are read
from the same ref into a temporary directory, because the renderers read them from
disk next to platform.yaml.
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import Ai4ecError, Diagnostic, DiffError
from ..load import (
    Document,
    SourceMap,
    environment_names,
    format_path,
    load_platform,
    parse_platform,
)
from ..pipeline import DEFAULT_ENV, Progress, check_document, render_environments
from .compare import EnvSide
from .records import Side, SourceRef

#: Fields of platform.yaml that name a file relative to it.
FILE_FIELDS = ("openapi",)


def _fail(code: str, message: str, hint: str = "", file: str = "") -> DiffError:
    return DiffError(message, (Diagnostic(code=code, message=message, hint=hint, file=file),))


# --------------------------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, check=False, timeout=120
        )
    except FileNotFoundError:
        raise _fail(
            "E-DIFF-GIT",
            "git is not installed",
            "install git, or compare two build directories: ai4ec diff DIR_A DIR_B",
        ) from None


def repo_root(path: Path) -> Path | None:
    """The top of the git work tree holding ``path``, or ``None`` outside one.

    Raises:
        DiffError: git refuses the repository (owned by another user).
    """
    where = path if path.is_dir() else path.parent
    proc = _git(where if where.exists() else Path.cwd(), "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        if "dubious ownership" in message or "safe.directory" in message:
            raise _fail(
                "E-DIFF-GIT",
                f"git refuses to read {where}: the repository belongs to another user",
                "git config --global --add safe.directory <repo> (CI: actions/checkout does this)",
            )
        return None
    return Path(proc.stdout.decode().strip())


def resolve_commit(repo: Path, ref: str) -> str | None:
    """The commit ``ref`` names, or ``None`` when it does not exist."""
    if ref.startswith("-"):
        return None
    proc = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip() or None


def default_base(repo: Path) -> tuple[str, str]:
    """(label, commit) of the default base: where this branch left the default branch.

    The default branch is ``origin/HEAD``, else ``origin/main``, else ``origin/master``;
    the base is its merge-base with ``HEAD`` (what a pull request's diff starts from).
    Without a remote branch, the base is ``HEAD``: the diff shows uncommitted changes.

    Raises:
        DiffError: the repository has no commit at all.
    """
    head = resolve_commit(repo, "HEAD")
    if head is None:
        raise _fail(
            "E-DIFF-REF",
            "the repository has no commits, so there is no base to compare with",
            "commit once, or pass --base REF",
        )
    for remote in ("origin/HEAD", "origin/main", "origin/master"):
        commit = resolve_commit(repo, remote)
        if commit is None:
            continue
        proc = _git(repo, "merge-base", commit, head)
        if proc.returncode == 0 and proc.stdout.strip():
            mb = proc.stdout.decode().strip()
            label = remote if mb == commit else f"merge-base of {remote} and HEAD"
            return label, mb
    return "HEAD", head


def show(repo: Path, commit: str, relpath: str) -> bytes | None:
    """The bytes of ``relpath`` at ``commit``, or ``None`` when it does not exist there."""
    proc = _git(repo, "cat-file", "blob", f"{commit}:{relpath}")
    return proc.stdout if proc.returncode == 0 else None


# ------------------------------------------------------------------------------ loading


@dataclass(slots=True)
class Loaded:
    """One side's platform document, loaded but not yet rendered."""

    side: Side
    doc: Document | None
    #: Files platform.yaml references, relative to its directory, with their bytes.
    refs: dict[str, bytes | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def referenced_files(data: Any) -> list[str]:
    """Relative file paths named in a platform document (``apis[].openapi``...)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in FILE_FIELDS and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(data)
    return sorted(set(found))


def _relocate(diags: Sequence[Diagnostic], label: str) -> tuple[Diagnostic, ...]:
    # Base-side diagnostics point into a file version that is not on disk: name it so,
    # and the CLI will not print a (wrong) snippet from the working-tree file.
    return tuple(replace(d, file=f"{d.file} (at {label})" if d.file else label) for d in diags)


def load_ref(
    repo: Path, commit: str, relpath: str, display: str, side: Side, stack: ExitStack
) -> Loaded:
    """platform.yaml and the files it references at ``commit``, mirrored in a temp dir.

    Raises:
        DiffError: the file does not parse at that commit.
    """
    raw = show(repo, commit, relpath)
    if raw is None:
        return Loaded(side, None, notes=[f"{display} does not exist at {side.label}"])
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ai4ec-diff-")))
    mirror = tmp / relpath
    mirror.parent.mkdir(parents=True, exist_ok=True)
    mirror.write_bytes(raw)
    try:
        doc = parse_platform(raw, display, path=mirror)
    except Ai4ecError as exc:
        raise DiffError(
            f"{display} at {side.label}: {exc}", _relocate(exc.diagnostics, side.label)
        ) from None
    refs: dict[str, bytes | None] = {}
    base_dir = posixpath.dirname(relpath)
    for ref in referenced_files(doc.data):
        target = posixpath.normpath(posixpath.join(base_dir, ref))
        if target.startswith("../") or target == "..":
            refs[ref] = None
            continue
        content = show(repo, commit, target)
        refs[ref] = content
        if content is not None:
            dest = tmp / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
    return Loaded(side, doc, refs)


def load_worktree(path: Path, display: str, side: Side) -> Loaded:
    """platform.yaml as it is on disk (and the bytes of the files it references)."""
    if not path.exists():
        return Loaded(side, None, notes=[f"{display} does not exist in the working tree"])
    doc = load_platform(path, display)
    refs: dict[str, bytes | None] = {}
    for ref in referenced_files(doc.data):
        try:
            refs[ref] = (path.parent / ref).read_bytes()
        except OSError:
            refs[ref] = None
    return Loaded(side, doc, refs)


def same_input(a: Loaded, b: Loaded) -> bool:
    """Whether both sides compile from identical data (comments and layout aside)."""
    return a.doc is not None and b.doc is not None and a.doc.data == b.doc.data and a.refs == b.refs


def _overlay_ref(doc: Document, env: str, defined: bool, change: str) -> SourceRef:
    source: SourceMap = doc.source
    if defined:
        path: tuple[str | int, ...] = ("environments", env)
        pos = source.key_positions.get(path) or source.positions.get(path)
        end = max(
            (p.line for q, p in source.positions.items() if q[:2] == path),
            default=pos.line if pos else None,
        )
    else:
        path = ()
        pos = source.positions.get(())
        end = len(doc.lines) or None
    return SourceRef(
        file=source.file,
        line=pos.line if pos else None,
        end_line=end,
        json_path=format_path(path),
        side="head" if change == "added" else "base",
        change=change,
    )


def render(
    loaded: Loaded, requested: Sequence[str] | None, role: str, progress: Progress | None = None
) -> tuple[dict[str, EnvSide], list[str]]:
    """Build the wanted environments of one side in memory.

    Returns:
        ``({env: EnvSide}, environments the document defines)``.

    Raises:
        DiffError: the platform is invalid on this side (with its diagnostics).
    """
    doc = loaded.doc
    if doc is None:
        return {}, []
    defined = environment_names(doc)
    available = defined or [DEFAULT_ENV]
    wanted = list(available) if requested is None else [e for e in requested if e in available]
    if not wanted:
        return {}, available
    result = check_document(doc, wanted if defined else None)
    try:
        # The compare reads the ARM JSON, not the Bicep printed from the same template.
        rendered = render_environments(result, progress, role, bicep=False)
    except Ai4ecError as exc:
        label = loaded.side.label
        diags = exc.diagnostics if role == "head" else _relocate(exc.diagnostics, label)
        raise DiffError(f"the platform at {label} is invalid: {exc}", diags) from None
    envs = {e.name: e for e in result.environments}
    out: dict[str, EnvSide] = {}
    change = "added" if role == "head" else "removed"
    for rr in rendered:
        er = envs[rr.environment]
        out[rr.environment] = EnvSide(
            name=rr.environment,
            files={str(a.path): a.content for a in rr.artifacts},
            data=er.data,
            source=er.source,
            platform=er.platform,
            overlay=_overlay_ref(doc, rr.environment, bool(defined), change),
        )
    return out, available


# -------------------------------------------------------------------------- directories


def load_build_dir(path: Path) -> dict[str, EnvSide]:
    """A build output directory: ``out/`` (one folder per environment) or ``out/<env>/``.

    Raises:
        DiffError: the directory is not a build output, or was written by an ai4ec whose
            manifest format this one does not read.
    """
    from ..write import MANIFEST_SCHEMA_VERSION

    if not path.is_dir():
        raise _fail("E-DIFF-DIR", f"{path} is not a directory", file=str(path))
    if (path / "manifest.json").is_file():
        roots = [path]
    else:
        roots = sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())
    if not roots:
        raise _fail(
            "E-DIFF-DIR",
            f"{path} is not an ai4ec build output (no manifest.json)",
            "pass out/ or out/<env>/ as written by `ai4ec build`",
            str(path),
        )
    out: dict[str, EnvSide] = {}
    for root in roots:
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(
                "E-DIFF-DIR", f"{root}/manifest.json is unreadable: {exc}", file=str(root)
            ) from None
        version = manifest.get("schemaVersion")
        if version != MANIFEST_SCHEMA_VERSION:
            raise _fail(
                "E-DIFF-VERSION",
                f"{root} was built with manifest schemaVersion {version!r}; this ai4ec reads "
                f"{MANIFEST_SCHEMA_VERSION}",
                "rebuild both sides with the same ai4ec version",
                str(root / "manifest.json"),
            )
        env = str(manifest.get("environment") or root.name)
        files: dict[str, bytes] = {}
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if f.is_file() and not any(part.startswith(".") for part in rel.parts):
                files[rel.as_posix()] = f.read_bytes()
        out[env] = EnvSide(name=env, files=files)
    return out
