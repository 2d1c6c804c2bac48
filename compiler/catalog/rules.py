"""Pure lookups over the catalog that model rules turn into diagnostics.

Each check returns a :class:`Finding` (or ``None`` when all is well) rather than a
:class:`~ai4ec.errors.Diagnostic`, because only the model knows where in platform.yaml
the value came from; the rule adds file, line and column. Dates are passed in (never
``today()`` here), so a check gives the same answer in a test, in CI and a year later
against the same catalog.

Policy (issue 12): a retired size or version, an unknown region or an unknown name is an
error with a did-you-mean and the current replacement; one that retires within
:data:`WARN_DAYS` days is a warning.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import Diagnostic, Severity
from .data import CacheOffer, Catalog, VmSize, minor_key

#: A retirement this close is a warning: time enough to migrate, too close to ignore.
WARN_DAYS = 90
_MESH = re.compile(r"^asm-(\d+)-(\d+)$")


@dataclass(frozen=True)
class Finding:
    """One problem with a value, before the model gives it a location."""

    code: str
    severity: Severity
    message: str
    hint: str = ""

    def at(
        self, file: str = "", line: int | None = None, col: int | None = None, json_path: str = "$"
    ) -> Diagnostic:
        """The diagnostic a model rule reports, located where the value was written."""
        return Diagnostic(
            code=self.code,
            message=self.message,
            file=file,
            line=line,
            col=col,
            json_path=json_path,
            hint=self.hint,
            severity=self.severity,
        )


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches of ``word``, compared case-insensitively, in their real spelling."""
    by_lower: dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[c] for c in close]


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = did_you_mean(word, candidates)
    return f"did you mean {' or '.join(close)}?" if close else ""


def _join(*parts: str) -> str:
    # "did you mean X?; run ..." reads badly: a question ends its own sentence.
    return "; ".join(p for p in parts if p).replace("?; ", "? ")


# ------------------------------------------------------------------------------ VM sizes


def find_vm_size(catalog: Catalog, name: str) -> VmSize | None:
    """The size named ``name`` (ARM treats size names case-insensitively), or None."""
    size = catalog.vm_sizes.get(name)
    if size is not None:
        return size
    lower = name.lower()
    return next((s for n, s in catalog.vm_sizes.items() if n.lower() == lower), None)


def current_replacement(catalog: Catalog, size: VmSize, on: dt.date) -> VmSize | None:
    """Where to move from ``size``: its replacement, followed while that one is retired too."""
    seen = {size.name}
    current = size
    while current.replacement is not None and current.replacement not in seen:
        nxt = catalog.vm_sizes[current.replacement]
        if nxt.retired is None or nxt.retired > on:
            return nxt
        seen.add(nxt.name)
        current = nxt
    return None


def describe_size(size: VmSize) -> str:
    """``Standard_NC24ads_A100_v4 (24 vCPU, 220 GiB, 1 A100 GPU)`` for messages."""
    gpu = f", {size.gpus} {size.gpu_model or ''} GPU".replace("  ", " ") if size.gpus else ""
    return f"{size.name} ({size.vcpus} vCPU, {size.memory_gib:g} GiB{gpu})"


def check_vm_size(catalog: Catalog, name: str, on: dt.date) -> Finding | None:
    """Unknown or retired size -> error; retiring within :data:`WARN_DAYS` -> warning."""
    size = find_vm_size(catalog, name)
    if size is None:
        return Finding(
            "E-AZ-VM-SIZE",
            Severity.ERROR,
            f"VM size {name!r} is not in the Azure catalog (taken {catalog.taken_on})",
            _join(
                _suggest(name, catalog.vm_sizes),
                "run `ai4ec catalog refresh` if Azure added it since",
            ),
        )
    if size.retired is None:
        return None
    new = current_replacement(catalog, size, on)
    move = f"use {describe_size(new)}" if new is not None else ""
    if size.retired <= on:
        return Finding(
            "E-AZ-VM-SIZE-RETIRED",
            Severity.ERROR,
            f"VM size {size.name} was retired on {size.retired}: Azure deallocates it",
            move,
        )
    left = (size.retired - on).days
    if left <= WARN_DAYS:
        return Finding(
            "W-AZ-VM-SIZE-RETIRING",
            Severity.WARNING,
            f"VM size {size.name} retires on {size.retired} ({left} days from {on})",
            move,
        )
    return None


