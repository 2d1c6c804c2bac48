"""Each resource's ARM body is converted once per build (:class:`ArmBodies`), never stale.

Weighing resources for the split templates and printing them share one conversion. That
is only sound if nothing changes a body after it was weighed; these tests print every
template of a platform that needs split templates (APIM children in bulk, through the
test stand-in for the APIM target) and compare each with a fresh conversion made after
everything, Bicep printing included, ran.
"""

from __future__ import annotations

from ai4ec.render.artifact import RenderContext
from ai4ec.render.azure.arm import arm_template, split_template
from ai4ec.render.azure.spec import to_arm
from ai4ec.render.azure.target import render_azure
from ai4ec.render.azure.template import ArmBodies

from .support import FakeApim, _camera_trap, fake_apim_bulk


def test_memoised_bodies_are_what_a_fresh_conversion_prints() -> None:
    ctx = RenderContext(source_name="platform.yaml", source_dir=".")
    tpl = render_azure(_camera_trap(), ctx, FakeApim(fake_apim_bulk)).template
    assert any(m.startswith("apim-apis-") for m in tpl.split), "the case needs split templates"
    for res in tpl.spec.resources:
        if not res.virtual:
            assert tpl.arm_bodies.body(res) == to_arm(res.body), res.symbol
    memo = [arm_template(tpl), *(split_template(tpl, m) for m in tpl.split)]
    tpl.arm_bodies = ArmBodies()  # nothing converted yet: every body anew
    assert memo == [arm_template(tpl), *(split_template(tpl, m) for m in tpl.split)]
