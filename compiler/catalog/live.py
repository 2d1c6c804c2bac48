"""The catalog against a real subscription: ``ai4ec catalog refresh`` and the live quota check.

Both go through the Azure SDK clients (azure-mgmt-compute, azure-mgmt-containerservice,
azure-mgmt-resource-subscriptions), never hand-built HTTP, so authentication, paging,
retries and api-versions are the SDK's. The caller passes the credential and the client
options it already uses for ``apply`` (``base_url``, ``credential_scopes``,
``connection_verify``, ``retry_policy``...), so sovereign clouds and test servers work the
same way.

Refresh keeps what only documents know (retirement and end-of-life dates, prices,
replacements, sources) and takes from the APIs what they know better: the vCPUs, memory,
GPUs and family of each VM size, which Kubernetes minors and mesh revisions AKS offers,
and the regions. A version or revision the catalog still thought supported but AKS no
longer lists gets the refresh day as its end of life, so validation stops accepting it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .capacity import FamilyUsage, PoolDemand, check_quota, required_cores
from .data import Catalog, CatalogError, dump_catalog, load_catalog, minor_key, parse_catalog
from .rules import Finding

T = TypeVar("T")

#: GPU model as the size name spells it (Standard_NC24ads_A100_v4 -> A100).
_GPU_IN_NAME = re.compile(r"_(A100|H100|H200|GB200|MI300X|A10|T4|V100|P100|P40|M60|K80)(?:_|$)")
_ARM = "/subscriptions/{subscriptionId}"
LIVE_SOURCES = {
    "live-skus": ("resource SKUs (Microsoft.Compute)", f"{_ARM}/providers/Microsoft.Compute/skus"),
    "live-kubernetes": (
        "AKS Kubernetes versions",
        f"{_ARM}/providers/Microsoft.ContainerService/locations/{{location}}/kubernetesVersions",
    ),
    "live-mesh": (
        "AKS Istio add-on revisions",
        f"{_ARM}/providers/Microsoft.ContainerService/locations/{{location}}/meshRevisionProfiles",
    ),
    "live-locations": ("subscription locations", f"{_ARM}/locations"),
}


@dataclass
class RefreshResult:
    """The rewritten catalog document and what changed, for the CLI to print."""

    doc: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    #: Catalog sizes the location does not offer (kept: another region may).
    not_offered: list[str] = field(default_factory=list)


def _call(what: str, fn: Callable[[], T]) -> T:
    """Run one SDK call; an Azure error becomes a CatalogError with the service's words."""
    from azure.core.exceptions import AzureError, HttpResponseError

    try:
        return fn()
    except HttpResponseError as exc:
        code = getattr(getattr(exc, "error", None), "code", None) or exc.reason or ""
        message = getattr(getattr(exc, "error", None), "message", None) or ""
        raise CatalogError(
            f"Azure refused {what}: HTTP {exc.status_code} {code}: {message}".rstrip(": ")
        ) from None
    except AzureError as exc:
        raise CatalogError(f"Azure could not be reached for {what}: {exc.message}") from None


def fetch_usages(
    credential: Any, subscription_id: str, location: str, **client_options: Any
) -> list[FamilyUsage]:
    """The vCPU quota per VM family (and ``cores`` for the region), from the usages API."""
    from azure.mgmt.compute import ComputeManagementClient

    client = ComputeManagementClient(credential, subscription_id, **client_options)
    usages = _call(f"the compute usages of {location}", lambda: list(client.usage.list(location)))
    return [
        FamilyUsage(
            name=u.name.value or "",
            current=int(u.current_value or 0),
            limit=int(u.limit or 0),
            display_name=u.name.localized_value or "",
        )
        for u in usages
        if u.name is not None
    ]


def check_live_quota(
    credential: Any,
    subscription_id: str,
    location: str,
    pools: Iterable[PoolDemand],
    catalog: Catalog | None = None,
    **client_options: Any,
) -> list[Finding]:
    """``apply --plan``'s quota check: the pools' maxima against the family quotas now.

    Raises:
        CatalogError: Azure refused or could not be reached (message from the service).
    """
    cat = catalog or load_catalog()
    needs = required_cores(cat, pools)
    if not needs:
        return []
    return check_quota(
        fetch_usages(credential, subscription_id, location, **client_options), needs, location
    )


def _capabilities(sku: Any) -> dict[str, str]:
    return {c.name: c.value for c in (sku.capabilities or []) if c.name}


