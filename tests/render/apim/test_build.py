"""The APIM target plugs into the build: every sample builds and parses back.

Its policy files are exactly the policy resources the Azure target deploys: both come
from one rendering per environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai4ec.pipeline import build_platform

from ...conftest import ROOT, sample_files


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.parent.name)
def test_sample_builds_with_the_apim_target(sample: Path, tmp_path: Path) -> None:
    rel = sample.relative_to(ROOT)
    result = build_platform(ROOT / rel, tmp_path, display_name=str(rel))
    for env_dir in result.written:
        files = sorted(p.relative_to(env_dir).as_posix() for p in env_dir.rglob("*.xml"))
        assert "apim/policies/global.xml" in files
        assert all(f.startswith("apim/") for f in files)
        main = json.loads((env_dir / "azure" / "main.json").read_text())
        values = sorted(
            r["properties"]["value"]
            for r in main["resources"]
            if r["type"].endswith(("/policies", "/policyFragments"))
            and "ApiManagement" in r["type"]
        )
        assert values == sorted((env_dir / f).read_text() for f in files)
