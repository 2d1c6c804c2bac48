"""API Management target: the platform's only public door.

Model -> plan (:mod:`.plan`, asserting the model's APIM rules through :mod:`.rules`) -> policy files
(:mod:`.policies`) and the API Management children of the Azure template
(:mod:`.resources`). The plan and every policy are rendered once per environment: the
files in ``apim/`` and the ``properties.value`` of their ARM/Bicep policy resources are
the same strings. The Azure target receives :attr:`ApimResult.infrastructure` as an
argument (the pipeline composes the two); it never imports this room.
Contract with the Azure target: docs/apim.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...model.types import Platform
from ..artifact import Artifact, RenderContext
from .plan import build_plan
from .policies import render_policies
from .resources import (
    APIM_API_VERSION,
    INGRESS_PARAMETER,
    POLICY_FORMAT,
    ApimInfrastructure,
    ingress_parameter,
)


@dataclass(frozen=True, slots=True)
class ApimResult:
    """The APIM target's output for one environment.

    Attributes:
        artifacts: ``apim/policies/**.xml``, ``apim/products/*.xml`` and
            ``apim/fragments/*.xml`` (the policy fragments the policies include).
        infrastructure: What the Azure target builds the APIM children from.
    """

    artifacts: tuple[Artifact, ...]
    infrastructure: ApimInfrastructure


def render_apim(platform: Platform, context: RenderContext) -> ApimResult:
    """Every API Management policy of one environment, and the service's children.

    Raises:
        RenderError: a value cannot be expressed safely in a policy, an OpenAPI file
            does not match its endpoints, or a template produced invalid XML.
    """
    plan = build_plan(platform, context.source_dir, context.source_name)
    artifacts = tuple(render_policies(plan))
    infrastructure = ApimInfrastructure(
        plan=plan,
        policies={str(a.path): a.content.decode("utf-8") for a in artifacts},
        parameters=(ingress_parameter(platform),),
    )
    return ApimResult(artifacts=artifacts, infrastructure=infrastructure)


__all__ = [
    "APIM_API_VERSION",
    "INGRESS_PARAMETER",
    "POLICY_FORMAT",
    "ApimInfrastructure",
    "ApimResult",
    "render_apim",
]
