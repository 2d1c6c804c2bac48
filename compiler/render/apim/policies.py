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

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from markupsafe import Markup

from ...cache import DiskCache, code_fingerprint, key_of
from ...errors import Diagnostic, RenderError
from ...resources import schemas_dir
from ..artifact import Artifact
from ..env import environment
from ..stored import pack, unpack
from .plan import (
    CREATE_FAILED_RETRY_AFTER,
    DEFAULT_FORWARD_TIMEOUT,
    ERROR_ANSWERS,
    FRAGMENT_SPECS,
    FUNCTION_KEY_NAMED_VALUE,
    FUNCTIONS_URL_NAMED_VALUE,
    JWT_VARIABLE,
    STATUS_API_PATH,
    SUBSCRIPTION_KEY_HEADER,
    SUBSCRIPTION_KEY_QUERY,
    TASK_MANAGER_RETRIES,
    TASK_MANAGER_TIMEOUT_SECONDS,
    TIMEOUT_VARIABLE,
    ApimPlan,
    ApiPlan,
    cs_string,
    error_body_code,
    named_value_ref,
)

#: Namespace of one API's policy files in the render cache (:mod:`ai4ec.cache`).
CACHE_NAMESPACE = "apim"
#: Bumped when the cached payload's meaning changes.
_CACHE_FORMAT = "apim-api-policies/1"

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


class _Fragments:
    """``fragment(id, pad)`` for the templates: what stands where a fragment's logic goes.

    An ``<include-fragment>`` when the plan deploys the fragment, else (a tier without
    fragments) the fragment's own text inline. Either is computed once per fragment and
    indentation, and each fragment body is rendered once, so no operation re-renders
    or re-indents shared text.
    """

    def __init__(self, plan: ApimPlan) -> None:
        self._plan = plan
        self._bodies: dict[str, str] = {}
        self._cache: dict[tuple[str, str], Markup] = {}

    def body(self, fragment_id: str) -> str:
        """The fragment's policies, unindented, without a final newline."""
        if fragment_id not in self._bodies:
            template = FRAGMENT_SPECS[fragment_id][0]
            text = _render_text(template, f"apim/fragments/{fragment_id}.xml", {})
            self._bodies[fragment_id] = text.rstrip("\n")
        return self._bodies[fragment_id]

    def __call__(self, fragment_id: str, pad: str) -> Markup:
        key = (fragment_id, pad)
        if key not in self._cache:
            if self._plan.fragment(fragment_id) is not None:
                text = f'{pad}<include-fragment fragment-id="{fragment_id}" />'
            else:
                text = _indented(self.body(fragment_id), pad)
            self._cache[key] = Markup(text)  # noqa: S704 - rendered (escaped) template text
        return self._cache[key]


def _indented(text: str, pad: str) -> str:
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def _render(template: str, path: str, **values: Any) -> Artifact:
    return Artifact(PurePosixPath(path), _render_text(template, path, values).encode("utf-8"))


def _render_text(template: str, path: str, values: dict[str, Any]) -> str:
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
        # The fragments' own answers, built from the operation's label and limit.
        "error_code": {kind: error_body_code(kind) for kind in ERROR_ANSWERS},
        "location_prefix": cs_string(f"/{STATUS_API_PATH}/task/"),
    }
    try:
        text = environment().get_template(f"apim-policies/{template}").render({**common, **values})
    except Exception as exc:  # noqa: BLE001 - any template failure is the same bug class
        message = f"template {template} failed for {path}: {exc}"
        raise RenderError(
            message,
            (Diagnostic(code="E-RENDER-TEMPLATE", message=message, hint="this is an ai4ec bug"),),
        ) from exc
    return text


#: API Management's documented size limit of one policy fragment.
MAX_FRAGMENT_BYTES = 32 * 1024
#: ``<include-fragment fragment-id="...">`` as the templates print it.
_INCLUDE = re.compile(r'<include-fragment fragment-id="([^"]*)"')