# ------------------------------------------------------------- versions and revisions


def supported_kubernetes(catalog: Catalog, on: dt.date, lts: bool = False) -> list[str]:
    """Minors GA on ``on`` and supported beyond :data:`WARN_DAYS` days, oldest first."""
    month = on.strftime("%Y-%m")
    out = []
    for v in catalog.kubernetes.values():
        end = v.lts_end_of_life if lts and v.lts_end_of_life else v.end_of_life
        if (
            v.aks_ga is not None
            and v.aks_ga <= month
            and (end is None or (end - on).days > WARN_DAYS)
        ):
            out.append(v.minor)
    return sorted(out, key=lambda m: minor_key(m) or (0, 0))


def check_kubernetes_version(
    catalog: Catalog, version: str, on: dt.date, lts: bool = False
) -> Finding | None:
    """AKS support of ``version`` (``1.35`` or ``1.35.2``) on ``on``.

    Args:
        catalog: the catalog.
        version: the platform's ``kubernetesVersion``.
        on: the day to judge (the build's date; rules pass it in).
        lts: the cluster is on the Premium tier with Long Term Support, so LTS dates count.
    """
    key = minor_key(version)
    supported = supported_kubernetes(catalog, on, lts)
    use = f"use {supported[0]}" if supported else ""
    if len(supported) > 1:
        use += f" (supported until later: {', '.join(supported[1:])})"
    if key is None:
        return Finding(
            "E-AZ-K8S-VERSION",
            Severity.ERROR,
            f"{version!r} is not a Kubernetes version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH)",
            use,
        )
    minor = f"{key[0]}.{key[1]}"
    info = catalog.kubernetes.get(minor)
    if info is None:
        known = sorted((minor_key(m) or (0, 0) for m in catalog.kubernetes), reverse=True)
        if known and key < known[-1]:
            return Finding(
                "E-AZ-K8S-RETIRED",
                Severity.ERROR,
                f"Kubernetes {minor} is older than every version AKS still lists",
                use,
            )
        return Finding(
            "W-AZ-K8S-UNKNOWN",
            Severity.WARNING,
            f"Kubernetes {minor} is not in the Azure catalog (taken {catalog.taken_on}); "
            "it may be a preview",
            _join(use, "run `ai4ec catalog refresh` to update the catalog"),
        )
    end = info.lts_end_of_life if lts and info.lts_end_of_life else info.end_of_life
    if end is None:
        return None
    label = "LTS" if lts and info.lts_end_of_life else "AKS support"
    if end < on:
        if info.approximate:
            return Finding(
                "W-AZ-K8S-RETIRING",
                Severity.WARNING,
                f"Kubernetes {minor} has probably left {label} (expected end {end})",
                use,
            )
        lts_hint = (
            f"LTS (Premium tier) covers it until {info.lts_end_of_life}"
            if not lts and info.lts_end_of_life and info.lts_end_of_life > on
            else ""
        )
        return Finding(
            "E-AZ-K8S-RETIRED",
            Severity.ERROR,
            f"Kubernetes {minor} left {label} on {end}: AKS refuses new clusters on it",
            _join(use, lts_hint),
        )
    left = (end - on).days
    if left <= WARN_DAYS:
        return Finding(
            "W-AZ-K8S-RETIRING",
            Severity.WARNING,
            f"Kubernetes {minor} leaves {label} on {end} ({left} days from {on})",
            use,
        )
    return None


def _mesh_key(name: str) -> tuple[int, int] | None:
    m = _MESH.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def supported_mesh(catalog: Catalog, on: dt.date) -> list[str]:
    """Revisions released by ``on`` whose end is unknown or beyond :data:`WARN_DAYS` days."""
    month = on.strftime("%Y-%m")
    out = [
        r.name
        for r in catalog.mesh.values()
        if (r.released is None or r.released <= month)
        and (r.end_of_life is None or (r.end_of_life - on).days > WARN_DAYS)
    ]
    return sorted(out, key=lambda n: _mesh_key(n) or (0, 0))


