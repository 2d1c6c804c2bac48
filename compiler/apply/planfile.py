"""Saved plans: ``apply --plan -o plan.json`` and ``apply --from-plan plan.json``.

A plan reviewed in a pull request is only worth something if the apply does exactly
that. The saved plan is bound to the build (a digest of every artifact's SHA-256, the
platform and environment) and to the live state it saw (each step's listed changes,
with changed paths). ``--from-plan`` refuses a different build at once, and before each
step writes it compares the step's fresh preview with the saved one: anything else
(someone deployed meanwhile, drift, a new object) refuses the plan as stale.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ApplyError
from .builddir import Build
from .plan import ApplyAction, StepPlan

VERSION = 1


def build_digest(build: Build) -> str:
    """SHA-256 naming exactly this build (artifact hashes, platform, environment)."""
    doc = {
        "platform": build.platform,
        "environment": build.environment,
        "source": build.source_sha256,
        "artifacts": dict(sorted(build.artifacts.items())),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save(
    path: Path, build: Build, targets: tuple[str, ...], prune: bool, plans: list[StepPlan]
) -> None:
    """Write the plan file (deterministic JSON; no field values, only paths)."""
    doc = {
        "version": VERSION,
        "build": build_digest(build),
        "platform": build.platform,
        "environment": build.environment,
        "targets": list(targets),
        "prune": prune,
        "steps": [p.to_dict() for p in plans],
    }
    try:
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ApplyError(f"cannot write the plan to {path}: {exc.strerror}") from None


def load(path: Path, build: Build) -> dict[str, Any]:
    """The saved plan, refused when it belongs to another build.

    Raises:
        ApplyError: unreadable, another version, or made from a different build.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ApplyError(f"--from-plan {path}: cannot read it: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ApplyError(f"--from-plan {path}: not an ai4ec plan (version {VERSION})")
    if doc.get("build") != build_digest(build):
        raise ApplyError(
            f"--from-plan {path}: stale: it was made from another build than {build.root} "
            "(rebuilt since?); make a new plan"
        )
    return doc


def _key(c: dict[str, Any]) -> tuple[str, str, str, tuple[str, ...]]:
    return (str(c["action"]), str(c["kind"]), str(c["name"]), tuple(c.get("paths") or ()))


def check_step(doc: dict[str, Any], plan: StepPlan, path: Path) -> None:
    """Refuse ``plan`` (about to be applied) unless it is what the saved plan listed.

    A saved ``?`` (unknown before an earlier step ran, e.g. objects of a cluster that
    did not exist yet) accepts any action for that object; everything else must match
    exactly, changed paths included.

    Raises:
        ApplyError: the step's preview differs from the saved one.
    """
    saved = next((s for s in doc.get("steps") or [] if s.get("step") == plan.step), None)
    if saved is None:
        raise ApplyError(f"--from-plan {path}: stale: the plan has no step {plan.step}")
    unknown = {
        (str(c["kind"]), str(c["name"]))
        for c in saved.get("changes") or []
        if c.get("action") == ApplyAction.UNKNOWN.name.lower()
    }
    fresh = [
        c
        for c in (x.to_dict() for x in plan.changes)
        if (str(c["kind"]), str(c["name"])) not in unknown
    ]
    kept = [
        c for c in saved.get("changes") or [] if (str(c["kind"]), str(c["name"])) not in unknown
    ]
    want, got = Counter(map(_key, kept)), Counter(map(_key, fresh))
    if want != got:
        extra = sorted(got - want)[:3]
        missing = sorted(want - got)[:3]
        detail = "; ".join(
            [*(f"now {a} {k} {n}" for a, k, n, _p in extra)]
            + [*(f"planned {a} {k} {n}" for a, k, n, _p in missing)]
        )
        raise ApplyError(
            f"--from-plan {path}: stale: step {plan.step} would now do something else than "
            f"planned ({detail}); nothing more was written. Make a new plan"
        )
