"""Reading a build (``out/<env>/``) the way ``apply`` needs it, trusting nothing.

``apply`` deploys exactly what ``ai4ec build`` wrote, so every file it reads is checked
against the SHA-256 in ``manifest.json`` first: a file edited, truncated or swapped after
the build stops the run before anything is sent, instead of deploying something nobody
reviewed.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..digest import ZIP_ENTRIES, zip_content_sha256
from ..errors import ApplyError
from ..render.artifact import SafeLoader

MAIN_TEMPLATE = "azure/main.json"
MAIN_PARAMETERS = "azure/main.parameters.json"
BUNDLE = "functions/bundle.zip"
SETTINGS = "functions/settings.json"
#: Kinds of split templates (``azure/<kind>-<n>.json``, written by the Azure target when
#: main.json would pass ARM's limits), in the order ``apply`` deploys them.
SPLIT_KINDS = ("identities", "identity-grants", "apim-apis")
_SPLIT = re.compile(r"^azure/((identities|identity-grants|apim-apis)-(\d+))\.json$")
_MANIFESTS = re.compile(r"^k8s/([^/]+)/manifests\.yaml$")


@dataclass(frozen=True, slots=True)
class SecretReference:
    """A parameter Resource Manager reads from Key Vault (``{"reference": ...}``).

    Passed through as is, so the secret never enters ``apply``'s memory, output or plan.
    """

    reference: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Template:
    """One ARM template of the build and its parameter values."""

    #: ``main`` or ``<kind>-<n>`` of :data:`SPLIT_KINDS`.
    name: str
    template: dict[str, Any]
    #: ``{name: value}`` from the ``*.parameters.json`` beside it.
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Build:
    """A verified build directory of one environment."""

    root: Path
    platform: str
    environment: str
    source_file: str
    source_sha256: str
    #: Artifact path (relative, POSIX) -> SHA-256 from manifest.json.
    artifacts: dict[str, str]
    #: Artifacts whose SHA-256 is of their entries (``digest: zip-entries``), not bytes.
    by_entries: frozenset[str] = frozenset()

    def has(self, rel: str) -> bool:
        """Whether the build lists ``rel``."""
        return rel in self.artifacts

    def read(self, rel: str) -> bytes:
        """The bytes of artifact ``rel``, verified against manifest.json.

        Raises:
            ApplyError: the file is missing, unlisted, or differs from the build.
        """
        expected = self.artifacts.get(rel)
        if expected is None:
            raise ApplyError(f"{self.root}/{rel} is not part of this build (not in manifest.json)")
        path = self.root.joinpath(*rel.split("/"))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ApplyError(f"cannot read {path}: {exc.strerror}") from None
        if self._sha256(rel, data) != expected:
            raise ApplyError(
                f"{path} differs from the build's manifest.json (edited after `ai4ec build`?); "
                "rebuild, then apply the new output"
            )
        return data

    def _sha256(self, rel: str, data: bytes) -> str:
        """``data``'s identity as the manifest records it for ``rel`` (see compiler.digest)."""
        if rel not in self.by_entries:
            return hashlib.sha256(data).hexdigest()
        try:
            return zip_content_sha256(data)[0]
        except zipfile.BadZipFile:
            return ""  # not a zip any more: it differs from the build

    def json(self, rel: str) -> Any:
        """Artifact ``rel`` parsed as JSON."""
        try:
            return json.loads(self.read(rel))
        except ValueError as exc:
            raise ApplyError(f"{self.root}/{rel} is not valid JSON: {exc}") from None

    @property
    def clusters(self) -> list[str]:
        """Names of the clusters the build has Kubernetes objects for, in build order."""
        return sorted(m.group(1) for p in self.artifacts if (m := _MANIFESTS.match(p)))

    def manifests(self, cluster: str) -> list[dict[str, Any]]:
        """Every object of ``k8s/<cluster>/manifests.yaml``, in file (= apply) order."""
        rel = f"k8s/{cluster}/manifests.yaml"
        text = self.read(rel).decode("utf-8")
        try:
            docs = [d for d in yaml.load_all(text, Loader=SafeLoader) if d is not None]
        except yaml.YAMLError as exc:
            raise ApplyError(f"{self.root}/{rel} is not valid YAML: {exc}") from None
        for i, d in enumerate(docs):
            if not isinstance(d, dict) or not d.get("kind") or not d.get("apiVersion"):
                raise ApplyError(f"{self.root}/{rel}: document {i + 1} is not a Kubernetes object")
            if not (d.get("metadata") or {}).get("name"):
                raise ApplyError(f"{self.root}/{rel}: document {i + 1} ({d['kind']}) has no name")
        return docs

    def templates(self) -> list[Template]:
        """``main``, then every split template by kind (:data:`SPLIT_KINDS`) and number."""
        out: list[Template] = []
        if not self.has(MAIN_TEMPLATE):
            return out
        out.append(self._template("main", MAIN_TEMPLATE, MAIN_PARAMETERS))
        split = sorted(
            (SPLIT_KINDS.index(m.group(2)), int(m.group(3)), m.group(1))
            for p in self.artifacts
            if (m := _SPLIT.match(p))
        )
        out.extend(
            self._template(name, f"azure/{name}.json", f"azure/{name}.parameters.json")
            for _k, _n, name in split
        )
        return out

    def _template(self, name: str, rel: str, params_rel: str) -> Template:
        doc = self.json(rel)
        if not isinstance(doc, dict) or not isinstance(doc.get("resources"), list):
            raise ApplyError(f"{self.root}/{rel} is not an ARM template (no resources list)")
        values: dict[str, Any] = {}
        if self.has(params_rel):
            params = self.json(params_rel).get("parameters", {})
            for k, v in params.items():
                if not isinstance(v, dict):
                    continue
                ref = v.get("reference")
                values[k] = SecretReference(ref) if isinstance(ref, dict) else v.get("value")
        return Template(name=name, template=doc, parameters=values)


def resolve_build_dir(path: Path) -> Path:
    """``path`` itself when it holds manifest.json, else its only environment below it.

    ``ai4ec build -o out`` writes ``out/<env>/``; ``ai4ec apply out`` is accepted when
    there is exactly one environment, and names them when there are several.
    """
    if (path / "manifest.json").is_file():
        return path
    if path.is_dir():
        envs = sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())
        if len(envs) == 1:
            return envs[0]
        if envs:
            names = ", ".join(str(p) for p in envs)
            raise ApplyError(f"{path} holds several environments; apply one of: {names}")
    raise ApplyError(f"{path} is not a build directory (no manifest.json); run `ai4ec build` first")


def load_build(path: Path) -> Build:
    """Read and check ``manifest.json`` of the build at ``path`` (see :func:`resolve_build_dir`)."""
    root = resolve_build_dir(path)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ApplyError(f"cannot read {root}/manifest.json: {exc}") from None
    try:
        artifacts = {a["path"]: a["sha256"] for a in manifest["artifacts"]}
        return Build(
            root=root,
            platform=manifest["platform"],
            environment=manifest["environment"],
            source_file=manifest.get("source", {}).get("file", ""),
            source_sha256=manifest.get("source", {}).get("sha256", ""),
            artifacts=artifacts,
            by_entries=frozenset(
                a["path"] for a in manifest["artifacts"] if a.get("digest") == ZIP_ENTRIES
            ),
        )
    except (KeyError, TypeError) as exc:
        raise ApplyError(f"{root}/manifest.json lacks {exc}; rebuild with this ai4ec") from None