def _restricted(sku: Any) -> bool:
    return any(
        (r.reason_code or "") == "NotAvailableForSubscription" and (r.type or "") == "Location"
        for r in (sku.restrictions or [])
    )


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _refresh_sizes(doc: dict[str, Any], skus: Iterable[Any], result: RefreshResult) -> None:
    sizes: dict[str, Any] = doc["vmSizes"]
    by_lower = {n.lower(): n for n in sizes}
    seen: set[str] = set()
    for sku in skus:
        if (sku.resource_type or "") != "virtualMachines" or not sku.name or _restricted(sku):
            continue
        caps = _capabilities(sku)
        vcpus, memory = _number(caps.get("vCPUs")), _number(caps.get("MemoryGB"))
        gpus = int(_number(caps.get("GPUs")) or 0)
        if vcpus is None or memory is None:
            continue
        name = by_lower.get(sku.name.lower())
        live = {
            "vcpus": int(vcpus),
            "memoryGiB": int(memory) if memory.is_integer() else memory,
            "gpus": gpus,
            "family": sku.family or "",
        }
        if name is None:
            if gpus == 0:
                continue  # thousands of CPU sizes: only GPU sizes are worth listing unasked
            model = _GPU_IN_NAME.search(sku.name)
            sizes[sku.name] = {
                **live,
                "gpuModel": model.group(1) if model else None,
                "replacement": None,
                "retired": None,
                "sources": ["live-skus"],
                "usdPerHour": None,
            }
            result.changes.append(f"added VM size {sku.name}")
            seen.add(sku.name)
            continue
        seen.add(name)
        entry = sizes[name]
        changed = [k for k, v in live.items() if entry.get(k) != v]
        if changed:
            entry.update(live)
            if "live-skus" not in entry["sources"]:
                entry["sources"] = [*entry["sources"], "live-skus"]
            result.changes.append(f"VM size {name}: updated {', '.join(sorted(changed))}")
    result.not_offered = sorted(
        n for n, e in sizes.items() if n not in seen and e.get("retired") is None
    )


def _retire_unlisted(
    table: dict[str, Any],
    listed: set[str],
    key: Callable[[str], Any],
    today: dt.date,
    source: str,
    label: str,
    result: RefreshResult,
) -> None:
    """End, as of today, what the catalog thought open but the API no longer lists.

    Only entries older than the oldest listed one: a gap in the middle, or an empty
    answer, is no evidence of retirement.
    """
    if not listed:
        return
    oldest = min(key(n) for n in listed)
    for name, entry in table.items():
        end = entry.get("endOfLife")
        if name in listed or key(name) > oldest:
            continue
        # Open-ended, in the future, or only expected: the API now says it is gone.
        if end is None or dt.date.fromisoformat(end) > today or entry.get("approximate"):
            entry["endOfLife"] = today.isoformat()
            entry["approximate"] = False
            if source not in entry["sources"]:
                entry["sources"] = [*entry["sources"], source]
            result.changes.append(f"{label} {name}: no longer offered, end of life set to {today}")


