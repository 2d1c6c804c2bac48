"""Golden Azure output: each sample environment's azure/ part of tests/golden/<sample>/<env>/.

``pytest --update-golden`` rewrites it; review the diff like code, because these are
the templates users deploy.
"""

from __future__ import annotations

import pytest

from ...goldens import GOLDEN, check_golden
from .support import rendered, sample_envs


@pytest.mark.parametrize(("sample", "env"), sample_envs(), ids=lambda v: str(v))
def test_matches_golden(sample: str, env: str, update_golden: bool) -> None:
    # rendered() also holds the apim/ files the Bicep loads; test_golden.py pins those.
    files = {k: v for k, v in rendered(sample, env).items() if k.startswith("azure/")}
    check_golden(files, GOLDEN / sample / env, update_golden, only="azure/")
