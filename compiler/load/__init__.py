"""Stage 1: ``platform.yaml`` -> data + source map, and the environment overlays merged over it.

``source`` holds the location types every later stage reports through, ``reader`` the
YAML reader, ``overlay`` the merge of ``environments.<env>`` over the base document.
"""

from .overlay import ENVIRONMENTS, apply_environment, base_view, environment_names
from .reader import MAX_ALIAS_EXPANSION, MAX_DEPTH, gc_paused, load_platform, parse_platform
from .source import Document, JsonPath, Position, SourceMap, format_path

__all__ = [
    "ENVIRONMENTS",
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "Document",
    "JsonPath",
    "Position",
    "SourceMap",
    "apply_environment",
    "base_view",
    "environment_names",
    "format_path",
    "gc_paused",
    "load_platform",
    "parse_platform",
]
