"""A non-editable ``pip install .`` into a fresh venv, run from another directory, finds
its schemas and templates (package data), validates and builds a sample.

Dependencies are not downloaded again: the fresh venv gets them through a ``.pth`` file
pointing at the test environment's site-packages, so only ai4ec itself is installed from
the source tree - which is the thing under test.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_wheel_install_carries_package_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv*",
            ".git",
            "out",
            "*.egg-info",
            "__pycache__",
            "build",
            "node_modules",
            ".*cache*",
        ),
    )
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    site_dir = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    deps = [p for p in site.getsitepackages() if "site-packages" in p]
    (site_dir / "zz_test_deps.pth").write_text("\n".join(deps) + "\n")
    pip = [py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    install = subprocess.run([*pip, str(src)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(src)  # nothing may be read from the source tree any more
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "samples/camera-trap/platform.yaml", work / "platform.yaml")
    ai4ec = env / "bin" / "ai4ec"
    run = subprocess.run([ai4ec, "validate"], cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([ai4ec, "build", "-o", "out"], cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((work / "out/default/manifest.json").read_text())
    assert manifest["artifacts"]
    schema = subprocess.run([ai4ec, "schema"], cwd=work, capture_output=True, text=True)
    assert json.loads(schema.stdout)["$id"].endswith("platform.schema.json")
    init = subprocess.run([ai4ec, "init", "new.yaml"], cwd=work, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    located = subprocess.run(
        [py, "-c", "import ai4ec.resources as r; print(r.templates_dir()); print(r.schemas_dir())"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert str(env) in located.stdout, located.stdout
    templates = Path(located.stdout.splitlines()[0])
    shipped = {str(p.relative_to(templates)) for p in templates.rglob("*") if p.is_file()}
    repo = {
        str(p.relative_to(ROOT / "templates"))
        for p in (ROOT / "templates").rglob("*")
        if p.is_file()
    }
    assert shipped == repo, f"missing from the wheel: {sorted(repo - shipped)}"
    assert sys.executable  # the test interpreter is untouched
