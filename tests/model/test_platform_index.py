"""The platform's lookups that renderers call once per API (an index, not a scan)."""

from __future__ import annotations

from pathlib import Path

from ai4ec.pipeline import check_platform, require_ok

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "camera-trap" / "platform.yaml"


def test_pipelines_of_names_every_pipeline_with_a_step_on_the_api() -> None:
    (platform,) = require_ok(check_platform(SAMPLE))
    members = {a.id: platform.pipelines_of(a.id) for a in platform.apis}
    expected = {
        a.id: tuple(sorted(p.id for p in platform.pipelines if any(s.api == a.id for s in p.steps)))
        for a in platform.apis
    }
    assert members == expected
    assert any(members.values()) and not all(members.values())
    assert platform.pipelines_of("no-such-api") == ()
