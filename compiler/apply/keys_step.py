"""The ``keys`` step: the platform's access keys, generated once and kept in Key Vault.

It runs after the ``azure`` step (the vault exists then) and before ``access``, whose
role assignments on single secrets need the secrets to exist. Keys are never printed,
logged or planned: only secret names appear (keys.py holds the rules).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ..errors import ApplyError
from ..model.naming import GATEWAY_CLIENT_CERT, GATEWAY_CLIENT_PEM_SECRET
from . import arm
from .builddir import Build
from .context import ENVIRONMENT_TAG, PLATFORM_TAG, Context
from .options import Confirm
from .plan import ApplyAction, PlannedChange, StepPlan
from .steps import Step, confirm_step, show_plan

_T = TypeVar("_T")
_VAULT_TYPE = "microsoft.keyvault/vaults"
_SECRET_TYPE = "microsoft.keyvault/vaults/secrets"
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
        """Write what is missing; with ``--prune``, delete what the build dropped.

        Never prints a key, only secret names.
        """
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
            if ctx.options.prune and ctx.resource_group() is not None:
                # A preview reads once and never waits: before the first deployment the
                # vault, or the deployer's role on it, may not exist yet.
                try:
                    plan.changes.extend(_deletions(_prunable(ctx, keys, vault)))
                except ApplyError as exc:
                    plan.notes.append(f"prune cannot list the vault's secrets yet: {exc}")
        else:
            for name in _retry_forbidden(
                ctx, vault, lambda: _ensure_once(ctx, keys, vault, apis, gateway_cert)
            ):
                plan.changes.append(PlannedChange(ApplyAction.CREATE, "Key Vault secret", name))
            if ctx.options.prune:
                stale = _retry_forbidden(ctx, vault, lambda: _prunable(ctx, keys, vault))
                plan.changes.extend(_deletions(stale))
            if not plan.changes:
                plan.notes.append("access keys already in place")
        show_plan(ctx, plan)
        deletions = plan.destructive
        if deletions and vault is not None and not ctx.options.plan:
            # Held to a saved plan and confirmed as deletions alone: the writes above are
            # idempotent and not previewed (a plan lists no key's creation).
            confirm_step(ctx, StepPlan(self.key, deletions), confirm)
            _delete(ctx, keys, vault, [c.name for c in deletions])
        return plan


def _deletions(names: list[str]) -> list[PlannedChange]:
    return [PlannedChange(ApplyAction.DELETE, "Key Vault secret", n) for n in names]


def kept_secrets(build: Build, vault: str, apis: list[str], gateway_cert: str) -> set[str]:
    """Every secret of ``vault`` that this build declares (templates) or writes (keys.py).

    Raises:
        ApplyError: a template names a secret of the vault with an expression, so what
            the build keeps cannot be known (prune would guess).
    """
    from . import keys

    kept = {keys.ACCESS_KEYS_SECRET, keys.APIM_KEY_SECRET, keys.EVENT_GRID_KEY_SECRET}
    kept.update(keys.api_key_secret(a) for a in apis)
    if gateway_cert:
        kept.add(GATEWAY_CLIENT_PEM_SECRET)
    for t in build.templates():
        for r in t.template.get("resources") or []:
            if str(r.get("type", "")).lower() != _SECRET_TYPE:
                continue
            name = str(r.get("name", ""))
            parent, _, secret = name.partition("/")
            if name.startswith("[") or not secret:
                raise ApplyError(
                    f"{t.name}: Key Vault secret {name!r} is not a plain name; prune "
                    "cannot tell which secrets the build keeps"
                )
            if parent.lower() == vault.lower():
                kept.add(secret)
    return kept


def _secret_store(ctx: Context, keys: Any, vault: str) -> Any:
    """The vault's secrets, written with the template's ownership tags (keys.py)."""
    o = ctx.options
    endpoint = o.key_vault_endpoint or f"https://{vault}.vault.azure.net"
    options: dict[str, Any] = {"connection_verify": o.connection_verify}
    if o.key_vault_endpoint:
        # The challenge names the cloud's vault audience, not the stand-in's host.
        options["verify_challenge_resource"] = False
    main = ctx.build.templates()[0].template
    tags = (main.get("variables") or {}).get("tags")
    owner = {
        k: str(tags[k])
        for k in (PLATFORM_TAG, ENVIRONMENT_TAG)
        if isinstance(tags, dict) and isinstance(tags.get(k), str)
    }
    if len(owner) != 2:
        owner = {}  # without both, nothing is marked and nothing is ever pruned
    return keys.KeyVaultSecrets(endpoint, ctx.azure().credential, options, tags=owner)


def _prunable(ctx: Context, keys: Any, vault: str) -> list[str]:
    """Secrets tagged as this platform environment's that the build no longer has."""
    main = ctx.build.templates()[0].template
    outputs = main.get("outputs") or {}
    apis = sorted((outputs.get("apis") or {}).get("value") or {})
    gateway_cert = str((outputs.get(GATEWAY_CERT_OUTPUT) or {}).get("value") or "")
    kept = kept_secrets(ctx.build, vault, apis, gateway_cert)
    store = _secret_store(ctx, keys, vault)
    try:
        return [n for n in store.owned() if n not in kept]
    finally:
        store.close()


def _delete(ctx: Context, keys: Any, vault: str, names: list[str]) -> None:
    ctx.lock()
    store = _secret_store(ctx, keys, vault)
    try:
        for name in names:
            store.delete(name)
            ctx.console.say(f"  deleted Key Vault secret {name} (recoverable while soft-deleted)")
    finally:
        store.close()


def _retry_forbidden(ctx: Context, vault: str, work: Callable[[], _T]) -> _T:
    """``work()``, again while Key Vault refuses (403) until ``--ready-timeout``.

    The template grants the deployer its Key Vault roles in the deployment that has just
    finished; Azure takes minutes to honour a new role assignment, so a first run's 403
    is expected and passes. Every attempt is idempotent (keys.py writes what is missing;
    a listing only reads).
    """
    from . import keys

    o = ctx.options
    deadline = time.monotonic() + o.ready_timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            return work()
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
    vault_secrets = _secret_store(ctx, keys, vault)
    vault_certs = keys.KeyVaultCertificates(endpoint, ctx.azure().credential, options)
    store, certs = _Locking(vault_secrets, ctx), _Locking(vault_certs, ctx)
    try:
        written = list(keys.ensure_access_keys(store, apis))
        # Holder secrets an earlier ai4ec wrote without the owner tags get them, so that
        # prune can find them once the build drops them (their value is not rewritten).
        for name in sorted(set(vault_secrets.untagged) - set(written)):
            ctx.lock()
            vault_secrets.tag(name)
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
