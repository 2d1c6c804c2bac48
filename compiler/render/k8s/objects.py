"""The Kubernetes objects of the target, typed where the rest of the room needs them.

Object bodies stay what the templates and the chart lay out (text that is written
byte for byte); what the room decides on - apply order, identity in errors - reads the
typed :class:`KubeObject` built from the parsed document, never a scan of the text.
Names and helpers shared by several parts of the room (labels, tolerations, the Azure
output placeholder) live here too, so that ``istio``, ``addons`` and ``chart`` depend on
this module and never on each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import yaml

from ...errors import Diagnostic, RenderError
from ...model.naming import (
    GATEWAY_SERVICE_ACCOUNT,
    INGRESS_NAMESPACE,
    RUNTIME_SERVICE_ACCOUNT,
    workload_name,
)
from ...model.types import Api, Cluster, Platform, Taint
from ..artifact import SafeLoader, parse_yaml_through

MANAGED_BY = "ai4ec"
RUNTIME_SECRET = "ai4ec-runtime"
RUNTIME_SPC = RUNTIME_SERVICE_ACCOUNT
REDIS_AUTH = "ai4ec-redis"
GATEWAY = "ai4ec-gateway"
#: The gateway's TLS Secret (tls.crt, tls.key and the client CA ca.crt), synced from Key
#: Vault by the SecretProviderClass and the ServiceAccount of the same name.
GATEWAY_CREDENTIAL = GATEWAY_SERVICE_ACCOUNT
#: NetworkPolicy keeping the instance metadata endpoint (node identity tokens) from pods.
METADATA_ENDPOINT = "169.254.169.254/32"
NVIDIA_DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"


#: Apply order: what others depend on first (as Helm installs kinds). Kinds not listed
#: go last.
KIND_ORDER: tuple[str, ...] = (
    "Namespace",
    "NetworkPolicy",
    "SecretProviderClass",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "TriggerAuthentication",
    "Service",
    "DaemonSet",
    "Deployment",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "DestinationRule",
    "Gateway",
    "VirtualService",
)
_KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """One file of the target, relative to ``k8s/<cluster>/``."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class GatewayWorkload:
    """The Istio add-on's ingress gateway a cluster uses: its identity and its pods."""

    principal: str
    selector: dict[str, str]


@dataclass(frozen=True, slots=True)
class KubeObject:
    """One Kubernetes object: its identity, typed, and its document text as rendered.

    The text is kept rather than re-dumped so manifests.yaml holds exactly what the
    template or the chart laid out (and dumping 10,000 objects again is slow). Made by
    :func:`parse_objects` (or restored from a cache entry it filled), the text is one
    YAML document that parsed back in full, with no document marker and only LF breaks.
    """

    api_version: str
    kind: str
    name: str
    namespace: str
    text: str

    @property
    def apply_key(self) -> tuple[int, str, str]:
        """Sort key of apply order: kind rank, then namespace, then name."""
        return _KIND_RANK.get(self.kind, len(KIND_ORDER)), self.namespace, self.name


def objects_payload(objects: Iterable[KubeObject]) -> bytes:
    """``objects`` as a cache entry's payload (see :func:`objects_of_payload`)."""
    rows = [[o.api_version, o.kind, o.name, o.namespace, o.text] for o in objects]
    return json.dumps(rows, separators=(",", ":")).encode("utf-8")


def objects_of_payload(payload: bytes) -> list[KubeObject] | None:
    """The objects a cache entry holds, or None when it holds something else.

    Restoring them needs no YAML parse: that, more than Helm, is what a warm build saves.
    """
    try:
        rows = json.loads(payload)
        objects = [KubeObject(*row) for row in rows]
    except (ValueError, TypeError):
        return None
    if not all(isinstance(f, str) for row in rows for f in row):
        return None
    return objects


def azure_output(path: str) -> str:
    """A placeholder that ``apply`` fills from the Azure deployment's outputs."""
    return f"$(azure:{path})"


def api_client_id(api: Api) -> str:
    """The workload identity of ``api``'s pods (its Key Vault secrets, its results container).

    One user-assigned identity per API, federated with the API's ServiceAccount; the Azure
    target outputs its client id as ``apis.<workload>.clientId``.
    """
    return azure_output(f"apis.{workload_name(api)}.clientId")


def runtime_client_id(cluster: Cluster) -> str:
    """The workload identity that syncs the runtime Secret (``ai4ec-runtime``) on ``cluster``."""
    return azure_output(f"clusters.{cluster.name}.runtimeClientId")


def gateway_client_id(cluster: Cluster) -> str:
    """The workload identity that syncs the gateway's certificates on ``cluster``."""
    return azure_output(f"clusters.{cluster.name}.gatewayClientId")


def api_key_secret(api: Api) -> str:
    """The Key Vault secret holding ``api``'s own task-manager key (one per API)."""
    return f"ai4ec-api-key-{workload_name(api)}"


def tenant_id(platform: Platform) -> str:
    """The platform's tenant, or the Azure deployment's when platform.yaml leaves it out."""
    return platform.azure.tenant_id or azure_output("tenantId")


def labels(platform: Platform, api_id: str | None = None) -> dict[str, str]:
    """The labels every generated object carries (docs/contracts.md)."""
    out = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "ai4ec.io/platform": platform.name,
        "ai4ec.io/environment": platform.environment,
    }
    if api_id:
        out["ai4ec.io/api"] = api_id
    return out


