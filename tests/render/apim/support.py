"""Helpers for the API Management tests: sample models, rendering, model variants."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lxml import etree

from ai4ec.errors import RenderError
from ai4ec.model.types import Api, Platform
from ai4ec.pipeline import check_platform
from ai4ec.render import render_targets
from ai4ec.render.apim import render_apim
from ai4ec.render.artifact import RenderContext

from ...conftest import ROOT, sample_files

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
SECTIONS = ("inbound", "backend", "outbound", "on-error")


def sample_models() -> Iterator[tuple[str, str, Platform, RenderContext]]:
    """(sample, environment, model, context) for every sample and environment."""
    for path in sample_files():
        rel = path.relative_to(ROOT)
        result = check_platform(path, display_name=str(rel))
        assert result.ok, result.diagnostics
        ctx = RenderContext(source_name=str(rel), source_dir=str(path.parent))
        for platform in result.platforms():
            yield path.parent.name, platform.environment, platform, ctx


def sample(name: str, env: str = "default") -> tuple[Platform, RenderContext]:
    """The model and context of one sample environment."""
    for s, e, platform, ctx in sample_models():
        if s == name and e == env:
            return platform, ctx
    raise KeyError((name, env))


def render(platform: Platform, ctx: RenderContext) -> dict[str, bytes]:
    """Policy files by path."""
    return {str(a.path): a.content for a in render_apim(platform, ctx).artifacts}


def arm(platform: Platform, ctx: RenderContext) -> list[dict[str, Any]]:
    """The API Management children as the Azure target deploys them (ARM form).

    Read from ``azure/main.json`` and any split ``apim-apis-<n>.json``, so these tests
    check what is really deployed, not an intermediate form.
    """
    files = {str(a.path): a.content for a in render_targets(platform, ctx).azure.artifacts}
    docs = [json.loads(files[n]) for n in sorted(files) if n.endswith(".json")]
    docs = [d for d in docs if "resources" in d]
    return [
        r
        for d in docs
        for r in d["resources"]
        if r["type"].startswith("Microsoft.ApiManagement/service/")
    ]


def xml(content: bytes) -> etree._Element:
    return etree.fromstring(content)


def with_api(platform: Platform, api_id: str, **changes: Any) -> Platform:
    """``platform`` with one API changed (the model is frozen; this copies it)."""
    apis = tuple(dataclasses.replace(a, **changes) if a.id == api_id else a for a in platform.apis)
    # _index caches the old Api objects: start a fresh one.
    return dataclasses.replace(platform, apis=apis, _index={})


def with_pipeline(platform: Platform, pipeline_id: str, **changes: Any) -> Platform:
    pipes = tuple(
        dataclasses.replace(p, **changes) if p.id == pipeline_id else p for p in platform.pipelines
    )
    return dataclasses.replace(platform, pipelines=pipes, _index={})


def api_of(platform: Platform, api_id: str) -> Api:
    return next(a for a in platform.apis if a.id == api_id)


def expressions(root: etree._Element) -> list[str]:
    """Every policy expression (attribute values and element texts starting with @)."""
    out = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for value in el.attrib.values():
            if value.strip().startswith("@"):
                out.append(value.strip())
        if el.text and el.text.strip().startswith("@"):
            out.append(el.text.strip())
    return out


def upsert_body_code(root: etree._Element) -> str:
    """The C# that builds the CacheConnectorUpsert body."""
    (body,) = root.xpath(".//send-request[@response-variable-name='ai4ec-upsert']/set-body")
    return str(body.text)


def assigned_fields(code: str) -> dict[str, str]:
    """``task["X"] = <expr>;`` assignments of the upsert body code, in order."""
    return dict(re.findall(r'task\["(\w+)"\]\s*=\s*([^;]+);', code))


def assert_rule_bug(error: RenderError, rule: str) -> None:
    """``error`` is the renderer's assertion of a validate rule: an ai4ec bug, naming ``rule``.

    The renderer still refuses such a model (built here by hand, past validate), but as an
    internal error: validate reports the same rule as a user error at its field.
    """
    (diag,) = error.diagnostics
    assert diag.code == "E-RENDER-RULE"
    assert rule in diag.message
    assert "ai4ec bug" in diag.hint


_LITERAL_VARIABLE = re.compile(r'<set-variable name="([\w-]+)" value="([^"@][^"]*|@\(\d+L?\))" />')
_PIPELINE_FIELD = re.compile(
    r'(?m)^( *)if \(context\.Variables\.ContainsKey\("ai4ec-pipeline"\)\) \{\n\1    (.*)\n\1\}\n'
)
_CS_STRING = r'"(?:[^"\\]|\\.)*"'
#: A policy expression that is only C# string literals joined by ``+`` (once the
#: variables are read): the fragments' answer bodies.
_CONCAT = re.compile(rf"@\(({_CS_STRING}(?: \+ {_CS_STRING})*)\)")


def _cs(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _xml(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _folded(match: re.Match[str]) -> str:
    literals = re.findall(_CS_STRING, html.unescape(match.group(1)))
    return _xml("".join(re.sub(r"\\(.)", r"\1", lit[1:-1]) for lit in literals))


def as_run(files: dict[str, bytes]) -> dict[str, bytes]:
    """The policies as the gateway runs them, for tests that read behaviour from the XML.

    Each ``include-fragment`` is replaced by its fragment (``expand_fragments``, which is
    also exactly the inline form of tiers without fragments), and what the fragments read
    from the literal variables the operation set just before is read here too: the
    answer bodies (built from the operation's label and limit, so an expression of
    string literals is then folded into its text), status, Retry-After, the size limit,
    and whether the upsert body carries ``Pipeline``. Fragment files themselves are left
    out.
    """
    from ai4ec.render.apim.policies import expand_fragments

    fragments = {
        p.removeprefix("apim/fragments/").removesuffix(".xml"): c.decode("utf-8")
        for p, c in files.items()
        if p.startswith("apim/fragments/")
    }
    out = {}
    for path, content in files.items():
        if path.startswith("apim/fragments/"):
            continue
        text = expand_fragments(content.decode("utf-8"), fragments)
        literals = {m.group(1): html.unescape(m.group(2)) for m in _LITERAL_VARIABLE.finditer(text)}
        for name, value in literals.items():
            number = re.fullmatch(r"@\((\d+)(L?)\)", value)
            if number and number[2]:
                text = text.replace(f"(long)context.Variables[&quot;{name}&quot;]", number[1] + "L")
                text = text.replace(
                    f'((long)context.Variables["{name}"]).ToString()', _cs(number[1])
                )
            elif number:
                text = text.replace(f"@((int)context.Variables[&quot;{name}&quot;])", number[1])
            else:
                text = text.replace(f'@((string)context.Variables["{name}"])', _xml(value))
                attr = _xml(value).replace('"', "&quot;")
                text = text.replace(f"@((string)context.Variables[&quot;{name}&quot;])", attr)
                if name == "ai4ec-message-prefix":  # read inside the answer bodies
                    text = text.replace(f'(string)context.Variables["{name}"]', _xml(_cs(value)))
        text = _CONCAT.sub(_folded, text)
        replacement = r"\1\2\n" if "ai4ec-pipeline" in literals else ""
        text = _PIPELINE_FIELD.sub(replacement, text)
        out[path] = text.encode("utf-8")
    return out


def render_run(platform: Platform, ctx: RenderContext) -> dict[str, bytes]:
    """:func:`render`, then :func:`as_run`: the policies' behaviour, fragments included."""
    return as_run(render(platform, ctx))