def refresh_catalog(
    doc: Mapping[str, Any],
    *,
    credential: Any,
    subscription_id: str,
    location: str,
    today: dt.date,
    **client_options: Any,
) -> RefreshResult:
    """A new catalog document from ``doc`` and what the subscription's APIs say today.

    Args:
        doc: the current catalog document (``json.load`` of the file).
        credential: an azure-core ``TokenCredential``.
        subscription_id: the subscription to ask (it is not written into the catalog).
        location: the region whose VM sizes, Kubernetes versions and revisions to read.
        today: the refresh day, recorded as ``takenOn``.
        client_options: passed to every SDK client (``base_url``, ``credential_scopes``,
            ``connection_verify``, ``retry_policy``...).

    Raises:
        CatalogError: Azure refused a call or the result is not a valid catalog.
    """
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.containerservice import ContainerServiceClient
    from azure.mgmt.resource.subscriptions import SubscriptionClient

    new = deepcopy(dict(doc))
    result = RefreshResult(new)
    compute = ComputeManagementClient(credential, subscription_id, **client_options)
    aks = ContainerServiceClient(credential, subscription_id, **client_options)
    subscriptions = SubscriptionClient(credential, **client_options)
    location_filter = f"location eq '{location}'"

    skus = _call(
        f"the VM sizes (resource SKUs) of {location}",
        lambda: list(compute.resource_skus.list(filter=location_filter)),
    )
    versions = _call(
        f"the AKS Kubernetes versions of {location}",
        lambda: aks.managed_clusters.list_kubernetes_versions(location),
    )
    profiles = _call(
        f"the AKS mesh revisions of {location}",
        lambda: list(aks.managed_clusters.list_mesh_revision_profiles(location)),
    )
    locations = _call(
        "the subscription's locations",
        lambda: list(subscriptions.subscriptions.list_locations(subscription_id)),
    )

    _refresh_sizes(new, skus, result)

    kube: dict[str, Any] = new["kubernetesVersions"]
    offered: set[str] = set()
    for v in versions.values_property or []:
        key = minor_key(v.version or "")
        if key is None or v.is_preview:
            continue
        minor = f"{key[0]}.{key[1]}"
        offered.add(minor)
        if minor not in kube:
            kube[minor] = {
                "aksGa": today.strftime("%Y-%m"),
                "approximate": False,
                "endOfLife": None,
                "ltsEndOfLife": None,
                "sources": ["live-kubernetes"],
            }
            result.changes.append(f"added Kubernetes {minor}")
    _retire_unlisted(
        kube,
        offered,
        lambda m: minor_key(m) or (0, 0),
        today,
        "live-kubernetes",
        "Kubernetes",
        result,
    )

    mesh: dict[str, Any] = new["meshRevisions"]
    revisions: set[str] = set()
    for profile in profiles:
        for rev in getattr(profile.properties, "mesh_revisions", None) or []:
            if rev.revision:
                revisions.add(rev.revision)
                if rev.revision not in mesh:
                    mesh[rev.revision] = {
                        "approximate": False,
                        "endOfLife": None,
                        "released": today.strftime("%Y-%m"),
                        "sources": ["live-mesh"],
                    }
                    result.changes.append(f"added Istio revision {rev.revision}")

    def mesh_key(name: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)

    _retire_unlisted(mesh, revisions, mesh_key, today, "live-mesh", "Istio revision", result)

    regions = {
        loc.name: loc.display_name
        for loc in locations
        if loc.name
        and loc.display_name
        and (loc.metadata is None or (loc.metadata.region_type or "Physical") == "Physical")
    }
    if regions:
        before = set(new["regions"]["names"])
        added, gone = sorted(set(regions) - before), sorted(before - set(regions))
        if added or gone:
            result.changes.append(
                f"regions: +{len(added)} ({', '.join(added)}) -{len(gone)} ({', '.join(gone)})"
            )
        new["regions"] = {"names": dict(sorted(regions.items())), "sources": ["live-locations"]}

    for sid, (title, url) in LIVE_SOURCES.items():
        new["sources"][sid] = {"title": f"{title}, read on {today}", "url": url}
    new["takenOn"] = today.isoformat()
    new["refreshedFrom"] = f"Azure Resource Manager APIs, location {location}"
    used = _used_sources(new)
    new["sources"] = {k: v for k, v in new["sources"].items() if k in used}
    parse_catalog(new, "refreshed catalog")
    return result


def _used_sources(doc: Mapping[str, Any]) -> set[str]:
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "sources" and isinstance(v, list):
                    used.update(v)
                elif k != "sources":
                    walk(v)

    walk(doc)
    return used


