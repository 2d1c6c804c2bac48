"""Build the deployable Functions zip: deterministic bytes for the same inputs.

The compiler calls :func:`build_zip` once per environment. Determinism matters because
ai4ec's build output is diffed and hashed: entries are sorted, every timestamp is the
zip epoch (1980-01-01), permissions and the "made by" system are fixed, caches are
excluded, and entries are *stored* rather than deflated, so the bytes do not depend on
the machine's zlib build either (the runtime is ~150 KB, so compression buys nothing).

``function_app.py``, ``host.json`` and ``requirements.txt`` are embedded here rather
than read from ``functions/``: an installed ai4ec wheel carries the ``ai4ec_runtime``
package but not that folder. A test keeps the embedded copies equal to the files in the
repository.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

FUNCTION_APP_PY = '''"""Entry point indexed by the Azure Functions Python worker (v2 model).

Deliberately thin: every function is declared in :mod:`ai4ec_runtime.app`, so the same
code is importable, testable and served by the local host.
"""

from ai4ec_runtime.app import app

__all__ = ["app"]
'''

HOST_JSON = """{
  "version": "2.0",
  "extensionBundle": {
    "id": "Microsoft.Azure.Functions.ExtensionBundle",
    "version": "[4.*, 5.0.0)"
  },
  "functionTimeout": "00:05:00",
  "logging": {
    "logLevel": {
      "default": "Information",
      "Host.Results": "Information",
      "Function": "Information"
    },
    "applicationInsights": {
      "samplingSettings": {
        "isEnabled": true,
        "maxTelemetryItemsPerSecond": 50,
        "excludedTypes": "Request;Exception"
      }
    }
  },
  "extensions": {
    "http": {
      "routePrefix": "api"
    }
  }
}
"""

REQUIREMENTS_TXT = """# Functions app dependencies, pinned: the deployment installs exactly these.
azure-functions==1.26.0
redis==8.1.0
azure-eventgrid==4.22.1
azure-identity==1.27.0
"""

#: Name of the bundled non-secret settings file read by :mod:`ai4ec_runtime.settings`.
SETTINGS_FILE = "ai4ec_settings.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _canonical_json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def bundle_entries(
    routing: dict[str, Any] | None = None, settings_doc: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """Every file of the bundle: archive name -> content."""
    package = Path(__file__).resolve().parent
    entries: dict[str, bytes] = {
        "function_app.py": FUNCTION_APP_PY.encode(),
        "host.json": HOST_JSON.encode(),
        "requirements.txt": REQUIREMENTS_TXT.encode(),
    }
    for path in sorted(package.iterdir()):
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed"):
            entries[f"ai4ec_runtime/{path.name}"] = path.read_bytes()
    if routing is not None:
        entries["routing.json"] = _canonical_json(routing)
    if settings_doc is not None:
        entries[SETTINGS_FILE] = _canonical_json(settings_doc)
    return entries


def zip_bytes(
    routing: dict[str, Any] | None = None, settings_doc: dict[str, Any] | None = None
) -> bytes:
    """The Functions app zip as bytes; the same inputs give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in sorted(bundle_entries(routing, settings_doc).items()):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # unix, whatever machine builds it
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
    return buf.getvalue()


def build_zip(
    dest: Path, routing: dict[str, Any] | None = None, settings_doc: dict[str, Any] | None = None
) -> Path:
    """Write the Functions app zip to ``dest``; the same inputs give the same bytes.

    Args:
        dest: path of the zip to write (parents are created; replaced atomically).
        routing: the routing.json document (see docs/contracts.md), or ``None``.
        settings_doc: non-secret app-setting defaults baked in as ``ai4ec_settings.json``
            (environment settings override them), or ``None``.

    Returns:
        ``dest``.
    """
    data = zip_bytes(routing, settings_doc)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest
