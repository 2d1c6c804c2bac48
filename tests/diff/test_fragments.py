"""Policy fragments in ``ai4ec diff`` (issue 15): one fragment change is one entry.

A fragment is deployed once and included by many operation policies, so a change to it
(a new ai4ec version's template) changes all of them at once. The comparison shows it as
a change of the fragment resource (its file and its ARM resource folded together, like a
policy), with the risk and the number of policies that include it; removing a fragment
is a risk of its own. Both sides are the real camera-trap build (the golden files).
"""

from __future__ import annotations

import json
from pathlib import Path

from ai4ec.diff import diff_builds
from ai4ec.diff.compare import EnvSide
from ai4ec.diff.records import ChangeKind, DiffReport, Risk, Side

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "camera-trap" / "default"
FRAGMENT = "apim/fragments/ai4ec-size-check.xml"

Files = dict[str, bytes]


def _build() -> Files:
    return {
        p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()
    }


def _compare(base: Files, head: Files) -> DiffReport:
    return diff_builds(
        {"default": EnvSide("default", base)},
        {"default": EnvSide("default", head)},
        Side("base"),
        Side("head"),
    )


def _edit_fragment(files: Files, old: str, new: str) -> Files:
    """The fragment changed in its file and in the ARM resource embedding it."""
    out = dict(files)
    text = files[FRAGMENT].decode("utf-8")
    assert old in text
    out[FRAGMENT] = text.replace(old, new).encode("utf-8")
    for path, content in files.items():
        if path.startswith("azure/") and path.endswith(".json") and b"policyFragments" in content:
            doc = json.loads(content)
            for r in doc.get("resources") or []:
                if r.get("properties", {}).get("value") == text:
                    r["properties"]["value"] = text.replace(old, new)
            out[path] = json.dumps(doc, indent=2).encode("utf-8")
    return out


def test_fragment_change_is_one_entry_naming_its_includers() -> None:
    base = _build()
    head = _edit_fragment(base, 'code="413"', 'code="400"')
    report = _compare(base, head)
    (change,) = report.changes
    assert change.layer == "apim" and change.kind == "policy fragment"
    assert change.name == "fragments/ai4ec-size-check"
    assert change.action is ChangeKind.CHANGED
    assert FRAGMENT in change.files and any(f.startswith("azure/") for f in change.files)
    (field,) = change.fields
    assert (field.old, field.new) == ("413", "400")
    # camera-trap: classify-post, detect-post (sync and async), submit
    assert change.risk is Risk.DISRUPTION
    assert change.reasons[0] == (
        "shared policy fragment included by 4 operation policies: "
        "the change applies to all of them at once"
    )


def test_fragment_removed_is_a_risk() -> None:
    base = _build()
    head = {k: v for k, v in base.items() if k != FRAGMENT}
    for path, content in base.items():
        if path.startswith("azure/") and path.endswith(".json") and b"policyFragments" in content:
            doc = json.loads(content)
            doc["resources"] = [
                r for r in doc["resources"] if not str(r["name"]).endswith("/ai4ec-size-check")
            ]
            head[path] = json.dumps(doc, indent=2).encode("utf-8")
    changes = [c for c in _compare(base, head).changes if c.kind == "policy fragment"]
    (change,) = changes
    assert change.action is ChangeKind.REMOVED
    assert change.risk is Risk.DISRUPTION
    assert "still includes it" in change.reasons[0]


def test_unchanged_fragment_is_no_change() -> None:
    base = _build()
    assert not _compare(base, dict(base)).has_changes
