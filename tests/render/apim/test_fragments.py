"""Policy fragments (issue 15): shared logic deployed once, included by every operation.

Which tiers include fragments is decided in the plan alone (``uses_fragments``); a tier
that cannot gets the same logic inline, and that inline form is exactly what the gateway
runs with the fragments included (``expand_fragments``), byte for byte.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import PurePosixPath

import pytest

from ai4ec.model.types import Platform
from ai4ec.render.apim import plan as plan_module
from ai4ec.render.apim.plan import build_plan, uses_fragments
from ai4ec.render.apim.policies import expand_fragments, validate_policy
from ai4ec.resources import platform_schema

from ...conftest import ROOT
from .support import render, sample

#: Every tier platform.yaml accepts (the schema is the one list).
TIERS = platform_schema()["$defs"]["azure"]["properties"]["apiManagement"]["properties"]["sku"][
    "enum"
]


def _on_tier(platform: Platform, sku: str) -> Platform:
    apim = dataclasses.replace(platform.azure.api_management, sku=sku)
    azure = dataclasses.replace(platform.azure, api_management=apim)
    return dataclasses.replace(platform, azure=azure, _index={})


@pytest.mark.parametrize("sku", TIERS)
def test_every_tier_includes_fragments(sku: str) -> None:
    """Microsoft documents policy fragments and include-fragment for all tiers,
    Consumption included; the plan is the one place that says so."""
    platform, ctx = sample("landcover")
    tiered = _on_tier(platform, sku)
    assert uses_fragments(sku)
    plan = build_plan(tiered, ctx.source_dir, ctx.source_name)
    assert [f.id for f in plan.fragments] == [
        "ai4ec-create-task",
        "ai4ec-proxy-headers",
        "ai4ec-size-check",
    ]
    files = render(tiered, ctx)
    for f in plan.fragments:
        assert f.path in files
        users = {p for p, c in files.items() if f'fragment-id="{f.id}"'.encode() in c}
        assert users == set(f.included_by), f.id


@pytest.mark.parametrize("sku", TIERS)
def test_a_tier_without_fragments_gets_them_inline(
    sku: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a tier unable to include fragments, its policies would carry the fragments'
    text where the includes stand: the same policies as run by the gateway."""
    platform, ctx = sample("landcover")
    tiered = _on_tier(platform, sku)
    with_fragments = render(tiered, ctx)
    monkeypatch.setattr(plan_module, "INLINE_POLICY_SKUS", frozenset({sku}))
    assert not uses_fragments(sku)
    assert build_plan(tiered, ctx.source_dir, ctx.source_name).fragments == ()
    inline = render(tiered, ctx)
    fragments = {
        p.removeprefix("apim/fragments/").removesuffix(".xml"): c.decode("utf-8")
        for p, c in with_fragments.items()
        if p.startswith("apim/fragments/")
    }
    assert fragments
    assert sorted(inline) == sorted(p for p in with_fragments if "/fragments/" not in p)
    for path, content in inline.items():
        text = content.decode("utf-8")
        assert "include-fragment" not in text, path
        assert text == expand_fragments(with_fragments[path].decode("utf-8"), fragments), path
        assert validate_policy(content) == [], path


def test_operation_policies_hold_only_what_differs() -> None:
    """Per operation: its values as variables, the includes, and (async) its answer."""
    platform, ctx = sample("camera-trap")
    files = render(platform, ctx)
    for path in (
        "apim/policies/detector-v1/detect-post.xml",
        "apim/policies/detector-sync-v1/detect-post.xml",
    ):
        text = files[path].decode("utf-8")
        assert "@{" not in text, path  # no multi-line C# block left in the operation
        # Every answer (413, 400, 422, 503, the task created) is the fragments': the
        # operation carries its label once, not JSON bodies built from it.
        assert "return-response" not in text, path
        assert text.count("Animal detector") == 1, path
        assert len(text) < 1200, (path, len(text))


def test_fragments_are_owned_and_fixed() -> None:
    platform, ctx = sample("camera-trap")
    plan = build_plan(platform, ctx.source_dir, ctx.source_name)
    for f in plan.fragments:
        assert re.fullmatch(r"ai4ec-[a-z0-9-]+", f.id)
        assert f.description.startswith(plan_module.OWNER_DESCRIPTION + " ")
        assert f.path == f"apim/fragments/{f.id}.xml"


def test_no_indent_filter_in_the_policy_templates() -> None:
    """Issue 15: the templates print each line at its indentation; no filter re-indents
    rendered text once per operation."""
    for template in sorted((ROOT / "templates" / "apim-policies").glob("*.j2")):
        assert "indent(" not in template.read_text(encoding="utf-8"), template.name


def test_each_policy_and_fragment_renders_once_per_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15: the pipeline renders the APIM target once; the Azure target embeds the
    same strings, and each fragment body is rendered once however many include it."""
    from ai4ec.render import render_targets
    from ai4ec.render.apim import policies

    calls: list[tuple[str, str]] = []
    real = policies._render_text

    def counting(template: str, path: str, values: dict[str, object]) -> str:
        calls.append((template, path))
        return real(template, path, values)

    monkeypatch.setattr(policies, "_render_text", counting)
    platform, ctx = sample("landcover")
    render_targets(platform, ctx)
    assert len(calls) == len(set(calls)), sorted(c for c in calls if calls.count(c) > 1)
    # one file per policy (the fragment's body, then its file)
    files = [p for t, p in calls if not t.startswith("_")]
    assert len(files) == len(set(files))
    bodies = [t for t, _ in calls if t.startswith("_")]
    assert sorted(bodies) == ["_create-task.xml.j2", "_proxy-headers.xml.j2", "_size-check.xml.j2"]


def test_a_fragment_over_apims_size_limit_is_refused() -> None:
    from ai4ec.errors import RenderError
    from ai4ec.render.apim.policies import MAX_FRAGMENT_BYTES, check_policy
    from ai4ec.render.artifact import Artifact

    big = "<fragment>" + "<set-header name='x' exists-action='delete' />" * 800 + "</fragment>"
    assert len(big) > MAX_FRAGMENT_BYTES
    artifact = Artifact(PurePosixPath("apim/fragments/ai4ec-big.xml"), big.encode())
    with pytest.raises(RenderError, match="32 KB"):
        check_policy(artifact, frozenset(), root_tag="fragment")
    nested = '<fragment><include-fragment fragment-id="ai4ec-x" /></fragment>'
    with pytest.raises(RenderError, match="cannot include another"):
        check_policy(
            Artifact(PurePosixPath("apim/fragments/ai4ec-n.xml"), nested.encode()),
            frozenset(),
            frozenset({"ai4ec-x"}),
            root_tag="fragment",
        )
