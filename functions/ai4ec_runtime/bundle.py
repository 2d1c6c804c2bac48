"""Build the deployable Functions zip: deterministic bytes for the same inputs.

The compiler calls :func:`build_zip` once per environment. Determinism matters because
ai4ec's build output is diffed and hashed: entries are sorted, every timestamp is the
zip epoch (1980-01-01), permissions and the "made by" system are fixed, caches are
excluded, and entries are deflated at a fixed level (:data:`COMPRESS_LEVEL`), so one
machine gives the same bytes on every run. Deflated, the bundle is about 1.9 MB instead
of 7.3 MB stored (nearly all of it the dependencies). The compressed bytes still depend
on the machine's zlib (zlib-ng or Apple's build deflate differently), so nothing in
ai4ec identifies the bundle by them: ``manifest.json`` (and so the golden tree),
``apply``'s "no changes since the last apply" and ``ai4ec diff`` hash the entries'
names and uncompressed bytes instead (``compiler/digest.py``). Azure accepts a deflated
package: zip deployment and run-from-package take "a .zip (compressed) file" made with
any zip tool (https://learn.microsoft.com/azure/azure-functions/deployment-zip-push,
"Deployment .zip file requirements").

``function_app.py``, ``host.json`` and ``requirements.txt`` are embedded here rather
than read from ``functions/``: an installed ai4ec wheel carries the ``ai4ec_runtime``
package but not that folder. A test keeps the embedded copies equal to the files in the
repository.

The zip also carries the app's dependencies in ``.python_packages/lib/site-packages``,
the folder the Functions Python worker on Linux adds to ``sys.path``. The app runs from
the package (``WEBSITE_RUN_FROM_PACKAGE=1``), which never builds anything, so a bundle
without them has no ``redis`` and the host indexes no function at all. They are copied,
offline and deterministically, from the distributions installed next to ai4ec (the
``runtime`` extra): each must be installed at exactly the version locked in
``requirements.txt``, and compiled code is refused, because the build machine's binaries
need not match Azure's, except where the distribution ships the pure-Python module the
extension accelerates (:data:`PURE_FALLBACK`); then only the pure module is bundled.
"""

from __future__ import annotations

import functools
import io
import json
import re
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
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

REQUIREMENTS_TXT = """# Functions app dependencies, locked: the bundle vendors exactly these into
# .python_packages/lib/site-packages (see ai4ec_runtime/bundle.py), and the build refuses
# an installed version that differs. The direct dependencies of ai4ec_runtime:
azure-functions==1.26.0
redis==8.1.0
azure-eventgrid==4.22.1
# Everything they pull in on CPython 3.11 on Linux (the app's linuxFxVersion); a test
# keeps this list closed. azure-identity is not bundled: it needs cryptography and cffi,
# compiled code, and the app always gets EVENT_GRID_KEY, so it never imports it.
azure-core==1.41.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
idna==3.20
isodate==0.7.2
markupsafe==3.0.4
requests==2.34.2
typing-extensions==4.16.0
urllib3==2.8.0
werkzeug==3.1.9
"""

#: Name of the bundled non-secret settings file read by :mod:`ai4ec_runtime.settings`.
SETTINGS_FILE = "ai4ec_settings.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: zlib level of every entry: zlib's default, within 1 % of level 9's size at a quarter
#: of its time (1.90 MB against 1.89 MB, 0.16 s against 0.6 s on the CI machine).
COMPRESS_LEVEL = 6
#: Where the Functions Python worker on Linux looks for the app's own packages.
SITE_PACKAGES = ".python_packages/lib/site-packages"
#: Distributions whose installed wheel carries compiled accelerators next to the
#: pure-Python modules they speed up: module path (without suffix) -> why dropping the
#: binary is safe. The bundle keeps only the pure modules, which run on any CPython.
PURE_FALLBACK: dict[str, dict[str, str]] = {
    "charset-normalizer": {
        "charset_normalizer/cd": "mypyc build of cd.py, which is shipped too",
        "charset_normalizer/md": "mypyc build of md.py, which is shipped too",
        "*__mypyc": "mypyc runtime support, unused once the .py modules load",
    },
    "markupsafe": {
        "markupsafe/_speedups": "C escape(); markupsafe falls back to _native.py on ImportError",
    },
}
_COMPILED = (".so", ".pyd", ".dll", ".dylib")
#: Installer bookkeeping that differs between machines (or lies once binaries are
#: dropped), so it is not bundled; METADATA stays for importlib.metadata.version().
_DIST_INFO_SKIP = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


class BundleError(Exception):
    """The bundle cannot be built from this environment (a missing or wrong dependency)."""


@dataclass(frozen=True)
class Pin:
    """One locked distribution of the Functions app."""

    name: str
    version: str


