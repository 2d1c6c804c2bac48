"""Azure limits a platform must fit in to deploy (issue 12: what validates, deploys).

**Role assignments.** Azure allows 4,000 role assignments per subscription, a fixed limit
(https://learn.microsoft.com/azure/role-based-access-control/troubleshoot-limits:
``RoleAssignmentLimitExceeded``). Least privilege costs assignments: every API has its
own identity with grants on single secrets and on its own results, so a large platform
reaches the limit at about 1,300 APIs - and a deployment that hits it fails halfway,
after the clusters exist. :func:`role_assignments` counts what the Azure target will
assign, from the model alone, and :func:`check_azure_limits` refuses an environment that
cannot fit (E-AZ-ROLE-LIMIT) and warns when it takes most of the subscription's budget
(W-AZ-ROLE-BUDGET), since other workloads in the subscription hold assignments too.

The count mirrors the renderer (``render/azure/roles.py``, ``access.py``,
``apim_service.py``); ``tests/model/test_azure_limits.py`` renders every sample and a
1,000-API platform and checks the two agree, so they cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .context import ModelContext
from .naming import RUNTIME_SECRET_KEYS, mutual_tls
from .types import Platform

#: Role assignments one subscription may hold (fixed; management-group scope excluded).
ROLE_ASSIGNMENTS_PER_SUBSCRIPTION = 4000
#: Above this share of the limit, warn: the subscription's other assignments count too.
ROLE_ASSIGNMENT_BUDGET = 3200

#: Grants of the platform's shared parts: the Function App's four (vault, blob owner,
#: queue contributor, Event Grid sender), API Management's vault reader, Event Grid's
#: dead-letter writer.
_SHARED = 6


@dataclass(frozen=True, slots=True)
class RoleCount:
    """Role assignments of one environment, by who holds them."""

    shared: int
    clusters: int
    apis: int

    @property
    def total(self) -> int:
        """Every role assignment the environment's templates create."""
        return self.shared + self.clusters + self.apis


def role_assignments(platform: Platform) -> RoleCount:
    """How many role assignments the Azure target creates for ``platform``.

    Counts the deployer's conditional grants as made (``ai4ec apply`` always passes the
    deployer), one per API for its results, one per secret an identity may read.
    """
    shared = _SHARED + 1  # the deployer writes the keys (Key Vault Secrets Officer)
    if mutual_tls(platform):
        shared += 1  # ... and the gateway client certificate (Certificates Officer)
    if platform.azure.api_management.custom_domain is not None:
        shared += 1  # API Management's certificate identity reads the vault
    clusters = 0
    for c in platform.clusters:
        # kubelet AcrPull, the deployer's cluster admin, each admin group, the runtime
        # sync's secrets, and the gateway sync's two certificates with HTTPS.
        clusters += 2 + len(c.admin_groups) + len(RUNTIME_SECRET_KEYS)
        if c.ingress.protocol == "https":
            clusters += 2
    apis = sum(2 + len({r.key_vault_secret for _, r in api.secrets}) for api in platform.apis)
    return RoleCount(shared=shared, clusters=clusters, apis=apis)


def check_azure_limits(ctx: ModelContext, platform: Platform) -> None:
    """E-AZ-ROLE-LIMIT / W-AZ-ROLE-BUDGET on the environment's role assignments."""
    count = role_assignments(platform)
    if count.total <= ROLE_ASSIGNMENT_BUDGET:
        return
    error = count.total > ROLE_ASSIGNMENTS_PER_SUBSCRIPTION
    where = ("apis",) if "apis" in ctx.data else ("clusters",)
    breakdown = (
        f"{count.apis} for {len(platform.apis)} API identities (2 each plus one per "
        f"secret they read), {count.clusters} for {len(platform.clusters)} cluster(s), "
        f"{count.shared} shared"
    )
    if error:
        ctx.report(
            "E-AZ-ROLE-LIMIT",
            f"environment {platform.environment!r} needs {count.total} role assignments "
            f"({breakdown}); Azure allows {ROLE_ASSIGNMENTS_PER_SUBSCRIPTION} per "
            "subscription and the deployment would fail with RoleAssignmentLimitExceeded",
            where,
            "spread the APIs over environments in different subscriptions "
            "(environments.<env>.azure.subscriptionId), or let APIs read fewer Key Vault "
            "secrets (apis[].secrets)",
        )
    else:
        ctx.report(
            "W-AZ-ROLE-BUDGET",
            f"environment {platform.environment!r} needs {count.total} role assignments "
            f"({breakdown}), over {ROLE_ASSIGNMENT_BUDGET} of the "
            f"{ROLE_ASSIGNMENTS_PER_SUBSCRIPTION} Azure allows per subscription, "
            "counting what else the subscription holds",
            where,
            "check the subscription's role assignments (Access control (IAM)), or spread "
            "the APIs over environments in different subscriptions",
            warning=True,
        )
