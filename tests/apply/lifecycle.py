"""An ARM fake that also deletes: generic resource GET/DELETE, deployment records with
``outputResources``, and Key Vault soft delete as Azure does it.

It extends :class:`support.FakeAzure` (every check of apply's fake still holds) with:

* ``GET``/``DELETE`` of any resource a deployment created, at the api-version of the
  template that created it (anything else is a violation); deleting a parent deletes its
  children; an App Service plan that still has a site is refused (409), as Azure does.
* ``GET`` of a deployment lists its ``outputResources`` (extension resources by their
  ``<scope>/providers/<type>/<name>`` id); ``DELETE`` removes the record.
* Key Vault soft delete: a deleted vault goes to ``deletedVaults`` (global names); a
  deployment that creates a vault of a soft-deleted name without ``createMode: recover``
  fails with ``ConflictError`` (as ARM's ``VaultAlreadyExists``), ``recover`` of a name
  that is not soft-deleted fails too; ``purge`` is refused while purge protection is on.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .support import (
    ARM_API,
    LISTS,
    FakeAzure,
    Request,
    Response,
    Tls,
    resource_path,
    type_of,
)

_DELETED = re.compile(
    r"^/subscriptions/([^/]+)/providers/Microsoft\.KeyVault/locations/([^/]+)"
    r"/deletedVaults/([^/]+)(/purge)?$"
)
_SITE_ROUTES = re.compile(
    r"/providers/Microsoft\.(Web/sites|Storage/storageAccounts|ContainerService/managedClusters)/"
    r"[^/]+(/.*)?$"
)
_APIM_CHILD = re.compile(r"/providers/Microsoft\.ApiManagement/service/[^/]+/.+$")
#: Published Microsoft.KeyVault api-versions (before a template names the one in use).
KEYVAULT_APIS = frozenset({"2023-07-01", "2024-11-01", "2025-05-01", "2026-02-01"})
SOFT_DELETED_MESSAGE = (
    "A vault with the same name already exists in deleted state. You need to either recover "
    "or purge existing key vault."
)


class FakeArmLifecycle(FakeAzure):
    """:class:`FakeAzure` plus deletion, deployment records and soft-deleted vaults."""

    name = "azure-lifecycle"

    def __init__(self, tls: Tls, subscription: str) -> None:
        super().__init__(tls, subscription)
        #: Vault name (lower) -> deleted-vault properties.
        self.deleted_vaults: dict[str, dict[str, Any]] = {}
        #: Resource type (lower) -> apiVersion of the template that deployed it.
        self.type_api: dict[str, str] = {}
        self.purged: list[str] = []
        self.recovered: list[str] = []
        #: Polls a DELETE's operation answers Running; 0 answers the DELETE itself 200.
        self.delete_polls = 1

    # -- deployment hook: the vault name rule

    def refuse(self, rg: str, r: dict[str, Any], body: dict[str, Any]) -> tuple[str, str] | None:
        self.type_api[str(r["type"]).lower()] = str(r.get("apiVersion"))
        if r["type"] != "Microsoft.KeyVault/vaults":
            return None
        name = str(r["name"]).lower()
        mode = (body.get("properties") or {}).get("createMode") or "default"
        if name in self.deleted_vaults:
            if mode != "recover":
                return "ConflictError", SOFT_DELETED_MESSAGE
            self.deleted_vaults.pop(name)
            self.recovered.append(name)
            return None
        if mode == "recover":
            return "BadRequest", f"No soft-deleted vault named {r['name']} to recover."
        return None

    # -- routing

    def handle(self, req: Request) -> Response:
        p = req.path
        d = _DELETED.match(p)
        if d and self._auth(req):
            return self._deleted_vault(req, d.group(3), d.group(4) is not None)
        prefix = f"/subscriptions/{self.subscription}/resourceGroups/"
        if p.lower().startswith(prefix.lower()) and "/providers/" in p:
            if req.method == "GET" and LISTS.match(p[len(prefix) :]):
                return super().handle(req)  # a collection (support.FakeAzure lists them)
            if _APIM_CHILD.search(p):
                return super().handle(req)  # APIM's children: DELETE needs If-Match
            if re.search(r"/providers/Microsoft\.Resources/deployments/[^/]+$", p):
                return self._deployment_record(req)
            if "/providers/Microsoft.Resources/" in p:
                return super().handle(req)  # what-if, operations, tags
            templated = req.query.get("api-version") == self.type_api.get(self._type(p))
            plain_get = req.method == "GET" and (templated or not _SITE_ROUTES.search(p))
            if (req.method == "DELETE" or plain_get) and self._auth(req):
                return self._generic(req)
        return super().handle(req)

    def _key(self, path: str) -> str:
        """Where the base fake stores a resource (extension ids drop their scope)."""
        head, _, tail = path.rpartition("/providers/")
        if head.count("/providers/") >= 1:
            head = head.split("/providers/", 1)[0]
        return f"{head}/providers/{tail}".lower()

    def _type(self, path: str) -> str:
        return type_of(path)

    def _generic(self, req: Request) -> Response:
        key = self._key(req.path)
        kind = self._type(req.path)
        want = self.type_api.get(kind)
        if want is None or req.query.get("api-version") != want:
            self.violate(
                f"{req.method} {req.path}: api-version {req.query.get('api-version')} is not "
                f"the template's ({want})"
            )
        body = self.resources.get(key)
        if body is None:
            return Response(404, {"error": {"code": "ResourceNotFound", "message": req.path}})
        if req.method == "GET":
            return Response(200, {"id": req.path, **body})
        if kind == "microsoft.web/serverfarms" and any(
            k.rpartition("/providers/")[2].startswith("microsoft.web/sites/")
            and "/" not in k.rpartition("/providers/microsoft.web/sites/")[2]
            for k in self.resources
        ):
            return Response(
                409,
                {
                    "error": {
                        "code": "Conflict",
                        "message": "Server farm cannot be deleted because it has web app(s).",
                    }
                },
            )
        for k in [k for k in self.resources if k == key or k.startswith(key + "/")]:
            del self.resources[k]
        if kind == "microsoft.keyvault/vaults":
            props = body.get("properties") or {}
            name = key.rpartition("/")[2]
            self.deleted_vaults[name] = {
                "vaultId": req.path,
                "location": body.get("location"),
                "deletionDate": "2026-12-05T09:00:00Z",
                "scheduledPurgeDate": "2027-03-05T09:00:00Z",
                "purgeProtectionEnabled": props.get("enablePurgeProtection") is True,
            }
        if self.delete_polls == 0:
            return Response(200, None)  # a synchronous delete, as ARM answers some
        op = str(uuid.uuid4())
        self.operations[op] = {"polls": self.delete_polls, "result": {"status": "Succeeded"}}
        return Response(
            202,
            None,
            {
                "Azure-AsyncOperation": f"{self.url}/operations/{op}?api-version={ARM_API}",
                "Retry-After": "0",
            },
        )

    def _deleted_vault(self, req: Request, name: str, purge: bool) -> Response:
        want = self.type_api.get("microsoft.keyvault/vaults")
        if req.query.get("api-version") not in ({want} if want else KEYVAULT_APIS):
            self.violate(f"{req.method} {req.path}: api-version is not the vaults' ({want})")
        gone = self.deleted_vaults.get(name.lower())
        if gone is None:
            return Response(
                404, {"error": {"code": "ResourceNotFound", "message": f"{name} not deleted"}}
            )
        if not purge:
            if req.method != "GET":
                self.violate(f"{req.method} {req.path}")
            return Response(200, {"name": name, "properties": gone})
        if req.method != "POST":
            self.violate(f"purge with {req.method}")
        if gone["purgeProtectionEnabled"]:
            return Response(
                409,
                {
                    "error": {
                        "code": "MethodNotAllowed",
                        "message": f"Operation 'DeletedVaultPurge' is not allowed: vault {name} "
                        "has purge protection enabled.",
                    }
                },
            )
        del self.deleted_vaults[name.lower()]
        self.purged.append(name.lower())
        op = str(uuid.uuid4())
        self.operations[op] = {"polls": 1, "result": {"status": "Succeeded"}}
        return Response(
            202,
            None,
            {"Location": f"{self.url}/operations/{op}?api-version={ARM_API}", "Retry-After": "0"},
        )

    def _deployment_record(self, req: Request) -> Response:
        name = req.path.rpartition("/")[2]
        if req.method == "DELETE":
            self._api(req, ARM_API)
            if self.deployments.pop(name, None) is None:
                return Response(204)
            return Response(202, None, {"Retry-After": "0"})
        response = super().handle(req)
        dep = self.deployments.get(name)
        if req.method != "GET" or response.status != 200 or dep is None:
            return response
        rg = req.path.split("/")[4]
        ids = []
        for r, _body in self._expand(dep["template"], dep["params"]):
            rid = self._rid(rg, r["type"], str(r["name"]))
            if rid.lower() not in self.resources:
                continue
            scope = r.get("scope")
            if scope:
                base = f"/subscriptions/{self.subscription}/resourceGroups/{rg}"
                rid = (
                    f"{base}/providers/{scope}/providers/{resource_path(r['type'], str(r['name']))}"
                )
            ids.append({"id": rid})
        body = dict(response.body)
        body["properties"] = {**body["properties"], "outputResources": ids}
        return Response(200, body)
