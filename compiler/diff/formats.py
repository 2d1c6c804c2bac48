"""A :class:`~ai4ec.diff.records.DiffReport` as text, markdown or JSON.

- text: a Terraform-like plan for a terminal: symbols, one header per resource, changed
  fields ``old -> new`` with unchanged ones counted, destructive changes first, one
  summary line. Colour only when asked (the CLI asks on a terminal).
- markdown: a pull-request comment: headline sentence, summary table with the cost
  delta, destructive changes in a warning block, one collapsible section per resource,
  a hidden marker so CI can find and update its own comment, and a size limit below
  GitHub's 65,536 characters with a note when details had to be cut.
- json: every change with its fields, sources, risk and cost; the schema is versioned
  and documented in docs/diff.md.

Secret values never reach this module (they are ``None`` in the records).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from .. import __version__
from .cost import format_cost, format_money
from .records import (
    MISSING,
    ChangeKind,
    Cost,
    CostChange,
    DiffReport,
    EnvironmentDiff,
    FieldChange,
    Hidden,
    ResourceChange,
    Risk,
    SourceRef,
)

SYMBOLS = {
    ChangeKind.ADDED: "+",
    ChangeKind.REMOVED: "-",
    ChangeKind.CHANGED: "~",
    ChangeKind.REPLACED: "-/+",
    ChangeKind.RENAMED: ">",
}
WORDS = {
    ChangeKind.ADDED: "will be created",
    ChangeKind.REMOVED: "will be deleted",
    ChangeKind.CHANGED: "will be updated in place",
    ChangeKind.REPLACED: "must be replaced",
    ChangeKind.RENAMED: "will be renamed (created under the new name, old one deleted)",
}
COLOURS = {
    ChangeKind.ADDED: "green",
    ChangeKind.REMOVED: "red",
    ChangeKind.CHANGED: "yellow",
    ChangeKind.REPLACED: "red",
    ChangeKind.RENAMED: "cyan",
}
_RISK_NOTE = {
    Risk.DATA_LOSS: "forces replacement, loses data",
    Risk.REPLACEMENT: "forces replacement",
    Risk.DISRUPTION: "disruptive",
}
MARKER = "<!-- ai4ec-diff -->"
#: GitHub rejects comments over 65,536 characters; stay clear of it.
MARKDOWN_LIMIT = 65_000
#: Added resources list at most this many fields in text and markdown (JSON has all).
ADDED_FIELDS_SHOWN = 25
_VALUE_WIDTH = 120


def exit_code(report: DiffReport) -> int:
    """0 when nothing changed, 2 when something did (``terraform plan -detailed-exitcode``)."""
    return 2 if report.has_changes else 0


# --------------------------------------------------------------------------- helpers


def _value(v: Any, width: int = _VALUE_WIDTH) -> str:
    if isinstance(v, tuple):
        v = list(v)
    text = json.dumps(v, ensure_ascii=False)
    if len(text) > width:
        text = text[: width - 12] + f"... ({len(text)} chars)"
    return text


def _multiline(v: Any) -> bool:
    return isinstance(v, str) and "\n" in v


def _line_diff(old: str, new: str, limit: int = 12) -> list[str]:
    import difflib

    lines = [
        ln
        for ln in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=1)
        if not ln.startswith(("---", "+++"))
    ]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return lines


def field_text(f: FieldChange) -> list[str]:
    """One field change as lines (``~ path: old -> new``), redacted when hidden."""
    if f.hidden is Hidden.SECRET:
        what = {"added": "(sensitive value)", "removed": "(sensitive value)"}.get(
            f.kind, "(sensitive value changed)"
        )
        return [f"{_field_symbol(f)} {f.path}: {what}"]
    if f.hidden is Hidden.CONTENT:
        return [f"{_field_symbol(f)} {f.path}: ({f.kind})"]
    if f.kind == "added":
        head = f"+ {f.path}: {_value(f.new)}"
    elif f.kind == "removed":
        head = f"- {f.path}: {_value(f.old)}"
    elif _multiline(f.old) and _multiline(f.new):
        return [f"~ {f.path}: (text)", *(f"    {ln}" for ln in _line_diff(f.old, f.new))]
    elif isinstance(f.old, tuple) and isinstance(f.new, tuple):
        gone = [x for x in f.old if x not in f.new]
        came = [x for x in f.new if x not in f.old]
        if not gone and not came:
            head = f"~ {f.path}: reordered {_value(f.new)}"
        else:
            parts = [f"-{_value(x, 60)}" for x in gone] + [f"+{_value(x, 60)}" for x in came]
            head = f"~ {f.path}: {', '.join(parts)} (list of {len(f.old)} -> {len(f.new)})"
    else:
        head = f"~ {f.path}: {_value(f.old)} -> {_value(f.new)}"
    if f.risk is not None:
        head += f"  # {_RISK_NOTE[f.risk]}"
    return [head]


def _field_symbol(f: FieldChange) -> str:
    return {"added": "+", "removed": "-"}.get(f.kind, "~")


def source_text(s: SourceRef) -> str:
    """``platform.yaml:12-18 $.apis[2] (added)``."""
    where = s.file
    if s.line:
        where += f":{s.line}"
        if s.end_line and s.end_line > s.line:
            where += f"-{s.end_line}"
    side = " [base]" if s.side == "base" else ""
    why = " (indirect)" if s.indirect else ""
    return f"{where}{side} {s.json_path} ({s.change}){why}"


def cost_text(c: CostChange) -> str:
    """``$73.00 -> $146.00 (+$73.00/month)``."""
    before = format_cost(c.before) if c.before else "-"
    after = format_cost(c.after) if c.after else "-"
    flags = []
    for x in (c.after, c.before):
        if x is None:
            continue
        if x.spot and "spot, price varies" not in flags:
            flags.append("spot, price varies")
        if x.usage_based and "usage-based" not in flags:
            flags.append("usage-based")
        if not x.known and "price unknown" not in flags:
            flags.append("price unknown")
    shown = c.after or c.before
    detail = shown.detail if shown is not None else ""
    text = f"{before} -> {after} ({format_cost(c.delta, signed=True)}/month)"
    if detail:
        text += f"; {detail}"
    if flags:
        text += f" [{', '.join(flags)}]"
    return text


def _cost_pair(before: Cost | None, after: Cost | None) -> tuple[str, str, str]:
    b = format_cost(before) if before else "n/a"
    a = format_cost(after) if after else "n/a"
    if before is None or after is None:
        return b, a, "n/a"
    delta = Cost(after.low - before.low, after.high - before.high)
    return b, a, format_cost(delta, signed=True)


def summary_line(report: DiffReport) -> str:
    """``Plan: 1 to add, 2 to change, 1 to replace, 0 to remove, 1 to rename. Cost ...``."""
    n = report.counts()
    text = (
        f"Plan: {n['added']} to add, {n['changed']} to change, {n['replaced']} to replace, "
        f"{n['removed']} to remove, {n['renamed']} to rename."
    )
    before, after = report.cost_totals()
    if before is not None or after is not None:
        b, a, d = _cost_pair(before, after)
        text += f" Monthly cost: {b} -> {a} ({d})."
    return text


def headline(report: DiffReport) -> str:
    """One sentence for the top of a PR comment."""
    if not report.has_changes:
        return "No changes: this platform.yaml change leaves every generated resource as it is."
    n = report.counts()
    parts = [
        f"{n[a.value]} {label}"
        for a, label in (
            (ChangeKind.ADDED, "added"),
            (ChangeKind.CHANGED, "changed"),
            (ChangeKind.REPLACED, "replaced"),
            (ChangeKind.RENAMED, "renamed"),
            (ChangeKind.REMOVED, "removed"),
        )
        if n[a.value]
    ]
    text = f"This change touches {n['total']} resource{'s' if n['total'] != 1 else ''} ("
    text += ", ".join(parts) + ")"
    before, after = report.cost_totals()
    if before is not None and after is not None:
        delta = Cost(after.low - before.low, after.high - before.high)
        if abs(delta.low) < 0.005 and abs(delta.high) < 0.005:
            text += f"; monthly cost stays at {format_cost(after)}"
        else:
            verb = "increases" if delta.high > 0 or delta.low > 0 else "decreases"
            text += (
                f"; monthly cost {verb} by {format_cost(Cost(abs(delta.low), abs(delta.high)))}"
                f" ({format_cost(before)} -> {format_cost(after)})"
            )
    text += "."
    if n["destructive"]:
        text += f" {n['destructive']} of them delete or recreate something: see below."
    return text


def _env_title(e: EnvironmentDiff) -> str:
    if e.base_name and e.head_name and e.base_name != e.head_name:
        return f"{e.base_name} -> {e.head_name}"
    return e.name


# ------------------------------------------------------------------------------ text


#: Marks of public routes in "What clients see".
CLIENT_SYMBOLS = {"added": "+", "removed": "-", "changed": "~"}


def format_text(report: DiffReport, color: bool = False) -> str:
    """The terminal plan (see the module docstring)."""

    def style(text: str, **kw: Any) -> str:
        return click.style(text, **kw) if color else text

    out: list[str] = [
        f"ai4ec diff: {report.base.label} -> {report.head.label}"
        + (f" ({report.base.path})" if report.base.path else "")
    ]
    out.extend(f"note: {note}" for note in report.notes)
    if not report.has_changes:
        out.append("")
        out.append(style("No changes.", bold=True) + " " + _no_change_cost(report))
        return "\n".join(out) + "\n"
    used = sorted({c.action for c in report.changes}, key=list(SYMBOLS).index)
    out.append("")
    out.append(
        "Symbols: " + "  ".join(style(SYMBOLS[a], fg=COLOURS[a]) + f" {a.value}" for a in used)
    )
    clients = [(e, cc) for e in report.environments for cc in e.clients]
    if clients:
        out.append("")
        out.append(style("What clients see (! = calls that worked may fail):", bold=True))
        for env, cc in clients:
            where = f"[{env.name}] " if len(report.environments) > 1 else ""
            mark = style("!", fg="red", bold=True) if cc.breaking else " "
            out.append(f"  {mark} {CLIENT_SYMBOLS[cc.action]} {where}{cc.route} {cc.action}")
            out.extend(f"        {d}" for d in cc.details)
    destructive = [c for c in report.changes if c.destructive]
    if destructive:
        out.append("")
        out.append(style("Destructive changes (read these first):", fg="red", bold=True))
        for c in destructive:
            where = f"[{c.environment}] " if len(report.environments) > 1 else ""
            why = f" - {c.risk}: {c.reasons[0]}" if c.risk and c.reasons else ""
            out.append(
                f"  {style(SYMBOLS[c.action], fg=COLOURS[c.action])} {where}{c.layer}: "
                f"{c.address}{why}"
            )
    for env in report.environments:
        out.append("")
        title = f"Environment {_env_title(env)}"
        out.append(
            style(title, bold=True) + f" ({len(env.changes)} changes, {env.unchanged} unchanged)"
        )
        out.extend(f"  note: {note}" for note in env.notes)
        for r in env.renames:
            src = f" ({source_text(r.sources[0])})" if r.sources else ""
            out.append(f"  {r.section} {r.old} renamed to {r.new}: {r.resources} resources{src}")
        if not env.changes:
            out.append("  no changes")
        for c in env.changes:
            out.append("")
            sym = style(SYMBOLS[c.action], fg=COLOURS[c.action], bold=True)
            out.append(f"  {sym} {c.layer}: {c.address} {WORDS[c.action]}")
            out.extend(f"      caused by {source_text(s)}" for s in c.sources)
            tone = "red" if c.destructive else "yellow"
            out.extend("      " + style(f"! {reason}", fg=tone) for reason in c.reasons)
            if c.note:
                out.append(f"      {c.note}")
            out.extend(_field_lines(c, style))
            if c.cost is not None and (c.cost.changed or c.action is not ChangeKind.CHANGED):
                out.append(f"      cost: {cost_text(c.cost)}")
    out.append("")
    out.append(style(summary_line(report), bold=True))
    return "\n".join(out) + "\n"


def _no_change_cost(report: DiffReport) -> str:
    _, after = report.cost_totals()
    return f"Monthly cost: {format_cost(after)}." if after is not None else ""


def _field_lines(c: ResourceChange, style: Callable[..., str]) -> list[str]:
    lines: list[str] = []
    if c.action is ChangeKind.REMOVED:
        return [f"      ({len(c.fields)} fields)"] if c.fields else []
    fields = list(c.fields)
    if c.action is ChangeKind.ADDED and len(fields) > ADDED_FIELDS_SHOWN:
        hidden = len(fields) - ADDED_FIELDS_SHOWN
        fields = fields[:ADDED_FIELDS_SHOWN]
    else:
        hidden = 0
    for f in fields:
        for i, ln in enumerate(field_text(f)):
            colour = {"+": "green", "-": "red", "~": "yellow"}.get(ln[:1])
            lines.append("      " + (style(ln, fg=colour) if i == 0 and colour else ln))
    if hidden:
        lines.append(f"      ({hidden} more fields)")
    if c.unchanged_fields:
        lines.append(f"      ({c.unchanged_fields} unchanged fields hidden)")
    return lines


# -------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def format_markdown(report: DiffReport, limit: int = MARKDOWN_LIMIT) -> str:
    """The pull-request comment (see the module docstring)."""
    head: list[str] = [MARKER, "## ai4ec diff", ""]
    head.append(headline(report))
    head.append("")
    head.append(
        f"Base `{report.base.label}`"
        + (f" ({report.base.commit[:12]})" if report.base.commit else "")
        + f" -> head `{report.head.label}`"
        + (f" ({report.head.commit[:12]})" if report.head.commit else "")
        + (f", `{report.base.path}`" if report.base.path else "")
        + "."
    )
    head.append("")
    head.append(
        "| environment | add | change | replace | rename | remove "
        "| monthly cost before | after | delta |"
    )
    head.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for env in report.environments:
        counts = {a: 0 for a in ChangeKind}
        for c in env.changes:
            counts[c.action] += 1
        b, a, d = _cost_pair(
            env.before.cost if env.before else None, env.after.cost if env.after else None
        )
        order = (
            ChangeKind.ADDED,
            ChangeKind.CHANGED,
            ChangeKind.REPLACED,
            ChangeKind.RENAMED,
            ChangeKind.REMOVED,
        )
        cells = " | ".join(str(counts[k]) for k in order)
        head.append(f"| {_md_escape(_env_title(env))} | {cells} | {b} | {a} | **{d}** |")
    head.append("")
    clients = [(e, cc) for e in report.environments for cc in e.clients]
    if clients:
        head.append("### What clients see")
        head.append("")
        for env, cc in clients:
            where = f"`{_md_escape(env.name)}` " if len(report.environments) > 1 else ""
            flag = " **(breaks callers)**" if cc.breaking else ""
            head.append(f"- {where}`{CLIENT_SYMBOLS[cc.action]}` `{cc.route}` {cc.action}{flag}")
            head.extend(f"  - {_md_escape(d)}" for d in cc.details)
        head.append("")
    destructive = [c for c in report.changes if c.destructive]
    if destructive:
        head.append("> [!WARNING]")
        head.append(
            f"> **{len(destructive)} destructive change{'s' if len(destructive) != 1 else ''}**"
            " (deletes or recreates resources):"
        )
        for c in destructive[:50]:
            where = f"`{c.environment}` " if len(report.environments) > 1 else ""
            why = f": {c.risk} - {c.reasons[0]}" if c.risk and c.reasons else ""
            src = f" ({_md_source(c.sources[0])})" if c.sources else ""
            head.append(
                f"> - {where}`{SYMBOLS[c.action]}` {c.action.value} {_md_escape(c.layer)} "
                f"`{c.address}`{_md_escape(why)}{src}"
            )
        if len(destructive) > 50:
            head.append(f"> - ... and {len(destructive) - 50} more")
        head.append("")
    for env in report.environments:
        for r in env.renames:
            src = f" ({_md_source(r.sources[0])})" if r.sources else ""
            head.append(
                f"- `{_md_escape(env.name)}`: {r.section} `{r.old}` renamed to `{r.new}` "
                f"({r.resources} resources){src}"
            )
    notes = [*report.notes, *(f"{e.name}: {n}" for e in report.environments for n in e.notes)]
    head.extend(f"- _{_md_escape(note)}_" for note in notes)
    if notes or any(e.renames for e in report.environments):
        head.append("")
    sections: list[str] = []
    for env in report.environments:
        if not env.changes:
            continue
        sections.append(f"### {_md_escape(_env_title(env))}\n")
        sections.extend(_md_change(c) for c in env.changes)
    footer = f"\n<sub>ai4ec {__version__} · `{summary_line(report)}`</sub>\n"
    text = "\n".join(head)
    budget = limit - len(text) - len(footer) - 400
    shown = 0
    body: list[str] = []
    for section in sections:
        if len(section) + 1 > budget:
            break
        body.append(section)
        budget -= len(section) + 1
        shown += 1
    if shown < len(sections):
        left = sum(1 for s in sections[shown:] if s.startswith("<details>"))
        body.append(
            f"\n> [!NOTE]\n> Details of {left} more resource{'s' if left != 1 else ''} were left "
            f"out to stay under GitHub's comment size limit. Run `ai4ec diff --format json` "
            "(or see the CI artifact) for the full report.\n"
        )
    return text + "\n" + "\n".join(body) + footer


def _md_source(s: SourceRef) -> str:
    where = s.file + (f":{s.line}" if s.line else "")
    if s.end_line and s.line and s.end_line > s.line:
        where += f"-{s.end_line}"
    return f"`{where}`" + (" (base)" if s.side == "base" else "")


def _md_change(c: ResourceChange) -> str:
    badge = f" **{c.risk}**" if c.risk else ""
    cost = ""
    if c.cost is not None and c.cost.changed:
        cost = f" · {format_cost(c.cost.delta, signed=True)}/month"
    summary = (
        f"<code>{SYMBOLS[c.action]}</code> {c.layer} <code>{_md_escape(c.address)}</code> "
        f"{c.action.value}{badge}{cost}"
    )
    lines = [f"<details><summary>{summary}</summary>", ""]
    lines.extend(
        f"- caused by {_md_source(s)} `{s.json_path}` ({s.change}"
        + (", indirect" if s.indirect else "")
        + ")"
        for s in c.sources
    )
    lines.extend(f"- ⚠️ {_md_escape(reason)}" for reason in c.reasons)
    if c.note:
        lines.append(f"- {_md_escape(c.note)}")
    if c.cost is not None:
        lines.append(f"- cost: {_md_escape(cost_text(c.cost))}")
    body: list[str] = []
    if c.action is ChangeKind.REMOVED:
        body.append(f"- ({len(c.fields)} fields)")
    else:
        fields = list(c.fields)
        extra = 0
        if c.action is ChangeKind.ADDED and len(fields) > ADDED_FIELDS_SHOWN:
            extra = len(fields) - ADDED_FIELDS_SHOWN
            fields = fields[:ADDED_FIELDS_SHOWN]
        for f in fields:
            for i, ln in enumerate(field_text(f)):
                if i == 0:
                    body.append({"+": "+", "-": "-"}.get(ln[:1], "!") + ln[1:])
                else:
                    body.append(" " + ln)
        if extra:
            body.append(f"# ... {extra} more fields")
        if c.unchanged_fields:
            body.append(f"# {c.unchanged_fields} unchanged fields hidden")
    if body:
        lines.append("")
        lines.append("```diff")
        lines.extend(ln.replace("```", "'''") for ln in body)
        lines.append("```")
    lines.append("")
    lines.append("</details>")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ json


def _json_value(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    return v


def _cost_json(c: Cost | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "low": round(c.low, 2),
        "high": round(c.high, 2),
        "detail": c.detail,
        "usageBased": c.usage_based,
        "spot": c.spot,
        "known": c.known,
    }


def _range(c: Cost | None) -> dict[str, float] | None:
    return None if c is None else {"low": round(c.low, 2), "high": round(c.high, 2)}


def _source_json(s: SourceRef) -> dict[str, Any]:
    return {
        "file": s.file,
        "line": s.line,
        "endLine": s.end_line,
        "jsonPath": s.json_path,
        "side": s.side,
        "change": s.change,
        "indirect": s.indirect,
    }


def _field_json(f: FieldChange) -> dict[str, Any]:
    out: dict[str, Any] = {"path": f.path, "change": f.kind}
    if f.hidden is None:
        if f.old is not MISSING:
            out["old"] = _json_value(f.old)
        if f.new is not MISSING:
            out["new"] = _json_value(f.new)
    else:
        out["redacted"] = str(f.hidden)
    if f.risk is not None:
        out["risk"] = str(f.risk)
        out["reason"] = f.reason
    return out


def change_json(c: ResourceChange) -> dict[str, Any]:
    """One change as a JSON object (docs/diff.md, "change")."""
    cost = None
    if c.cost is not None:
        cost = {
            "before": _cost_json(c.cost.before),
            "after": _cost_json(c.cost.after),
            "delta": _range(c.cost.delta),
        }
    return {
        "key": c.key,
        "layer": c.layer,
        "kind": c.kind,
        "name": c.name,
        "oldName": c.old_name,
        "action": c.action.value,
        "destructive": c.destructive,
        "risk": str(c.risk) if c.risk else None,
        "reasons": list(c.reasons),
        "fields": [_field_json(f) for f in c.fields],
        "unchangedFields": c.unchanged_fields,
        "sources": [_source_json(s) for s in c.sources],
        "cost": cost,
        "files": list(c.files),
        "note": c.note or None,
    }


def _totals_json(e: EnvironmentDiff) -> dict[str, Any]:
    before = e.before.cost if e.before else None
    after = e.after.cost if e.after else None
    delta = None
    if before is not None and after is not None:
        delta = _range(Cost(after.low - before.low, after.high - before.high))
    unpriced = sorted(
        {*(e.before.unpriced if e.before else ()), *(e.after.unpriced if e.after else ())}
    )
    return {
        "before": _range(before),
        "after": _range(after),
        "delta": delta,
        "unpriced": unpriced,
    }


def report_json(report: DiffReport) -> dict[str, Any]:
    """The whole report as JSON-ready data (schema: docs/diff.md)."""
    from . import SCHEMA_VERSION

    before, after = report.cost_totals()
    total_delta = None
    if before is not None and after is not None:
        total_delta = _range(Cost(after.low - before.low, after.high - before.high))

    def side(s: Any) -> dict[str, Any]:
        return {
            "label": s.label,
            "ref": s.ref,
            "commit": s.commit,
            "path": s.path,
            "directory": s.directory,
        }

    return {
        "schemaVersion": SCHEMA_VERSION,
        "generator": f"ai4ec {__version__}",
        "base": side(report.base),
        "head": side(report.head),
        "changed": report.has_changes,
        "exitCode": exit_code(report),
        "summary": report.counts(),
        "cost": {
            "currency": report.currency,
            "hoursPerMonth": report.hours_per_month,
            "before": _range(before),
            "after": _range(after),
            "delta": total_delta,
        },
        "environments": [
            {
                "name": e.name,
                "baseName": e.base_name,
                "headName": e.head_name,
                "unchanged": e.unchanged,
                "cost": _totals_json(e),
                "renames": [
                    {
                        "entity": r.section,
                        "from": r.old,
                        "to": r.new,
                        "resources": r.resources,
                        "sources": [_source_json(s) for s in r.sources],
                    }
                    for r in e.renames
                ],
                "notes": list(e.notes),
                "clients": [
                    {
                        "route": cc.route,
                        "action": cc.action,
                        "breaking": cc.breaking,
                        "details": list(cc.details),
                    }
                    for cc in e.clients
                ],
                "changes": [change_json(c) for c in e.changes],
            }
            for e in report.environments
        ],
        "notes": list(report.notes),
    }


def format_json(report: DiffReport) -> str:
    """``report_json`` as indented, key-sorted text."""
    return json.dumps(report_json(report), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


FORMATTERS: dict[str, Callable[[DiffReport], str]] = {
    "text": format_text,
    "markdown": format_markdown,
    "json": format_json,
}

__all__ = [
    "FORMATTERS",
    "MARKER",
    "format_json",
    "format_markdown",
    "format_money",
    "format_text",
    "headline",
    "report_json",
    "summary_line",
]
