"""The ``ai4ec`` click group and :func:`main`, the console entry point.

Commands (one module each in this package) only parse options, call one library
function and report its result. They end by returning or by raising; :func:`main` is the
only place an exception becomes an exit code, through
:func:`ai4ec.cli.exits.exit_code_for`.

Exit codes: 0 success; 1 a problem with your input (the message says what and where);
2 ``diff`` (and ``apply --plan --detailed-exitcode``) found changes; 70 an internal
ai4ec bug.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from .. import __version__
from ..errors import Ai4ecError
from .apply import apply
from .build import build
from .catalog import catalog
from .destroy import destroy
from .dev import dev
from .diff import diff
from .exits import EXIT_INTERNAL, EXIT_OK, exit_code_for
from .functions import functions
from .init import init
from .output import report_error, report_internal
from .schema import schema
from .validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ai4ec")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
def cli(debug: bool) -> None:
    """Compile one platform.yaml into an ML inference platform on Azure.

    \b
    Typical flow:
      ai4ec init                      write a commented starter platform.yaml
      ai4ec validate                  check it; errors point at file:line
      ai4ec build -o out              compile every environment into out/<env>/
      ai4ec dev --demo                run it all on this machine, no Azure needed
      ai4ec diff --base main          review what a change does (PRs)
      ai4ec apply out/prod            deploy a build
      ai4ec destroy out/prod          remove what apply created

    FILE defaults to ./platform.yaml everywhere.
    """  # noqa: D301 - click needs the \b escape
    del debug  # read by main() before click runs, so it also covers startup errors


for _command in (validate, build, schema, init, dev, functions, diff, apply, destroy, catalog):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI and map every outcome to an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("AI4EC_DEBUG") == "1"
    try:
        # Without standalone mode click raises ClickExceptions and Abort, and *returns*
        # the code of an Exit (--version, --help) instead of raising it.
        code = cli.main(args=args, prog_name="ai4ec", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exit_code_for(exc))
    except click.Abort as exc:
        click.echo("aborted", err=True)
        sys.exit(exit_code_for(exc))
    except Ai4ecError as exc:
        report_error(exc)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt as exc:
        click.echo("interrupted", err=True)
        sys.exit(exit_code_for(exc))
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        report_internal(exc, debug)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
