"""Monitoring: the Log Analytics workspace and Application Insights on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...model.types import Platform
from .common import LOCATION, TAGS, AzureSpec, new_resource
from .spec import Note, Resource


@dataclass(frozen=True, slots=True)
class Monitoring:
    """Handle of the monitoring module: what the clusters and secrets read."""

    workspace: Resource
    app_insights: Resource


def monitoring(spec: AzureSpec, platform: Platform) -> Monitoring:
    """Log Analytics workspace and the workspace-based Application Insights on it."""
    mon = platform.azure.monitoring
    props: dict[str, Any] = {
        "sku": {"name": "PerGB2018"},
        "retentionInDays": mon.retention_days,
        "features": {"enableLogAccessUsingOnlyResourcePermissions": True},
        "publicNetworkAccessForIngestion": "Enabled",
        "publicNetworkAccessForQuery": "Enabled",
    }
    if mon.daily_cap_gb is not None:
        props["workspaceCapping"] = {"dailyQuotaGb": mon.daily_cap_gb}
    ws = spec.add(
        new_resource(
            "workspace",
            "Microsoft.OperationalInsights/workspaces",
            mon.workspace_name,
            "monitoring",
            body={"location": LOCATION, "tags": TAGS, "properties": props},
            comment="Logs of every component: Functions, API containers, AKS (Container Insights).",
        )
    )
    appi = spec.add(
        new_resource(
            "appInsights",
            "Microsoft.Insights/components",
            mon.app_insights_name,
            "monitoring",
            body={
                "location": LOCATION,
                "tags": TAGS,
                "kind": "web",
                "properties": {
                    "Application_Type": "web",
                    "WorkspaceResourceId": ws.id(),
                    "IngestionMode": "LogAnalytics",
                    "publicNetworkAccessForIngestion": "Enabled",
                    "publicNetworkAccessForQuery": "Enabled",
                    "DisableLocalAuth": Note(
                        False,
                        "The API containers send telemetry with the connection string "
                        "(Key Vault secret ai4ec-appinsights-connection-string).",
                    ),
                },
            },
            comment="Workspace-based Application Insights: telemetry lands in the workspace.",
        )
    )
    return Monitoring(workspace=ws, app_insights=appi)
