"""Soft-deleted Key Vaults: why a destroyed platform could not be created again, and the fix.

Key Vault keeps a deleted vault (soft delete) for its retention period, and its name
stays taken for that time, globally. ai4ec's vault names are deterministic (the same
platform.yaml gives the same name), so an ``apply`` after a ``destroy`` would meet
``ConflictError``/``VaultAlreadyExists`` for up to 90 days. Two ways out, both used:

* ``apply`` looks for a soft-deleted vault of each name before deploying and, when it
  finds one, deploys with ``vaultCreateMode=recover``: the template sets the vault's
  ``createMode`` from that parameter, and Azure restores the vault (its secrets too,
  which the deployment then overwrites). This works whether or not purge protection is on.
* ``destroy`` purges a vault it deleted when purge protection is off (Azure refuses a
  purge while it is on), so the name is free at once.

The deleted-vault API (``Microsoft.KeyVault/locations/<loc>/deletedVaults/<name>``) is
addressed through the resource client's pipeline, like the deployments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import ApplyError

#: Template parameter that sets the vault's ``createMode`` (``default`` or ``recover``).
PARAM_CREATE_MODE = "vaultCreateMode"
RECOVER, DEFAULT = "recover", "default"
VAULT_TYPE = "microsoft.keyvault/vaults"
#: API version of the deleted-vault calls when the template names none.
VAULT_API = "2023-07-01"


@dataclass(frozen=True, slots=True)
class VaultRef:
    """A Key Vault the build's template declares."""

    name: str
    api_version: str
    #: Whether the template turns purge protection on.
    purge_protection: bool


def template_vaults(template: dict[str, Any]) -> list[VaultRef]:
    """Vaults with a literal name in an ARM template, in template order."""
    out: list[VaultRef] = []
    for r in template.get("resources") or []:
        name = str(r.get("name", ""))
        if str(r.get("type", "")).lower() != VAULT_TYPE or name.startswith("["):
            continue
        props = r.get("properties") or {}
        out.append(
            VaultRef(
                name,
                str(r.get("apiVersion") or VAULT_API),
                props.get("enablePurgeProtection") is True,
            )
        )
    return out


def _path(az: Any, location: str, name: str) -> str:
    return (
        f"/subscriptions/{az.subscription_id}/providers/Microsoft.KeyVault"
        f"/locations/{location}/deletedVaults/{name}"
    )


def deleted_vault(az: Any, location: str, name: str, api: str = VAULT_API) -> dict[str, Any] | None:
    """The soft-deleted vault ``name`` in ``location`` (its ``properties``), or None."""
    what = f"deleted Key Vault {name} in {location}"
    response = az._send(what, "GET", _path(az, location, name), api=api)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise ApplyError(f"{what}: HTTP {response.status_code}: {az._response_error(response)}")
    try:
        body = response.json()
    except ValueError:
        body = None
    props = body.get("properties") if isinstance(body, dict) else None
    return dict(props) if isinstance(props, dict) else {}


def purge_vault(
    az: Any, location: str, name: str, api: str = VAULT_API, timeout: float = 1800.0
) -> None:
    """Purge the soft-deleted vault ``name`` for good, waiting for the operation.

    Azure refuses this while purge protection is on; the caller checks first.
    """
    what = f"purge of deleted Key Vault {name} in {location}"
    response = az._send(what, "POST", _path(az, location, name) + "/purge", {}, api)
    deadline = time.monotonic() + timeout
    while response.status_code == 202:
        location_url = response.headers.get("Azure-AsyncOperation") or response.headers.get(
            "Location"
        )
        if not location_url:
            return
        if time.monotonic() > deadline:
            raise ApplyError(f"{what}: not finished after {timeout:.0f}s")
        az._sleep(response.headers.get("Retry-After"))
        response = az._get_absolute(what, location_url)
        if response.status_code == 200:
            try:
                status = str((response.json() or {}).get("status", "Succeeded"))
            except ValueError:
                status = "Succeeded"
            if status.lower() in ("inprogress", "running"):
                response.status_code = 202  # keep polling the same URL
                continue
            if status.lower() != "succeeded":
                raise ApplyError(f"{what}: {status}")
    if response.status_code not in (200, 202, 204):
        raise ApplyError(f"{what}: HTTP {response.status_code}: {az._response_error(response)}")


def create_mode_overrides(
    az: Any, template: dict[str, Any], location: str, overrides: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``{vaultCreateMode: recover}`` when a vault of the template is soft-deleted.

    Returns the parameter values to add and one line per vault to recover. Nothing when
    the template does not declare the parameter (an older build) or ``-p`` sets it.
    """
    declared = template.get("parameters") or {}
    if PARAM_CREATE_MODE not in declared or PARAM_CREATE_MODE in overrides:
        return {}, []
    lines: list[str] = []
    for vault in template_vaults(template):
        gone = deleted_vault(az, location, vault.name, vault.api_version)
        if gone is not None:
            until = gone.get("scheduledPurgeDate") or "its purge date"
            lines.append(
                f"Key Vault {vault.name} is soft-deleted (kept until {until}): "
                f"deploying with {PARAM_CREATE_MODE}={RECOVER} to recover it"
            )
    return ({PARAM_CREATE_MODE: RECOVER} if lines else {}), lines
