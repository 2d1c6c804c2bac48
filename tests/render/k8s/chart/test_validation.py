"""Rendered objects against the real API schemas: core kinds, KEDA CRDs, SecretProviderClass."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication

from ....conftest import ARTIFACT_CHECK
from .spc_schema import SECRET_PROVIDER_CLASS_SCHEMA
from .support import CRD_GROUPS, FIXTURES, VARIANTS, documents, load_case, load_values, render

CASES = [*FIXTURES, *VARIANTS]

KUBE_VERSIONS = ("1.30.0", "1.32.0")
KEDA_MODELS = {"ScaledObject": ScaledObject, "TriggerAuthentication": TriggerAuthentication}


def _all_docs(chart: helm_python.Chart) -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name in FIXTURES for doc in documents(render(chart, load_values(name)))]


def _is_crd(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith(CRD_GROUPS)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_core_kinds_pass_strict_kubernetes_validation(
    chart: helm_python.Chart, case: str, kube_version: str
) -> None:
    core = [doc for doc in documents(render(chart, load_case(case))) if not _is_crd(doc)]
    assert {"Deployment", "Service", "ServiceAccount"} <= {d["kind"] for d in core}
    for doc in core:
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_strict_kubernetes_validation_catches_unknown_fields(chart: helm_python.Chart) -> None:
    (deployment,) = [
        d for d in documents(render(chart, load_values("sync-cpu"))) if d["kind"] == "Deployment"
    ]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.32.0", strict=True)


def test_keda_objects_match_the_cloudcoil_models(chart: helm_python.Chart) -> None:
    seen = set()
    for _, doc in _all_docs(chart):
        model = KEDA_MODELS.get(doc["kind"]) if doc["apiVersion"].startswith("keda.sh/") else None
        if model is None:
            continue
        seen.add(doc["kind"])
        parsed = model.model_validate(doc)
        # The models accept unknown keys; a lossless round trip proves there are none.
        assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc
    assert seen == set(KEDA_MODELS)


def test_cloudcoil_round_trip_catches_typos(chart: helm_python.Chart) -> None:
    doc = next(d for _, d in _all_docs(chart) if d["kind"] == "ScaledObject")
    doc["spec"]["cooldownPeriodd"] = 10
    dumped = ScaledObject.model_validate(doc).model_dump(
        by_alias=True, exclude_unset=True, mode="json"
    )
    assert dumped != doc


def _artifact_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ARTIFACT_CHECK), "crd", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.skipif(not ARTIFACT_CHECK.exists(), reason="../shared/artifact-check is absent")
def test_keda_objects_pass_strict_crd_validation(chart: helm_python.Chart, tmp_path: Path) -> None:
    keda = [doc for _, doc in _all_docs(chart) if doc["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in keda} == {"ScaledObject", "TriggerAuthentication"}
    manifest = tmp_path / "keda.yaml"
    manifest.write_text(yaml.safe_dump_all(keda, sort_keys=False))
    result = _artifact_check(manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"crd: {len(keda)} objects checked, 0 errors" in result.stdout

    # Negative control: the check is strict (unknown field) and knows the KEDA schema.
    broken = copy.deepcopy(keda)
    broken[0]["spec"]["triggers"][0]["metadataa"] = {}
    manifest.write_text(yaml.safe_dump_all(broken, sort_keys=False))
    result = _artifact_check(manifest)
    assert result.returncode == 1, result.stdout


def test_secret_provider_class_matches_the_csi_crd_subset(chart: helm_python.Chart) -> None:
    spcs = [doc for _, doc in _all_docs(chart) if doc["kind"] == "SecretProviderClass"]
    assert spcs
    validator = jsonschema.Draft202012Validator(SECRET_PROVIDER_CLASS_SCHEMA)
    for spc in spcs:
        validator.validate(spc)
    broken = copy.deepcopy(spcs[0])
    broken["spec"]["secretObjects"][0]["data"][0]["objectname"] = "typo"
    assert not validator.is_valid(broken)


def test_every_rendered_kind_is_validated_somewhere(chart: helm_python.Chart) -> None:
    covered = {"ScaledObject", "TriggerAuthentication", "SecretProviderClass"}
    for _, doc in _all_docs(chart):
        if _is_crd(doc):
            assert doc["kind"] in covered, doc["kind"]
