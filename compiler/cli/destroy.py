"""The ``ai4ec destroy`` command (registered on the CLI group by ``ai4ec.cli.app``).

It takes the same build directory (or environment) as ``apply`` and the same sign-in
options, calls :func:`ai4ec.apply.destroy.run_destroy` and reports. Exit codes: 0 done
(or ``--plan`` listed), 1 a problem, a refusal, or a deletion not confirmed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .apply import _contexts, _missing_extras, target_options
from .exits import EXIT_USER, CommandExit
from .output import Command, report_step_error

_HELP = """Remove what `ai4ec apply` created for BUILD (default: out, or its only environment).

\b
In reverse order, everything listed first and deleted after one confirmation:
  k8s:<cluster>  Kubernetes objects ai4ec applied (labels + managedFields manager ai4ec)
  dispatch       the Event Grid subscription
  apim           API Management objects of the build
  azure          the build's Azure resources (the templates' ids and the outputResources
                 of ai4ec's deployments; never anything else, never the resource group)

Soft-deleted Key Vaults are purged when purge protection is off; with purge protection
the next apply recovers the vault. Without a terminal, destroy refuses to run unless
--yes is given. See docs/apply.md (Destroy).
"""


def _on_terminal() -> bool:
    """Whether someone can answer the confirmation (CI has no terminal: it must say --yes)."""
    return sys.stdin.isatty()


@click.command("destroy", cls=Command, help=_HELP)
@click.argument(
    "build_dir", default="out", type=click.Path(file_okay=False, path_type=Path), metavar="BUILD"
)
@click.option("--plan", is_flag=True, help="List what would be removed; delete nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask (required without a terminal).")
@click.option(
    "--delete-namespaces",
    is_flag=True,
    help="Also delete Namespaces ai4ec applied (and everything in them).",
)
@target_options
@click.option(
    "--no-context-check",
    is_flag=True,
    help="Do not check that a --context's server is the build's AKS cluster (non-AKS tests).",
)
@click.option(
    "--break-lock",
    is_flag=True,
    help="Take the resource group's apply lock even if another run holds it.",
)
def destroy(
    build_dir: Path,
    plan: bool,
    yes: bool,
    delete_namespaces: bool,
    contexts: tuple[str, ...],
    kubeconfig: str | None,
    admin_credentials: bool,
    cloud: str,
    arm_endpoint: str | None,
    subscription: str | None,
    resource_group: str | None,
    platform_file: Path | None,
    no_context_check: bool,
    break_lock: bool,
) -> None:
    """Remove what apply created for BUILD (the help text is :data:`_HELP`)."""
    from ..apply import ApplyOptions, Console
    from ..apply.destroy import run_destroy
    from ..errors import Ai4ecError

    if not plan and not yes and not _on_terminal():
        click.echo(
            "error: refusing to destroy without confirmation: standard input is not a "
            "terminal. Review `ai4ec destroy --plan`, then rerun with --yes",
            err=True,
        )
        raise CommandExit(EXIT_USER)
    missing = _missing_extras((), False)
    if missing:
        click.echo(
            "error: ai4ec destroy needs the azure and k8s extras "
            f"({missing} is missing): pip install 'ai4ec[azure,k8s]'",
            err=True,
        )
        raise CommandExit(EXIT_USER)
    options = ApplyOptions(
        build_dir=build_dir,
        plan=plan,
        yes=yes,
        prune_namespaces=delete_namespaces,
        contexts=_contexts(contexts),
        kubeconfig=kubeconfig,
        admin_credentials=admin_credentials,
        cloud=cloud,
        arm_endpoint=arm_endpoint,
        subscription=subscription,
        resource_group=resource_group,
        platform_file=platform_file,
        check_contexts=not no_context_check,
        break_lock=break_lock,
    )
    import logging

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("azure").setLevel(logging.ERROR)
    console = Console(lambda text, err: click.echo(text, err=err))

    from ..apply.builddir import load_build

    try:
        env = load_build(build_dir).environment
    except Ai4ecError as exc:
        report_step_error(exc)
        raise CommandExit(EXIT_USER) from None

    def confirm(question: str) -> bool:
        """The environment's name typed back: a destroy is not undone by a stray 'y'."""
        click.echo(question, err=True)
        answer = click.prompt(f"type the environment name ({env}) to confirm", default="", err=True)
        return str(answer).strip() == env

    try:
        run_destroy(options, console, confirm)
    except Ai4ecError as exc:
        report_step_error(exc)
        raise CommandExit(EXIT_USER) from None
