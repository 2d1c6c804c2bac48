"""``catalog refresh`` and the live quota check, through the real Azure SDK clients.

There is no Azure Resource Manager offline, so the real clients (azure-mgmt-compute,
azure-mgmt-containerservice, azure-mgmt-resource-subscriptions) talk to a local HTTPS
server that answers the four ARM reads the way ARM does - paged ``value``/``nextLink``
lists, the containerservice ``values`` envelope - and refuses what ARM refuses: an
api-version it does not serve (400 InvalidApiVersionParameter), a missing or wrong
bearer token (401 AuthenticationFailed), another subscription (404
SubscriptionNotFound), an unknown location (400 NoRegisteredProviderFound) and an
unknown path (404). It records every request, so the tests also assert what was sent.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai4ec.catalog import PoolDemand, load_catalog, parse_catalog
from ai4ec.catalog.data import CatalogError, catalog_path, dump_catalog
from ai4ec.catalog.live import check_live_quota, fetch_usages, refresh_catalog, write_catalog

from ..apply.support import (
    ARM_AUDIENCE,
    TOKENS,
    FakeCredential,
    FakeServer,
    Request,
    Response,
    Tls,
    make_tls,
)

SUB = "11111111-2222-3333-4444-555555555555"
LOCATION = "westeurope"
TODAY = dt.date(2026, 12, 5)
#: What ARM serves for each read; the SDK versions pinned in setup.cfg must use these.
API = {
    "skus": "2021-07-01",
    "usages": "2026-04-01",
    "kubernetesVersions": "2026-08-01",
    "meshRevisionProfiles": "2026-08-01",
    "locations": "2022-12-01",
}


def sku(name: str, family: str, vcpus: int, memory: float, gpus: int = 0, **extra: Any) -> Any:
    caps = [{"name": "vCPUs", "value": str(vcpus)}, {"name": "MemoryGB", "value": str(memory)}]
    if gpus:
        caps.append({"name": "GPUs", "value": str(gpus)})
    return {
        "resourceType": "virtualMachines",
        "name": name,
        "tier": "Standard",
        "family": family,
        "locations": [LOCATION],
        "locationInfo": [{"location": LOCATION, "zones": ["1", "2"]}],
        "capabilities": caps,
        "restrictions": [],
        **extra,
    }


class FakeArm(FakeServer):
    """The ARM reads behind ``catalog refresh`` and the quota check."""

    name = "arm"

    def __init__(self, tls: Tls) -> None:
        super().__init__(tls)
        self.skus: list[Any] = [
            sku("Standard_D4s_v5", "standardDSv5Family", 4, 16),
            sku("Standard_NC4as_T4_v3", "standardNCASv3_T4Family", 4, 28, 1),
            sku("Standard_NC24ads_A100_v4", "StandardNCADSA100v4Family", 24, 220, 1),
            sku("Standard_NC40ads_H100_v5", "StandardNCadsH100v5Family", 40, 320, 1),
            # New GPU size: listed. New CPU size: not (thousands of them).
            sku("Standard_NC8ads_A10_v4", "StandardNCADSA10v4Family", 8, 110, 1),
            sku("Standard_D2as_v6", "standardDASv6Family", 2, 8),
            # Offered in the region but not to this subscription: ignored.
            sku(
                "Standard_NC80adis_H100_v5",
                "StandardNCadsH100v5Family",
                80,
                640,
                2,
                restrictions=[
                    {
                        "type": "Location",
                        "values": [LOCATION],
                        "reasonCode": "NotAvailableForSubscription",
                    }
                ],
            ),
            {"resourceType": "disks", "name": "Premium_LRS", "locations": [LOCATION]},
        ]
        self.versions = ["1.35", "1.36", "1.37"]
        self.preview = ["1.38"]
        self.revisions = ["asm-1-29", "asm-1-30", "asm-1-31"]
        self.usages = [
            ("cores", "Total Regional vCPUs", 10, 100),
            ("standardNCASv3_T4Family", "Standard NCASv3_T4 Family vCPUs", 8, 24),
            ("standardDSv5Family", "Standard DSv5 Family vCPUs", 2, 50),
        ]
        self.locations = {
            "westeurope": "West Europe",
            "swedencentral": "Sweden Central",
            "newregion1": "New Region 1",
        }

    def _error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"error": {"code": code, "message": message}})

    def handle(self, req: Request) -> Response:
        if req.method != "GET":
            return self._error(405, "MethodNotAllowed", f"{req.method} is not allowed here")
        if req.headers.get("authorization") != f"Bearer {TOKENS[f'{ARM_AUDIENCE}.default']}":
            self.violate(f"GET {req.path}: no ARM bearer token")
            return self._error(401, "AuthenticationFailed", "Authentication failed.")
        parts = req.path.strip("/").split("/")
        if parts[:2] != ["subscriptions", SUB]:
            self.violate(f"GET {req.path}: not the subscription asked for")
            return self._error(404, "SubscriptionNotFound", f"The subscription {parts[1:2]}")
        kind = parts[-1]
        want = API.get(kind)
        if want is None:
            self.violate(f"GET {req.path}: no such ARM read")
            return self._error(404, "InvalidResourceType", f"no resource type {kind}")
        if req.query.get("api-version") != want:
            self.violate(f"GET {req.path}: api-version {req.query.get('api-version')} != {want}")
            return self._error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{req.query.get('api-version')}' is invalid.",
            )
        if kind in {"usages", "kubernetesVersions", "meshRevisionProfiles"}:
            if parts[-2] not in self.locations:
                return self._error(
                    400, "NoRegisteredProviderFound", f"No registered provider for {parts[-2]}"
                )
        return getattr(self, f"_{kind}")(req)

    def _skus(self, req: Request) -> Response:
        if req.query.get("$filter") != f"location eq '{LOCATION}'":
            self.violate(f"skus: $filter {req.query.get('$filter')!r}")
        # Two pages, as ARM pages large lists; the SDK must follow nextLink.
        half = len(self.skus) // 2
        if req.query.get("$skiptoken") == "page2":
            return Response(200, {"value": self.skus[half:]})
        next_link = (
            f"{self.url}/subscriptions/{SUB}/providers/Microsoft.Compute/skus"
            f"?api-version={API['skus']}&$filter=location eq '{LOCATION}'&$skiptoken=page2"
        )
        return Response(200, {"value": self.skus[:half], "nextLink": next_link})

    def _usages(self, req: Request) -> Response:
        value = [
            {
                "unit": "Count",
                "currentValue": current,
                "limit": limit,
                "name": {"value": name, "localizedValue": shown},
            }
            for name, shown, current, limit in self.usages
        ]
        return Response(200, {"value": value})

    def _kubernetesVersions(self, req: Request) -> Response:  # noqa: N802 - ARM's name
        values = [
            {
                "version": v,
                "isPreview": v in self.preview,
                "isDefault": v == "1.36",
                "capabilities": {"supportPlan": ["KubernetesOfficial", "AKSLongTermSupport"]},
                "patchVersions": {f"{v}.2": {"upgrades": []}},
            }
            for v in [*self.versions, *self.preview]
        ]
        return Response(200, {"values": values})

    def _meshRevisionProfiles(self, req: Request) -> Response:  # noqa: N802 - ARM's name
        revs = [
            {
                "revision": r,
                "upgrades": [],
                "compatibleWith": [{"name": "kubernetes", "versions": self.versions}],
            }
            for r in self.revisions
        ]
        profile = {
            "id": f"/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/"
            f"{LOCATION}/meshRevisionProfiles/istio",
            "name": "istio",
            "type": "Microsoft.ContainerService/locations/meshRevisionProfiles",
            "properties": {"meshRevisions": revs},
        }
        return Response(200, {"value": [profile]})

    def _locations(self, req: Request) -> Response:
        value = [
            {
                "id": f"/subscriptions/{SUB}/locations/{name}",
                "name": name,
                "type": "Region",
                "displayName": shown,
                "regionalDisplayName": f"(Europe) {shown}",
                "metadata": {"regionType": "Physical", "regionCategory": "Recommended"},
            }
            for name, shown in self.locations.items()
        ]
        value.append(
            {
                "id": f"/subscriptions/{SUB}/locations/europe",
                "name": "europe",
                "displayName": "Europe",
                "metadata": {"regionType": "Logical", "regionCategory": "Other"},
            }
        )
        return Response(200, {"value": value})


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def arm(tls: Tls) -> Iterator[FakeArm]:
    server = FakeArm(tls)
    yield server
    server.close()


def options(arm: FakeArm, tls: Tls) -> dict[str, Any]:
    """What apply's Azure wrapper passes its SDK clients, pointed at the fake."""
    return {
        "base_url": arm.url,
        "credential_scopes": [f"{ARM_AUDIENCE}.default"],
        "connection_verify": str(tls.ca_file),
        "retry_total": 0,
    }


