"""The one Jinja environment, and every filter templates may use.

Rules (house style): StrictUndefined, so a missing field is an error, not an empty
string; autoescape on for XML templates only (the API Management policies, whose
C#-expression filters ``cs_attr``/``cs_text`` escape code once and are marked safe);
templates loop and branch over values prepared in Python and never compute names or
defaults. Each filter escapes for one target language, so user text can never break out
of its string.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from ..errors import Diagnostic, RenderError
from ..resources import templates_dir
from .artifact import to_yaml
from .azure.spec import bicep_str, to_bicep


def yaml_scalar(value: Any) -> str:
    """A YAML flow scalar for any string/number/bool/None (JSON is valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def yaml_flow(value: Any) -> str:
    """A nested value as one-line YAML flow (JSON), for short lists and mappings."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def yaml_block(value: Any, indent: int = 0) -> str:
    """A nested value as block YAML, indented to sit under a key at ``indent``."""
    text = to_yaml(value).rstrip("\n")
    pad = " " * indent
    return "\n".join(pad + line if line else line for line in text.splitlines())


def cs_attr(code: object) -> Markup:
    """Policy-expression text escaped for a double-quoted XML attribute."""
    text = str(code)
    return Markup(text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;"))


def cs_text(code: object) -> Markup:
    """Policy-expression text escaped for XML element content (quotes stay readable)."""
    text = str(code)
    return Markup(text.replace("&", "&amp;").replace("<", "&lt;"))


def xml_text(value: object) -> Markup:
    """Plain text escaped for XML element content.

    Like autoescape, but quotes stay as they are, so JSON bodies remain readable.
    """
    text = str(value)
    return Markup(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def xbool(value: object) -> str:
    """A Python truth value as an XML boolean (``true``/``false``)."""
    return "true" if value else "false"


def indent(s: object, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    """Jinja's ``indent`` filter, same text, without its per-line cost on safe markup.

    Jinja's version joins ``Markup`` lines with a ``Markup`` newline, which escapes
    every line again; the APIM policies indent thousands of included blocks, and that
    was a third of their render time. Safe input stays safe: only spaces are added.
    """
    indention = width if isinstance(width, str) else " " * width
    lines = (str(s) + "\n").splitlines()
    if blank:
        out = ("\n" + indention).join(lines)
    else:
        out = lines.pop(0)
        if lines:
            out += "\n" + "\n".join(indention + line if line else line for line in lines)
    if first:
        out = indention + out
    return Markup(out) if isinstance(s, Markup) else out


@cache
def environment() -> jinja2.Environment:
    """The shared environment, loading from ``templates/``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("xml", "xml.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["yaml_scalar"] = yaml_scalar
    env.filters["yaml_flow"] = yaml_flow
    env.filters["yaml_block"] = yaml_block
    env.filters["bicep_str"] = bicep_str
    env.filters["bicep_value"] = to_bicep
    env.filters["indent"] = indent
    env.filters.update(cs_attr=cs_attr, cs_text=cs_text, xml_text=xml_text, xbool=xbool)
    return env


def render_template(name: str, **context: Any) -> str:
    """Render ``templates/<name>``; failures name the template and line."""
    try:
        return environment().get_template(name).render(**context)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f"{name}:{line}" if line else name
        raise RenderError(
            f"template {where} failed: {exc}",
            (
                Diagnostic(
                    code="E-RENDER-TEMPLATE",
                    message=f"template {where} failed: {exc}",
                    hint="this is an ai4ec bug; please report it with your platform.yaml",
                ),
            ),
        ) from exc
