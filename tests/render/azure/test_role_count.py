"""The model's role-assignment count (E-AZ-ROLE-LIMIT) is what the Azure target emits.

``ai4ec.model.azure_limits`` counts role assignments from the model so that validation
can refuse a platform past Azure's 4,000 per subscription before anything renders; these
tests render every sample, the variants that add grants, and a generated platform with
secrets and admin groups, and count the ``roleAssignments`` in every ARM template.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ai4ec.model.azure_limits import role_assignments
from ai4ec.model.types import Platform

from .support import (
    ROOT,
    _variant,
    arm_resources,
    case_files,
    platforms,
    render_platform,
    sample_envs,
)
from .test_scale import _bench_platform

_ROLE = "Microsoft.Authorization/roleAssignments"


def _rendered_count(files: dict[str, bytes]) -> int:
    return sum(1 for r in arm_resources(files) if r["type"] == _ROLE)


@pytest.mark.parametrize(("sample", "env"), sample_envs())
def test_samples(sample: str, env: str) -> None:
    path = str(ROOT / "samples" / sample / "platform.yaml")
    platform = next(p for p in platforms(path) if p.environment == env)
    assert role_assignments(platform).total == _rendered_count(case_files(f"{sample}/{env}"))


@pytest.mark.parametrize("variant", ["custom-domain", "consumption", "two-clusters"])
def test_variants(variant: str) -> None:
    platform = _variant(variant)
    files = case_files(f"variant:{variant}")
    assert role_assignments(platform).total == _rendered_count(files)


def _with_admins_and_secrets(p: Platform) -> Platform:
    groups = ("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222")
    clusters = tuple(dataclasses.replace(c, admin_groups=groups) for c in p.clusters)
    apis = list(p.apis)
    i = next(i for i, a in enumerate(apis) if a.secrets)
    # Two variables reading one secret: a single grant.
    key, ref = apis[i].secrets[0]
    apis[i] = dataclasses.replace(apis[i], secrets=(*apis[i].secrets, (key + "_2", ref)))
    return dataclasses.replace(p, clusters=clusters, apis=tuple(apis))


def test_admin_groups_and_shared_secret_names() -> None:
    platform = _with_admins_and_secrets(_variant("two-clusters"))
    assert role_assignments(platform).total == _rendered_count(render_platform(platform))


@pytest.mark.slow
def test_many_apis_split_across_templates(tmp_path: Path) -> None:
    """300 APIs: the per-API grants leave main.json for split templates; all counted."""
    platform = _bench_platform(tmp_path, 300)
    count = role_assignments(platform)
    assert count.total == _rendered_count(render_platform(platform))
    assert count.apis >= 600
