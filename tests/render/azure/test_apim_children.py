"""API Management children from the APIM target land in main.json and modules/apim-apis.bicep.

The hand-off is typed (:class:`ai4ec.render.azure.target.ApimChildren`): these tests feed
the Azure target a stand-in built with the shared expression tree, so placement, Key
Vault waits and escaping are tested apart from the real APIM plan (whose own output is
pinned by tests/golden).
"""

from __future__ import annotations

import json

import pytest

from ai4ec.errors import RenderError
from ai4ec.render.apim import render_apim
from ai4ec.render.azure.spec import Parameter

from ...conftest import ROOT
from .support import (
    FakeApim,
    context_for,
    fake_apim_children,
    platforms,
    render_platform,
    variant_files,
)


def _camera_trap():
    return platforms(str(ROOT / "samples" / "camera-trap" / "platform.yaml"))[0]


def test_without_children_there_is_no_apim_apis_module() -> None:
    files = render_platform(_camera_trap(), apim=FakeApim(lambda s, m, w: []))
    assert "azure/modules/apim-apis.bicep" not in files
    assert "azure/modules/apim.bicep" in files


def test_children_are_merged_after_roles_and_secrets() -> None:
    files = variant_files("apim-children")
    arm = json.loads(files["azure/main.json"])
    kinds = [r["type"] for r in arm["resources"] if r["type"].startswith("Microsoft.ApiManagement")]
    assert kinds[0] == "Microsoft.ApiManagement/service"
    assert len(kinds) == 1 + 7
    named = next(r for r in arm["resources"] if r["type"].endswith("/namedValues"))
    deps = " ".join(named["dependsOn"])
    # API Management checks its Key Vault access when it saves the value; the secret
    # (its own key, ai4ec-apim-key) is written by `ai4ec apply`, not by this template.
    assert "Microsoft.Authorization/roleAssignments" in deps
    assert "Microsoft.KeyVault/vaults/secrets" not in deps
    main = files["azure/main.bicep"].decode()
    apis = main[main.index("module apimApisModule") :]
    assert "rolesModule" in apis and "apimModule" in apis
    bicep = files["azure/modules/apim-apis.bicep"].decode()
    assert "parent: apim\n" in bicep
    assert "url: 'https://${location}.example.org/api'" in bicep
    assert "description: '[not an expression]'" in bicep
    backend = next(r for r in arm["resources"] if r["type"].endswith("/backends"))
    assert backend["properties"]["description"] == "[[not an expression]"


def test_children_get_full_names_below_their_parents() -> None:
    files = variant_files("apim-children")
    arm = json.loads(files["azure/main.json"])
    names = {r["name"] for r in arm["resources"] if r["type"].startswith("Microsoft.ApiManagement")}
    svc = _camera_trap().azure.api_management.name
    assert f"{svc}/ai4ec-tasks" in names
    assert f"{svc}/detector-v1/detect/policy" in names
    assert f"{svc}/public/detector-v1" in names


def test_a_parameter_that_clashes_with_ours_is_an_error() -> None:
    clash = FakeApim(fake_apim_children, (Parameter("location", "string", "x", "clash"),))
    with pytest.raises(RenderError, match="clashes"):
        render_platform(_camera_trap(), apim=clash)


def test_a_parameter_of_an_unsupported_type_is_an_error() -> None:
    odd = FakeApim(fake_apim_children, (Parameter("odd", "secureString", "", "odd"),))
    with pytest.raises(RenderError, match="unsupported type"):
        render_platform(_camera_trap(), apim=odd)


def test_real_children_refuse_another_service() -> None:
    platform = _camera_trap()
    infra = render_apim(platform, context_for("camera-trap")).infrastructure
    other = FakeApim(lambda s, m, w: [])
    files = render_platform(platform, apim=other)
    assert files  # the stand-in renders; the real hand-off checks what it is given:
    from ai4ec.render.azure.spec import Resource

    wrong = Resource("x", "Microsoft.ApiManagement/service", "2024-05-01", "other", "apim")
    with pytest.raises(ValueError, match="not API Management service"):
        infra.resources(wrong, "apim-apis", ())
