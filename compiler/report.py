"""Turn diagnostics into text for people, JSON for tools, or GitHub annotations."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from .errors import Diagnostic, Severity


def summary(diags: Sequence[Diagnostic]) -> tuple[int, int]:
    """(errors, warnings)."""
    errors = sum(1 for d in diags if d.severity is Severity.ERROR)
    return errors, len(diags) - errors


def format_text(
    diags: Sequence[Diagnostic], lines_by_file: dict[str, Sequence[str]], color: bool
) -> str:
    """``file:line:col: error[CODE] message`` plus the source line and a hint."""
    out: list[str] = []
    for d in diags:
        where = d.file or "<input>"
        if d.line:
            where += f":{d.line}"
            if d.col:
                where += f":{d.col}"
        sev = str(d.severity)
        label = f"{sev}[{d.code}]"
        if color:
            label = click.style(
                label, fg="red" if d.severity is Severity.ERROR else "yellow", bold=True
            )
        path = f" {d.json_path}:" if d.json_path and d.json_path != "$" else ""
        out.append(f"{where}: {label}{path} {d.message}")
        src = lines_by_file.get(d.file)
        if src and d.line and 0 < d.line <= len(src):
            text = src[d.line - 1].rstrip()
            gutter = f"{d.line:>5} | "
            out.append(f"{gutter}{text}")
            if d.col:
                out.append(" " * (len(gutter) - 2) + "| " + " " * (d.col - 1) + "^")
        if d.hint:
            hint = click.style("hint:", fg="cyan") if color else "hint:"
            out.append(f"      {hint} {d.hint}")
    errors, warnings = summary(diags)
    if errors or warnings:
        out.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(out)


def format_json(diags: Sequence[Diagnostic], extra: dict[str, object] | None = None) -> str:
    """Machine-readable diagnostics."""
    errors, warnings = summary(diags)
    data: dict[str, object] = {
        "valid": errors == 0,
        "errors": errors,
        "warnings": warnings,
        "diagnostics": [d.to_dict() for d in diags],
    }
    if extra:
        data.update(extra)
    return json.dumps(data, indent=2, sort_keys=True)


def _gh_escape(value: str, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def format_github(diags: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands (``::error file=...,line=...::message``)."""
    out = []
    for d in diags:
        cmd = "error" if d.severity is Severity.ERROR else "warning"
        props = []
        if d.file:
            props.append(f"file={_gh_escape(d.file, True)}")
        if d.line:
            props.append(f"line={d.line}")
        if d.col:
            props.append(f"col={d.col}")
        props.append(f"title={_gh_escape(d.code, True)}")
        msg = d.message + (f" (hint: {d.hint})" if d.hint else "")
        out.append(f"::{cmd} {','.join(props)}::{_gh_escape(msg)}")
    return "\n".join(out)
