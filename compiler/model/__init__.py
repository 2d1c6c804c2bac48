"""The typed platform model and the readers that produce it (entry point :func:`build_model`).

``types`` holds the records; ``context`` what every reader shares; ``defaults``,
``naming``, ``refs`` and ``rules`` the four jobs; ``clusters``, ``apis``,
``pipelines`` and ``products`` read one section each; ``assemble`` runs them in order.
"""

from .assemble import build_model
from .types import Platform

__all__ = ["Platform", "build_model"]
