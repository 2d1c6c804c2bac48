"""``ai4ec apply``: make the live platform match a build, safely and repeatably.

The package is imported only by the ``apply`` command, and it imports the Azure and
Kubernetes SDKs only inside the functions that talk to them, so ``ai4ec validate`` and
``build`` neither pay for nor need the ``azure``/``k8s`` extras. See docs/apply.md.
"""

from __future__ import annotations

import logging

from .runner import TARGETS, ApplyOptions, ApplyResult, Console, run_apply

# Library logging: records reach whatever handlers the application configured (always
# scrubbed, see .scrub), never Python's last-resort stderr printer, which would repeat
# the progress lines the console already shows.
logging.getLogger("ai4ec.apply").addHandler(logging.NullHandler())

__all__ = ["TARGETS", "ApplyOptions", "ApplyResult", "Console", "run_apply"]
