"""What every model reader shares: the raw document, where it came from, and the diagnostics.

One :class:`ModelContext` lives for one environment's model. Readers receive it as their
first argument instead of being methods of one large builder, so each job (defaults,
naming, references, rules) sits in its own module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import Diagnostic, Severity
from ..load import JsonPath, SourceMap, format_path
from ..resources import load_table
from .types import Api


class ModelContext:
    """Collects diagnostics, located through the merged document's source map."""

    def __init__(
        self,
        data: dict[str, Any],
        source: SourceMap,
        environment: str,
        base_dir: Path,
        broken: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.data = data
        #: Section -> names of entries the schema refused (left out of ``data``).
        self.broken: Mapping[str, frozenset[str]] = broken or {}
        self.source = source
        self.environment = environment
        self.base_dir = base_dir
        self.diagnostics: list[Diagnostic] = []
        self.vm_sizes: dict[str, dict[str, Any]] = load_table("vm_sizes")["sizes"]
        # find_api's index of APIs by name, rebuilt when it is asked about another list.
        self.apis_by_name: dict[str, list[Api]] = {}
        self.apis_by_name_for: list[Api] | None = None

    def is_broken(self, section: str, name: object = None) -> bool:
        """Whether ``name`` (any name, when None) in ``section`` is a left-out entry.

        Its schema error is reported already; an "unknown" error on top would be noise.
        """
        names = self.broken.get(section, frozenset())
        return bool(names) if name is None else name in names

    def report(
        self,
        code: str,
        message: str,
        path: JsonPath,
        hint: str = "",
        *,
        warning: bool = False,
        prefer_key: bool = False,
    ) -> None:
        """Record one diagnostic at ``path`` (located to file, line and column)."""
        pos = self.source.locate(path, prefer_key=prefer_key)
        self.diagnostics.append(
            Diagnostic(
                code=code,
                message=message,
                file=self.source.file,
                line=pos.line if pos else None,
                col=pos.col if pos else None,
                json_path=format_path(path),
                hint=hint,
                severity=Severity.WARNING if warning else Severity.ERROR,
            )
        )
