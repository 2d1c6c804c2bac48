"""docs/apim.md stays in step with the code it documents."""

from __future__ import annotations

import re

from ai4ec.render.apim import APIM_API_VERSION, INGRESS_PARAMETER, POLICY_FORMAT
from ai4ec.render.apim import plan as apim_plan

from ...conftest import ROOT

DOC = (ROOT / "docs" / "apim.md").read_text(encoding="utf-8")


def test_interface_constants_are_documented() -> None:
    for value in (APIM_API_VERSION, INGRESS_PARAMETER, f"`{POLICY_FORMAT}`"):
        assert value in DOC
    for name in (
        apim_plan.FUNCTION_KEY_NAMED_VALUE,
        apim_plan.FUNCTIONS_URL_NAMED_VALUE,
        apim_plan.TIMEOUT_VARIABLE,
        apim_plan.STATUS_API_PATH,
        apim_plan.SUBSCRIPTION_KEY_HEADER,
        apim_plan.SUBSCRIPTION_KEY_QUERY,
    ):
        assert name in DOC, name


def test_every_error_code_is_documented() -> None:
    room = ROOT / "compiler" / "render" / "apim"
    rules = ROOT / "compiler" / "model" / "apim_rules.py"  # validate enforces them
    source = "".join(p.read_text(encoding="utf-8") for p in [*sorted(room.glob("*.py")), rules])
    codes = set(re.findall(r'"(E-APIM-[A-Z-]+)"', source))
    assert codes
    missing = sorted(c for c in codes if c not in DOC)
    assert not missing, missing
