"""``$(azure:<path>)`` placeholders in Kubernetes objects, filled from ARM outputs.

Some values of the cluster's objects exist only once Azure has created the resources (the
client id of the AKS Key Vault add-on identity, the tenant). The Kubernetes target writes
them as ``$(azure:<path>)`` (docs/contracts.md), ``apply`` reads ``<path>`` in the
deployment's outputs (``clusters.main.keyVaultProviderClientId`` is
``outputs.clusters.value.main.keyVaultProviderClientId``) and refuses to send any object
that still holds one it could not fill: a literal ``$(azure:...)`` in a
SecretProviderClass would make every pod mount fail later, far from the cause.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ApplyError

PLACEHOLDER = re.compile(r"\$\(azure:([A-Za-z0-9_.-]+)\)")


def normalize_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """Plain ``{name: value}`` from ARM's ``{name: {type, value}}`` (either form accepted)."""
    out: dict[str, Any] = {}
    for key, val in (outputs or {}).items():
        if isinstance(val, dict) and "value" in val and set(val) <= {"type", "value", "metadata"}:
            out[key] = val["value"]
        else:
            out[key] = val
    return out


def lookup(outputs: dict[str, Any], path: str) -> str | None:
    """The string at ``path`` (dot-separated) in plain outputs, or None when absent/empty.

    ARM output names are case-insensitive, so are the lookups at the first level.
    """
    head, *rest = path.split(".")
    node: Any = next((v for k, v in outputs.items() if k.lower() == head.lower()), None)
    for key in rest:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if node is None or isinstance(node, (dict, list)):
        return None
    text = str(node).lower() if isinstance(node, bool) else str(node)
    return text or None


def object_label(obj: dict[str, Any]) -> str:
    """``Kind namespace/name`` (``Kind name`` when cluster-scoped)."""
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    name = md.get("name", "?")
    return f"{obj.get('kind', '?')} {ns}/{name}" if ns else f"{obj.get('kind', '?')} {name}"


def placeholders_in(value: Any) -> list[str]:
    """Every placeholder path inside ``value``, in order of appearance."""
    found: list[str] = []
    if isinstance(value, str):
        found.extend(PLACEHOLDER.findall(value))
    elif isinstance(value, dict):
        for k, v in value.items():
            found.extend(placeholders_in(k))
            found.extend(placeholders_in(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(placeholders_in(v))
    return found


def _fill(value: Any, outputs: dict[str, Any], missing: list[str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            got = lookup(outputs, m.group(1))
            if got is None:
                missing.append(m.group(1))
                return m.group(0)
            return got

        return PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {_fill(k, outputs, missing): _fill(v, outputs, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, outputs, missing) for v in value]
    return value


def resolve(obj: dict[str, Any], outputs: dict[str, Any] | None) -> dict[str, Any]:
    """``obj`` with every placeholder filled from plain ``outputs``.

    Raises:
        ApplyError: a placeholder has no (or an empty) value; the message names the
            object and every placeholder left.
    """
    missing: list[str] = []
    filled = _fill(obj, outputs or {}, missing)
    if missing:
        names = ", ".join(f"$(azure:{p})" for p in dict.fromkeys(missing))
        where = (
            "the Azure deployment has no such output (or it is empty)"
            if outputs is not None
            else "no Azure deployment outputs are available (deploy --target azure first, "
            "or pass --outputs FILE)"
        )
        raise ApplyError(
            f"{object_label(obj)}: unresolved placeholder {names}: {where}; refusing to send it"
        )
    result: dict[str, Any] = filled
    return result
