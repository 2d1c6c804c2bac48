"""Queue metrics -> logs, which the Functions host forwards to Application Insights.

Upstream's ``TaskQueueLogger``/``TaskProcessLogger`` tracked one App Insights custom
metric per ``<EndpointPath>_<status>`` set, found by SCANning the keyspace every tick.
We keep the metric names but read the set of known paths (``ai4ec:paths``) instead of
scanning, and report the exact count (upstream added 1 "to account for > 1 waiting").
Emitting through :mod:`logging` keeps the runtime free of a telemetry SDK: the Functions
host ships log records with their ``custom_dimensions`` to Application Insights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger("ai4ec_runtime.metrics")


def emit(values: Mapping[str, int]) -> None:
    """Log one record per metric (``ai4ec.metric <name>=<value>``), sorted by name."""
    for name in sorted(values):
        log.info(
            "ai4ec.metric %s=%d",
            name,
            values[name],
            extra={"custom_dimensions": {"metric": name, "value": values[name]}},
        )
