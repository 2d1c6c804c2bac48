"""Stage 2: check a loaded document against ``schemas/platform.schema.json``.

Input: data + source map (from :mod:`ai4ec.load`). Output: a list of
:class:`~ai4ec.errors.Diagnostic`, every one located at file:line:col, with a stable code
and a hint. All errors are collected; nothing stops at the first.

The schema is the only definition of the input's shape; semantic rules that need more
than one value (references, capacity, cycles) live in :mod:`ai4ec.model` (refs, rules).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema.exceptions import ValidationError as JsonSchemaError

from .errors import Diagnostic, Severity
from .load import JsonPath, SourceMap, format_path
from .resources import platform_schema

_YAML11_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = platform_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _cache_dir() -> Path:
    root = os.environ.get("AI4EC_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "ai4ec" if root else Path.home() / ".cache" / "ai4ec"


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
    module_path = _cache_dir() / f"{name}_{digest}.py"

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
        spec.loader.exec_module(module)
        validate: Callable[[Any], Any] = module.validate
        return validate
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
    fast = fast_validator()
    if fast is not None:
        try:
            fast(data)
        except fastjsonschema.JsonSchemaException:
            pass
        else:
            return _yaml11_bool_warnings(source, set())
    out: list[Diagnostic] = []
    error_paths: set[JsonPath] = set()
    for error in _validator().iter_errors(data):
        for diag, path in _convert(error, source):
            out.append(diag)
            error_paths.add(path)
    out.extend(_yaml11_bool_warnings(source, error_paths))
    return out


def _convert(error: JsonSchemaError, source: SourceMap) -> Iterable[tuple[Diagnostic, JsonPath]]:
    path: JsonPath = tuple(error.absolute_path)
    validator = str(error.validator)
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    field = _field_name(path)

    def make(
        code: str,
        message: str,
        hint: str = "",
        at: JsonPath = path,
        prefer_key: bool = False,
    ) -> tuple[Diagnostic, JsonPath]:
        pos = source.locate(at, prefer_key=prefer_key)
        return (
            Diagnostic(
                code=code,
                message=message,
                file=source.file,
                line=pos.line if pos else None,
                col=pos.col if pos else None,
                json_path=format_path(at),
                hint=hint,
            ),
            at,
        )

    if "propertyNames" in error.absolute_schema_path and isinstance(instance, str):
        # jsonschema reports a bad key as a failure of the key's own subschema, at the
        # path of the mapping; point at the key instead.
        yield make(
            "E-SCHEMA-NAME",
            f"{field or 'mapping'}: {instance!r} is not a valid name",
            _describe(schema),
            at=(*path, instance),
            prefer_key=True,
        )
        return
    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        extras = [k for k in instance if k not in schema.get("properties", {})]
        for key in extras:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"allowed fields: {', '.join(allowed)}"
            )
            yield make(
                "E-SCHEMA-UNKNOWN-FIELD",
                f"unknown field {key!r}",
                hint,
                at=(*path, key),
                prefer_key=True,
            )
        return
    if validator == "required":
        missing = list(error.validator_value) if isinstance(error.validator_value, list) else []
        present = instance if isinstance(instance, dict) else {}
        for key in missing:
            if key in present:
                continue
            desc = _describe(schema.get("properties", {}).get(key, {}))
            yield make(
                "E-SCHEMA-REQUIRED",
                f"missing required field {key!r}" + (f" in {field}" if field else ""),
                desc,
                prefer_key=True,
            )
        return
    if validator == "type":
        expected = error.validator_value
        raw = source.raw.get(path)
        if expected == "string" or (isinstance(expected, list) and "string" in expected):
            if isinstance(instance, bool) and raw is not None:
                yield make(
                    "E-YAML-BOOL",
                    f"{field or 'value'}: {raw!r} was read as the boolean "
                    f"{str(instance).lower()} (YAML 1.1), but text is expected",
                    f'quote it: "{raw}"',
                )
                return
            if isinstance(instance, int | float) and raw is not None:
                yield make(
                    "E-YAML-NUMBER",
                    f"{field or 'value'}: {raw} was read as the number {instance!r}, "
                    "but text is expected",
                    f'quote it: "{raw}"',
                )
                return
        yield make(
            "E-SCHEMA-TYPE",
            f"{field or 'value'}: expected {_type_words(expected)}, got {_type_of(instance)}",
            _describe(schema),
        )
        return
    if validator == "enum":
        options = (
            [str(o) for o in error.validator_value]
            if isinstance(error.validator_value, list)
            else []
        )
        hint = f"one of: {', '.join(options)}"
        if isinstance(instance, str):
            lowered = {o.lower(): o for o in options}
            if instance.lower() in lowered:
                hint = f"did you mean {lowered[instance.lower()]!r}? (values are case-sensitive)"
            else:
                close = difflib.get_close_matches(instance, options, n=1, cutoff=0.6)
                if close:
                    hint = f"did you mean {close[0]!r}? ({hint})"
        yield make("E-SCHEMA-ENUM", f"{field or 'value'}: {instance!r} is not allowed", hint)
        return
    if validator == "const":
        yield make(
            "E-SCHEMA-CONST",
            f"{field or 'value'}: {instance!r} is not supported",
            f"use {error.validator_value!r}",
        )
        return
    if validator == "pattern":
        yield make(
            "E-SCHEMA-PATTERN",
            f"{field or 'value'}: {instance!r} is not valid",
            _describe(schema) or f"must match {error.validator_value}",
        )
        return
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "more than",
            "exclusiveMaximum": "less than",
        }[validator]
        yield make(
            "E-SCHEMA-RANGE",
            f"{field or 'value'}: {instance!r} is out of range; it must be {words} "
            f"{error.validator_value}",
            _describe(schema),
        )
        return
    if validator in ("minLength", "maxLength"):
        words = "at least" if validator == "minLength" else "at most"
        yield make(
            "E-SCHEMA-LENGTH",
            f"{field or 'value'}: must be {words} {error.validator_value} characters",
            _describe(schema),
        )
        return
    if validator in ("minItems", "maxItems", "uniqueItems"):
        if validator == "uniqueItems":
            message = f"{field or 'list'}: items must be unique"
        else:
            words = "at least" if validator == "minItems" else "at most"
            message = f"{field or 'list'}: needs {words} {error.validator_value} item(s)"
        yield make("E-SCHEMA-ITEMS", message, _describe(schema))
        return
    if validator in ("oneOf", "anyOf"):
        yield make(
            "E-SCHEMA-ONEOF",
            f"{field or 'value'}: {_short(instance)} does not fit",
            _describe(schema),
        )
        return
    yield make("E-SCHEMA", f"{field or 'value'}: {error.message}", _describe(schema))


def _field_name(path: JsonPath) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return ""


def _describe(schema: Any) -> str:
    if not isinstance(schema, dict):
        return ""
    if "$ref" in schema and "description" not in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        schema = platform_schema()["$defs"].get(name, {})
    desc = str(schema.get("description", "")).strip()
    examples = schema.get("examples")
    if examples and desc:
        shown = ", ".join(repr(e) for e in examples[:2] if not isinstance(e, dict | list))
        if shown:
            return f"{desc} (e.g. {shown})"
    return desc


def _type_words(expected: Any) -> str:
    names = {
        "string": "text",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
        "object": "a mapping",
        "array": "a list",
        "null": "nothing",
    }
    if isinstance(expected, list):
        return " or ".join(names.get(str(e), str(e)) for e in expected)
    return names.get(str(expected), str(expected))


def _type_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"text {_short(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return "a list"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        out.extend(diag for diag, _path in _convert(error, source))
    return out
