"""API Management target: the platform's only public door.

Model -> ``apim/policies/**.xml`` and ``apim/products/*.xml`` (this module's renderer)
plus the ARM resources the Azure target embeds in its templates
(:func:`apim_arm_resources`). Both come from one plan (:mod:`.apim_plan`), so a policy
file and the ``properties.value`` of its ARM policy resource are the same bytes.
Contract with the Azure target: docs/apim.md.
"""

from __future__ import annotations

from ..model.types import Platform
from .apim_arm import (
    APIM_API_VERSION,
    INGRESS_PARAMETER,
    POLICY_FORMAT,
    apim_arm_parameters,
    apim_arm_resources,
)
from .apim_plan import build_plan
from .apim_policies import render_policies
from .artifact import Artifact, RenderContext


def render_apim(platform: Platform, context: RenderContext) -> list[Artifact]:
    """Every API Management policy of one environment, as files.

    Raises:
        RenderError: a value cannot be expressed safely in a policy, an OpenAPI file
            does not match its endpoints, or a template produced invalid XML.
    """
    plan = build_plan(platform, context.source_dir, context.source_name)
    return render_policies(plan)


__all__ = [
    "APIM_API_VERSION",
    "INGRESS_PARAMETER",
    "POLICY_FORMAT",
    "apim_arm_parameters",
    "apim_arm_resources",
    "render_apim",
]
