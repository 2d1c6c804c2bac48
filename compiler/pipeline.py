"""The compile pipeline as one call: ``load -> validate -> model (-> render -> write)``.

``check_platform`` runs everything up to the model for every requested environment and
returns all diagnostics at once; ``build_platform`` adds rendering and writing. Both are
pure library functions (no printing, no exit codes): the CLI reports their results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .errors import Diagnostic, LoadError, Severity, ValidationError
from .load import (
    Document,
    SourceMap,
    apply_environment,
    base_view,
    environment_names,
    format_path,
    gc_paused,
    load_platform,
)
from .model import Platform, build_model

if TYPE_CHECKING:  # the render stage loads only when something is rendered
    from .render import Artifact, RenderResult

DEFAULT_ENV = "default"


@dataclass(frozen=True, slots=True)
class EnvironmentResult:
    """One environment after validation: its merged data and, if valid, its model."""

    name: str
    data: dict[str, Any]
    source: SourceMap
    platform: Platform | None
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of validating a platform file across environments."""

    document: Document | None
    environments: tuple[EnvironmentResult, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when no error (warnings allowed) was found."""
        return not any(d.severity is Severity.ERROR for d in self.diagnostics)

    def platforms(self) -> list[Platform]:
        """The models of all environments (only meaningful when ``ok``)."""
        return [e.platform for e in self.environments if e.platform is not None]


def check_platform(
    path: Path | str,
    environments: Sequence[str] | None = None,
    display_name: str | None = None,
) -> CheckResult:
    """Load, validate and model ``path`` for the given (default: all) environments."""
    try:
        doc = load_platform(path, display_name)
    except LoadError as exc:
        return CheckResult(document=None, diagnostics=exc.diagnostics)
    return check_document(doc, environments)


def check_document(doc: Document, environments: Sequence[str] | None = None) -> CheckResult:
    """Validate an already loaded document (see :func:`check_platform`)."""
    from .validate import environments_diagnostics

    diags: list[Diagnostic] = environments_diagnostics(doc.data, doc.source)
    if diags:
        # No overlay can be merged, but the base is still checked: every problem at once.
        with gc_paused():
            data, source = base_view(doc)
            diags.extend(_check_view(data, source, DEFAULT_ENV, doc.path.parent)[1])
        return CheckResult(document=doc, diagnostics=tuple(sorted(diags, key=Diagnostic.sort_key)))
    defined = environment_names(doc)
    if environments:
        hint = (
            f"defined environments: {', '.join(defined)}"
            if defined
            else "this file defines no `environments`"
        )
        diags.extend(
            Diagnostic(
                code="E-ENV-UNKNOWN",
                message=f"environment {env!r} is not defined",
                file=doc.source.file,
                json_path="$.environments",
                hint=hint,
            )
            for env in environments
            if env not in defined
        )
        if diags:
            return CheckResult(document=doc, diagnostics=tuple(diags))
        wanted = list(environments)
    else:
        wanted = defined or [DEFAULT_ENV]

    results: list[EnvironmentResult] = []
    per_env: list[list[Diagnostic]] = []
    base_dir = doc.path.parent
    for env in wanted:
        env_diags: list[Diagnostic] = []
        with gc_paused():
            if env == DEFAULT_ENV and not defined:
                data, source = base_view(doc)
            else:
                data, source = apply_environment(doc, env)
            platform, found = _check_view(data, source, env, base_dir)
            env_diags.extend(found)
        results.append(
            EnvironmentResult(
                name=env,
                data=data,
                source=source,
                platform=platform,
                diagnostics=tuple(env_diags),
            )
        )
        per_env.append(env_diags)
    return CheckResult(
        document=doc,
        environments=tuple(results),
        diagnostics=tuple(_merge_env_diagnostics(wanted, per_env, bool(defined))),
    )


def _check_view(
    data: dict[str, Any], source: SourceMap, env: str, base_dir: Path
) -> tuple[Platform | None, list[Diagnostic]]:
    """Schema and semantic diagnostics of one merged view, and its model when valid.

    With schema errors, the semantic rules still run on every part the schema accepted
    (:func:`ai4ec.validate.prune`): every problem at once.
    """
    from .validate import prune, schema_findings

    diags, error_paths = schema_findings(data, source)
    if not any(d.severity is Severity.ERROR for d in diags):
        platform, semantic = build_model(data, source, env, base_dir)
        return platform, diags + semantic
    rest = prune(data, source, error_paths)
    if rest is not None:
        _, semantic = build_model(rest.data, rest.source, env, base_dir, rest.broken)
        diags.extend(rest.restore(semantic))
    return None, diags


def _merge_env_diagnostics(
    envs: list[str], per_env: list[list[Diagnostic]], has_envs: bool
) -> list[Diagnostic]:
    """One diagnostic per distinct problem, naming the environments it occurs in.

    A mistake in the base section shows up once per environment; users want it once.
    """
    seen: dict[tuple[Any, ...], list[str]] = {}
    first: dict[tuple[Any, ...], Diagnostic] = {}
    for env, diags in zip(envs, per_env, strict=True):
        for d in diags:
            key = (d.code, d.file, d.line, d.col, d.message)
            seen.setdefault(key, []).append(env)
            first.setdefault(key, d)
    out = []
    for key, d in first.items():
        where = seen[key]
        if has_envs and len(where) < len(envs):
            d = Diagnostic(
                code=d.code,
                message=f"{d.message} [environment: {', '.join(where)}]",
                file=d.file,
                line=d.line,
                col=d.col,
                json_path=d.json_path,
                hint=d.hint,
                severity=d.severity,
            )
        out.append(d)
    out.sort(key=Diagnostic.sort_key)
    return out


def require_ok(result: CheckResult) -> list[Platform]:
    """The models, or raise :class:`ValidationError` carrying every diagnostic."""
    if not result.ok:
        n = sum(1 for d in result.diagnostics if d.severity is Severity.ERROR)
        raise ValidationError(f"{n} error(s) in the platform file", result.diagnostics)
    return result.platforms()


__all__ = [
    "DEFAULT_ENV",
    "CheckResult",
    "EnvironmentResult",
    "Progress",
    "RenderedEnvironment",
    "check_document",
    "check_platform",
    "format_path",
    "render_environments",
    "render_platforms",
    "require_ok",
]


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What ``build_platform`` wrote, plus the warnings met on the way."""

    check: CheckResult
    written: tuple[Path, ...]


class RenderedEnvironment(NamedTuple):
    """One environment rendered in memory: its artifacts and its manifest file.

    A named tuple, so ``for rendered, manifest in render_platforms(...)`` keeps working.
    """

    result: RenderResult
    manifest: Artifact


class Progress(Protocol):
    """Where long work reports how far it got (a progress bar on a terminal)."""

    def start(self, total: int) -> None:
        """``total`` steps follow."""

    def step(self, label: str) -> None:
        """One step is done; ``label`` says which (``prod: azure``)."""


def render_platforms(
    result: CheckResult,
    progress: Progress | None = None,
    side: str = "",
    jobs: int | None = None,
    bicep: bool = True,
) -> list[RenderedEnvironment]:
    """Render every valid environment in memory, in the order of ``result``, with manifests.

    :func:`render_environments` does the rendering (see it for the arguments); this adds
    each environment's ``manifest.json``, which only a build writes.

    Raises:
        ValidationError: the platform file has errors.
        RenderError: a target cannot render a valid model.
    """
    import hashlib

    from .write import manifest

    rendered = render_environments(result, progress, side, jobs, bicep)
    doc = result.document
    assert doc is not None
    source_sha = hashlib.sha256("\n".join(doc.lines).encode()).hexdigest()
    return [
        RenderedEnvironment(r, manifest(r, platform.name, doc.source.file, source_sha))
        for platform, r in zip(result.platforms(), rendered, strict=True)
    ]


def render_environments(
    result: CheckResult,
    progress: Progress | None = None,
    side: str = "",
    jobs: int | None = None,
    bicep: bool = True,
) -> list[RenderResult]:
    """Render every valid environment in memory, in the order of ``result``.

    Without the manifests :func:`render_platforms` adds: ``ai4ec diff`` compares the
    artifacts only, and hashing 30 MB of them for a manifest it never reads cost about
    0.15 s per side at 1,000 APIs.

    ``progress`` is told the number of steps (environments x targets) first, then each
    target of each environment as it finishes; ``side`` prefixes the labels (diff).
    ``jobs`` is how many processes render an environment's targets (see
    :func:`~ai4ec.render.render_all`; default ``$AI4EC_JOBS``, else the usable cores).
    ``bicep=False`` leaves the Bicep files out (``ai4ec diff`` reads the ARM JSON only):
    a complete cached entry still serves it, and a render without them is cached under
    a key of its own (:func:`.render.stored.partial_key`), never as a complete one.

    Raises:
        ValidationError: the platform file has errors.
        RenderError: a target cannot render a valid model.
    """
    from . import cache
    from .render import TARGETS, RenderContext, RenderResult, render_all, stored

    platforms = require_ok(result)
    doc = result.document
    assert doc is not None
    text = "\n".join(doc.lines)
    context = RenderContext(
        source_name=doc.source.file, source_dir=str(doc.path.parent), bicep=bicep
    )
    rendered: list[RenderResult] = []
    if progress is not None:
        progress.start(len(platforms) * len(TARGETS))
    prefix = f"{side}: " if side else ""
    for platform in platforms:
        done = _reporter(progress, f"{prefix}{platform.environment}: ") if progress else None
        key = ""
        if cache.enabled():
            key = stored.environment_key(text, context.source_name, context.source_dir, platform)
        hit = stored.load(key) if key else None
        if key and hit is None and not bicep:
            key = stored.partial_key(key)
            hit = stored.load(key)
        if hit is not None:
            r = RenderResult(platform.environment, hit[0], cache_key=key, verified=hit[1])
            if done is not None:
                for target in TARGETS:
                    done(target)
        else:
            r = render_all(platform, context, done, jobs)
            if key:
                stored.store(key, r.artifacts)
                r = RenderResult(r.environment, r.artifacts, cache_key=key)
        rendered.append(r)
    cache.prune()  # bounded by $AI4EC_CACHE_MAX_MB; only after a run that grew it
    return rendered


def _reporter(progress: Progress, prefix: str) -> Callable[[str], None]:
    def done(target: str) -> None:
        progress.step(prefix + target)

    return done


def build_platform(
    path: Path | str,
    out_dir: Path | str,
    environments: Sequence[str] | None = None,
    display_name: str | None = None,
    verify: bool = False,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> BuildResult:
    """Validate, render and write ``out_dir/<env>/`` for each environment.

    ``verify`` parses back the Bicep files too (slow; CI and the tests set it); ``jobs``
    is passed to :func:`render_platforms` (1 renders in this process only).

    Raises:
        ValidationError: the platform file has errors (nothing is written).
        RenderError / BuildError: rendering or writing failed (nothing half-written).
    """
    from .write import write_build

    result = check_platform(path, environments, display_name)
    rendered = render_platforms(result, progress, jobs=jobs)
    written = write_build(Path(out_dir), rendered, verify=verify)
    return BuildResult(check=result, written=tuple(written))