def normalize(name: str) -> str:
    """PEP 503 name, so ``Typing_Extensions`` and ``typing-extensions`` are one pin."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_requirements(text: str = REQUIREMENTS_TXT) -> tuple[Pin, ...]:
    """The ``name==version`` lines of a requirements file, in file order.

    Raises:
        BundleError: a line that is not an exact pin (a range would make the bundle
            depend on whatever happens to be installed).
    """
    pins: list[Pin] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise BundleError(
                f"requirements.txt:{number}: {line!r} is not an exact pin (name==x.y)"
            )
        pins.append(Pin(normalize(match.group(1)), match.group(2)))
    return tuple(pins)


def _dropped_binary(dist: str, rel: PurePosixPath) -> bool:
    """True when ``rel`` is a compiled module whose pure-Python fallback is bundled."""
    allowed = PURE_FALLBACK.get(dist, {})
    stem = str(rel.parent / rel.name.split(".", 1)[0]).removeprefix("./")
    return stem in allowed or (stem.endswith("__mypyc") and "*__mypyc" in allowed)


def _dist_files(pin: Pin) -> dict[str, bytes]:
    """The site-packages files of one installed distribution, as the bundle carries them."""
    try:
        dist = metadata.distribution(pin.name)
    except metadata.PackageNotFoundError:
        raise BundleError(
            f"{pin.name}=={pin.version} is not installed, and the Functions bundle must "
            "carry it: install ai4ec with its runtime extra (pip install 'ai4ec[runtime]')"
        ) from None
    if dist.version != pin.version:
        raise BundleError(
            f"{pin.name} {dist.version} is installed but the Functions bundle is locked to "
            f"{pin.version} (functions/requirements.txt): install ai4ec[runtime] to get it"
        )
    if dist.files is None:
        raise BundleError(f"{pin.name} {dist.version} was installed without a RECORD file list")
    out: dict[str, bytes] = {}
    for file in dist.files:
        rel = PurePosixPath(file.as_posix())
        if rel.parts[0] == ".." or "__pycache__" in rel.parts or rel.suffix == ".pyc":
            continue  # console scripts outside site-packages; caches
        if rel.parts[0].endswith(".dist-info") and rel.name in _DIST_INFO_SKIP:
            continue
        if rel.suffix in _COMPILED or ".cpython-" in rel.name:
            if _dropped_binary(pin.name, rel):
                continue
            raise BundleError(
                f"{pin.name} {dist.version} ships compiled code ({rel}) built for this "
                "machine, not for Azure's Functions host: the bundle only carries pure-Python "
                "distributions (see PURE_FALLBACK in ai4ec_runtime/bundle.py)"
            )
        path = Path(str(file.locate()))
        try:
            out[str(rel)] = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{pin.name} {dist.version}: cannot read {rel}: {exc}") from None
    return out


@functools.cache
def vendored_entries() -> tuple[tuple[str, bytes], ...]:
    """Archive name and content of every dependency file the bundle carries.

    Cached: the files come from the installed distributions, which do not change while
    a process runs, and a build renders the bundle once per environment.

    Raises:
        BundleError: a locked distribution is missing, at another version, or compiled.
    """
    files: dict[str, tuple[str, bytes]] = {}
    for pin in locked_requirements():
        for rel, data in _dist_files(pin).items():
            seen = files.get(rel)
            if seen is not None and seen[1] != data:
                raise BundleError(f"{seen[0]} and {pin.name} both ship {rel}, differently")
            files[rel] = (pin.name, data)
    return tuple((f"{SITE_PACKAGES}/{rel}", data) for rel, (_, data) in sorted(files.items()))


def _canonical_json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def bundle_entries(
    routing: dict[str, Any] | None = None,
    settings_doc: dict[str, Any] | None = None,
    *,
    vendor: bool = True,
) -> dict[str, bytes]:
    """Every file of the bundle: archive name -> content.

    Args:
        routing: the routing.json document, or ``None``.
        settings_doc: the bundled non-secret settings, or ``None``.
        vendor: include the locked dependencies (:func:`vendored_entries`); only tests
            of the app's own files turn this off.
    """
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
    if vendor:
        entries.update(vendored_entries())
    return entries


def zip_bytes(
    routing: dict[str, Any] | None = None, settings_doc: dict[str, Any] | None = None
) -> bytes:
    """The Functions app zip as bytes; the same inputs give the same bytes.

    Raises:
        BundleError: the locked dependencies cannot be vendored from this environment.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(
        buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL
    ) as zf:
        for name, data in sorted(bundle_entries(routing, settings_doc).items()):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # unix, whatever machine builds it
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=COMPRESS_LEVEL)
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

    Raises:
        BundleError: the locked dependencies cannot be vendored from this environment.
    """
    data = zip_bytes(routing, settings_doc)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest
