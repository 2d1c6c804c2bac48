"""What ``ai4ec apply`` was asked to do, what it found, and how it talks to the user."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plan import StepPlan
from .retry import RetrySettings
from .scrub import scrub

TARGETS = ("azure", "functions", "apim", "k8s")


@dataclass
class ApplyOptions:
    """Everything ``ai4ec apply`` was asked to do (see ``ai4ec apply --help``)."""

    build_dir: Path
    plan: bool = False
    targets: tuple[str, ...] = ()
    yes: bool = False
    prune: bool = False
    force_conflicts: bool = False
    #: Cluster name -> kubeconfig context; key "" applies to every cluster, value None
    #: means the kubeconfig's current context.
    contexts: dict[str, str | None] = field(default_factory=dict)
    kubeconfig: str | None = None
    admin_credentials: bool = False
    cloud: str = "AzureCloud"
    arm_endpoint: str | None = None
    subscription: str | None = None
    resource_group: str | None = None
    platform_file: Path | None = None
    outputs_file: Path | None = None
    parameters: tuple[str, ...] = ()
    refresh: bool = False
    wait: bool = True
    timeout: float = 600.0
    #: Kubernetes requests in flight at once (objects of one kind are independent).
    parallel: int = 8
    #: ``--prune-skip-forbidden``: a kind the cluster will not list is skipped (named),
    #: instead of stopping the run.
    prune_skip_forbidden: bool = False
    #: ``--prune-namespaces``: pruning may delete a Namespace (and everything in it).
    prune_namespaces: bool = False
    #: ``--deployer-principal-id``: object id for the template's ``deployerPrincipalId``
    #: (default: the ``oid`` claim of the Resource Manager token).
    deployer_principal_id: str | None = None
    #: Seconds to wait for what Azure finishes on its own: the Functions host indexing a
    #: new bundle, the Event Grid handshake, RBAC propagation, a deployment of the same
    #: name still running, transient ARM errors (``--ready-timeout``).
    ready_timeout: float = 900.0
    #: ``--no-context-check``: use a ``--context`` without checking that its server is
    #: the build's AKS cluster (a kind or minikube cluster in tests).
    check_contexts: bool = True
    #: Key Vault data-plane base URL instead of ``https://<vault>.vault.azure.net``
    #: (another cloud, or a local stand-in in tests).
    key_vault_endpoint: str | None = None
    #: ``--break-lock``: take the resource group's apply lock even if another run holds it.
    break_lock: bool = False
    #: ``--plan -o FILE``: save the plan, bound to the build and the live state it saw.
    plan_output: Path | None = None
    #: ``--from-plan FILE``: apply exactly that plan, or refuse it as stale.
    from_plan: Path | None = None
    # Knobs for tests and unusual setups (not command-line options).
    retry: RetrySettings = field(default_factory=RetrySettings)
    poll_interval: float = 5.0
    credential: Any = None
    connection_verify: bool | str = True


@dataclass
class ApplyResult:
    """What the run found (and, unless planning, did)."""

    plans: list[StepPlan]
    #: The build's root and environment (for reports).
    build_root: Path = Path()
    environment: str = ""

    @property
    def changed(self) -> bool:
        """Whether anything was (or, with --plan, would be) written."""
        return any(p.pending for p in self.plans)


class Console:
    """Progress and plan output, always scrubbed; JSON mode moves text to stderr."""

    def __init__(self, echo: Callable[[str, bool], None], json_mode: bool = False) -> None:
        self._echo = echo
        self.json_mode = json_mode

    def say(self, text: str) -> None:
        """A line of progress or plan."""
        self._echo(scrub(text), self.json_mode)

    def warn(self, text: str) -> None:
        """A warning (stderr)."""
        self._echo(scrub(f"warning: {text}"), True)


Confirm = Callable[[str], bool]
