"""One jsonschema error -> located diagnostics, by a small converter per schema keyword.

jsonschema says *which keyword* failed; a user needs to hear what is wrong with *their
field* and what to write instead. :data:`CONVERTERS` maps each keyword to the function
that says so; keywords without one get the generic E-SCHEMA message.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError as JsonSchemaError

from ..errors import Diagnostic
from ..load import JsonPath, SourceMap, format_path
from ..resources import platform_schema

Located = tuple[Diagnostic, JsonPath]


@dataclass(frozen=True, slots=True)
class SchemaError:
    """One jsonschema error, read once into what every converter needs."""

    error: JsonSchemaError
    source: SourceMap
    path: JsonPath
    validator: str
    instance: Any
    schema: dict[str, Any]
    #: The nearest mapping key on the path ("" at the top), used to name the field.
    field: str

    @classmethod
    def read(cls, error: JsonSchemaError, source: SourceMap) -> SchemaError:
        """Take the parts of ``error`` the converters use."""
        path: JsonPath = tuple(error.absolute_path)
        return cls(
            error=error,
            source=source,
            path=path,
            validator=str(error.validator),
            instance=error.instance,
            schema=error.schema if isinstance(error.schema, dict) else {},
            field=_field_name(path),
        )

    def make(
        self,
        code: str,
        message: str,
        hint: str = "",
        at: JsonPath | None = None,
        prefer_key: bool = False,
    ) -> Located:
        """A diagnostic at ``at`` (default: the failing value), with that path."""
        where = self.path if at is None else at
        pos = self.source.locate(where, prefer_key=prefer_key)
        return (
            Diagnostic(
                code=code,
                message=message,
                file=self.source.file,
                line=pos.line if pos else None,
                col=pos.col if pos else None,
                json_path=format_path(where),
                hint=hint,
            ),
            where,
        )


Converter = Callable[[SchemaError], Iterator[Located]]


def convert(error: JsonSchemaError, source: SourceMap) -> Iterator[Located]:
    """The diagnostics (with their paths) for one jsonschema error."""
    e = SchemaError.read(error, source)
    if "propertyNames" in error.absolute_schema_path and isinstance(e.instance, str):
        return _property_name(e)
    return CONVERTERS.get(e.validator, _generic)(e)


def _property_name(e: SchemaError) -> Iterator[Located]:
    # jsonschema reports a bad key as a failure of the key's own subschema, at the path
    # of the mapping; point at the key instead.
    yield e.make(
        "E-SCHEMA-NAME",
        f"{e.field or 'mapping'}: {e.instance!r} is not a valid name",
        _describe(e.schema),
        at=(*e.path, e.instance),
        prefer_key=True,
    )


def _additional_properties(e: SchemaError) -> Iterator[Located]:
    if not isinstance(e.instance, dict):
        yield from _generic(e)
        return
    allowed = sorted(e.schema.get("properties", {}))
    extras = [k for k in e.instance if k not in e.schema.get("properties", {})]
    for key in extras:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed fields: {', '.join(allowed)}"
        yield e.make(
            "E-SCHEMA-UNKNOWN-FIELD",
            f"unknown field {key!r}",
            hint,
            at=(*e.path, key),
            prefer_key=True,
        )


def _required(e: SchemaError) -> Iterator[Located]:
    value = e.error.validator_value
    missing = list(value) if isinstance(value, list) else []
    present = e.instance if isinstance(e.instance, dict) else {}
    for key in missing:
        if key in present:
            continue
        desc = _describe(e.schema.get("properties", {}).get(key, {}))
        yield e.make(
            "E-SCHEMA-REQUIRED",
            f"missing required field {key!r}" + (f" in {e.field}" if e.field else ""),
            desc,
            prefer_key=True,
        )


def _type(e: SchemaError) -> Iterator[Located]:
    expected = e.error.validator_value
    raw = e.source.raw.get(e.path)
    wants_text = expected == "string" or (isinstance(expected, list) and "string" in expected)
    if wants_text and raw is not None:
        # YAML 1.1 turned the user's plain text into another type: say exactly that.
        if isinstance(e.instance, bool):
            yield e.make(
                "E-YAML-BOOL",
                f"{e.field or 'value'}: {raw!r} was read as the boolean "
                f"{str(e.instance).lower()} (YAML 1.1), but text is expected",
                f'quote it: "{raw}"',
            )
            return
        if isinstance(e.instance, int | float):
            yield e.make(
                "E-YAML-NUMBER",
                f"{e.field or 'value'}: {raw} was read as the number {e.instance!r}, "
                "but text is expected",
                _number_as_text_hint(str(raw), e.schema),
            )
            return
    yield e.make(
        "E-SCHEMA-TYPE",
        f"{e.field or 'value'}: expected {_type_words(expected)}, got {_type_of(e.instance)}",
        _describe(e.schema),
    )


def _number_as_text_hint(raw: str, schema: dict[str, Any]) -> str:
    """How to write a number the user meant as text so that the field then accepts it.

    "Quote it" is only right when the quoted text passes the field's pattern: ``version:
    2.0`` quoted is ``"2.0"``, which the version pattern refuses; the field wants ``v2``.
    """
    pattern = schema.get("pattern")
    if not isinstance(pattern, str) or re.search(pattern, raw):
        return f'quote it: "{raw}"'
    whole = raw.split(".")[0]
    for candidate in (f"v{raw}", f"v{raw.removesuffix('.0')}", f"v{whole}"):
        if re.search(pattern, candidate):
            return (
                f'write it as text the field accepts: "{candidate}" (quoting "{raw}" is not enough)'
            )
    examples = schema.get("examples") or []
    shown = f": e.g. {examples[0]!r}" if examples else ""
    return f"quoting is not enough, {_describe(schema) or 'see the schema'}{shown}"


def _enum(e: SchemaError) -> Iterator[Located]:
    value = e.error.validator_value
    options = [str(o) for o in value] if isinstance(value, list) else []
    hint = f"one of: {', '.join(options)}"
    if isinstance(e.instance, str):
        lowered = {o.lower(): o for o in options}
        if e.instance.lower() in lowered:
            hint = f"did you mean {lowered[e.instance.lower()]!r}? (values are case-sensitive)"
        else:
            close = difflib.get_close_matches(e.instance, options, n=1, cutoff=0.6)
            if close:
                hint = f"did you mean {close[0]!r}? ({hint})"
    yield e.make("E-SCHEMA-ENUM", f"{e.field or 'value'}: {e.instance!r} is not allowed", hint)


def _const(e: SchemaError) -> Iterator[Located]:
    yield e.make(
        "E-SCHEMA-CONST",
        f"{e.field or 'value'}: {e.instance!r} is not supported",
        f"use {e.error.validator_value!r}",
    )


def _pattern(e: SchemaError) -> Iterator[Located]:
    yield e.make(
        "E-SCHEMA-PATTERN",
        f"{e.field or 'value'}: {e.instance!r} is not valid",
        _describe(e.schema) or f"must match {e.error.validator_value}",
    )


_RANGE_WORDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "more than",
    "exclusiveMaximum": "less than",
}


def _range(e: SchemaError) -> Iterator[Located]:
    yield e.make(
        "E-SCHEMA-RANGE",
        f"{e.field or 'value'}: {e.instance!r} is out of range; it must be "
        f"{_RANGE_WORDS[e.validator]} {e.error.validator_value}",
        _describe(e.schema),
    )


def _length(e: SchemaError) -> Iterator[Located]:
    words = "at least" if e.validator == "minLength" else "at most"
    yield e.make(
        "E-SCHEMA-LENGTH",
        f"{e.field or 'value'}: must be {words} {e.error.validator_value} characters",
        _describe(e.schema),
    )


def _items(e: SchemaError) -> Iterator[Located]:
    if e.validator == "uniqueItems":
        message = f"{e.field or 'list'}: items must be unique"
    else:
        words = "at least" if e.validator == "minItems" else "at most"
        message = f"{e.field or 'list'}: needs {words} {e.error.validator_value} item(s)"
    yield e.make("E-SCHEMA-ITEMS", message, _describe(e.schema))


def _one_of(e: SchemaError) -> Iterator[Located]:
    yield e.make(
        "E-SCHEMA-ONEOF",
        f"{e.field or 'value'}: {_short(e.instance)} does not fit",
        _describe(e.schema),
    )


def _generic(e: SchemaError) -> Iterator[Located]:
    yield e.make("E-SCHEMA", f"{e.field or 'value'}: {e.error.message}", _describe(e.schema))


#: Schema keyword -> converter. Keywords not listed get :func:`_generic`.
CONVERTERS: Mapping[str, Converter] = {
    "additionalProperties": _additional_properties,
    "required": _required,
    "type": _type,
    "enum": _enum,
    "const": _const,
    "pattern": _pattern,
    **dict.fromkeys(_RANGE_WORDS, _range),
    "minLength": _length,
    "maxLength": _length,
    "minItems": _items,
    "maxItems": _items,
    "uniqueItems": _items,
    "oneOf": _one_of,
    "anyOf": _one_of,
}


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
