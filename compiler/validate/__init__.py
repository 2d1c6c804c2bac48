"""Stage 2: check loaded data against the schema.

``schema`` runs the validators; ``convert`` words each schema error for the user;
``partial`` keeps the parts the schema accepted, for the semantic rules.
"""

from .partial import Pruned, prune
from .schema import (
    compiled_validator,
    environments_diagnostics,
    fast_validator,
    schema_accepts,
    schema_diagnostics,
    schema_findings,
)

__all__ = [
    "Pruned",
    "compiled_validator",
    "environments_diagnostics",
    "fast_validator",
    "prune",
    "schema_accepts",
    "schema_diagnostics",
    "schema_findings",
]