def toleration(taint: Taint) -> dict[str, str]:
    """The toleration that matches exactly ``taint``."""
    tol = {
        "key": taint.key,
        "operator": "Equal" if taint.value else "Exists",
        "effect": taint.effect,
    }
    if taint.value:
        tol["value"] = taint.value
    return tol


def gateway_workload(cluster: Cluster) -> GatewayWorkload:
    """Service account principal and pod selector of the add-on's ingress gateway."""
    kind = "external" if cluster.ingress.external else "internal"
    name = f"aks-istio-ingressgateway-{kind}"
    return GatewayWorkload(f"cluster.local/ns/{INGRESS_NAMESPACE}/sa/{name}", {"istio": name})


# A line holding only the YAML document marker. Splitting here is safe for block YAML:
# inside a block scalar such a line would have to be indented.
_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.M)


def parse_objects(source: str, text: str) -> list[KubeObject]:
    """Every object of a (multi-document) YAML text, identified from the parsed document.

    ``source`` names the template or chart file in errors. Comment lines and empty
    documents are dropped from the kept text, as manifests.yaml has always done.
    """
    out: list[KubeObject] = []
    for doc in _DOC_SPLIT.split(text):
        body = "\n".join(line for line in doc.splitlines() if not line.startswith("#")).strip()
        if body:
            out.append(_object(source, body))
    return out


# A line that opens or closes a YAML document ("---" or "...", alone or before content).
# A body without one is at most one document (parse_objects rebuilt it from
# str.splitlines, so its only line break is LF), so manifests.yaml's joints need no parser.
_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t]|$)", re.M)


def _object(source: str, body: str) -> KubeObject:
    """One object from a body, which is parsed back in full here, once.

    The identity comes from the first events of Python's event stream; the whole body
    goes through libyaml's C parser without building Python events (a fifth of the
    cost). Together with the marker check this is the proof ``manifests.yaml`` carries
    (:attr:`~ai4ec.render.artifact.Artifact.checked_documents`): the write stage does
    not parse the 15 MB of a 1,000-API cluster again.
    """
    try:
        identity = _identity(yaml.parse(body, Loader=SafeLoader))
        parse_yaml_through(body)
    except yaml.YAMLError as exc:
        raise _bug(source, f"does not parse back: {exc}") from exc
    if identity is None:
        raise _bug(source, "holds a document that is not a Kubernetes object")
    marker = _MARKER.search(body)
    if marker is not None:
        line = body.count("\n", 0, marker.start()) + 1
        raise _bug(source, f"holds a document marker inside a document at line {line}")
    return KubeObject(
        api_version=identity.get("apiVersion", ""),
        kind=identity.get("kind", ""),
        name=identity.get("name", ""),
        namespace=identity.get("namespace", ""),
        text=body,
    )


_TOP_KEYS = frozenset({"apiVersion", "kind"})
_META_KEYS = frozenset({"name", "namespace"})
_ALL_KEYS = _TOP_KEYS | _META_KEYS


def _identity(events: Iterator[yaml.Event]) -> dict[str, str] | None:
    """``apiVersion``, ``kind``, ``metadata.name`` and ``.namespace`` from a YAML event stream.

    Reads the parser's events of the document's top-level mapping and stops as soon as
    the identity is known: constructing every object of a 1,000-API build in Python
    took longer than rendering the chart (the full parse-back is libyaml's alone, see
    :func:`_object`). Returns None when the document is not a mapping.
    """
    for event in events:
        if isinstance(event, (yaml.StreamStartEvent, yaml.DocumentStartEvent)):
            continue
        if not isinstance(event, yaml.MappingStartEvent):
            return None
        break
    found: dict[str, str] = {}
    meta_done = False
    for key in events:
        if isinstance(key, yaml.MappingEndEvent) or not isinstance(key, yaml.ScalarEvent):
            break
        value = next(events)
        if key.value in _TOP_KEYS and isinstance(value, yaml.ScalarEvent):
            found[key.value] = value.value
        elif key.value == "metadata" and isinstance(value, yaml.MappingStartEvent):
            _read_mapping(events, _META_KEYS, found, _ALL_KEYS)
            meta_done = True
        else:
            _skip(events, value)
        if meta_done and _TOP_KEYS <= found.keys():
            break
    return found


def _read_mapping(
    events: Iterator[yaml.Event],
    wanted: frozenset[str],
    into: dict[str, str],
    enough: frozenset[str],
) -> None:
    """Scalar values of ``wanted`` keys of the mapping whose start was just read.

    Returns early, mid-mapping, once ``into`` holds every key of ``enough``: the caller
    then stops reading (labels and annotations, most of ``metadata``, are never read).
    """
    for key in events:
        if enough <= into.keys():
            return
        if isinstance(key, yaml.MappingEndEvent):
            return
        _skip(events, key)
        value = next(events)
        if (
            isinstance(key, yaml.ScalarEvent)
            and key.value in wanted
            and isinstance(value, yaml.ScalarEvent)
        ):
            into[key.value] = value.value
        else:
            _skip(events, value)


def _skip(events: Iterator[yaml.Event], first: yaml.Event) -> None:
    """Consume the rest of the node that starts with ``first``."""
    depth = 1 if isinstance(first, yaml.CollectionStartEvent) else 0
    while depth:
        event = next(events)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _bug(source: str, problem: str) -> RenderError:
    message = f"generated {source} {problem}"
    return RenderError(
        message,
        (
            Diagnostic(
                code="E-RENDER-PARSE",
                message=message,
                hint="this is an ai4ec bug; please report it with your platform.yaml",
            ),
        ),
    )
