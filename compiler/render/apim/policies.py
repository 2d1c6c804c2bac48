"""API Management policies: plan -> policy XML files, rendered from Jinja templates.

Templates live in ``templates/apim-policies/`` and only lay out text: every value they
print is prepared by :mod:`ai4ec.render.apim.plan`. They render in the one Jinja
environment (:mod:`ai4ec.render.env`), where autoescape is on for ``.xml.j2``, so user text
(origins, audiences, JSON error bodies) is XML-escaped. Policy expressions (C#) are
fixed text in the templates, wrapped in the ``cs_attr``/``cs_text`` filters, which
XML-escape the code once so it can be written readably (``As<string>()``, ``&&``) in
the template; only integers and ids the plan validated are spliced into them.

Every rendered file is parsed back here (well-formedness, root element, named-value
references); the XSD check (``schemas/apim-policies.xsd``) runs in the test-suite,
see :func:`validate_policy` and docs/apim.md.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from ...errors import Diagnostic, RenderError
from ...resources import schemas_dir
from ..artifact import Artifact
from ..env import environment
from .plan import (
    CREATE_FAILED_RETRY_AFTER,
    DEFAULT_FORWARD_TIMEOUT,
    FUNCTION_KEY_NAMED_VALUE,
    FUNCTIONS_URL_NAMED_VALUE,
    JWT_VARIABLE,
    SUBSCRIPTION_KEY_HEADER,
    SUBSCRIPTION_KEY_QUERY,
    TASK_MANAGER_RETRIES,
    TASK_MANAGER_TIMEOUT_SECONDS,
    TIMEOUT_VARIABLE,
    ApimPlan,
    named_value_ref,
)

#: Anything API Management would read as a named-value reference.
_NAMED_VALUE_REF = re.compile(r"\{\{([^{}]*)\}\}")


def comment_text(text: str) -> str:
    """``text`` made safe inside an XML comment that API Management also reads.

    ``--`` may not appear in a comment; braces could form a named-value reference.
    """
    text = text.replace("{", "(").replace("}", ")")
    while "--" in text:
        text = text.replace("--", "- -")
    return text + " " if text.endswith("-") else text


def _render(template: str, path: str, **values: Any) -> Artifact:
    common = {
        "timeout_variable": TIMEOUT_VARIABLE,
        "jwt_variable": JWT_VARIABLE,
        "default_timeout": DEFAULT_FORWARD_TIMEOUT,
        "subscription_header": SUBSCRIPTION_KEY_HEADER,
        "subscription_query": SUBSCRIPTION_KEY_QUERY,
        "function_key_ref": named_value_ref(FUNCTION_KEY_NAMED_VALUE),
        "functions_url_ref": named_value_ref(FUNCTIONS_URL_NAMED_VALUE),
        "task_manager_retries": TASK_MANAGER_RETRIES,
        "task_manager_timeout": TASK_MANAGER_TIMEOUT_SECONDS,
        "create_failed_retry_after": CREATE_FAILED_RETRY_AFTER,
    }
    try:
        text = environment().get_template(f"apim-policies/{template}").render(**common, **values)
    except Exception as exc:  # noqa: BLE001 - any template failure is the same bug class
        message = f"template {template} failed for {path}: {exc}"
        raise RenderError(
            message,
            (Diagnostic(code="E-RENDER-TEMPLATE", message=message, hint="this is an ai4ec bug"),),
        ) from exc
    return Artifact(PurePosixPath(path), text.encode("utf-8"))


def check_policy(artifact: Artifact, named_values: frozenset[str]) -> None:
    """Parse a rendered policy back and check what API Management will see.

    Raises:
        RenderError: the XML is not well formed, the root is not ``<policies>``, or a
            ``{{...}}`` reference names something that is not one of ``named_values``.
    """
    text = artifact.content.decode("utf-8")
    problem = ""
    try:
        root = ET.fromstring(text)
        if root.tag != "policies":
            problem = f"root element is <{root.tag}>, not <policies>"
    except ET.ParseError as exc:
        problem = f"not well-formed XML: {exc}"
    if not problem:
        unknown = sorted(set(_NAMED_VALUE_REF.findall(text)) - named_values)
        stray = _NAMED_VALUE_REF.sub("", text)
        if unknown:
            problem = f"refers to unknown named values {unknown}"
        elif "{{" in stray or "}}" in stray:
            problem = "contains '{{' or '}}' outside a named-value reference"
    if problem:
        message = f"generated {artifact.path}: {problem}"
        raise RenderError(
            message,
            (Diagnostic(code="E-RENDER-PARSE", message=message, hint="this is an ai4ec bug"),),
        )


def named_value_names(plan: ApimPlan) -> frozenset[str]:
    """Every named value the plan creates (and so every reference a policy may use)."""
    names = {FUNCTION_KEY_NAMED_VALUE, FUNCTIONS_URL_NAMED_VALUE}
    names.update(b.named_value for b in plan.backends)
    return frozenset(names)


def render_policies(plan: ApimPlan) -> list[Artifact]:
    """All policy files of the plan, each parsed back, in path order.

    Files: ``apim/policies/global.xml``; per API or pipeline ``apim/policies/<id>/api.xml``
    and one ``<operation>.xml`` per generated operation; the task-status API's
    ``api.xml`` and ``get-task.xml``; ``apim/products/<product>.xml``.
    """
    source = comment_text(plan.source)
    out = [_render("global.xml.j2", plan.global_policy_path, source=source)]
    for api in plan.apis:
        out.append(_render("api.xml.j2", api.policy_path, source=source, api=api))
        out.extend(
            _render("operation.xml.j2", op.policy_path, source=source, op=op)
            for op in api.operations
            if op.policy_path is not None
        )
    if plan.status is not None:
        status = plan.status
        out.append(_render("api.xml.j2", status.api.policy_path, source=source, api=status.api))
        out.append(
            _render("get-task.xml.j2", status.operation_policy_path, source=source, status=status)
        )
    out.extend(
        _render("product.xml.j2", p.policy_path, source=source, product=p) for p in plan.products
    )
    allowed = named_value_names(plan)
    for artifact in out:
        check_policy(artifact, allowed)
    return sorted(out, key=lambda a: str(a.path))


def policy_schema_path() -> str:
    """Path of ``schemas/apim-policies.xsd``, the grammar of every policy ai4ec emits."""
    return str(schemas_dir() / "apim-policies.xsd")


def validate_policy(content: bytes) -> list[str]:
    """XSD errors of one policy document (empty when valid).

    Needs ``xmlschema`` (a test dependency), imported here so the compiler itself does
    not depend on it.
    """
    schema = _schema()
    return [str(e.reason or e) for e in schema.iter_errors(content.decode("utf-8"))]


@cache
def _schema() -> Any:
    import xmlschema

    return xmlschema.XMLSchema(policy_schema_path())
