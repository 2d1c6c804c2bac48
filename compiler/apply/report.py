"""``apply --plan`` as an ``ai4ec diff`` report: the same text, markdown and JSON formats.

The plan compares the build with the *live* platform (ARM what-if, Kubernetes dry-run),
while ``diff`` compares two builds; reviewers should read both the same way. Live previews
can hold secrets, so field values are never shown here: each changed path is reported as
changed, with its value redacted.
"""

from __future__ import annotations

from pathlib import Path

from ..diff.records import (
    MISSING,
    ChangeKind,
    DiffReport,
    EnvironmentDiff,
    FieldChange,
    Hidden,
    ResourceChange,
    Risk,
    Side,
)
from .plan import ApplyAction as PlanAction
from .plan import StepPlan

_ACTIONS = {
    PlanAction.CREATE: ChangeKind.ADDED,
    PlanAction.UPDATE: ChangeKind.CHANGED,
    PlanAction.UNKNOWN: ChangeKind.CHANGED,
    PlanAction.DELETE: ChangeKind.REMOVED,
}


def _layer(step: str) -> str:
    if step.startswith("k8s"):
        return "kubernetes"
    if step in ("dispatch", "access", "keys"):
        return "azure"  # ARM resources and Key Vault secrets
    return step if step in ("azure", "functions", "apim") else "files"


def plan_report(plans: list[StepPlan], build_dir: Path, environment: str) -> DiffReport:
    """One environment's plan as a diff report (live platform -> build)."""
    changes: list[ResourceChange] = []
    unchanged = 0
    notes: list[str] = []
    for plan in plans:
        layer = _layer(plan.step)
        notes.extend(f"{plan.step}: {n}" for n in plan.notes)
        for c in plan.changes:
            action = _ACTIONS.get(c.action)
            if action is None:
                unchanged += 1
                continue
            fields = tuple(
                FieldChange(
                    path=p,
                    old=MISSING if c.action is PlanAction.CREATE else None,
                    new=MISSING if c.action is PlanAction.DELETE else None,
                    hidden=Hidden.SECRET,
                )
                for p in c.paths
            )
            note = c.note
            if c.action is PlanAction.UNKNOWN:
                note = note or "Azure could not predict this change; it will be redeployed"
            changes.append(
                ResourceChange(
                    environment=environment,
                    layer=layer,
                    key=f"{plan.step}/{c.kind}/{c.name}",
                    kind=c.kind,
                    name=c.name,
                    action=action,
                    fields=fields,
                    risk=Risk.DISRUPTION if c.action is PlanAction.DELETE else None,
                    reasons=("deleted from the live platform",)
                    if c.action is PlanAction.DELETE
                    else (),
                    note=note,
                )
            )
    env = EnvironmentDiff(
        name=environment,
        base_name=environment,
        head_name=environment,
        changes=tuple(changes),
        before=None,
        after=None,
        unchanged=unchanged,
        notes=tuple(notes),
    )
    return DiffReport(
        base=Side(label="live platform"),
        head=Side(label=str(build_dir), directory=str(build_dir)),
        environments=(env,),
        notes=("values are not shown: live previews can hold secrets",),
    )
