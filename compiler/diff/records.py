"""The diff's result as typed records: what changed, how risky it is, why, and what it costs.

Every output format (text, markdown, JSON) is printed from these records and nothing
else, so the formats cannot disagree. Records are frozen: a report is a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .clients import ClientChange


class ChangeKind(StrEnum):
    """What happens to one resource."""

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    #: A changed field cannot be updated in place: the resource is deleted and recreated.
    REPLACED = "replaced"
    #: Same content under a new name (applied as create + delete: the old one goes).
    RENAMED = "renamed"


class Risk(StrEnum):
    """Why a change needs a second look, worst first."""

    #: Data held by the resource is lost (storage, cache, registry, vault, subscriptions).
    DATA_LOSS = "data-loss"
    #: The resource is recreated (new node pool, new object); no persistent data in it.
    REPLACEMENT = "replacement"
    #: Callers or workloads are interrupted (API gone, tier change, node reimage).
    DISRUPTION = "disruption"


RISK_ORDER = {Risk.DATA_LOSS: 0, Risk.REPLACEMENT: 1, Risk.DISRUPTION: 2}

#: Layers in report order: the cloud, the cluster, the gateway, the runtime, anything else.
LAYERS = ("azure", "kubernetes", "apim", "functions", "files")


class Hidden(StrEnum):
    """Why a field's values are not shown."""

    #: Secret or key material: only "changed" / "unchanged" is ever printed.
    SECRET = "secret"
    #: Opaque file content (e.g. a member of functions/bundle.zip): names only.
    CONTENT = "content"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One leaf that differs between base and head.

    ``old``/``new`` are :data:`MISSING` when the field is absent on that side, and both
    are ``None`` when ``hidden`` is set (the values never leave the diff engine).
    """

    path: str
    old: Any
    new: Any
    hidden: Hidden | None = None
    #: Why this field forces a replacement or loses data, if it does.
    risk: Risk | None = None
    reason: str = ""

    @property
    def kind(self) -> str:
        """``added``, ``removed`` or ``changed`` (the field, not the resource)."""
        if self.old is MISSING:
            return "added"
        if self.new is MISSING:
            return "removed"
        return "changed"


class _Missing:
    """Marker for "no value on this side" (distinct from JSON null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A place in platform.yaml that caused a change.

    ``side`` says which version the line numbers belong to: ``head`` for what the
    reviewer is looking at, ``base`` for something that was removed.
    """

    file: str
    line: int | None
    end_line: int | None
    json_path: str
    side: str
    change: str
    #: True when no entity-specific cause was found and this is a global change.
    indirect: bool = False


@dataclass(frozen=True, slots=True)
class Cost:
    """A monthly cost estimate in USD; ``low == high`` unless something autoscales."""

    low: float
    high: float
    detail: str = ""
    usage_based: bool = False
    spot: bool = False
    #: False when a price was missing; such resources are left out of totals.
    known: bool = True

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.low + other.low, self.high + other.high)


ZERO = Cost(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class CostChange:
    """Cost of one resource before and after (``None`` = the resource is absent)."""

    before: Cost | None
    after: Cost | None

    @property
    def delta(self) -> Cost:
        """After minus before, low and high bounds separately."""
        b = self.before or ZERO
        a = self.after or ZERO
        return Cost(a.low - b.low, a.high - b.high)

    @property
    def changed(self) -> bool:
        """Whether the estimate moved at all."""
        b = self.before or ZERO
        a = self.after or ZERO
        return (round(a.low, 2), round(a.high, 2)) != (round(b.low, 2), round(b.high, 2))


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """One resource that is added, removed, changed, replaced or renamed."""

    environment: str
    layer: str
    #: Stable identity within the environment (type + name, group/kind/ns/name, path...).
    key: str
    kind: str
    name: str
    action: ChangeKind
    old_name: str | None = None
    fields: tuple[FieldChange, ...] = ()
    unchanged_fields: int = 0
    risk: Risk | None = None
    reasons: tuple[str, ...] = ()
    sources: tuple[SourceRef, ...] = ()
    cost: CostChange | None = None
    #: Generated files (below out/<env>/) the resource lives in.
    files: tuple[str, ...] = ()
    #: One-line summary for opaque resources, e.g. "changed (3 files)".
    note: str = ""

    @property
    def destructive(self) -> bool:
        """Deletes or recreates something, or loses data: summarised first in reports."""
        return self.action in (
            ChangeKind.REMOVED,
            ChangeKind.REPLACED,
            ChangeKind.RENAMED,
        ) or self.risk in (
            Risk.DATA_LOSS,
            Risk.REPLACEMENT,
        )

    @property
    def address(self) -> str:
        """``kind name`` as printed in headers (``old -> new`` for renames)."""
        if self.old_name is not None and self.old_name != self.name:
            return f"{self.kind} {self.old_name} -> {self.name}"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class RenamedEntity:
    """A platform.yaml item (api, pipeline, product, pool...) that only changed its name.

    Its generated resources appear as ``renamed`` changes; this record groups them so a
    reviewer reads one line: "api detector-v1 renamed to animal-detector-v1".
    """

    section: str
    old: str
    new: str
    resources: int
    sources: tuple[SourceRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Totals:
    """Monthly cost of everything priced in one side of one environment."""

    cost: Cost
    #: Resources whose price was unknown (named so the reader can check them).
    unpriced: tuple[str, ...] = ()
    usage_based: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EnvironmentDiff:
    """Every change of one environment, plus its cost before and after."""

    name: str
    base_name: str | None
    head_name: str | None
    changes: tuple[ResourceChange, ...]
    before: Totals | None
    after: Totals | None
    unchanged: int = 0
    renames: tuple[RenamedEntity, ...] = ()
    notes: tuple[str, ...] = ()
    #: Public routes added, removed or changed (from the models; empty for build dirs).
    clients: tuple[ClientChange, ...] = ()


@dataclass(frozen=True, slots=True)
class Side:
    """What one side of the comparison was built from."""

    label: str
    ref: str | None = None
    commit: str | None = None
    path: str | None = None
    directory: str | None = None


@dataclass(frozen=True, slots=True)
class DiffReport:
    """The whole comparison: both sides, every environment, and notes for the reader."""

    base: Side
    head: Side
    environments: tuple[EnvironmentDiff, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    currency: str = "USD"
    hours_per_month: float = 730.0

    @property
    def changes(self) -> list[ResourceChange]:
        """All changes of all environments, in report order."""
        return [c for e in self.environments for c in e.changes]

    @property
    def has_changes(self) -> bool:
        """Drives the exit code (2 when true)."""
        return any(e.changes for e in self.environments)

    def counts(self) -> dict[str, int]:
        """Number of changes per action, plus destructive and total."""
        out = {a.value: 0 for a in ChangeKind}
        destructive = 0
        for c in self.changes:
            out[c.action.value] += 1
            destructive += c.destructive
        out["destructive"] = destructive
        out["total"] = sum(out[a.value] for a in ChangeKind)
        return out

    def cost_totals(self) -> tuple[Cost | None, Cost | None]:
        """Summed monthly cost of all environments before and after."""
        before = [e.before.cost for e in self.environments if e.before is not None]
        after = [e.after.cost for e in self.environments if e.after is not None]
        b = sum(before, ZERO) if before else None
        a = sum(after, ZERO) if after else None
        return b, a
