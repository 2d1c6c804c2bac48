"""Azure target entry point: build the template, print Bicep and ARM, return typed.

See the package docstring (:mod:`ai4ec.render.azure`) for the files it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from ...model.types import Platform
from ..artifact import Artifact, RenderContext, json_artifact
from .arm import main_text, parameters_file, split_text
from .bicep import OUTPUT_DIR, bicep_files
from .template import (
    APIM_CHUNK,
    APIM_CHUNK_BYTES,
    ARM_MAX_RESOURCES,
    ApimChildren,
    AzureTemplate,
    build_template,
)


@dataclass(frozen=True, slots=True)
class AzureResult:
    """The Azure target's output for one environment.

    Attributes:
        template: Every resource, module and output (what the files print).
        artifacts: ``azure/*.bicep``, ``azure/modules/*.bicep`` and the ARM JSON files.
    """

    template: AzureTemplate
    artifacts: tuple[Artifact, ...]


def render_azure(
    platform: Platform, context: RenderContext, apim: ApimChildren | None = None
) -> AzureResult:
    """The Azure target: ``azure/main.bicep``, its modules, ``main.json`` and parameters.

    Without ``context.bicep`` (``ai4ec diff``), the Bicep files are left out: the same
    resources as the JSON, which is all the diff compares.

    Args:
        platform: The validated model of one environment.
        context: Build-wide inputs.
        apim: The APIM target's hand-off (its children of the API Management service).
    """
    tpl = build_template(platform, context, apim)
    artifacts = (
        [
            Artifact(PurePosixPath(OUTPUT_DIR) / name, text.encode("utf-8"))
            for name, text in bicep_files(tpl).items()
        ]
        if context.bicep
        else []
    )
    # Printed from each resource's print, per-API groups from the render cache (.prints):
    # the same bytes as json_artifact of arm_template / split_template.
    text, main = main_text(tpl)
    refs = {p.name: p.key_vault for p in tpl.spec.params if p.key_vault is not None}
    artifacts.append(Artifact(PurePosixPath("azure/main.json"), text.encode("utf-8")))
    artifacts.append(json_artifact("azure/main.parameters.json", parameters_file(main, refs)))
    for m in tpl.split:
        text, doc = split_text(tpl, m)
        artifacts.append(Artifact(PurePosixPath(f"azure/{m}.json"), text.encode("utf-8")))
        artifacts.append(json_artifact(f"azure/{m}.parameters.json", parameters_file(doc)))
    tpl.groups.store(tpl.arm_bodies.all_printed())
    return AzureResult(template=tpl, artifacts=tuple(artifacts))


__all__ = [
    "APIM_CHUNK",
    "APIM_CHUNK_BYTES",
    "ARM_MAX_RESOURCES",
    "ApimChildren",
    "AzureResult",
    "AzureTemplate",
    "build_template",
    "render_azure",
]
