"""The ``ai4ec`` command line: one click group and :func:`main` (see :mod:`.app`).

One module per command; :mod:`.exits` holds the exit codes and the one map from errors
to codes, :mod:`.output` how diagnostics and errors are printed.
"""

from .app import cli, main
from .exits import EXIT_CHANGES, EXIT_INTERNAL, EXIT_OK, EXIT_USER

__all__ = ["EXIT_CHANGES", "EXIT_INTERNAL", "EXIT_OK", "EXIT_USER", "cli", "main"]