def current_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(catalog_path().read_text())
    return doc


def test_refresh_rewrites_the_catalog_from_the_apis(arm: FakeArm, tls: Tls, tmp_path: Path) -> None:
    before = current_doc()
    result = refresh_catalog(
        before,
        credential=FakeCredential(),
        subscription_id=SUB,
        location=LOCATION,
        today=TODAY,
        **options(arm, tls),
    )
    assert arm.violations == []
    assert [(r.path.rsplit("/", 1)[-1], r.query.get("$skiptoken")) for r in arm.requests] == [
        ("skus", None),
        ("skus", "page2"),
        ("kubernetesVersions", None),
        ("meshRevisionProfiles", None),
        ("locations", None),
    ]
    doc = result.doc
    assert before == current_doc()  # the input is not modified
    assert doc["takenOn"] == "2026-12-05"
    assert doc["refreshedFrom"] == "Azure Resource Manager APIs, location westeurope"
    assert SUB not in dump_catalog(doc)  # the subscription is not written anywhere
    cat = parse_catalog(doc)
    # Sizes: a new GPU size is added with its model from the name; CPU ones are not.
    a10 = cat.vm_sizes["Standard_NC8ads_A10_v4"]
    assert (a10.vcpus, a10.memory_gib, a10.gpus, a10.gpu_model) == (8, 110.0, 1, "A10")
    assert a10.sources == ("live-skus",)
    assert "Standard_D2as_v6" not in cat.vm_sizes
    # Restricted for the subscription: not counted as offered, not changed.
    assert "Standard_NC80adis_H100_v5" in result.not_offered
    assert "Standard_NC4as_T4_v3" not in result.not_offered
    # What only documents know survives: retirement, replacement, price.
    nc6 = cat.vm_sizes["Standard_NC6s_v3"]
    assert (nc6.retired, nc6.replacement) == (dt.date(2025, 9, 30), "Standard_NC24ads_A100_v4")
    assert cat.vm_sizes["Standard_NC4as_T4_v3"].usd_per_hour == 0.526
    # Versions: preview 1.38 is not added; nothing AKS still offers is ended.
    assert "1.38" not in cat.kubernetes
    assert cat.kubernetes["1.35"].end_of_life == dt.date(2027, 3, 31)
    # Revisions: the new one is added, an open-ended one AKS stopped listing is ended today.
    assert cat.mesh["asm-1-31"].end_of_life is None
    assert "Istio revision asm-1-28: no longer offered, end of life set to 2026-12-05" in (
        result.changes
    )
    assert cat.mesh["asm-1-28"].end_of_life == TODAY
    assert cat.mesh["asm-1-25"].end_of_life == dt.date(2026, 1, 31)  # already past: kept
    # Regions: the physical ones the subscription sees, logical ones dropped.
    assert set(cat.regions) == {"westeurope", "swedencentral", "newregion1"}
    assert "added Istio revision asm-1-31" in result.changes
    assert set(cat.sources) >= {"live-skus", "live-mesh", "live-locations", "ncv3-retirement"}
    assert "regions" not in cat.sources  # no longer cited by anything
    # Written canonically; refreshing again with the same answers changes nothing.
    path = tmp_path / "azure-catalog.json"
    write_catalog(path, doc)
    again = refresh_catalog(
        json.loads(path.read_text()),
        credential=FakeCredential(),
        subscription_id=SUB,
        location=LOCATION,
        today=TODAY,
        **options(arm, tls),
    )
    assert dump_catalog(again.doc) == path.read_text()
    assert not [c for c in again.changes if "added" in c]


