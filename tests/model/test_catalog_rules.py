"""Model rules against the dated Azure catalog: the day they judge by, the samples, defaults."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from ai4ec.catalog import check_mesh_revision, check_vm_size
from ai4ec.model.catalog_rules import TODAY_ENV, TodayError, catalog, today
from ai4ec.model.defaults import DEFAULT_MESH_REVISION
from ai4ec.pipeline import check_platform

from ..conftest import CASES, ROOT, sample_files

TEMPLATE = ROOT / "templates" / "init" / "platform.yaml"


def test_today_defaults_to_the_local_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TODAY_ENV, raising=False)
    assert today() == dt.date.today()


def test_today_is_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "2027-03-01")
    assert today() == dt.date(2027, 3, 1)


def test_a_bad_today_is_a_located_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TODAY_ENV, "tomorrow")
    with pytest.raises(TodayError):
        today()
    result = check_platform(sample_files()[0])
    assert not result.ok
    assert [d.code for d in result.diagnostics] == ["E-TODAY"]
    assert "YYYY-MM-DD" in result.diagnostics[0].message


@pytest.mark.parametrize("path", [*sample_files(), TEMPLATE], ids=lambda p: p.parent.name)
def test_samples_validate_without_a_warning(path: Path) -> None:
    """Samples are what users copy: they must use what Azure offers on the pinned day."""
    result = check_platform(path)
    assert result.ok
    assert [d.code for d in result.diagnostics] == []


def test_default_mesh_revision_is_supported() -> None:
    assert check_mesh_revision(catalog(), DEFAULT_MESH_REVISION, today()) is None


def test_gpu_hint_recommends_current_sizes(tmp_path: Path) -> None:
    """The hint for `gpu: true` on a CPU size names sizes Azure offers on the pinned day."""
    text = (CASES / "invalid" / "gpu-request-over-vm.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "platform.yaml"
    bad.write_text(
        text.replace("vmSize: Standard_NC4as_T4_v3", "vmSize: Standard_DS2_v2\n        gpu: true"),
        encoding="utf-8",
    )
    hints = [d.hint for d in check_platform(bad).diagnostics if d.code == "E-GPU-POOL"]
    assert len(hints) == 1
    sizes = re.findall(r"Standard_\w+", hints[0])
    assert sizes
    for size in sizes:
        assert check_vm_size(catalog(), size, today()) is None, size


def test_schema_default_revision_is_the_model_default() -> None:
    """Editors show the schema's default; it must be the revision the model really uses."""
    import json

    schema = json.loads((ROOT / "schemas" / "platform.schema.json").read_text(encoding="utf-8"))
    text = json.dumps(schema)
    assert '"default": "asm-1-' in text
    assert f'"default": "{DEFAULT_MESH_REVISION}"' in text
