"""``ai4ec diff``: what a platform.yaml change does, in one report, before it is applied.

The report covers the cloud, the cluster, the gateway and the runtime.

Input: platform.yaml at two git refs (or a ref and the working tree), or two build
output directories. Output: a :class:`~ai4ec.diff.records.DiffReport` - every generated
resource that is added, removed, changed, replaced or renamed, with field-level
changes, the platform.yaml lines that caused it, its risk and its monthly cost - which
:mod:`ai4ec.diff.formats` prints as text, markdown or JSON.

Both sides are compiled in memory with the current ai4ec and compared resource by
resource (never as text), so formatting, comments and key order in platform.yaml
never show up as changes. Library functions here neither print nor exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from ..errors import Diagnostic, DiffError
from ..pipeline import Progress
from . import cost as costs
from .compare import EnvSide, diff_environment
from .records import ChangeKind, DiffReport, EnvironmentDiff, ResourceChange, Risk, Side
from .sources import (
    Loaded,
    default_base,
    load_build_dir,
    load_ref,
    load_worktree,
    render,
    repo_root,
    resolve_commit,
    same_input,
)

#: Version of the JSON report (``--format json``); bumped on incompatible changes.
SCHEMA_VERSION = 1


def diff_builds(
    base: dict[str, EnvSide],
    head: dict[str, EnvSide],
    base_side: Side,
    head_side: Side,
    prices: costs.Prices | None = None,
    notes: Sequence[str] = (),
) -> DiffReport:
    """Compare two sets of built environments (matched by name).

    When each side has exactly one environment they are compared with each other even
    if their names differ (``ai4ec diff out/dev out/prod``).
    """
    prices = prices if prices is not None else costs.load_prices()
    pairs: list[tuple[str, EnvSide | None, EnvSide | None]] = []
    if len(base) == 1 and len(head) == 1 and set(base) != set(head):
        (b,), (h,) = base.values(), head.values()
        pairs.append((h.name, b, h))
    else:
        names = [*head, *(n for n in base if n not in head)]
        pairs.extend((n, base.get(n), head.get(n)) for n in names)
    envs = tuple(diff_environment(n, b, h, prices) for n, b, h in pairs)
    return DiffReport(
        base=base_side,
        head=head_side,
        environments=envs,
        notes=tuple(notes),
        currency=str(prices.get("currency", "USD")),
        hours_per_month=float(prices.get("hoursPerMonth", 730)),
    )


def diff_dirs(
    base_dir: Path,
    head_dir: Path,
    environments: Sequence[str] | None = None,
    prices: costs.Prices | None = None,
) -> DiffReport:
    """Compare two build output directories (``out/`` or ``out/<env>/``).

    Raises:
        DiffError: a directory is not a build output, or a named environment is in
            neither.
    """
    base = load_build_dir(base_dir)
    head = load_build_dir(head_dir)
    if environments:
        _check_envs(environments, list(base) + list(head))
        base = {k: v for k, v in base.items() if k in environments}
        head = {k: v for k, v in head.items() if k in environments}
    notes = ["build directories carry no platform.yaml: changes are not traced to source lines"]
    return diff_builds(
        base,
        head,
        Side(label=str(base_dir), directory=str(base_dir)),
        Side(label=str(head_dir), directory=str(head_dir)),
        prices,
        notes,
    )


def _check_envs(wanted: Sequence[str], known: Sequence[str]) -> None:
    missing = [e for e in wanted if e not in known]
    if missing:
        raise DiffError(
            f"environment {missing[0]!r} is defined on neither side",
            tuple(
                Diagnostic(
                    code="E-ENV-UNKNOWN",
                    message=f"environment {e!r} is defined on neither side",
                    hint=f"known environments: {', '.join(sorted(set(known))) or 'none'}",
                )
                for e in missing
            ),
        )


def diff_git(
    file: Path,
    base_ref: str | None = None,
    head_ref: str | None = None,
    environments: Sequence[str] | None = None,
    prices: costs.Prices | None = None,
    display: str | None = None,
    progress: Progress | None = None,
) -> DiffReport:
    """Compare platform.yaml at ``base_ref`` with ``head_ref`` (default: the working tree).

    ``progress`` hears each target of each environment of each side as it is built.

    ``base_ref`` defaults to where the current branch left ``origin``'s default branch
    (see :func:`~ai4ec.diff.sources.default_base`), or ``HEAD`` without a remote.

    Raises:
        DiffError: not in a git repository, unknown ref, or an invalid platform.
        LoadError / ValidationError: the working-tree platform.yaml is invalid.
    """
    display = display or str(file)
    repo = repo_root(file.resolve())
    if repo is None:
        raise DiffError(
            f"{display} is not in a git repository",
            (
                Diagnostic(
                    code="E-DIFF-GIT",
                    message="not in a git repository: there is no base version to compare with",
                    file=display,
                    hint="compare two build directories instead: ai4ec diff DIR_A DIR_B",
                ),
            ),
        )
    rel = file.resolve().relative_to(repo.resolve()).as_posix()
    if base_ref is None:
        base_label, base_commit = default_base(repo)
    else:
        base_label, base_commit = base_ref, _commit(repo, base_ref, "--base")
    with ExitStack() as stack:
        base_side = Side(label=base_label, ref=base_ref or base_label, commit=base_commit, path=rel)
        base = load_ref(repo, base_commit, rel, display, base_side, stack)
        if head_ref is None:
            head = load_worktree(file, display, Side(label="working tree", path=rel))
        else:
            commit = _commit(repo, head_ref, "--head")
            head_side = Side(label=head_ref, ref=head_ref, commit=commit, path=rel)
            head = load_ref(repo, commit, rel, display, head_side, stack)
        if base.doc is None and head.doc is None:
            raise DiffError(
                f"{display} exists neither at {base.side.label} nor at {head.side.label}",
                (
                    Diagnostic(
                        code="E-FILE-NOT-FOUND",
                        message=f"{display} exists on neither side",
                        file=display,
                        hint="pass the platform file with -f",
                    ),
                ),
            )
        return _compare_loaded(base, head, environments, prices, progress)


def _commit(repo: Path, ref: str, option: str) -> str:
    commit = resolve_commit(repo, ref)
    if commit is None:
        raise DiffError(
            f"unknown git ref {ref!r}",
            (
                Diagnostic(
                    code="E-DIFF-REF",
                    message=f"{option} {ref}: no such commit, branch or tag",
                    hint="fetch it first (CI checkouts are shallow: fetch-depth: 0)",
                ),
            ),
        )
    return commit


def _compare_loaded(
    base: Loaded,
    head: Loaded,
    environments: Sequence[str] | None,
    prices: costs.Prices | None,
    progress: Progress | None = None,
) -> DiffReport:
    requested = list(environments) if environments else None
    notes = [*base.notes, *head.notes]
    if requested:
        known: list[str] = []
        for side in (base, head):
            if side.doc is not None:
                from ..load import environment_names

                known += environment_names(side.doc) or ["default"]
        _check_envs(requested, known)
    head_envs, _ = render(head, requested, "head", progress)
    if same_input(base, head):
        # Identical data and referenced files compile to identical output (builds are
        # deterministic): build once. Typical for comment- or layout-only changes.
        base_envs = head_envs
    else:
        base_envs, _ = render(base, requested, "base", progress)
    return diff_builds(base_envs, head_envs, base.side, head.side, prices, notes)


__all__ = [
    "SCHEMA_VERSION",
    "ChangeKind",
    "ResourceChange",
    "DiffReport",
    "EnvironmentDiff",
    "Risk",
    "diff_builds",
    "diff_dirs",
    "diff_git",
]
