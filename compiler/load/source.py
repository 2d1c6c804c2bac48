"""Where values came from: JSON paths, positions, source maps and loaded documents.

Every stage after loading locates its diagnostics through these types, so they sit
apart from the YAML reader that produces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

JsonPath = tuple[str | int, ...]


class Position(NamedTuple):
    """1-based line and column of a value in its file."""

    line: int
    col: int


@dataclass(slots=True)
class SourceMap:
    """Where each value of a document came from.

    ``positions`` maps a JSON path (tuple of keys and indexes) to the position of the
    value; ``key_positions`` to the position of the mapping key naming it (better for
    "unknown field" errors). ``raw`` keeps the source text of plain scalars that YAML
    resolved to a non-string, for the YAML 1.1 diagnostics.
    """

    file: str
    positions: dict[JsonPath, Position] = field(default_factory=dict)
    key_positions: dict[JsonPath, Position] = field(default_factory=dict)
    raw: dict[JsonPath, str] = field(default_factory=dict)

    def locate(self, path: JsonPath, *, prefer_key: bool = False) -> Position | None:
        """Position of ``path``, falling back to its nearest located ancestor."""
        probe = path
        while True:
            if prefer_key and probe in self.key_positions:
                return self.key_positions[probe]
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return None
            probe = probe[:-1]


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded platform file: its data, where each value came from, and its text."""

    path: Path
    data: dict[str, Any]
    source: SourceMap
    lines: tuple[str, ...]


def format_path(path: JsonPath) -> str:
    """``('apis', 2, 'name')`` -> ``$.apis[2].name``."""
    out = ["$"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif part.isidentifier():
            out.append(f".{part}")
        else:
            out.append(f"[{part!r}]")
    return "".join(out)
