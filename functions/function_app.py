"""Entry point indexed by the Azure Functions Python worker (v2 model).

Deliberately thin: every function is declared in :mod:`ai4ec_runtime.app`, so the same
code is importable, testable and served by the local host.
"""

from ai4ec_runtime.app import app

__all__ = ["app"]