def check_policy(
    artifact: Artifact,
    named_values: frozenset[str],
    fragments: frozenset[str] = frozenset(),
    root_tag: str = "policies",
) -> None:
    """Parse a rendered policy (or fragment) back and check what API Management will see.

    Raises:
        RenderError: the XML is not well formed, the root is not ``root_tag``, a
            ``{{...}}`` reference names something that is not one of ``named_values``,
            an ``include-fragment`` names a fragment that is not in ``fragments``, or
            a fragment includes another or is over APIM's 32 KB.
    """
    text = artifact.content.decode("utf-8")
    problem = ""
    try:
        root = ET.fromstring(text)
        if root.tag != root_tag:
            problem = f"root element is <{root.tag}>, not <{root_tag}>"
    except ET.ParseError as exc:
        problem = f"not well-formed XML: {exc}"
    if not problem:
        included = set(_INCLUDE.findall(text))
        if root_tag == "fragment" and included:
            problem = "a fragment cannot include another fragment"
        elif root_tag == "fragment" and len(artifact.content) > MAX_FRAGMENT_BYTES:
            problem = f"{len(artifact.content)} bytes; APIM takes fragments up to 32 KB"
        elif included - fragments:
            problem = f"includes fragments ai4ec does not deploy: {sorted(included - fragments)}"
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
    ``api.xml`` and ``get-task.xml``; ``apim/products/<product>.xml``; and each policy
    fragment the plan deploys, ``apim/fragments/<id>.xml`` (root ``<fragment>``, not
    including another), whose body is rendered once and included by id.

    An API's files (``api.xml`` and its operations) come from the render cache when
    the API's plan, the plan-wide inputs and ai4ec's code are what rendered them
    (:func:`api_cache_key`): a platform where 10 of 1,000 APIs changed renders 10
    APIs' policies. A stored entry was parsed back before it was stored.
    """
    source = comment_text(plan.source)
    fragment = _Fragments(plan)
    allowed = named_value_names(plan)
    deployed = frozenset(f.id for f in plan.fragments)
    store = DiskCache(CACHE_NAMESPACE)
    wide = _plan_wide(plan) if store.active else ""
    out = [_render("global.xml.j2", plan.global_policy_path, source=source)]
    for api in plan.apis:
        key = api_cache_key(wide, api) if store.active else ""
        payload = store.get(key) if key else None
        hit = unpack(payload) if payload is not None else None
        if hit is not None:
            out.extend(hit)
            continue
        files = [_render("api.xml.j2", api.policy_path, source=source, api=api, fragment=fragment)]
        files.extend(
            _render("operation.xml.j2", op.policy_path, source=source, op=op, fragment=fragment)
            for op in api.operations
            if op.policy_path is not None
        )
        for artifact in files:
            check_policy(artifact, allowed, deployed)
        if key:
            store.put(key, pack(tuple(files)))
        out.extend(files)
    shared: list[Artifact] = [out[0]]
    if plan.status is not None:
        status = plan.status
        shared.append(_render("api.xml.j2", status.api.policy_path, source=source, api=status.api))
        shared.append(
            _render("get-task.xml.j2", status.operation_policy_path, source=source, status=status)
        )
    shared.extend(
        _render("product.xml.j2", p.policy_path, source=source, product=p) for p in plan.products
    )
    for artifact in shared:
        check_policy(artifact, allowed, deployed)
    out.extend(shared[1:])
    for f in plan.fragments:
        body = Markup(_indented(fragment.body(f.id), "    "))  # noqa: S704 - rendered text
        artifact = _render("fragment.xml.j2", f.path, source=source, body=body)
        check_policy(artifact, allowed, root_tag="fragment")
        out.append(artifact)
    return sorted(out, key=lambda a: str(a.path))


def _plan_wide(plan: ApimPlan) -> str:
    """Digest of everything of the plan but its APIs, products and status API.

    An API's policies may read any plan-wide value (the source name in the header, the
    fragments deployed or inlined, the backends and named values the parse-back checks
    against), so all of them are in every API's key. The products and the status API
    are left out: they list the APIs, so one added API would change every key, and no
    API's policy reads them.
    """
    text = repr(replace(plan, apis=(), products=(), status=None))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()  # hashed once, not per API


def api_cache_key(plan_wide: str, api: ApiPlan) -> str:
    """Cache key of one API's policy files: its plan, the plan-wide text, the code.

    The plans are frozen dataclasses of strings, numbers, enums and tuples, so their
    ``repr`` is the exact model slice the templates read. :func:`~ai4ec.cache.code_fingerprint`
    covers the templates and this code, so a changed policy text (a template edit)
    misses.
    """
    return key_of(_CACHE_FORMAT, code_fingerprint(), plan_wide, repr(api))


_INCLUDE_LINE = re.compile(r'(?m)^([ ]*)<include-fragment fragment-id="([^"]*)" />$')


def fragment_body(fragment_text: str) -> str:
    """The policies of a rendered fragment file, unindented (what an include inserts)."""
    lines = fragment_text.split("\n")
    start = lines.index("<fragment>") + 1
    end = lines.index("</fragment>")
    return "\n".join(line.removeprefix("    ") for line in lines[start:end])


def expand_fragments(policy_text: str, fragments: Mapping[str, str]) -> str:
    """``policy_text`` as the gateway runs it: each include replaced by its fragment.

    ``fragments`` maps fragment ids to their rendered files. The result is exactly the
    policy a tier without fragments gets (the fragment's text at the include's
    indentation); tests compare the two and read behaviour from it.

    Raises:
        KeyError: an include names a fragment that is not in ``fragments``.
    """

    def inline(m: re.Match[str]) -> str:
        return _indented(fragment_body(fragments[m.group(2)]), m.group(1))

    return _INCLUDE_LINE.sub(inline, policy_text)


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
