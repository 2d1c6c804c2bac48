"""Stage 2: check loaded data against the schema.

``schema`` runs the validators; ``convert`` words each schema error for the user.
"""

from .schema import (
    compiled_validator,
    environments_diagnostics,
    fast_validator,
    schema_diagnostics,
)

__all__ = [
    "compiled_validator",
    "environments_diagnostics",
    "fast_validator",
    "schema_diagnostics",
]
