"""What renderers produce: files as bytes, with their kind, ready for parse-back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Build-wide inputs a renderer may need besides the model."""

    #: platform.yaml as the user named it (for "generated from" headers).
    source_name: str
    #: Directory of platform.yaml (for files it references, e.g. OpenAPI documents).
    source_dir: str
    #: Print the Bicep files next to the ARM JSON. ``ai4ec diff`` compares the ARM JSON
    #: only (the Bicep holds the same resources), so it asks for none and saves the
    #: printer's time; a build always prints them.
    bicep: bool = True


@dataclass(frozen=True, slots=True)
class Artifact:
    """One generated file, relative to ``out/<env>/``."""

    path: PurePosixPath
    content: bytes
    #: For a multi-document YAML file assembled from separately rendered parts: how many
    #: documents it holds, each of which its renderer parsed back in full on its own and
    #: found free of document markers (0: no such claim). The write stage then checks only
    #: the joints (:func:`ai4ec.write.verify_artifact`) instead of parsing it all again;
    #: ``build --verify`` still parses it whole. Not part of equality: the same bytes are
    #: the same artifact whether or not their parts were checked.
    checked_documents: int = field(default=0, compare=False)

    @property
    def kind(self) -> str:
        """File kind by extension: yaml, json, xml, bicep, zip or text."""
        suffix = self.path.suffix.lower()
        return {
            ".yaml": "yaml",
            ".yml": "yaml",
            ".json": "json",
            ".xml": "xml",
            ".bicep": "bicep",
            ".zip": "zip",
        }.get(suffix, "text")


def json_artifact(path: str, data: Any) -> Artifact:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return Artifact(PurePosixPath(path), text.encode("utf-8"))


# libyaml's emitter (C) is ~10x faster than PyYAML's; a manifests.yaml for 1,000 APIs
# is dumped in well under a second with it. It writes block lists unindented under their
# key, which is valid YAML and what kubectl itself prints.
_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CParser: Any = getattr(getattr(yaml, "cyaml", None), "CParser", None)


def parse_yaml_through(text: str) -> None:
    """Parse every document of ``text`` to its end, raising :class:`yaml.YAMLError` if any fails.

    libyaml's parser driven to the end in C checks the whole syntax without building
    Python events or objects: a fifth of the time of iterating ``yaml.parse``.
    """
    if _CParser is not None and hasattr(_CParser, "raw_parse"):
        _CParser(text).raw_parse()
        return
    for _ in yaml.parse(text, Loader=SafeLoader):  # pragma: no cover - no libyaml
        pass


class _Dumper(_BaseDumper):  # type: ignore[misc]
    """Safe dumper that never emits aliases (anchors confuse diff and humans)."""

    def ignore_aliases(self, data: Any) -> bool:
        del data
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text as literal blocks; everything else lets PyYAML choose quoting,
    # which already quotes anything that would read back as another type ("no", "1.30").
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(data: Any) -> str:
    """Deterministic YAML (sorted keys, no aliases, block style)."""
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=120,
    )


def to_yaml_documents(docs: list[Any], header: str = "") -> str:
    """Several YAML documents joined with ``---``."""
    parts = [to_yaml(d) for d in docs]
    return header + "---\n" + "---\n".join(parts) if parts else header


def yaml_artifact(path: str, data: Any, header: str = "") -> Artifact:
    """One YAML document as an artifact."""
    return Artifact(PurePosixPath(path), (header + to_yaml(data)).encode("utf-8"))
