"""The ``ai4ec apply`` command (registered on the CLI group by ``ai4ec.cli.app``).

Like every ai4ec command it only parses options, calls one library function
(:func:`ai4ec.apply.run_apply`) and reports; exit codes follow ``ai4ec.cli.exits``: 0 done,
1 a problem (the message names the resource and the cause), 2 with
``--detailed-exitcode`` when ``--plan`` found changes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .exits import EXIT_CHANGES, EXIT_USER, CommandExit
from .options import report_format_option
from .output import Command, report_step_error

_TARGETS = ("azure", "functions", "apim", "k8s")
_CLOUDS = ("AzureCloud", "AzureChinaCloud", "AzureUSGovernment")
_INSTALL = "pip install 'ai4ec[azure,k8s]'"


def target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options naming where a build goes (clusters, cloud, subscription, group, platform).

    ``apply`` and ``destroy`` take the same ones, with the same meaning.
    """
    options = [
        click.option(
            "--context",
            "contexts",
            multiple=True,
            metavar="[CLUSTER=]CONTEXT",
            help="Use this kubeconfig context (for one cluster, or all) instead of AKS "
            "credentials.",
        ),
        click.option(
            "--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file for --context."
        ),
        click.option(
            "--admin-credentials",
            is_flag=True,
            help="Fetch AKS admin (local account) credentials instead of Entra ID user "
            "credentials.",
        ),
        click.option(
            "--cloud", type=click.Choice(_CLOUDS), default="AzureCloud", show_default=True
        ),
        click.option(
            "--arm-endpoint",
            metavar="URL",
            help="Custom Azure Resource Manager endpoint (overrides --cloud).",
        ),
        click.option(
            "--subscription", metavar="ID", help="Override the subscription of platform.yaml."
        ),
        click.option(
            "-g",
            "--resource-group",
            metavar="NAME",
            help="Override the resource group of platform.yaml.",
        ),
        click.option(
            "--platform",
            "platform_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The platform file the build came from (default: the one manifest.json names).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# "\b" (a backspace character, not backslash-b) keeps click from rewrapping the table.
_HELP = """Make the live platform match BUILD (default: out, or its only environment).

\b
Steps, in order, each previewed and then applied only where something differs:
  azure      resource group + ARM deployment of azure/main.json (what-if first),
             then the access keys in Key Vault (--prune: stale secrets) and grants on them
  functions  functions/bundle.zip to the Function App, then the Event Grid subscription
  k8s        per cluster: server-side apply (field manager ai4ec) of manifests.yaml,
             wait for rollouts, then --prune deletions
  apim       API Management objects and policies (ARM), then --prune deletions
  (azure)    last, with --prune: identities, their grants and node pools dropped

Azure sign-in is DefaultAzureCredential (az login, managed identity, workload identity
in CI). Cluster credentials come from AKS unless --context is given. A rerun skips Azure
steps whose inputs are unchanged since they last succeeded (a record kept as
resource-group tags) and writes no unchanged Kubernetes object, so an interrupted apply
is simply run again. Nothing is ever deleted without --prune, and never without a
listing and a confirmation (or --yes). See docs/apply.md.
"""


def _contexts(values: tuple[str, ...]) -> dict[str, str | None]:
    """``--context [CLUSTER=]CONTEXT`` options as {cluster or "": context}."""
    out: dict[str, str | None] = {}
    for v in values:
        cluster, sep, ctx = v.partition("=")
        if sep:
            out[cluster.strip()] = ctx.strip() or None
        else:
            out[""] = v.strip() or None
    return out


def _missing_extras(targets: tuple[str, ...], k8s_only_offline: bool) -> str | None:
    """The missing package, when the extras this run needs are not installed."""
    try:
        if not k8s_only_offline:
            import azure.core  # noqa: F401
            import azure.identity  # noqa: F401
            import azure.mgmt.containerservice  # noqa: F401
            import azure.mgmt.resource.resources  # noqa: F401
        if not targets or "k8s" in targets:
            import kubernetes  # noqa: F401
    except ImportError as exc:
        return exc.name or "a dependency"
    return None


def _interactive_confirm(question: str) -> bool:
    """Ask on the terminal; without one, refuse (CI must say --yes explicitly)."""
    if not sys.stdin.isatty():
        click.echo(f"{question}\ncannot ask: not a terminal; rerun with --yes to confirm", err=True)
        return False
    return click.confirm(question, default=False, err=True)


@click.command("apply", cls=Command, help=_HELP)
@click.argument(
    "build_dir", default="out", type=click.Path(file_okay=False, path_type=Path), metavar="BUILD"
)
@click.option(
    "--plan",
    is_flag=True,
    help="Preview every step (ARM what-if, Kubernetes dry-run); write nothing.",
)
@click.option(
    "-t",
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(_TARGETS),
    help="Only these parts (repeatable): azure, functions (bundle + Event Grid), apim, k8s.",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting (CI).")
@click.option(
    "--prune",
    is_flag=True,
    help="Delete what ai4ec made for this platform and environment that the build no longer "
    "has: Kubernetes objects, API Management children tagged ai4ec, Key Vault secrets, "
    "workload identities, their role assignments and node pools tagged for the environment "
    "(listed first; never controller-owned objects, CSI-synced Secrets or data).",
)
@click.option(
    "--force-conflicts",
    is_flag=True,
    help="Take over fields another field manager owns (SSA force).",
)
@target_options
@click.option(
    "--outputs",
    "outputs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ARM deployment outputs (JSON) to fill $(azure:...) with, instead of reading Azure.",
)
@click.option(
    "-p",
    "--parameter",
    "parameters",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override an ARM template parameter (VALUE as JSON when it parses).",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Ignore the records of earlier applies; compare everything live.",
)
@click.option("--no-wait", is_flag=True, help="Do not wait for Kubernetes rollouts.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the rollouts of one cluster.",
)
@click.option(
    "--prune-skip-forbidden",
    is_flag=True,
    help="With --prune: skip (and name) a kind the cluster will not list, instead of stopping.",
)
@click.option(
    "--prune-namespaces",
    is_flag=True,
    help="With --prune: also delete Namespaces the build dropped (and everything in them).",
)
@click.option(
    "--deployer-principal-id",
    metavar="OBJECT_ID",
    help="Principal granted AKS access by the template (default: the signed-in identity).",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="Seconds to wait for the Functions host, RBAC propagation, running deployments "
    "and transient ARM errors.",
)
@click.option(
    "--no-context-check",
    is_flag=True,
    help="Do not check that a --context's server is the build's AKS cluster (non-AKS tests).",
)
@click.option(
    "-o",
    "--output",
    "plan_output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --plan: save the plan (bound to this build and the live state) to FILE.",
)
@click.option(
    "--from-plan",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Apply exactly the plan saved in FILE, or refuse it as stale.",
)
@click.option(
    "--break-lock",
    is_flag=True,
    help="Take the resource group's apply lock even if another run holds it.",
)
@click.option(
    "--no-live-checks",
    is_flag=True,
    help="With --plan: skip the live checks of VM sizes, Kubernetes versions, mesh "
    "revisions and GPU quota against the region.",
)
@report_format_option("With --plan: the report in `ai4ec diff`'s formats (text, markdown, json).")
@click.option(
    "--detailed-exitcode", is_flag=True, help="With --plan: exit 2 when there are changes."
)
def apply(
    build_dir: Path,
    plan: bool,
    targets: tuple[str, ...],
    yes: bool,
    prune: bool,
    force_conflicts: bool,
    contexts: tuple[str, ...],
    kubeconfig: str | None,
    admin_credentials: bool,
    cloud: str,
    arm_endpoint: str | None,
    subscription: str | None,
    resource_group: str | None,
    platform_file: Path | None,
    outputs_file: Path | None,
    parameters: tuple[str, ...],
    refresh: bool,
    no_wait: bool,
    timeout: float,
    prune_skip_forbidden: bool,
    prune_namespaces: bool,
    deployer_principal_id: str | None,
    ready_timeout: float,
    no_context_check: bool,
    plan_output: Path | None,
    from_plan: Path | None,
    break_lock: bool,
    no_live_checks: bool,
    fmt: str,
    detailed_exitcode: bool,
) -> None:
    """Make the live platform match BUILD (the help text is :data:`_HELP`)."""
    from ..apply import ApplyOptions, Console, run_apply
    from ..errors import Ai4ecError

    ctx_map = _contexts(contexts)
    offline = set(targets) == {"k8s"} and bool(ctx_map or kubeconfig) and outputs_file is not None
    missing = _missing_extras(targets, offline)
    if missing:
        click.echo(
            f"error: ai4ec apply needs the azure and k8s extras ({missing} is missing): {_INSTALL}",
            err=True,
        )
        raise CommandExit(EXIT_USER)
    options = ApplyOptions(
        build_dir=build_dir,
        plan=plan,
        targets=targets,
        yes=yes,
        prune=prune,
        force_conflicts=force_conflicts,
        contexts=ctx_map,
        kubeconfig=kubeconfig,
        admin_credentials=admin_credentials,
        cloud=cloud,
        arm_endpoint=arm_endpoint,
        subscription=subscription,
        resource_group=resource_group,
        platform_file=platform_file,
        outputs_file=outputs_file,
        parameters=parameters,
        refresh=refresh,
        wait=not no_wait,
        timeout=timeout,
        prune_skip_forbidden=prune_skip_forbidden,
        prune_namespaces=prune_namespaces,
        deployer_principal_id=deployer_principal_id,
        ready_timeout=ready_timeout,
        check_contexts=not no_context_check,
        break_lock=break_lock,
        plan_output=plan_output,
        from_plan=from_plan,
    )
    import logging

    # azure-identity logs every credential it tried, pages of text per failure; our own
    # error already says how to sign in. Their warnings stay available with --debug.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("azure").setLevel(logging.ERROR)
    # With --plan, progress goes to stderr and the report (diff's format) to stdout.
    console = Console(lambda text, err: click.echo(text, err=err), json_mode=plan or fmt != "text")
    try:
        result = run_apply(options, console, _interactive_confirm)
    except Ai4ecError as exc:
        report_step_error(exc)
        raise CommandExit(EXIT_USER) from None
    live_errors = 0
    if plan and not no_live_checks and not offline:
        live_errors = _live_checks(options)
    if plan:
        from ..apply.report import plan_report
        from ..diff.formats import format_json, format_markdown, format_text

        report = plan_report(result.plans, result.build_root, result.environment)
        if fmt == "json":
            click.echo(format_json(report))
        elif fmt == "markdown":
            click.echo(format_markdown(report))
        else:
            color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
            click.echo(format_text(report, color=color))
    elif fmt == "json":
        doc = {
            "plan": plan,
            "changed": result.changed,
            "steps": [p.to_dict() for p in result.plans],
        }
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    if live_errors:
        click.echo(
            f"error: the live checks found {live_errors} problem(s) the deployment would meet",
            err=True,
        )
        raise CommandExit(EXIT_USER)
    if plan and detailed_exitcode and result.changed:
        raise CommandExit(EXIT_CHANGES)


def _live_checks(options: Any) -> int:
    """Run and print ``--plan``'s live catalog checks; returns how many are errors."""
    from ..apply.livecheck import live_plan_findings
    from ..errors import Ai4ecError, Severity

    click.echo("live checks: VM sizes, Kubernetes versions, mesh revisions, GPU quota", err=True)
    try:
        findings = live_plan_findings(options)
    except Ai4ecError as exc:
        report_step_error(exc)
        raise CommandExit(EXIT_USER) from None
    errors = 0
    for f in findings:
        word = "error" if f.severity is Severity.ERROR else "warning"
        errors += f.severity is Severity.ERROR
        hint = f" ({f.hint})" if f.hint else ""
        click.echo(f"  {word} {f.code}: {f.message}{hint}", err=True)
    if not findings:
        click.echo("  everything the build needs is offered, within quota", err=True)
    return errors
