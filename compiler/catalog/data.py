"""The dated Azure catalog (``compiler/data/azure-catalog.json``) as typed, frozen data.

Validation must not be written from memory: Azure retires VM sizes, Kubernetes minors and
mesh revisions on published dates, and a platform that was valid last year can be refused
today. The catalog holds those facts with the day they were taken and, for every entry, the
ids of the sources it came from, so a reviewer can re-check it and ``ai4ec catalog refresh``
can rewrite it from a subscription. This module only parses; the rules that use it live in
:mod:`ai4ec.catalog.rules` and :mod:`ai4ec.catalog.capacity`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import Ai4ecError
from ..resources import data_dir

#: File name of the catalog inside ``compiler/data``.
CATALOG_FILE = "azure-catalog.json"


class CatalogError(Ai4ecError):
    """The catalog file is missing, not JSON, or breaks its own shape."""


@dataclass(frozen=True)
class Source:
    """Where facts came from: a page, a release note or an API."""

    id: str
    title: str
    url: str


@dataclass(frozen=True)
class VmSize:
    """One VM size with what capacity rules need (per node)."""

    name: str
    vcpus: int
    memory_gib: float
    gpus: int
    gpu_model: str | None
    #: Resource-SKU family; quota (compute usages) is counted per family, in vCPUs.
    family: str
    #: Day Azure retired (deallocates) the size, or ``None`` while it is offered.
    retired: dt.date | None
    #: The size to move to when retired (Microsoft's recommendation where it names one).
    replacement: str | None
    usd_per_hour: float | None
    sources: tuple[str, ...]


@dataclass(frozen=True)
class KubernetesVersion:
    """One Kubernetes minor version as AKS supports it."""

    minor: str
    aks_ga: str | None
    #: Last day of AKS community support (new clusters are refused after it).
    end_of_life: dt.date | None
    #: Last day of Long Term Support (Premium tier only), if AKS offers LTS for it.
    lts_end_of_life: dt.date | None
    #: True when the source gives the date as expected, not fixed.
    approximate: bool
    sources: tuple[str, ...]


@dataclass(frozen=True)
class MeshRevision:
    """One Istio add-on revision (``asm-1-NN``)."""

    name: str
    released: str | None
    end_of_life: dt.date | None
    approximate: bool
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Region:
    """An Azure region: ARM name (``westeurope``) and display name (``West Europe``)."""

    name: str
    display_name: str


@dataclass(frozen=True)
class CacheOffer:
    """A Redis offer: Azure Managed Redis, or a legacy Azure Cache for Redis tier set."""

    key: str
    resource_type: str
    skus: tuple[str, ...]
    retired: dt.date | None
    replacement: str | None
    #: Tenants without such a cache before this day may be unable to create one.
    new_tenants_blocked_from: dt.date | None
    tls_port: int | None
    sources: tuple[str, ...]


@dataclass(frozen=True)
class NodeReservations:
    """What AKS keeps back on every node (kube-reserved and the eviction threshold)."""

    #: Host cores -> reserved millicores, as AKS documents them.
    cpu_by_cores: tuple[tuple[int, int], ...]
    #: First minor with the per-pod memory formula (older ones use ``legacy_fractions``).
    memory_formula_from: str
    per_pod_mib: int
    base_mib: int
    max_fraction: float
    eviction_mib: int
    #: Regressive scale before ``memory_formula_from``: (GiB band or None for the rest, fraction).
    legacy_fractions: tuple[tuple[float | None, float], ...]
    legacy_eviction_mib: int
    default_max_pods: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """The whole catalog; mappings are keyed by exact (Azure-cased) name."""

    taken_on: dt.date
    refreshed_from: str | None
    sources: Mapping[str, Source]
    vm_sizes: Mapping[str, VmSize]
    kubernetes: Mapping[str, KubernetesVersion]
    mesh: Mapping[str, MeshRevision]
    regions: Mapping[str, Region]
    caches: Mapping[str, CacheOffer]
    node: NodeReservations


class _Reader:
    """Typed field access that names the file and JSON path of whatever is wrong."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.where}: {path}: {problem}")

    def obj(self, node: Any, path: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise self.fail(path, "expected an object")
        return node

    def field(self, node: dict[str, Any], key: str, path: str) -> Any:
        if key not in node:
            raise self.fail(f"{path}.{key}", "missing")
        return node[key]

    def string(self, node: dict[str, Any], key: str, path: str, optional: bool = False) -> Any:
        value = node.get(key) if optional else self.field(node, key, path)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(f"{path}.{key}", "expected a non-empty string")
        return value

    def integer(self, node: dict[str, Any], key: str, path: str, optional: bool = False) -> Any:
        value = node.get(key) if optional else self.field(node, key, path)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{path}.{key}", "expected a non-negative integer")
        return value

    def number(self, node: dict[str, Any], key: str, path: str, optional: bool = False) -> Any:
        value = node.get(key) if optional else self.field(node, key, path)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(f"{path}.{key}", "expected a non-negative number")
        return value

    def day(self, node: dict[str, Any], key: str, path: str) -> dt.date | None:
        value = node.get(key)
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            raise self.fail(f"{path}.{key}", f"expected a YYYY-MM-DD date, got {value!r}") from None

    def source_ids(
        self, node: dict[str, Any], path: str, known: Mapping[str, Source]
    ) -> tuple[str, ...]:
        ids = self.field(node, "sources", path)
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise self.fail(f"{path}.sources", "expected a non-empty list of source ids")
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise self.fail(f"{path}.sources", f"unknown source id(s) {', '.join(unknown)}")
        return tuple(ids)


def parse_catalog(doc: Any, where: str = CATALOG_FILE) -> Catalog:
    """Check and convert a catalog document (as ``json.load`` returns it).

    Raises:
        CatalogError: the first problem, named by file and JSON path.
    """
    r = _Reader(where)
    root = r.obj(doc, "$")
    taken = r.day(root, "takenOn", "$")
    if taken is None:
        raise r.fail("$.takenOn", "missing: a catalog without its date cannot be trusted")
    sources: dict[str, Source] = {}
    for sid, raw_source in r.obj(r.field(root, "sources", "$"), "$.sources").items():
        src = r.obj(raw_source, f"$.sources.{sid}")
        p = f"$.sources.{sid}"
        sources[sid] = Source(sid, r.string(src, "title", p), r.string(src, "url", p))

    sizes: dict[str, VmSize] = {}
    for name, raw in r.obj(r.field(root, "vmSizes", "$"), "$.vmSizes").items():
        p = f"$.vmSizes.{name}"
        s = r.obj(raw, p)
        sizes[name] = VmSize(
            name=name,
            vcpus=r.integer(s, "vcpus", p),
            memory_gib=float(r.number(s, "memoryGiB", p)),
            gpus=r.integer(s, "gpus", p),
            gpu_model=r.string(s, "gpuModel", p, optional=True),
            family=r.string(s, "family", p),
            retired=r.day(s, "retired", p),
            replacement=r.string(s, "replacement", p, optional=True),
            usd_per_hour=r.number(s, "usdPerHour", p, optional=True),
            sources=r.source_ids(s, p, sources),
        )
    for size in sizes.values():
        if size.replacement is not None and size.replacement not in sizes:
            raise r.fail(f"$.vmSizes.{size.name}.replacement", f"{size.replacement} is not listed")

    kube: dict[str, KubernetesVersion] = {}
    for minor, raw in r.obj(
        r.field(root, "kubernetesVersions", "$"), "$.kubernetesVersions"
    ).items():
        p = f"$.kubernetesVersions.{minor}"
        if minor_key(minor) is None:
            raise r.fail(p, "a key must be a minor version such as 1.35")
        k = r.obj(raw, p)
        kube[minor] = KubernetesVersion(
            minor=minor,
            aks_ga=r.string(k, "aksGa", p, optional=True),
            end_of_life=r.day(k, "endOfLife", p),
            lts_end_of_life=r.day(k, "ltsEndOfLife", p),
            approximate=bool(k.get("approximate", False)),
            sources=r.source_ids(k, p, sources),
        )

    mesh: dict[str, MeshRevision] = {}
    for name, raw in r.obj(r.field(root, "meshRevisions", "$"), "$.meshRevisions").items():
        p = f"$.meshRevisions.{name}"
        m = r.obj(raw, p)
        mesh[name] = MeshRevision(
            name=name,
            released=r.string(m, "released", p, optional=True),
            end_of_life=r.day(m, "endOfLife", p),
            approximate=bool(m.get("approximate", False)),
            sources=r.source_ids(m, p, sources),
        )

    reg = r.obj(r.field(root, "regions", "$"), "$.regions")
    r.source_ids(reg, "$.regions", sources)
    names = r.obj(r.field(reg, "names", "$.regions"), "$.regions.names")
    regions = {
        n: Region(n, r.string(names, n, "$.regions.names")) for n in names if isinstance(n, str)
    }

    caches: dict[str, CacheOffer] = {}
    for key, raw in r.obj(r.field(root, "caches", "$"), "$.caches").items():
        p = f"$.caches.{key}"
        c = r.obj(raw, p)
        skus_raw = r.field(c, "skus", p)
        if isinstance(skus_raw, dict):
            skus = tuple(f"{tier}_{s}" for tier, names_ in sorted(skus_raw.items()) for s in names_)
        elif isinstance(skus_raw, list):
            skus = tuple(skus_raw)
        else:
            raise r.fail(f"{p}.skus", "expected a list, or an object of lists per tier")
        caches[key] = CacheOffer(
            key=key,
            resource_type=r.string(c, "resourceType", p),
            skus=skus,
            retired=r.day(c, "retired", p),
            replacement=r.string(c, "replacement", p, optional=True),
            new_tenants_blocked_from=r.day(c, "newTenantsBlockedFrom", p),
            tls_port=r.integer(c, "tlsPort", p, optional=True),
            sources=r.source_ids(c, p, sources),
        )

    n = r.obj(r.field(root, "nodeReservations", "$"), "$.nodeReservations")
    p = "$.nodeReservations"
    cpu = r.obj(r.field(n, "cpuReservedMillicoresByCores", p), f"{p}.cpuReservedMillicoresByCores")
    mem = r.obj(r.field(n, "memory", p), f"{p}.memory")
    before = r.obj(r.field(mem, "before", f"{p}.memory"), f"{p}.memory.before")
    try:
        cpu_by_cores = tuple(sorted((int(k), int(v)) for k, v in cpu.items()))
        legacy = tuple(
            (None if band is None else float(band), float(frac))
            for band, frac in before["regressiveFractions"]
        )
    except (KeyError, TypeError, ValueError):
        raise r.fail(p, "cpu table or regressive memory scale is malformed") from None
    node = NodeReservations(
        cpu_by_cores=cpu_by_cores,
        memory_formula_from=r.string(mem, "fromKubernetes", f"{p}.memory"),
        per_pod_mib=r.integer(mem, "kubeReservedPerPodMiB", f"{p}.memory"),
        base_mib=r.integer(mem, "kubeReservedBaseMiB", f"{p}.memory"),
        max_fraction=float(r.number(mem, "kubeReservedMaxFraction", f"{p}.memory")),
        eviction_mib=r.integer(mem, "evictionThresholdMiB", f"{p}.memory"),
        legacy_fractions=legacy,
        legacy_eviction_mib=r.integer(before, "evictionThresholdMiB", f"{p}.memory.before"),
        default_max_pods=r.integer(n, "defaultMaxPods", p),
        sources=r.source_ids(n, p, sources),
    )
    refreshed = root.get("refreshedFrom")
    return Catalog(
        taken_on=taken,
        refreshed_from=refreshed if isinstance(refreshed, str) else None,
        sources=sources,
        vm_sizes=sizes,
        kubernetes=kube,
        mesh=mesh,
        regions=regions,
        caches=caches,
        node=node,
    )


def minor_key(version: str) -> tuple[int, int] | None:
    """``"1.35"`` or ``"1.35.2"`` -> (1, 35); anything else -> None."""
    parts = version.strip().lstrip("v").split(".")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def catalog_path() -> Path:
    """The catalog shipped with ai4ec."""
    return data_dir() / CATALOG_FILE


def read_catalog(path: Path) -> Catalog:
    """Load and check a catalog file.

    Raises:
        CatalogError: unreadable, not JSON, or malformed (with file, line or path).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the Azure catalog: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    return parse_catalog(doc, str(path))


@cache
def load_catalog() -> Catalog:
    """The shipped catalog, parsed once per process (it never changes while running)."""
    return read_catalog(catalog_path())


def dump_catalog(doc: dict[str, Any]) -> str:
    """Canonical text of a catalog document: sorted keys, one-space indent, final newline.

    Deterministic so that a refresh that finds nothing new leaves the file byte-identical.
    """
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
