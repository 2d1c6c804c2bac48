"""Stage 2: check a loaded document against ``schemas/platform.schema.json``.

Input: data + source map (from :mod:`ai4ec.load`). Output: a list of
:class:`~ai4ec.errors.Diagnostic`, every one located at file:line:col, with a stable code
and a hint. All errors are collected; nothing stops at the first.

The schema is the only definition of the input's shape; semantic rules that need more
than one value (references, capacity, cycles) live in :mod:`ai4ec.model` (refs, rules).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema

from ..cache import cache_dir
from ..errors import Diagnostic, Severity
from ..load import JsonPath, SourceMap, format_path
from ..resources import platform_schema
from .convert import convert

_YAML11_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = platform_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


@cache
def fast_validator() -> Callable[[Any], Any] | None:
    """A compiled validator for the platform schema, or None if unavailable.

    The schema only uses keywords whose meaning is the same in draft-07 (what
    fastjsonschema implements) and 2020-12; a test checks that, and a differential test
    checks both validators agree.
    """
    if os.environ.get("AI4EC_NO_FAST_SCHEMA") == "1":
        return None
    schema = copy.deepcopy(platform_schema())
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return compiled_validator("platform_schema", schema)


def compiled_validator(name: str, schema: dict[str, Any]) -> Callable[[Any], Any]:
    """A compiled (fastjsonschema) validator for ``schema``; None without fastjsonschema.

    Compiling takes ~0.5 s for the platform schema, more than validating a 1,000-API
    platform, so the generated code is cached per schema hash (``$AI4EC_CACHE_DIR`` or
    ``~/.cache/ai4ec``) and imported from there; without a writable cache it is compiled
    in memory. The validator raises ``fastjsonschema.JsonSchemaException`` on bad data.
    """
    text = json.dumps(schema, sort_keys=True).encode()
    digest = hashlib.sha256(text + fastjsonschema.VERSION.encode()).hexdigest()[:16]
    module_path = cache_dir() / f"{name}_{digest}.py"

    def code() -> str:
        source: str = fastjsonschema.compile_to_code(schema, use_default=False, use_formats=False)
        # compile_to_code names the entry point after the schema's $id; give it a fixed name.
        entry = source.split("def ", 1)[1].split("(", 1)[0]
        return source + f"\n\nvalidate = {entry}\n"

    try:
        if not module_path.exists():
            module_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=module_path.parent, suffix=".tmp", delete=False, encoding="utf-8"
            ) as fh:
                fh.write(code())
            Path(fh.name).replace(module_path)
        spec = importlib.util.spec_from_file_location(f"_ai4ec_{name}_{digest}", module_path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            validate: Callable[[Any], Any] = module.validate
            return validate
        except Exception:  # noqa: BLE001 - a truncated or foreign file: never trusted
            module_path.unlink(missing_ok=True)
            raise OSError("unusable cached validator") from None
    except OSError:
        namespace: dict[str, Any] = {}
        exec(compile(code(), f"<{name}>", "exec"), namespace)  # noqa: S102
        validate = namespace["validate"]
        return validate


def schema_diagnostics(data: Any, source: SourceMap) -> list[Diagnostic]:
    """Every schema violation in ``data``, located through ``source``.

    Valid documents (the common case, and the large ones) are confirmed by a compiled
    validator in a few milliseconds; only when it objects does jsonschema walk the
    document again to collect every error with its context.
    """
    return schema_findings(data, source)[0]


def schema_findings(data: Any, source: SourceMap) -> tuple[list[Diagnostic], set[JsonPath]]:
    """:func:`schema_diagnostics`, plus the JSON path of every error.

    The paths tell :mod:`.partial` which parts of the document the schema refused, so
    the semantic rules can still run on the rest.
    """
    if schema_accepts(data):
        return _yaml11_bool_warnings(source, set()), set()
    out: list[Diagnostic] = []
    error_paths: set[JsonPath] = set()
    for error in _validator().iter_errors(data):
        for diag, path in convert(error, source):
            out.append(diag)
            error_paths.add(path)
    out.extend(_yaml11_bool_warnings(source, error_paths))
    return out, error_paths


def schema_accepts(data: Any) -> bool:
    """Whether ``data`` is valid against the platform schema (fast when it is)."""
    fast = fast_validator()
    if fast is None:
        return bool(_validator().is_valid(data))
    try:
        fast(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _yaml11_bool_warnings(source: SourceMap, skip: set[JsonPath]) -> list[Diagnostic]:
    out = []
    for path, raw in source.raw.items():
        if path in skip or raw.lower() not in _YAML11_BOOL_WORDS:
            continue
        pos = source.positions.get(path)
        out.append(
            Diagnostic(
                code="W-YAML-BOOL",
                message=f"{raw!r} is read as a boolean by YAML 1.1 but as text by YAML 1.2 tools",
                file=source.file,
                line=pos.line if pos else None,
                col=pos.col if pos else None,
                json_path=format_path(path),
                hint="write true or false",
                severity=Severity.WARNING,
            )
        )
    return out


@cache
def _environments_validator() -> jsonschema.protocols.Validator:
    schema = platform_schema()
    sub = {
        "$schema": schema["$schema"],
        "$defs": schema["$defs"],
        **schema["properties"]["environments"],
    }
    cls = jsonschema.validators.validator_for(schema)
    validator: jsonschema.protocols.Validator = cls(sub)
    return validator


def environments_diagnostics(data: dict[str, Any], source: SourceMap) -> list[Diagnostic]:
    """Shape errors in the ``environments`` section itself (names, overlay keys).

    Overlay values are checked after merging, in context; this catches what cannot be
    merged at all, such as an overlay of ``apiVersion`` or an environment named ``Prod``.
    """
    if "environments" not in data:
        return []
    out: list[Diagnostic] = []
    for error in _environments_validator().iter_errors(data["environments"]):
        error.path.appendleft("environments")
        out.extend(diag for diag, _path in convert(error, source))
    return out
