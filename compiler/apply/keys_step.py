"""The ``keys`` step: the platform's access keys, generated once and kept in Key Vault.

It runs after the ``azure`` step (the vault exists then) and before ``access``, whose
role assignments on single secrets need the secrets to exist. Keys are never printed,
logged or planned: only secret names appear (keys.py holds the rules).
"""

from __future__ import annotations

import time
from typing import Any, cast

from ..errors import ApplyError
from ..model.naming import GATEWAY_CLIENT_CERT, GATEWAY_CLIENT_PEM_SECRET
from . import arm
from .builddir import Build
from .context import Context
from .options import Confirm
from .plan import ApplyAction, PlannedChange, StepPlan
from .steps import Step, show_plan

_VAULT_TYPE = "microsoft.keyvault/vaults"
#: main.json output naming the gateway client certificate ("" without mutual TLS).
GATEWAY_CERT_OUTPUT = "gatewayClientCertificate"


def has_access_keys(build: Build) -> bool:
    """Whether the build's template expects per-caller access keys (issue 13)."""
    try:
        templates = build.templates()
    except ApplyError:
        return False
    main = templates[0].template if templates else {}
    return arm.PARAM_ACCESS_GRANTS in (main.get("parameters") or {})


class KeysStep(Step):
    """Generate the platform's access keys once and keep them in Key Vault (keys.py)."""

    key, title = "keys", "Access keys in Key Vault"

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """Write what is missing; never print a key, only secret names."""
        del confirm  # creates secrets, deletes nothing
        from . import keys

        plan = StepPlan(self.key)
        main = ctx.build.templates()[0].template
        vault = next(
            (
                str(r["name"])
                for r in main.get("resources") or []
                if str(r.get("type", "")).lower() == _VAULT_TYPE
            ),
            None,
        )
        outputs = main.get("outputs") or {}
        apis = sorted((outputs.get("apis") or {}).get("value") or {})
        # The template names the certificate when some gateway asks for it (mutual TLS).
        gateway_cert = str((outputs.get(GATEWAY_CERT_OUTPUT) or {}).get("value") or "")
        if vault is None:
            plan.notes.append("the build has no Key Vault")
        elif ctx.options.plan or ctx.resource_group() is None:
            plan.notes.append(f"keys of APIM, Event Grid and {len(apis)} API(s) in {vault}")
            if gateway_cert:
                plan.notes.append(f"gateway client certificate {gateway_cert} in {vault}")
        else:
            for name in _ensure(ctx, keys, vault, apis, gateway_cert):
                plan.changes.append(PlannedChange(ApplyAction.CREATE, "Key Vault secret", name))
            if not plan.changes:
                plan.notes.append("access keys already in place")
        show_plan(ctx, plan)
        return plan


def _ensure(ctx: Context, keys: Any, vault: str, apis: list[str], gateway_cert: str) -> list[str]:
    """:func:`_ensure_once`, again while Key Vault refuses (403) until ``--ready-timeout``.

    The template grants the deployer its Key Vault roles in the deployment that has just
    finished; Azure takes minutes to honour a new role assignment, so a first run's 403
    is expected and passes. Every attempt is idempotent (keys.py writes what is missing).
    """
    o = ctx.options
    deadline = time.monotonic() + o.ready_timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            return _ensure_once(ctx, keys, vault, apis, gateway_cert)
        except keys.KeyVaultForbidden as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApplyError(
                    f"{exc} (still refused after {attempt} attempt(s) over --ready-timeout "
                    f"{o.ready_timeout:g}s; a role assigned moments ago can take minutes to "
                    "apply: rerun apply, or check the deployer's roles on the vault)"
                ) from None
            wait = min(o.retry.delay(attempt, None), left)
            ctx.console.say(
                f"  Key Vault {vault}: not allowed yet (a new role assignment takes minutes "
                f"to apply); trying again in {wait:.1f}s"
            )
            o.retry.sleep(wait)


def _ensure_once(
    ctx: Context, keys: Any, vault: str, apis: list[str], gateway_cert: str
) -> list[str]:
    o = ctx.options
    endpoint = o.key_vault_endpoint or f"https://{vault}.vault.azure.net"
    options: dict[str, Any] = {"connection_verify": o.connection_verify}
    if o.key_vault_endpoint:
        # The challenge names the cloud's vault audience, not the stand-in's host.
        options["verify_challenge_resource"] = False
    vault_secrets = keys.KeyVaultSecrets(endpoint, ctx.azure().credential, options)
    vault_certs = keys.KeyVaultCertificates(endpoint, ctx.azure().credential, options)
    store, certs = _Locking(vault_secrets, ctx), _Locking(vault_certs, ctx)
    try:
        written = list(keys.ensure_access_keys(store, apis))
        if gateway_cert:
            if gateway_cert != GATEWAY_CLIENT_CERT:
                raise ApplyError(
                    f"the build names gateway certificate {gateway_cert!r}, this ai4ec "
                    f"makes {GATEWAY_CLIENT_CERT!r}: rebuild with this version"
                )
            written += keys.ensure_gateway_certificate(
                certs, store, GATEWAY_CLIENT_CERT, GATEWAY_CLIENT_PEM_SECRET
            )
        return written
    finally:
        vault_secrets.close()
        vault_certs.close()


class _Locking:
    """A Key Vault store that takes the apply lock before its first write.

    Reads pass through: a run whose keys are all in place writes nothing and so takes
    no lock (docs/apply.md, Lock), while one that must write them holds it first, even
    when the azure step before had nothing to deploy.
    """

    def __init__(self, store: Any, ctx: Context) -> None:
        self._store, self._ctx = store, ctx

    def get(self, name: str) -> str | None:
        return cast(str | None, self._store.get(name))

    def public_der(self, name: str) -> bytes | None:
        return cast(bytes | None, self._store.public_der(name))

    def set(self, name: str, value: str) -> None:
        self._ctx.lock()
        self._store.set(name, value)

    def create_self_signed(self, name: str, subject: str) -> bytes:
        self._ctx.lock()
        return cast(bytes, self._store.create_self_signed(name, subject))
