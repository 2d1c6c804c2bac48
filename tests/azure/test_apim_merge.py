"""APIM child resources from the APIM target land in main.json and modules/apim-apis.bicep."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest

from ai4ec.errors import RenderError
from ai4ec.render.azure_apim import apim_provider, parse_arm_expression

from ..conftest import ROOT
from .support import fake_apim_resources, platforms, render_platform, variant_files


def _camera_trap():
    return platforms(str(ROOT / "samples" / "camera-trap" / "platform.yaml"))[0]


def _render_with(resources: list[dict[str, Any]]) -> dict[str, bytes]:
    with mock.patch("ai4ec.render.azure.apim_provider", return_value=lambda p, ctx: resources):
        return render_platform(_camera_trap())


def test_provider_is_optional_until_the_apim_target_exists() -> None:
    import importlib.util

    exists = importlib.util.find_spec("ai4ec.render.apim") is not None
    provider = apim_provider()
    assert (provider is not None) == (
        exists and hasattr(importlib.import_module("ai4ec.render.apim"), "apim_arm_resources")
    )
    files = render_platform(_camera_trap())
    assert ("azure/modules/apim-apis.bicep" in files) == (provider is not None)


def test_children_are_merged_after_roles_and_secrets() -> None:
    files = variant_files("apim-children")
    arm = json.loads(files["azure/main.json"])
    kinds = [r["type"] for r in arm["resources"] if r["type"].startswith("Microsoft.ApiManagement")]
    assert kinds[0] == "Microsoft.ApiManagement/service"
    assert len(kinds) == 1 + len(fake_apim_resources(_camera_trap()))
    named = next(r for r in arm["resources"] if r["type"].endswith("/namedValues"))
    deps = " ".join(named["dependsOn"])
    # API Management checks its Key Vault access and the secret when it saves the value.
    assert "Microsoft.Authorization/roleAssignments" in deps
    assert "'ai4ec-function-key')]" in deps
    main = files["azure/main.bicep"].decode()
    apis = main[main.index("module apimApisModule") :]
    assert "rolesModule" in apis and "secretsModule" in apis and "apimModule" in apis
    bicep = files["azure/modules/apim-apis.bicep"].decode()
    assert "parent: apim\n" in bicep
    assert "url: concat('https://', reference(site.id, '2025-03-01').defaultHostName" in bicep
    assert "description: '[not an expression]'" in bicep


def test_literal_and_expression_names_find_their_parents() -> None:
    files = variant_files("apim-children")
    arm = json.loads(files["azure/main.json"])
    names = {r["name"] for r in arm["resources"] if r["type"].startswith("Microsoft.ApiManagement")}
    svc = _camera_trap().azure.api_management.name
    assert f"{svc}/ai4ec-tasks" in names  # given as [format('{0}/{1}', ...)]
    assert f"{svc}/detector-v1/detect/policy" in names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(name="other-svc/x"), "belongs to service"),
        (lambda r: r.update(type="Microsoft.Web/sites"), "not a child type"),
        (lambda r: r.update(location="eastus"), "unsupported keys"),
        (lambda r: r.update(name=r["name"] + "/extra"), "segments"),
        (lambda r: r.update(dependsOn=["[resourceId('Microsoft.Nope/x', 'y')]"]), "dependency"),
    ],
)
def test_misplaced_resources_are_errors(change, message: str) -> None:
    resources = fake_apim_resources(_camera_trap())
    change(resources[2])
    with pytest.raises(RenderError, match=message):
        _render_with(resources)


def test_child_before_its_parent_is_an_error() -> None:
    resources = fake_apim_resources(_camera_trap())
    op = next(r for r in resources if r["type"].endswith("/operations"))
    resources.remove(op)
    resources.insert(0, op)
    with pytest.raises(RenderError, match="parent"):
        _render_with(resources)


def test_arm_expression_parser() -> None:
    node = parse_arm_expression("concat('it''s', reference(resourceId('a/b', 'c')).x[0])")
    assert node.name == "concat"
    assert node.args[0] == "it's"
    with pytest.raises(ValueError):
        parse_arm_expression("concat('a'")