def write_catalog(path: Path, doc: Mapping[str, Any]) -> None:
    """Write a catalog document canonically and atomically (a crash leaves the old file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_catalog(dict(doc)), encoding="utf-8")
    tmp.replace(path)


def refresh_file(
    path: Path | None,
    *,
    credential: Any,
    subscription_id: str,
    location: str,
    today: dt.date,
    write: bool = True,
    **client_options: Any,
) -> RefreshResult:
    """``ai4ec catalog refresh``: read the catalog file, refresh it, write it back.

    Args:
        path: the catalog to rewrite; ``None`` is the one shipped in ``compiler/data``.
        credential: an azure-core ``TokenCredential``.
        subscription_id: the subscription to ask.
        location: the region to read sizes, versions and revisions for.
        today: the refresh day.
        write: ``False`` for a dry run (``--plan``): compute and report, write nothing.
        client_options: passed to every SDK client.

    Raises:
        CatalogError: the file is unreadable or malformed, or Azure refused a call.
    """
    import json

    from .data import catalog_path, read_catalog

    target = path or catalog_path()
    read_catalog(target)  # a malformed file is reported as such, before any call
    doc = json.loads(target.read_text(encoding="utf-8"))
    result = refresh_catalog(
        doc,
        credential=credential,
        subscription_id=subscription_id,
        location=location,
        today=today,
        **client_options,
    )
    if write:
        write_catalog(target, result.doc)
    return result


@dataclass(frozen=True)
class LiveAsk:
    """What one build needs from the region, for ``apply --plan``'s live checks.

    Each value is paired with where it comes from (``cluster main, pool gpu``), so a
    finding names the place in platform.yaml a reader has to change.
    """

    vm_sizes: tuple[tuple[str, str], ...] = ()
    kubernetes: tuple[tuple[str, str], ...] = ()
    mesh: tuple[tuple[str, str], ...] = ()
    pools: tuple[PoolDemand, ...] = ()


def check_live(
    credential: Any,
    subscription_id: str,
    location: str,
    ask: LiveAsk,
    catalog: Catalog | None = None,
    **client_options: Any,
) -> list[Finding]:
    """``apply --plan``: the catalog rules against what the region offers right now.

    The dated catalog can be months old; a size can be restricted for this subscription,
    a Kubernetes minor or mesh revision can have left AKS, and quota is never in it. The
    codes are validate's (E-AZ-VM-SIZE, E-AZ-K8S-VERSION, E-AZ-MESH-REVISION, E-AZ-QUOTA),
    with messages that say the answer came from the live API.

    Raises:
        CatalogError: Azure refused or could not be reached (message from the service).
    """
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.containerservice import ContainerServiceClient

    from ..errors import Severity

    out: list[Finding] = []
    compute = ComputeManagementClient(credential, subscription_id, **client_options)
    aks = ContainerServiceClient(credential, subscription_id, **client_options)
    if ask.vm_sizes:
        skus = _call(
            f"the VM sizes (resource SKUs) of {location}",
            lambda: list(compute.resource_skus.list(filter=f"location eq '{location}'")),
        )
        offered = {
            (s.name or "").lower()
            for s in skus
            if (s.resource_type or "") == "virtualMachines" and not _restricted(s)
        }
        for where, size in ask.vm_sizes:
            if size.lower() not in offered:
                out.append(
                    Finding(
                        "E-AZ-VM-SIZE",
                        Severity.ERROR,
                        f"{where}: VM size {size} is not offered to this subscription in "
                        f"{location} (live resource SKUs)",
                        "pick a size the region offers (az vm list-skus -l "
                        f"{location}) or ask Azure support to lift the restriction",
                    )
                )
    if ask.kubernetes:
        versions = _call(
            f"the AKS Kubernetes versions of {location}",
            lambda: aks.managed_clusters.list_kubernetes_versions(location),
        )
        minors: dict[str, set[str]] = {}
        for v in versions.values_property or []:
            key = minor_key(v.version or "")
            if key is None or v.is_preview:
                continue
            patches = set((v.patch_versions or {}).keys())
            minors[f"{key[0]}.{key[1]}"] = patches
        for where, version in ask.kubernetes:
            key = minor_key(version)
            minor = f"{key[0]}.{key[1]}" if key else version
            patch_ok = version.count(".") < 2 or version in minors.get(minor, set())
            if minor not in minors or not patch_ok:
                offered_text = ", ".join(sorted(minors, key=lambda m: minor_key(m) or (0, 0)))
                out.append(
                    Finding(
                        "E-AZ-K8S-VERSION",
                        Severity.ERROR,
                        f"{where}: Kubernetes {version} is not offered by AKS in {location} "
                        "(live list of versions)",
                        f"use one of {offered_text}" if offered_text else "",
                    )
                )
    if ask.mesh:
        profiles = _call(
            f"the AKS mesh revisions of {location}",
            lambda: list(aks.managed_clusters.list_mesh_revision_profiles(location)),
        )
        revisions = {
            rev.revision
            for profile in profiles
            for rev in getattr(profile.properties, "mesh_revisions", None) or []
            if rev.revision
        }
        for where, revision in ask.mesh:
            if revision not in revisions:
                out.append(
                    Finding(
                        "E-AZ-MESH-REVISION",
                        Severity.ERROR,
                        f"{where}: Istio add-on revision {revision} is not offered by AKS in "
                        f"{location} (live mesh revision profiles)",
                        f"use {' or '.join(sorted(revisions))}" if revisions else "",
                    )
                )
    if ask.pools:
        out.extend(
            check_live_quota(
                credential, subscription_id, location, ask.pools, catalog, **client_options
            )
        )
    return out
