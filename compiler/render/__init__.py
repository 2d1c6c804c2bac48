"""Stage 4: model -> artifacts, one room (sub-package or module) per target.

:func:`render_all` is the render stage as code: it runs each target once per
environment and composes them where one feeds another - the APIM target's typed result
(:class:`~.apim.ApimResult`) is an argument of the Azure target, which places the API
Management children below the service it declares. No target imports another's room;
the only shared vocabulary is the Azure expression tree (:mod:`.azure.spec`), the
artifact types (:mod:`.artifact`) and the Jinja environment (:mod:`.env`). The pipeline
parses every artifact back before anything is written
(:func:`ai4ec.write.verify_artifact`). Independent targets render at once: APIM and
Azure in a forked worker (:mod:`.worker`) beside Kubernetes and Functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import Ai4ecError
from ..model.types import Platform
from .apim import ApimResult, render_apim
from .artifact import Artifact, RenderContext
from .azure.target import AzureResult, render_azure
from .k8s import render_k8s
from .runtime import render_runtime

#: The targets, in the order their artifacts are produced.
TARGETS: tuple[str, ...] = ("apim", "azure", "kubernetes", "functions")


@dataclass(frozen=True, slots=True)
class TargetResults:
    """Each target's own result for one environment.

    Typed, for callers that need more than files (tests, the benchmark); the build
    keeps only the artifacts (:class:`RenderResult`), so no environment's resource
    graph outlives its rendering.
    """

    apim: ApimResult
    azure: AzureResult
    kubernetes: tuple[Artifact, ...]
    functions: tuple[Artifact, ...]


@dataclass(frozen=True, slots=True)
class RenderResult:
    """Artifacts of one environment, keyed by their path below ``out/<env>/``."""

    environment: str
    artifacts: tuple[Artifact, ...]
    #: Its key in the render cache (:mod:`.stored`), or "" when the cache is off.
    cache_key: str = ""
    #: How these very bytes were already parsed back (:data:`.stored.VERIFIED_BASIC`...).
    verified: bytes = b""


#: Told ``"<target>"`` after each target of an environment rendered (progress display).
TargetDone = Callable[[str], None]


def render_targets(
    platform: Platform, context: RenderContext, done: TargetDone | None = None
) -> TargetResults:
    """Run every target once for one environment, APIM before the Azure target it feeds."""
    tell = done or (lambda _target: None)
    apim = render_apim(platform, context)
    tell("apim")
    azure = render_azure(platform, context, apim.infrastructure)
    tell("azure")
    kubernetes = tuple(render_k8s(platform, context))
    tell("kubernetes")
    functions = tuple(render_runtime(platform, context))
    tell("functions")
    return TargetResults(apim=apim, azure=azure, kubernetes=kubernetes, functions=functions)


def render_all(
    platform: Platform,
    context: RenderContext,
    done: TargetDone | None = None,
    jobs: int | None = None,
) -> RenderResult:
    """Every artifact of one environment, sorted by path.

    With ``jobs`` above 1 (default: :func:`.worker.render_jobs`, the usable cores up to
    two), the APIM and Azure targets render in a forked worker while this process
    renders the Kubernetes and Functions targets: the first two are pure Python, the
    Kubernetes target mostly waits on Helm's engine, and no target reads another's
    output except Azure reading APIM's, which stay together. The artifacts are sorted
    by path either way, so the bytes are the same as a serial render (a test proves it).

    Raises:
        RenderError: a target cannot render the model. With several failing targets the
            first in :data:`TARGETS` order is raised, as a serial render would.
    """
    from . import worker

    artifacts = None
    if worker.render_jobs(jobs) > 1 and worker.can_fork():
        artifacts = _render_split(platform, context, done or (lambda _target: None))
    if artifacts is None:
        targets = render_targets(platform, context, done)
        artifacts = [
            *targets.azure.artifacts,
            *targets.kubernetes,
            *targets.apim.artifacts,
            *targets.functions,
        ]
    seen: set[PurePosixPath] = set()
    for a in artifacts:
        if a.path in seen:  # pragma: no cover - a renderer bug, not user input
            raise AssertionError(f"two renderers wrote {a.path}")
        seen.add(a.path)
    return RenderResult(
        environment=platform.environment,
        artifacts=tuple(sorted(artifacts, key=lambda a: str(a.path))),
    )


def _render_azure_side(
    platform: Platform, context: RenderContext
) -> tuple[tuple[Artifact, ...], tuple[Artifact, ...]]:
    """The APIM and Azure targets' artifacts (what the worker sends back, nothing more)."""
    apim = render_apim(platform, context)
    azure = render_azure(platform, context, apim.infrastructure)
    return apim.artifacts, azure.artifacts


def _render_split(
    platform: Platform, context: RenderContext, tell: TargetDone
) -> list[Artifact] | None:
    """APIM and Azure in a forked worker, Kubernetes and Functions here, at once.

    Returns None, having rendered nothing, when no process can be forked (a process
    limit, no memory): the caller renders serially instead.
    """
    from .worker import Forked

    try:
        side = Forked(lambda: _render_azure_side(platform, context))
    except OSError:
        return None
    try:
        kubernetes = render_k8s(platform, context)
        tell("kubernetes")
        functions = render_runtime(platform, context)
        tell("functions")
    except Ai4ecError:
        side.result()  # an error of APIM or Azure comes first, as in a serial render
        raise
    except BaseException:
        side.cancel()
        raise
    apim, azure = side.result()
    tell("apim")
    tell("azure")
    return [*azure, *kubernetes, *apim, *functions]


__all__ = [
    "TARGETS",
    "Artifact",
    "TargetDone",
    "RenderContext",
    "RenderResult",
    "TargetResults",
    "render_all",
    "render_targets",
]
