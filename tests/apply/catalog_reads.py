"""The four ARM reads behind ``apply --plan``'s live catalog checks, for the apply fake.

:class:`support.FakeAzure` routes ``/subscriptions/<sub>/providers/Microsoft.Compute/...``
and ``.../Microsoft.ContainerService/locations/...`` here. By default the region offers
what the dated catalog lists (every size with generous quota, every Kubernetes minor and
mesh revision), so the samples plan clean; tests restrict a size, drop a version or a
revision, or shrink a family's quota. Requests are checked like ARM checks them: the
api-version the pinned SDKs use (the same table as ``tests/catalog/test_live.py``), the
``$filter`` of the SKU list, the location; anything else is a violation and a 404.
"""

from __future__ import annotations

from typing import Any

from ai4ec.catalog import load_catalog

#: api-versions of the pinned azure-mgmt-compute / -containerservice clients.
API = {
    "skus": "2021-07-01",
    "usages": "2026-04-01",
    "kubernetesVersions": "2026-08-01",
    "meshRevisionProfiles": "2026-08-01",
}


class CatalogReads:
    """Resource SKUs, usages, Kubernetes versions and mesh revisions of one region."""

    def __init__(self, location: str = "eastus") -> None:
        cat = load_catalog()
        self.location = location
        #: name -> (family, vCPUs, memory GiB, GPUs) offered to the subscription.
        self.sizes = {
            n: (s.family, s.vcpus, s.memory_gib, s.gpus)
            for n, s in cat.vm_sizes.items()
            if s.retired is None
        }
        self.restricted: set[str] = set()
        self.versions = list(cat.kubernetes)
        self.revisions = list(cat.mesh)
        families = sorted({s[0] for s in self.sizes.values()})
        #: family (or "cores") -> (current, limit)
        self.usages: dict[str, tuple[int, int]] = {f: (0, 1000) for f in families}
        self.usages["cores"] = (0, 10000)

    def handle(self, fake: Any, req: Any) -> Any:
        from .support import Response

        def refuse(status: int, code: str, message: str) -> Any:
            fake.violate(f"{req.method} {req.path}: {message}")
            return Response(status, {"error": {"code": code, "message": message}})

        if req.method != "GET":
            return refuse(405, "MethodNotAllowed", f"{req.method} is not allowed here")
        kind = req.path.rstrip("/").rpartition("/")[2]
        want = API.get(kind)
        if want is None:
            return refuse(404, "InvalidResourceType", f"no ARM read {kind}")
        if req.query.get("api-version") != want:
            return refuse(400, "InvalidApiVersionParameter", f"api-version != {want}")
        if kind == "skus":
            if req.query.get("$filter") != f"location eq '{self.location}'":
                return refuse(400, "InvalidFilter", f"$filter {req.query.get('$filter')!r}")
            return Response(200, {"value": [self._sku(n, *v) for n, v in self.sizes.items()]})
        if req.path.split("/")[-2] != self.location:
            return refuse(400, "NoRegisteredProviderFound", "not the platform's location")
        if kind == "usages":
            value = [
                {
                    "unit": "Count",
                    "currentValue": cur,
                    "limit": lim,
                    "name": {"value": n, "localizedValue": f"{n} vCPUs"},
                }
                for n, (cur, lim) in self.usages.items()
            ]
            return Response(200, {"value": value})
        if kind == "kubernetesVersions":
            values = [
                {"version": v, "isPreview": False, "patchVersions": {f"{v}.2": {"upgrades": []}}}
                for v in self.versions
            ]
            return Response(200, {"values": values})
        revs = [{"revision": r, "upgrades": [], "compatibleWith": []} for r in self.revisions]
        profile = {
            "id": f"{req.path}/istio",
            "name": "istio",
            "type": "Microsoft.ContainerService/locations/meshRevisionProfiles",
            "properties": {"meshRevisions": revs},
        }
        return Response(200, {"value": [profile]})

    def _sku(self, name: str, family: str, vcpus: int, memory: float, gpus: int) -> Any:
        caps = [
            {"name": "vCPUs", "value": str(vcpus)},
            {"name": "MemoryGB", "value": str(memory)},
            {"name": "GPUs", "value": str(gpus)},
        ]
        restrictions = (
            [
                {
                    "type": "Location",
                    "values": [self.location],
                    "reasonCode": "NotAvailableForSubscription",
                }
            ]
            if name in self.restricted
            else []
        )
        return {
            "resourceType": "virtualMachines",
            "name": name,
            "family": family,
            "locations": [self.location],
            "capabilities": caps,
            "restrictions": restrictions,
        }