def test_refresh_errors_are_the_services_words(arm: FakeArm, tls: Tls) -> None:
    arm.fail(
        "GET",
        r"/kubernetesVersions$",
        403,
        body={
            "error": {
                "code": "AuthorizationFailed",
                "message": "The client does not have authorization",
            }
        },
    )
    with pytest.raises(CatalogError) as info:
        refresh_catalog(
            current_doc(),
            credential=FakeCredential(),
            subscription_id=SUB,
            location=LOCATION,
            today=TODAY,
            **options(arm, tls),
        )
    assert str(info.value) == (
        "Azure refused the AKS Kubernetes versions of westeurope: HTTP 403 "
        "AuthorizationFailed: The client does not have authorization"
    )
    with pytest.raises(CatalogError, match=r"HTTP 400 NoRegisteredProviderFound"):
        fetch_usages(FakeCredential(), SUB, "atlantis", **options(arm, tls))


def test_fake_refuses_what_arm_refuses(arm: FakeArm, tls: Tls) -> None:
    """The fake is strict: a wrong token or api-version fails, as on ARM."""
    from azure.core.credentials import AccessToken

    class WrongToken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("not-the-token", 2**31)

    with pytest.raises(CatalogError, match=r"HTTP 401 AuthenticationFailed"):
        fetch_usages(WrongToken(), SUB, LOCATION, **options(arm, tls))
    import requests

    token = TOKENS[f"{ARM_AUDIENCE}.default"]
    url = f"{arm.url}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/{LOCATION}/usages"
    old = requests.get(
        url,
        params={"api-version": "2015-01-01"},
        headers={"Authorization": f"Bearer {token}"},
        verify=str(tls.ca_file),
        timeout=10,
    )
    assert old.status_code == 400
    assert old.json()["error"]["code"] == "InvalidApiVersionParameter"
    assert len(arm.violations) == 2  # both refusals are recorded, as they should be
    arm.violations.clear()


