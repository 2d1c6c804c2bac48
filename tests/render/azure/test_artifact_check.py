"""Every main.json uses published, current API versions and known property names.

Runs the shared strict checker (`validate_artifacts.py arm`, the one CI runs) on every
sample environment. It needs ../shared, which only CI and the team machines have.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support import SHARED_CHECK, all_arm, all_cases, case_files, write_tree

#: Warnings that are the checker's, not ours, with the reason.
KNOWN_WARNINGS = {
    # The checker merges the `oneOf` branches of an Event Grid destination by their first
    # branch (AzureFunction), so the WebHook branch's endpointUrl looks unknown. It is
    # WebHookEventSubscriptionDestinationProperties.endpointUrl in the same schema.
    'properties.destination.properties.endpointUrl: unknown property "endpointUrl"',
    # Same merge for a delivery attribute mapping: its first branch (Dynamic) has only
    # sourceField, so the Static branch's value/isSecret look unknown; both are
    # StaticDeliveryAttributeMappingProperties in the same schema.
    'deliveryAttributeMappings[0].properties.value: unknown property "value"',
    'deliveryAttributeMappings[0].properties.isSecret: unknown property "isSecret"',
}

pytestmark = pytest.mark.skipif(not SHARED_CHECK.is_file(), reason="needs ../shared/artifact-check")


@pytest.mark.parametrize("case", all_cases())
def test_arm_template_passes_artifact_check(case: str, tmp_path: Path) -> None:
    files = case_files(case)
    write_tree(files, tmp_path)
    templates = [str(tmp_path / n) for n, _doc in all_arm(files)]
    run = subprocess.run(
        [sys.executable, str(SHARED_CHECK), "arm", *templates],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = run.stdout.splitlines()
    assert run.returncode == 0, run.stdout + run.stderr
    assert lines[-1].startswith("arm: ") and ", 0 errors," in lines[-1], lines[-1]
    # Warnings mean an older-than-newest API version or an unknown nested key: neither
    # is allowed, except the checker's own false positives above.
    unexplained = [ln for ln in lines[:-1] if not any(ln.endswith(w) for w in KNOWN_WARNINGS)]
    assert not unexplained, "\n".join(unexplained)
