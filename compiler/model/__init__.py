"""The typed platform model and the builder that produces it."""

from .build import build_model
from .types import Platform

__all__ = ["Platform", "build_model"]
