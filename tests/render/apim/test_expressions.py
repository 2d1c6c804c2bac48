"""Policy expressions are well-formed C#-ish text, and the template rules hold."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from jinja2 import StrictUndefined
from markupsafe import Markup

from ai4ec.errors import RenderError
from ai4ec.render.apim.plan import json_body
from ai4ec.render.apim.policies import check_policy, comment_text
from ai4ec.render.apim.rules import checked_literal, checked_neutral
from ai4ec.render.artifact import Artifact
from ai4ec.render.env import cs_attr, cs_text, environment, xml_text
from ai4ec.write import verify_artifact

from .support import expressions, render, sample_models, xml

PAIRS = {")": "(", "]": "[", "}": "{"}


def scan(code: str) -> list[str]:
    """Problems of one C# snippet: unbalanced brackets, open strings, comments."""
    stack: list[str] = []
    problems = []
    i = 0
    while i < len(code):
        c = code[i]
        if c == '"':
            j = i + 1
            while j < len(code) and code[j] != '"':
                j += 2 if code[j] == "\\" else 1
            if j >= len(code):
                problems.append("unterminated string")
            i = j + 1
            continue
        if code.startswith("//", i) or code.startswith("/*", i):
            problems.append("comment (attribute normalisation would break it)")
        if c in "([{":
            stack.append(c)
        elif c in ")]}":
            if not stack or stack.pop() != PAIRS[c]:
                problems.append(f"unbalanced {c!r} at {i}")
        i += 1
    if stack:
        problems.append(f"unclosed {stack}")
    return problems


ALL = [
    (f"{s}-{e}:{path}", expr)
    for s, e, platform, ctx in sample_models()
    for path, content in render(platform, ctx).items()
    for expr in expressions(xml(content))
]


@pytest.mark.parametrize(("where", "expr"), ALL, ids=[f"{w}#{i}" for i, (w, _) in enumerate(ALL)])
def test_expression_is_well_formed(where: str, expr: str) -> None:
    assert expr.startswith(("@(", "@{")), where
    assert scan(expr[1:]) == [], f"{where}: {expr}"
    body = expr[2:-1]
    if expr.startswith("@{"):
        assert expr.endswith("}") and "return " in body
        assert body.rstrip().endswith((";", "}"))
    else:
        assert expr.endswith(")")
        assert scan(body) == []  # the outer parentheses enclose the whole expression
    assert "{{" not in expr and "}}" not in expr  # no named value inside C#


def test_templates_use_one_strict_autoescaping_environment() -> None:
    env = environment()
    assert env is environment()
    assert env.undefined is StrictUndefined
    assert env.autoescape("apim-policies/api.xml.j2") is True
    assert env.autoescape("bicep/module.bicep.j2") is False
    assert env.trim_blocks and env.lstrip_blocks and env.keep_trailing_newline
    with pytest.raises(Exception, match="undefined"):
        env.get_template("apim-policies/product.xml.j2").render(source="x")


def test_filters() -> None:
    assert cs_attr('a<b && "c"') == Markup("a&lt;b &amp;&amp; &quot;c&quot;")
    assert cs_text('a<b && "c"') == Markup('a&lt;b &amp;&amp; "c"')
    assert xml_text('<x> & "y"') == Markup('&lt;x&gt; &amp; "y"')
    assert comment_text("a--b-") == "a- -b- "
    assert comment_text("{{x}}") == "((x))"


def test_json_bodies_never_contain_named_value_braces() -> None:
    body = json_body([("message", "{{ai4ec-function-key}}"), ("n", 3)])
    assert "{{" not in body and "}}" not in body
    import json

    assert json.loads(body) == {"message": "{{ai4ec-function-key}}", "n": 3}


def test_literal_and_neutral_checks() -> None:
    assert checked_literal("api://x", "audience") == "api://x"
    for bad in ("@(x)", " @{x}", "a{{b", "a}}b"):
        with pytest.raises(RenderError):
            checked_literal(bad, "audience")
    assert checked_neutral("/v1/a-b_c.d", "path") == "/v1/a-b_c.d"
    for bad in ('/a"b', "/a'b", "/a&b", "/a<b", "/a{b"):
        with pytest.raises(RenderError):
            checked_neutral(bad, "path")


def test_check_policy_rejects_unknown_named_values_and_stray_braces() -> None:
    ok = b"<policies><set-header name='x'><value>{{a}}</value></set-header></policies>"
    check_policy(Artifact(path=PurePosixPath("p.xml"), content=ok), frozenset({"a"}))
    for content in (
        ok,
        b"<policies>}}</policies>",
        b"<policy/>",
        b"<policies>",
    ):
        with pytest.raises(RenderError):
            check_policy(
                Artifact(path=PurePosixPath("p.xml"), content=content),
                frozenset({"b"}) if content == ok else frozenset(),
            )


def test_artifacts_pass_the_build_parse_back() -> None:
    for _, _, platform, ctx in sample_models():
        for path, content in render(platform, ctx).items():
            verify_artifact(Artifact(path=PurePosixPath(path), content=content))
