"""``ai4ec catalog refresh``: rewrite the dated Azure catalog from a subscription.

The catalog (``compiler/data/azure-catalog.json``) is what ``validate`` holds VM sizes,
Kubernetes versions, Istio revisions and regions against. Azure changes faster than
ai4ec releases, so a user can bring it up to date from their own subscription, signed in
exactly the way ``ai4ec apply`` signs in (DefaultAzureCredential, the same clouds).
"""

from __future__ import annotations

from pathlib import Path

import click

from .exits import EXIT_USER, CommandExit
from .output import Command

_CLOUDS = ("AzureCloud", "AzureChinaCloud", "AzureUSGovernment")


@click.group()
def catalog() -> None:
    """The dated Azure catalog that validate checks sizes, versions and regions against."""


@catalog.command(cls=Command)
@click.option(
    "--subscription",
    metavar="ID",
    envvar="AZURE_SUBSCRIPTION_ID",
    required=True,
    help="The subscription to read from (default: $AZURE_SUBSCRIPTION_ID).",
)
@click.option(
    "--location",
    metavar="REGION",
    default="eastus",
    show_default=True,
    help="The region whose VM sizes, Kubernetes versions and Istio revisions are read.",
)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The catalog file to rewrite (default: the one ai4ec ships).",
)
@click.option("--plan", is_flag=True, help="Print what would change; write nothing.")
@click.option("--cloud", type=click.Choice(_CLOUDS), default="AzureCloud", show_default=True)
@click.option(
    "--arm-endpoint",
    metavar="URL",
    help="Custom Azure Resource Manager endpoint (overrides --cloud).",
)
def refresh(
    subscription: str,
    location: str,
    path: Path | None,
    plan: bool,
    cloud: str,
    arm_endpoint: str | None,
) -> None:
    """Rewrite the Azure catalog from what the subscription's APIs offer today.

    Reads resource SKUs, AKS Kubernetes versions and Istio revisions for --location, and
    the subscription's regions; sizes and versions Azure no longer lists get today's date
    as their end. Sign-in is apply's: `az login`, or AZURE_CLIENT_ID/AZURE_TENANT_ID in CI.
    """
    from ..apply.azure import Azure
    from ..catalog.data import catalog_path
    from ..catalog.live import refresh_file
    from ..model.catalog_rules import TodayError, today

    try:
        day = today()
    except TodayError as exc:
        raise CommandExit(EXIT_USER, str(exc)) from None
    azure = Azure(subscription, cloud=cloud, arm_endpoint=arm_endpoint)
    options = azure.client_options()
    options.pop("polling_interval", None)  # reads only: nothing to poll
    result = refresh_file(
        path,
        credential=azure.credential,
        subscription_id=subscription,
        location=location,
        today=day,
        write=not plan,
        **options,
    )
    target = path or catalog_path()
    for change in result.changes:
        click.echo(f"  {change}")
    if result.not_offered:
        click.echo(
            f"  not offered in {location} (kept, another region may): "
            + ", ".join(result.not_offered)
        )
    if not result.changes:
        click.echo(f"{target}: up to date (taken {day})")
    elif plan:
        click.echo(f"{target}: {len(result.changes)} change(s) planned, nothing written")
    else:
        click.echo(f"{target}: {len(result.changes)} change(s) written (taken {day})")
