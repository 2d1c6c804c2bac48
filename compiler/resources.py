"""The one place that knows where shipped data (schemas, templates, runtime) lives.

Installed from a wheel, ``schemas/`` and ``templates/`` sit inside the ``ai4ec`` package
(setup.cfg maps them to ``ai4ec.schemas`` / ``ai4ec.templates``). In a source checkout
they are siblings of ``compiler/``. Everything else asks this module instead of
guessing paths, so both layouts work.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_PKG = Path(__file__).resolve().parent


def _locate(name: str) -> Path:
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"ai4ec data directory {name!r} is missing from the installation")


def schemas_dir() -> Path:
    """Directory holding ``platform.schema.json``."""
    return _locate("schemas")


def templates_dir() -> Path:
    """Directory holding ``bicep/``, ``k8s/`` and ``apim-policies/`` templates."""
    return _locate("templates")


def data_dir() -> Path:
    """Directory holding the compiler's own tables (VM sizes, prices)."""
    return _PKG / "data"


@cache
def platform_schema() -> dict[str, Any]:
    """The platform.yaml JSON Schema, parsed once per process."""
    with (schemas_dir() / "platform.schema.json").open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def load_table(name: str) -> dict[str, Any]:
    """A JSON table shipped in ``compiler/data`` (e.g. ``vm_sizes``)."""
    with (data_dir() / f"{name}.json").open(encoding="utf-8") as fh:
        table: dict[str, Any] = json.load(fh)
    return table
