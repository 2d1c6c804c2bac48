"""Where the Bicep CLI exists, `bicep build main.bicep` gives what main.json says.

No Bicep compiler can be installed offline (tooling.md item 5), so this is skipped here
and runs wherever `bicep` is on PATH (developer machines, CI with the Azure CLI).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .support import all_arm, all_cases, case_files, is_arm_expression, write_tree

BICEP = shutil.which("bicep")
pytestmark = pytest.mark.skipif(BICEP is None, reason="bicep CLI not on PATH")


def _flatten(resources: Any) -> list[dict[str, Any]]:
    items = resources.values() if isinstance(resources, dict) else resources
    out = []
    for r in items:
        if r.get("existing"):
            continue
        if r["type"] == "Microsoft.Resources/deployments":
            out += _flatten(r["properties"]["template"]["resources"])
        else:
            out.append(r)
    return out


_FORMAT = re.compile(r"\[format\('((?:[^']|'')*)'((?:, '(?:[^']|'')*')*)\)\]\Z")
_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def _name(res: dict[str, Any]) -> str | None:
    """A resource's name as text: literal, or ``format(...)`` of literals (Bicep's form
    of a child name); anything else (``guid(...)``) is compared by count only."""
    name = res["name"]
    if not is_arm_expression(name):
        return str(name)
    m = _FORMAT.match(name)
    if m is None:
        return None
    args = [a.replace("''", "'") for a in _LITERAL.findall(m.group(2))]
    fmt = m.group(1).replace("''", "'")
    return re.sub(r"\{(\d+)\}", lambda g: args[int(g.group(1))], fmt)


@pytest.mark.parametrize("case", all_cases())
def test_bicep_build_matches_main_json(case: str, tmp_path: Path) -> None:
    files = case_files(case)
    write_tree(files, tmp_path)
    for json_name, doc in all_arm(files):  # main, then any split APIM parts
        bicep = tmp_path / json_name.replace(".json", ".bicep")
        run = subprocess.run(
            [str(BICEP), "build", str(bicep), "--stdout"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        built = _flatten(json.loads(run.stdout)["resources"])
        ours = doc["resources"]
        assert Counter((r["type"], r["apiVersion"]) for r in built) == Counter(
            (r["type"], r["apiVersion"]) for r in ours
        ), json_name
        assert Counter(_name(r) for r in built if _name(r)) == Counter(
            _name(r) for r in ours if _name(r)
        ), json_name