def test_live_quota_check(arm: FakeArm, tls: Tls) -> None:
    cat = load_catalog()
    pools = [
        PoolDemand("main", "gpu", "Standard_NC4as_T4_v3", 6),  # 24 vCPUs, 16 free
        PoolDemand("main", "system", "Standard_D4s_v5", 3),
    ]
    findings = check_live_quota(FakeCredential(), SUB, LOCATION, pools, cat, **options(arm, tls))
    assert arm.violations == []
    [usage_call] = arm.requests
    assert usage_call.path == (
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/{LOCATION}/usages"
    )
    assert [f.message for f in findings] == [
        "pools main/gpu need up to 24 vCPUs of standardNCASv3_T4Family in westeurope; "
        "the quota is 24 with 8 in use (16 free)"
    ]
    arm.reset_log()
    assert check_live_quota(FakeCredential(), SUB, LOCATION, [], cat, **options(arm, tls)) == []
    assert arm.requests == []  # nothing to check: no call


def test_refresh_result_is_still_a_valid_catalog_when_apis_return_little(
    arm: FakeArm, tls: Tls
) -> None:
    arm.skus, arm.revisions, arm.versions, arm.preview = [], [], [], []
    result = refresh_catalog(
        copy.deepcopy(current_doc()),
        credential=FakeCredential(),
        subscription_id=SUB,
        location=LOCATION,
        today=TODAY,
        **options(arm, tls),
    )
    cat = parse_catalog(result.doc)
    # Nothing listed is no evidence of retirement: dates stay as documented.
    assert cat.kubernetes["1.36"].end_of_life == dt.date(2027, 6, 30)
    assert cat.mesh["asm-1-30"].end_of_life is None
    assert len(cat.vm_sizes) == len(load_catalog().vm_sizes)