def check_mesh_revision(catalog: Catalog, revision: str, on: dt.date) -> Finding | None:
    """Support of an Istio add-on revision (``asm-1-NN``) on ``on``."""
    supported = supported_mesh(catalog, on)
    use = f"use {' or '.join(supported)}" if supported else ""
    key = _mesh_key(revision)
    if key is None:
        return Finding(
            "E-AZ-MESH-REVISION",
            Severity.ERROR,
            f"{revision!r} is not an Istio add-on revision (expected asm-1-NN)",
            _join(_suggest(revision, catalog.mesh), use),
        )
    info = catalog.mesh.get(revision)
    if info is None:
        known = sorted((_mesh_key(n) or (0, 0)) for n in catalog.mesh)
        if known and key < known[0]:
            return Finding(
                "E-AZ-MESH-RETIRED",
                Severity.ERROR,
                f"Istio revision {revision} is older than every revision AKS still lists",
                use,
            )
        return Finding(
            "W-AZ-MESH-UNKNOWN",
            Severity.WARNING,
            f"Istio revision {revision} is not in the Azure catalog (taken {catalog.taken_on})",
            _join(use, "run `ai4ec catalog refresh` to update the catalog"),
        )
    if info.end_of_life is None:
        return None
    if info.end_of_life < on:
        if info.approximate:
            return Finding(
                "W-AZ-MESH-RETIRING",
                Severity.WARNING,
                f"Istio revision {revision} has probably left support "
                f"(expected end {info.end_of_life})",
                use,
            )
        return Finding(
            "E-AZ-MESH-RETIRED",
            Severity.ERROR,
            f"Istio revision {revision} left support on {info.end_of_life}",
            use,
        )
    left = (info.end_of_life - on).days
    if left <= WARN_DAYS:
        return Finding(
            "W-AZ-MESH-RETIRING",
            Severity.WARNING,
            f"Istio revision {revision} leaves support on {info.end_of_life} ({left} days)",
            use,
        )
    return None


# --------------------------------------------------------------------------- regions


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def check_region(catalog: Catalog, name: str) -> Finding | None:
    """Unknown region -> error with a did-you-mean (a display name gets its ARM name)."""
    if name in catalog.regions:
        return None
    by_squash = {_squash(r.display_name): r.name for r in catalog.regions.values()}
    by_squash.update({_squash(r.name): r.name for r in catalog.regions.values()})
    exact = by_squash.get(_squash(name))
    if exact is not None:
        return Finding(
            "E-AZ-REGION",
            Severity.ERROR,
            f"region {name!r} must be written as its ARM name {exact!r}",
            f"use {exact}",
        )
    return Finding(
        "E-AZ-REGION",
        Severity.ERROR,
        f"{name!r} is not an Azure region (catalog taken {catalog.taken_on})",
        _suggest(name, catalog.regions),
    )


# ---------------------------------------------------------------------------- caches


def find_cache_offer(catalog: Catalog, sku: str) -> CacheOffer | None:
    """The offer that sells ``sku`` (``Balanced_B0``, ``Standard_C1``...), or None."""
    lower = sku.lower()
    return next(
        (c for c in catalog.caches.values() if any(s.lower() == lower for s in c.skus)), None
    )


def check_cache_sku(catalog: Catalog, sku: str, on: dt.date) -> Finding | None:
    """A legacy Azure Cache for Redis SKU -> warning (error once retired); unknown -> error."""
    offer = find_cache_offer(catalog, sku)
    if offer is None:
        every = [s for c in catalog.caches.values() for s in c.skus]
        return Finding(
            "E-AZ-CACHE-SKU",
            Severity.ERROR,
            f"cache SKU {sku!r} is not offered by Azure Managed Redis or Azure Cache for Redis",
            _suggest(sku, every),
        )
    if offer.retired is None:
        return None
    successor = catalog.caches.get(offer.replacement or "")
    move = (
        f"use Azure Managed Redis ({successor.resource_type}), e.g. {successor.skus[0]}"
        if successor is not None and successor.skus
        else ""
    )
    if offer.retired <= on:
        return Finding(
            "E-AZ-CACHE-RETIRED",
            Severity.ERROR,
            f"{offer.resource_type} SKU {sku} was retired on {offer.retired}",
            move,
        )
    blocked = (
        f"; tenants without one before {offer.new_tenants_blocked_from} may be unable to create it"
        if offer.new_tenants_blocked_from is not None and offer.new_tenants_blocked_from <= on
        else ""
    )
    return Finding(
        "W-AZ-CACHE-LEGACY",
        Severity.WARNING,
        f"{offer.resource_type} SKU {sku} retires on {offer.retired}{blocked}",
        move,
    )
