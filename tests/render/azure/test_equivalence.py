"""main.bicep (+ modules) and main.json declare the same deployment.

No Bicep compiler runs offline, so each sample's Bicep is parsed back with pycep and
compared with main.json: the same resources (type, API version, full name), the same
literal values at the same paths, an expression wherever main.json has one, the same
conditions, parameters and outputs, and module ordering that covers every cross-module
dependency of main.json. Large platforms add split APIM templates
(``apim-apis-<n>.bicep``/``.json``); each pair is compared the same way, and each may
only read what main and the earlier parts create.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import pytest

from ai4ec.render.artifact import Artifact
from ai4ec.write import verify_artifact

from .support import (
    BicepResource,
    BicepTemplate,
    all_cases,
    arm_id,
    arm_literal,
    arm_resources,
    bicep_leaf,
    case_bicep,
    case_files,
    flatten,
    is_arm_expression,
    key_of,
    load_arm,
    resolve_table,
    scope_path,
    split_files,
    symbols_in,
    unescape,
)

CASES = all_cases()
#: Bicep-only fields of a resource body (main.json spells them differently).
BICEP_ONLY = {"parent", "name", "scope", "dependsOn"}


def _arm_key(res: dict) -> tuple[str, str, str, str]:
    """Type, API version, name and scope (extension resources are named per scope)."""
    name = res["name"]
    name = name[1:-1] if is_arm_expression(name) else name
    return res["type"], res["apiVersion"], name, res.get("scope", "")


def _templates(case: str) -> tuple[dict, BicepTemplate]:
    """The files of a case (every ARM template of it) and its parsed Bicep."""
    return case_files(case), case_bicep(case)


def _bicep_key(res: BicepResource, bicep: BicepTemplate) -> tuple[str, str, str, str]:
    scope = res.config.get("scope")
    path = ""
    if scope is not None:
        path = scope_path(resolve_table(bicep, res.file)[scope])
    return res.type, res.api_version, res.full_name, path


@pytest.mark.parametrize("case", CASES)
def test_every_file_parses_back(case: str) -> None:
    for name, data in case_files(case).items():
        verify_artifact(Artifact(PurePosixPath(name), data))


@pytest.mark.parametrize("case", CASES)
def test_same_resources(case: str) -> None:
    arm, bicep = _templates(case)
    arm_keys = sorted(_arm_key(r) for r in arm_resources(arm))
    defined = [r for r in bicep.resources if not r.existing]
    assert sorted(_bicep_key(r, bicep) for r in defined) == arm_keys
    assert len(set(arm_keys)) == len(arm_keys), "two resources with one name"
    # Every `existing` declaration names a resource this deployment creates, except the
    # Functions host, which only exists to read keys through, and the Key Vault secrets
    # `ai4ec apply` writes (single-secret role assignment scopes).
    created = set(arm_keys)
    outside = ("Microsoft.Web/sites/host", "Microsoft.KeyVault/vaults/secrets")
    for r in bicep.resources:
        if r.existing and r.type not in outside:
            assert _bicep_key(r, bicep) in created, (r.file, r.symbol)


@pytest.mark.parametrize("case", CASES)
def test_same_values(case: str) -> None:
    arm, bicep = _templates(case)
    by_key = {_bicep_key(r, bicep): r for r in bicep.resources if not r.existing}
    for res in arm_resources(arm):
        b = by_key[_arm_key(res)]
        arm_body = {k: v for k, v in res.items() if k not in ("type", "apiVersion", "name")}
        arm_body.pop("dependsOn", None)
        arm_body.pop("scope", None)
        arm_body.pop("condition", None)
        arm_body.pop("_file", None)
        bicep_body = {k: v for k, v in b.config.items() if k not in BICEP_ONLY}
        arm_leaves = flatten(arm_body)
        bicep_leaves = flatten(bicep_body, bicep=True)
        where = f"{res['type']} {res['name']} ({b.file})"
        assert set(arm_leaves) == set(bicep_leaves), where
        for path, value in arm_leaves.items():
            if is_arm_expression(value):
                assert bicep_leaf(bicep_leaves[path]) is None or isinstance(
                    bicep_leaves[path], str
                ), (where, path)
                continue
            got = bicep_leaves[path]
            if value in ({}, []):
                assert got == value, (where, path)
                continue
            lit = bicep_leaf(got)
            assert lit is not None, (where, path, got)
            assert lit.value == arm_literal(value), (where, path)
        assert (res.get("condition") is None) == (b.condition is None), where


@pytest.mark.parametrize("case", CASES)
def test_same_scopes_and_explicit_dependencies(case: str) -> None:
    arm, bicep = _templates(case)
    by_key = {_bicep_key(r, bicep): r for r in bicep.resources if not r.existing}
    for res in arm_resources(arm):
        b = by_key[_arm_key(res)]
        table = resolve_table(bicep, b.file)
        if "scope" in res:
            assert res["scope"] == scope_path(table[b.config["scope"]])
        for sym in b.config.get("dependsOn", []):
            assert arm_id(table[sym], table) in res["dependsOn"], (b.symbol, sym)
        # Every dependency main.json states on a resource of the same module is implied
        # in Bicep by a symbol reference, or stated in its dependsOn.
        local = {arm_id(r, table): r.symbol for r in table.values() if not r.existing}
        mentioned = symbols_in(b.config) | (
            {b.condition} if isinstance(b.condition, str) else set()
        )
        for dep in res.get("dependsOn", []):
            if dep in local:
                assert local[dep] in mentioned, f"{b.symbol} lost its dependency on {local[dep]}"


@pytest.mark.parametrize("case", CASES)
def test_modules_deploy_in_dependency_order(case: str) -> None:
    arm, bicep = _templates(case)
    file_of: dict[str, str] = {}
    for r in bicep.resources:
        if not r.existing:
            file_of[arm_id(r, resolve_table(bicep, r.file))] = r.file
    mods = bicep.main["modules"]
    sym_of = {f"azure/{m['detail']['path']}": sym for sym, m in mods.items()}
    # A nested deployment of main.json stands for the module of the same name.
    for _sym, m in mods.items():
        name = unescape(m["config"]["name"])
        file_of[f"[resourceId('Microsoft.Resources/deployments', '{name}')]"] = (
            f"azure/{m['detail']['path']}"
        )
    assert set(sym_of) == set(bicep.modules), "module files vs main.bicep"
    needs = {sym: set(m["config"].get("dependsOn", [])) for sym, m in mods.items()}
    by_key = {_bicep_key(r, bicep): r for r in bicep.resources if not r.existing}
    for res in arm_resources(arm):
        if res["_file"] != "azure/main.json":
            continue  # split parts: see test_split_parts_read_only_what_is_deployed_before
        mine = sym_of[by_key[_arm_key(res)].file]
        for dep in res.get("dependsOn", []):
            theirs = sym_of[file_of[dep]]
            if theirs != mine:
                assert theirs in needs[mine], f"{mine} must wait for {theirs} ({res['name']})"


def _check_parameters(bicep_params: dict, arm_params: dict, where: str) -> None:
    assert set(bicep_params) == set(arm_params), where
    for name, p in arm_params.items():
        b = bicep_params[name]
        if p["type"] == "securestring":  # Bicep: a string with @secure()
            assert b["type"] == "string", (where, name)
            assert any(d["type"] == "secure" for d in b["decorators"]), (where, name)
        else:
            assert b["type"] == p["type"], (where, name)
        if isinstance(p["defaultValue"], dict):  # object parameter: compare its leaves
            got = {k: bicep_leaf(v) for k, v in flatten(b["default"], bicep=True).items()}
            want = flatten(p["defaultValue"])
            assert {k: v.value for k, v in got.items() if v is not None} == want, (where, name)
        else:
            lit = bicep_leaf(b["default"])
            assert lit is not None and lit.value == p["defaultValue"], (where, name)
        desc = next(d["argument"] for d in b["decorators"] if d["type"] == "description")
        assert unescape(desc) == p["metadata"]["description"], (where, name)


@pytest.mark.parametrize("case", CASES)
def test_same_parameters_outputs_and_variables(case: str) -> None:
    files, bicep = _templates(case)
    arm = load_arm(files)
    _check_parameters(bicep.main["parameters"], arm["parameters"], "main")
    assert {n: o["type"] for n, o in bicep.main["outputs"].items()} == {
        n: o["type"] for n, o in arm["outputs"].items()
    }
    assert unescape(bicep.main["metadata"]["description"]["value"]) == arm_literal(
        arm["metadata"]["description"]
    )
    for name, mod in bicep.modules.items():
        for var, v in (mod.get("variables") or {}).items():
            got = {key_of(k): unescape(x) for k, x in v["value"].items()}
            assert got == {k: arm_literal(x) for k, x in arm["variables"][var].items()}, name
        # Every module parameter comes from main.bicep under the same name.
        sym = next(
            s for s, m in bicep.main["modules"].items() if f"azure/{m['detail']['path']}" == name
        )
        passed = bicep.main["modules"][sym]["config"].get("params", {})
        assert set(passed) == set(mod.get("parameters") or {}), name
        assert all(v == k for k, v in passed.items())
    # main.parameters.json sets exactly main's parameters.
    assert set(json.loads(files["azure/main.parameters.json"])["parameters"]) == set(
        arm["parameters"]
    )


@pytest.mark.parametrize("case", CASES)
def test_split_parts_read_only_what_is_deployed_before(case: str) -> None:
    files, bicep = _templates(case)
    parts = split_files(files, ".bicep")
    assert [p.removesuffix(".bicep") for p in parts] == [
        p.removesuffix(".json") for p in split_files(files, ".json")
    ]
    earlier = {
        _bicep_key(r, bicep) for r in bicep.resources if not r.existing and r.file not in parts
    }
    for part in parts:
        doc = json.loads(files[part.replace(".bicep", ".json")])
        _check_parameters(bicep.split[part].get("parameters") or {}, doc["parameters"], part)
        params = json.loads(files[part.replace(".bicep", ".parameters.json")])["parameters"]
        assert set(params) == set(doc["parameters"]), part
        mine = [r for r in bicep.resources if r.file == part]
        assert len(doc["resources"]) == len([r for r in mine if not r.existing]) <= 800
        for r in mine:
            if r.existing:
                assert _bicep_key(r, bicep) in earlier, f"{part} reads {r.symbol} too early"
        earlier |= {_bicep_key(r, bicep) for r in mine if not r.existing}