def test_refresh_file_and_dry_run(arm: FakeArm, tls: Tls, tmp_path: Path) -> None:
    from ai4ec.catalog.live import refresh_file

    path = tmp_path / "azure-catalog.json"
    path.write_text(catalog_path().read_text())
    kwargs: dict[str, Any] = {
        "credential": FakeCredential(),
        "subscription_id": SUB,
        "location": LOCATION,
        "today": TODAY,
        **options(arm, tls),
    }
    dry = refresh_file(path, write=False, **kwargs)
    assert path.read_text() == catalog_path().read_text()
    assert dry.changes
    refresh_file(path, **kwargs)
    assert path.read_text() == dump_catalog(dry.doc)
    path.write_text("{}")
    arm.reset_log()
    with pytest.raises(CatalogError, match=r"azure-catalog\.json: \$\.takenOn: missing"):
        refresh_file(path, **kwargs)
    assert arm.requests == []  # refused before asking Azure anything


def test_check_live_against_the_region(arm: FakeArm, tls: Tls) -> None:
    """apply --plan's live checks: restricted/unknown sizes, versions, revisions, quota."""
    from ai4ec.catalog.live import LiveAsk, check_live

    ask = LiveAsk(
        vm_sizes=(
            ("cluster main, pool system", "Standard_D4s_v5"),
            ("cluster main, pool big", "Standard_NC80adis_H100_v5"),  # restricted here
            ("cluster main, pool old", "Standard_NC6s_v3"),  # not offered at all
        ),
        kubernetes=(("cluster main", "1.36"), ("cluster b", "1.36.2"), ("cluster c", "1.33")),
        mesh=(("cluster main", "asm-1-30"), ("cluster c", "asm-1-25")),
        pools=(PoolDemand("main", "gpu", "Standard_NC4as_T4_v3", 6),),
    )
    findings = check_live(FakeCredential(), SUB, LOCATION, ask, load_catalog(), **options(arm, tls))
    assert arm.violations == []
    assert [(f.code, f.message) for f in findings] == [
        (
            "E-AZ-VM-SIZE",
            "cluster main, pool big: VM size Standard_NC80adis_H100_v5 is not offered to this "
            "subscription in westeurope (live resource SKUs)",
        ),
        (
            "E-AZ-VM-SIZE",
            "cluster main, pool old: VM size Standard_NC6s_v3 is not offered to this "
            "subscription in westeurope (live resource SKUs)",
        ),
        (
            "E-AZ-K8S-VERSION",
            "cluster c: Kubernetes 1.33 is not offered by AKS in westeurope (live list of "
            "versions)",
        ),
        (
            "E-AZ-MESH-REVISION",
            "cluster c: Istio add-on revision asm-1-25 is not offered by AKS in westeurope "
            "(live mesh revision profiles)",
        ),
        (
            "E-AZ-QUOTA",
            "pools main/gpu need up to 24 vCPUs of standardNCASv3_T4Family in westeurope; "
            "the quota is 24 with 8 in use (16 free)",
        ),
    ]
    assert findings[2].hint == "use one of 1.35, 1.36, 1.37"  # previews are not offered
    kinds = sorted({r.path.rpartition("/")[2] for r in arm.requests})
    assert kinds == ["kubernetesVersions", "meshRevisionProfiles", "skus", "usages"]
    arm.reset_log()
    assert check_live(FakeCredential(), SUB, LOCATION, LiveAsk(), **options(arm, tls)) == []
    assert arm.requests == []  # nothing asked: no call


def test_live_ask_asks_quota_for_each_gpu_pool_at_its_maximum() -> None:
    """`apply --plan`'s live check asks for the GPU pools' most nodes, not their minimum.

    camera-trap has two A100 pools (autoscale 0..4 and 1..2) and a CPU pool: the quota
    demand must be the two GPU pools at 4 and 2 nodes, and nothing for the CPU pool.
    """
    from ai4ec.apply.livecheck import live_ask
    from ai4ec.pipeline import check_platform, require_ok

    from ..conftest import ROOT

    (platform,) = require_ok(check_platform(ROOT / "samples" / "camera-trap" / "platform.yaml"))
    ask = live_ask(platform)
    assert sorted((p.pool, p.vm_size, p.max_nodes) for p in ask.pools) == [
        ("gpu", "Standard_NC24ads_A100_v4", 4),
        ("gpusync", "Standard_NC24ads_A100_v4", 2),
    ]
    assert ("cluster main, pool cpu", "Standard_DS3_v2") in ask.vm_sizes
