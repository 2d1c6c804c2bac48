"""Strict JSON Schema for the SecretProviderClass subset the ai4ec-api chart emits.

No kube-apiserver runs here and kubernetes-validate skips custom resources, so the chart's
SecretProviderClass is checked against this schema instead.

Sources (read, not copied; the schema below is written for our subset only):

* The CRD: kubernetes-sigs/secrets-store-csi-driver, tag v1.6.0 (commit
  4960f9637c51ad9cb9ef264481bc6d9a98bf1f1c), file
  ``deploy/secrets-store.csi.x-k8s.io_secretproviderclasses.yaml``, version ``v1``:
  ``spec.provider`` (string), ``spec.parameters`` (map of string to string),
  ``spec.secretObjects[]`` with ``secretName``, ``type``, ``labels``, ``annotations`` and
  ``data[]`` of ``{objectName, key}``. The CRD leaves these objects open-ended; here they are
  closed (``additionalProperties: false``), as strict field validation would treat a typo.
* The Azure Key Vault provider's parameters for workload identity
  (Azure/secrets-store-csi-driver-provider-azure docs, "Workload identity" and "Using the
  Azure Key Vault Provider"): ``usePodIdentity``, ``clientID`` (the federated identity of
  the mounting pod's ServiceAccount), ``keyvaultName``, ``tenantId``, ``cloudName``, and
  ``objects``, a YAML string ``array:`` of YAML strings each holding ``objectName``,
  ``objectType`` (secret | key | cert) and optional ``objectVersion`` / ``objectAlias``.
  ``useVMManagedIdentity`` / ``userAssignedIdentityID`` (the node's identity, which any pod
  could use through the instance metadata endpoint) are refused on purpose (issue 13).
"""

from __future__ import annotations

from typing import Any

_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_GUID = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
_GUID_OR_OUTPUT = (
    r"^([0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}|\$\(azure:[A-Za-z0-9_.-]+\))$"
)

SECRET_PROVIDER_CLASS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "secrets-store.csi.x-k8s.io/v1"},
        "kind": {"const": "SecretProviderClass"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 253},
                "namespace": {"type": "string", "minLength": 1},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["provider", "parameters"],
            "properties": {
                "provider": {"const": "azure"},
                "parameters": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "usePodIdentity",
                        "clientID",
                        "keyvaultName",
                        "tenantId",
                        "objects",
                    ],
                    "properties": {
                        "usePodIdentity": {"const": "false"},
                        # A GUID, or the $(azure:...) placeholder apply fills in.
                        "clientID": {"type": "string", "pattern": _GUID_OR_OUTPUT},
                        "keyvaultName": {"type": "string", "minLength": 3, "maxLength": 24},
                        "tenantId": {"type": "string", "pattern": _GUID_OR_OUTPUT},
                        "cloudName": {"type": "string"},
                        "objects": {"type": "string", "minLength": 1},
                    },
                },
                "secretObjects": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["secretName", "type", "data"],
                        "properties": {
                            "secretName": {"type": "string", "minLength": 1},
                            "type": {"const": "Opaque"},
                            "labels": _STRING_MAP,
                            "annotations": _STRING_MAP,
                            "data": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["objectName", "key"],
                                    "properties": {
                                        "objectName": {"type": "string", "minLength": 1},
                                        "key": {"type": "string", "minLength": 1},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

# One entry of the provider's `objects` parameter, after parsing its YAML.
KEY_VAULT_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["objectName", "objectType"],
    "properties": {
        "objectName": {"type": "string", "minLength": 1},
        "objectType": {"enum": ["secret", "key", "cert"]},
        "objectVersion": {"type": "string"},
        "objectAlias": {"type": "string"},
    },
}
