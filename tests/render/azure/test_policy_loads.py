"""The Bicep loads every APIM policy from the XML file ai4ec writes; ARM JSON inlines it.

Each policy and policy fragment used to be printed three times (``apim/**.xml``, ARM
JSON, Bicep). The Bicep now says ``loadTextContent('<path>')``, relative to the Bicep
file as Bicep resolves it, so these tests resolve every load the same way and compare
the loaded bytes with the value main.json (or a split template) inlines: the two
deployable forms must say the same. A policy Bicep could not load (over its
131,072-character limit) stays inline. A build served from the render cache writes the
same files, so its loads resolve too.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from ai4ec.pipeline import build_platform
from ai4ec.render.azure import template
from ai4ec.render.azure.spec import (
    BICEP_LOAD_LIMIT,
    FileText,
    Resource,
    to_arm,
    to_bicep,
    with_loads,
)

from ...conftest import SAMPLES
from .support import (
    BicepTemplate,
    FakeApim,
    LoadedText,
    _camera_trap,
    _child,
    arm_literal,
    arm_resources,
    bicep_leaf,
    render_platform,
    rendered,
    sample_envs,
    split_files,
)
from .test_scale import _bench_platform

_POLICY_TYPES = ("/policies", "/policyFragments")


def _check_loads(files: dict[str, bytes]) -> int:
    """Every APIM policy of the Bicep loads the file holding exactly ARM's value.

    Returns:
        How many policies were checked (callers assert there were some).
    """
    bicep = BicepTemplate.load(files)
    by_key = {(r.type, r.full_name): r for r in bicep.resources if not r.existing}
    loaded: set[str] = set()
    checked = 0
    for res in arm_resources(files):
        if not res["type"].startswith("Microsoft.ApiManagement/service/"):
            continue
        if not res["type"].endswith(_POLICY_TYPES):
            continue
        b = by_key[(res["type"], res["name"])]
        value = b.config["properties"]["value"]
        assert isinstance(value, LoadedText), (b.file, b.symbol, value)
        arm_value = arm_literal(res["properties"]["value"])
        assert files[value.path] == arm_value.encode("utf-8"), (b.file, value.path)
        loaded.add(value.path)
        checked += 1
    written = {p for p in files if p.startswith("apim/") and p.endswith(".xml")}
    assert loaded == written, "every policy file is deployed, once"
    return checked


@pytest.mark.parametrize(("sample", "env"), sample_envs(), ids=lambda v: str(v))
def test_every_sample_loads_the_policy_files_arm_inlines(sample: str, env: str) -> None:
    files = rendered(sample, env)
    assert _check_loads(files) > 0
    module = files["azure/modules/apim-apis.bicep"].decode()
    assert "loadTextContent('../../apim/policies/global.xml')" in module
    assert "<policies>" not in module, "no policy text is inlined any more"


def test_split_templates_load_from_their_own_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``azure/apim-apis-<n>.bicep`` is one directory up from modules: ``../apim/...``.

    The limits are lowered (module constants) so that 6 APIs split, by the rule 1,000
    APIs meet at the real limits.
    """
    platform = _bench_platform(tmp_path, 6)
    monkeypatch.setattr(template, "ARM_MAX_RESOURCES", 40)
    monkeypatch.setattr(template, "APIM_CHUNK", 20)
    files = render_platform(platform)
    parts = [p for p in split_files(files, ".bicep") if "/apim-apis-" in p]
    assert len(parts) > 1
    for p in parts:
        text = files[p].decode()
        paths = re.findall(r"loadTextContent\('([^']*)'\)", text)
        assert paths and all(x.startswith("../apim/") for x in paths), p
    assert _check_loads(files) > 0


def _fake_policies(texts: dict[str, str]) -> FakeApim:
    """An operation per text, its policy a :class:`FileText` at ``apim/policies/<k>.xml``."""

    def build(service: Resource, module: str, waits: Any) -> list[Resource]:
        del waits
        out: list[Resource] = []
        for name, text in texts.items():
            api = _child("apis", name, service, module, body={"properties": {"path": name}})
            policy = _child(
                "policies",
                "policy",
                api,
                module,
                body={
                    "properties": {
                        "format": "xml",
                        "value": FileText(text, f"apim/policies/{name}.xml"),
                    }
                },
            )
            out += [api, policy]
        return out

    return FakeApim(build)


def test_a_policy_bicep_could_not_load_stays_inline() -> None:
    """Bicep refuses to load more than 131,072 characters: such a policy stays inline.

    Counted in UTF-8 bytes, never fewer than Bicep's characters: a text of exactly the
    limit loads, one byte more (or a multi-byte character that makes it more) does not.
    """
    body = "<policies><inbound><base /></inbound></policies>"
    at_limit = body + " " * (BICEP_LOAD_LIMIT - len(body))
    texts = {
        "fits": at_limit,
        "over": at_limit + " ",
        "wide": at_limit[:-1] + "é",  # 131,072 characters, 131,073 bytes
    }
    files = render_platform(_camera_trap(), apim=_fake_policies(texts))
    for name, text in texts.items():
        files[f"apim/policies/{name}.xml"] = text.encode("utf-8")
    module = files["azure/modules/apim-apis.bicep"].decode()
    assert module.count("loadTextContent(") == 1
    bicep = BicepTemplate.load(files)
    values = {
        r.full_name.split("/")[1]: r.config["properties"]["value"]
        for r in bicep.resources
        if r.type.endswith("/apis/policies")
    }
    assert values["fits"] == LoadedText("apim/policies/fits.xml", at_limit)
    for name in ("over", "wide"):
        lit = bicep_leaf(values[name])
        assert lit is not None and lit.value == texts[name], name
    arm = {
        r["name"].split("/")[1]: r["properties"]["value"]
        for r in arm_resources(files)
        if r["type"].endswith("/apis/policies")
    }
    assert arm == texts


def test_file_text_prints_as_its_text_in_arm_and_as_a_load_in_bicep() -> None:
    value = {"value": FileText("[x]", "apim/fragments/f.xml")}
    assert to_arm(value) == {"value": "[[x]"}  # a literal, never an ARM expression
    assert to_bicep(value) == "{\n  value: '[x]'\n}"  # no file's place: inline
    assert to_bicep(with_loads(value, "azure/modules")) == (
        "{\n  value: loadTextContent('../../apim/fragments/f.xml')\n}"
    )
    assert to_bicep(with_loads(value, "azure")) == (
        "{\n  value: loadTextContent('../apim/fragments/f.xml')\n}"
    )
    plain = {"a": ["x", {"b": 1}]}
    assert with_loads(plain, "azure") is plain  # nothing to load: not copied


def test_a_build_served_from_the_cache_writes_the_files_its_bicep_loads(
    tmp_path: Path, renders: list[str]
) -> None:
    shutil.copytree(SAMPLES / "multi-env", tmp_path / "p")
    path = tmp_path / "p" / "platform.yaml"
    build_platform(path, tmp_path / "first")
    renders.clear()
    out = tmp_path / "warm"
    build_platform(path, out)
    assert renders == [], "every environment came from the cache"
    envs = [d for d in sorted(out.iterdir()) if d.is_dir()]
    assert len(envs) > 1
    for env in envs:
        files = {
            p.relative_to(env).as_posix(): p.read_bytes() for p in env.rglob("*") if p.is_file()
        }
        assert _check_loads(files) > 0, env.name
        manifest = json.loads(files["manifest.json"])
        assert {e["path"] for e in manifest["artifacts"]} >= set(files) - {"manifest.json"}
