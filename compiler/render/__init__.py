"""Stage 4: model -> artifacts. Each target is one renderer in :data:`RENDERERS`.

A renderer is a function ``(platform, context) -> list[Artifact]``. The pipeline runs
them in order (the tuple is the pipeline, as data), then parses every artifact back
before anything is written (:func:`ai4ec.write.verify_artifact`). Targets arrive in their
own modules; adding one means adding it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..model.types import Platform
from .apim import render_apim
from .artifact import Artifact, RenderContext
from .azure import render_azure
from .k8s import render_k8s
from .runtime import render_runtime

Renderer = Callable[[Platform, RenderContext], list[Artifact]]

#: (target name, renderer) in the order artifacts are produced.
RENDERERS: tuple[tuple[str, Renderer], ...] = (
    ("azure", render_azure),
    ("kubernetes", render_k8s),
    ("apim", render_apim),
    ("functions", render_runtime),
)


@dataclass(frozen=True, slots=True)
class RenderResult:
    """Artifacts of one environment, keyed by their path below ``out/<env>/``."""

    environment: str
    artifacts: tuple[Artifact, ...]


def render_all(platform: Platform, context: RenderContext) -> RenderResult:
    """Run every renderer for one environment."""
    artifacts: list[Artifact] = []
    for _name, renderer in RENDERERS:
        artifacts.extend(renderer(platform, context))
    seen: set[PurePosixPath] = set()
    for a in artifacts:
        if a.path in seen:  # pragma: no cover - a renderer bug, not user input
            raise AssertionError(f"two renderers wrote {a.path}")
        seen.add(a.path)
    return RenderResult(
        environment=platform.environment,
        artifacts=tuple(sorted(artifacts, key=lambda a: str(a.path))),
    )


__all__ = ["RENDERERS", "Artifact", "RenderContext", "RenderResult", "render_all"]
