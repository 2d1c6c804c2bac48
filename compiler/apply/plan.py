"""What a step would change, in one listing format for Azure and Kubernetes alike.

``ai4ec diff`` compares two builds; ``apply --plan`` compares one build with what is
live. This module's format is a plain, stable ``+``/``~``/``-`` listing (one line per
object, changed field paths after a colon, never values, since values can be secrets):

    + Microsoft.Web/sites camtrap-tasks
    ~ Deployment camera-trap/detector-v1: spec.template.spec.containers[0].image
    - VirtualService camera-trap/old-v1 (prune)
    = 41 unchanged

The same :class:`PlannedChange` records are available as JSON (``--format json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: At most this many changed paths are listed per object; the rest are counted.
MAX_PATHS = 6


class ApplyAction(StrEnum):
    """What happens to one object."""

    CREATE = "+"
    UPDATE = "~"
    DELETE = "-"
    NOOP = "="
    #: Azure could not say (what-if ``Deploy``/``Unsupported``): it will be redeployed.
    UNKNOWN = "?"


@dataclass(frozen=True, slots=True)
class PlannedChange:
    """One object's planned change."""

    action: ApplyAction
    kind: str
    name: str
    paths: tuple[str, ...] = ()
    note: str = ""

    @property
    def destructive(self) -> bool:
        """Deletions need confirmation."""
        return self.action is ApplyAction.DELETE

    def line(self) -> str:
        """The listing line (no values, only paths)."""
        text = f"{self.action.value} {self.kind} {self.name}"
        if self.paths:
            shown = list(self.paths[:MAX_PATHS])
            if len(self.paths) > MAX_PATHS:
                shown.append(f"+{len(self.paths) - MAX_PATHS} more")
            text += ": " + ", ".join(shown)
        if self.note:
            text += f" ({self.note})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--format json``."""
        return {
            "action": self.action.name.lower(),
            "kind": self.kind,
            "name": self.name,
            "paths": list(self.paths),
            "note": self.note,
        }


@dataclass(slots=True)
class StepPlan:
    """Everything one step would do."""

    step: str
    changes: list[PlannedChange] = field(default_factory=list)
    #: Remarks that are not object changes ("cluster does not exist yet").
    notes: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[PlannedChange]:
        """Changes that write something."""
        return [c for c in self.changes if c.action is not ApplyAction.NOOP]

    @property
    def destructive(self) -> list[PlannedChange]:
        """Changes that delete something."""
        return [c for c in self.changes if c.destructive]

    def summary(self) -> str:
        """``2 to create, 1 to change, 1 to delete, 40 unchanged``."""
        counts = {a: 0 for a in ApplyAction}
        for c in self.changes:
            counts[c.action] += 1
        parts = [
            f"{counts[ApplyAction.CREATE]} to create",
            f"{counts[ApplyAction.UPDATE] + counts[ApplyAction.UNKNOWN]} to change",
            f"{counts[ApplyAction.DELETE]} to delete",
            f"{counts[ApplyAction.NOOP]} unchanged",
        ]
        return ", ".join(parts)

    def lines(self) -> list[str]:
        """The listing: pending changes, then a count of unchanged objects."""
        out = [c.line() for c in self.pending]
        same = len(self.changes) - len(self.pending)
        if same:
            out.append(f"= {same} unchanged")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--format json``."""
        return {
            "step": self.step,
            "summary": self.summary(),
            "notes": list(self.notes),
            "changes": [c.to_dict() for c in self.changes],
        }


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Paths (``a.b[0].c``) at which two JSON-like values differ, leaves first found."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                out.append(sub)
            else:
                out.extend(changed_paths(before[key], after[key], sub))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out.extend(changed_paths(b, a, f"{prefix}[{i}]"))
        return out
    return [] if before == after else [prefix or "(whole object)"]
