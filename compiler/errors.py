"""Diagnostics and the small exception hierarchy every stage raises.

Stages collect :class:`Diagnostic` records instead of failing on the first problem, and
raise one :class:`Ai4ecError` subclass carrying all of them. The CLI is the only place
that turns these into text and exit codes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """How bad a diagnostic is; only errors fail a command."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One problem found in the user's input, located as precisely as we can.

    ``code`` is stable across releases (tests and CI filters key on it); ``message``
    says what is wrong and ``hint`` what to do about it.
    """

    code: str
    message: str
    file: str = ""
    line: int | None = None
    col: int | None = None
    json_path: str = "$"
    hint: str = ""
    severity: Severity = Severity.ERROR

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Order by file, position, then code, so output is deterministic."""
        return (self.file, self.line or 0, self.col or 0, self.code, self.message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``--format json``."""
        data = asdict(self)
        data["severity"] = str(self.severity)
        return data


@dataclass(eq=False)
class Ai4ecError(Exception):
    """Root of every error ai4ec reports to a user (exit code 1)."""

    message: str
    diagnostics: tuple[Diagnostic, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return self.message


class LoadError(Ai4ecError):
    """The file could not be read or parsed as YAML."""


class ValidationError(Ai4ecError):
    """The document broke the schema or a semantic rule."""


class RenderError(Ai4ecError):
    """A template failed, or its output did not parse back."""


class BuildError(Ai4ecError):
    """Writing the build output failed."""


class DiffError(Ai4ecError):
    """Two builds could not be compared."""


class ApplyError(Ai4ecError):
    """A deployment step failed permanently."""


class DevError(Ai4ecError):
    """``ai4ec dev`` cannot start or keep running one of its parts; the message says which."""


def dev_error(message: str, hint: str = "") -> DevError:
    """A :class:`DevError` whose one diagnostic carries ``hint`` (code ``E-DEV``)."""
    return DevError(message, (Diagnostic(code="E-DEV", message=message, hint=hint),))
