"""The API Management service (its APIs come from the APIM target, module apim-apis)."""

from __future__ import annotations

from typing import Any

from ...model.types import Platform
from .common import APIM_SECURITY, LOCATION, TAGS, AzureSpec, new_resource, role_assignment
from .spec import Interp, Note, Resource


def apim_service(spec: AzureSpec, platform: Platform, vault: Resource) -> Resource:
    """The API Management service (its APIs come from the APIM target, in apim-apis)."""
    svc = platform.azure.api_management
    module = "apim"
    props: dict[str, Any] = {
        "publisherName": svc.publisher_name,
        "publisherEmail": svc.publisher_email,
        "publicNetworkAccess": "Enabled",
        "virtualNetworkType": "None",
        "apiVersionConstraint": Note(
            {"minApiVersion": "2021-08-01"}, "Refuse management calls with retired API versions."
        ),
    }
    if svc.sku != "Consumption":
        props["customProperties"] = Note(
            dict(APIM_SECURITY), "Gateway and backends speak TLS 1.2+ only; no 3DES; HTTP/2 on."
        )
    identity: dict[str, Any] = {"type": "SystemAssigned"}
    if svc.custom_domain is not None:
        cd = svc.custom_domain
        uai = spec.add(
            new_resource(
                "apimCertIdentity",
                "Microsoft.ManagedIdentity/userAssignedIdentities",
                f"{svc.name}-cert",
                module,
                body={"location": LOCATION, "tags": TAGS},
                comment="Reads the custom-domain certificate while the service is being created,\n"
                "when its system identity does not exist yet.",
            )
        )
        grant = spec.add(
            role_assignment(
                uai,
                uai.ref("principalId"),
                vault,
                "Key Vault Secrets User",
                module,
                "API Management reads its gateway certificate.",
            )
        )
        identity = {
            "type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": {uai.id(): {}},
        }
        props["hostnameConfigurations"] = [
            {
                "type": "Proxy",
                "hostName": cd.host_name,
                "certificateSource": "KeyVault",
                "keyVaultId": Interp(
                    (vault.ref("vaultUri"), f"secrets/{cd.key_vault_certificate}")
                ),
                "identityClientId": uai.ref("clientId"),
                "defaultSslBinding": True,
                "negotiateClientCertificate": False,
            }
        ]
        deps = [grant]
    else:
        deps = []
    return spec.add(
        new_resource(
            "apim",
            "Microsoft.ApiManagement/service",
            svc.name,
            module,
            body={
                "location": LOCATION,
                "tags": TAGS,
                "sku": {"name": svc.sku, "capacity": svc.capacity},
                "identity": identity,
                "properties": props,
            },
            depends_on=deps,
            comment="The platform's only public door (APIs, products, task status).",
        )
    )
