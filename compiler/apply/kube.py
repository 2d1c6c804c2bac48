"""Kubernetes through the official client: discovery, server-side apply, prune, rollouts.

Objects are sent exactly as ``k8s/<cluster>/manifests.yaml`` holds them (placeholders
filled), one ``PATCH`` each with ``Content-Type: application/apply-patch+yaml`` and
``fieldManager=ai4ec``: server-side apply, so the API server merges, defaults and
validates, fields other managers own (KEDA's replica count, an operator's annotations)
are left alone, and a field two managers claim is a 409 conflict instead of a silent
overwrite. ``force=true`` is sent only with ``--force-conflicts``.

Change detection asks the API server too: the object is applied with ``dryRun=All`` and
the result compared with the live object (``status`` and bookkeeping metadata aside,
plus ai4ec's own field ownership). Equal means unchanged and nothing is written, which is
how a second ``apply`` writes nothing and how a resumed one skips what it already did.

Requests go through ``ApiClient.call_api`` (the client's auth, TLS and connection
pool); urllib3's own retries are off so that :func:`ai4ec.apply.retry.call_with_retry`
handles 429/5xx/dropped connections uniformly, with ``Retry-After``, for every method.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ApplyError
from .placeholders import object_label
from .plan import ApplyAction, changed_paths
from .retry import (
    TRANSIENT_STATUS,
    RetriesExhausted,
    RetrySettings,
    TransientError,
    call_with_retry,
    parse_retry_after,
)
from .scrub import register, scrub

LOG = logging.getLogger("ai4ec.apply")

FIELD_MANAGER = "ai4ec"
APPLY_PATCH = "application/apply-patch+yaml"
MISSING_EXTRA = "Kubernetes support is not installed: pip install 'ai4ec[azure,k8s]'"
#: Namespace and Services of the AKS Istio add-on's ingress gateways.
INGRESS_NAMESPACE = "aks-istio-ingress"

#: Kinds ``--prune`` looks at (besides every kind the build itself contains): what
#: ai4ec renders today or did before, in apply order. Pods, ReplicaSets, Endpoints and
#: the like are never listed: controllers own them.
PRUNE_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"),
    ("v1", "ServiceAccount"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("v1", "Service"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "VirtualService"),
)
#: Label the Secrets Store CSI driver puts on the Secrets it syncs.
CSI_MANAGED_LABEL = "secrets-store.csi.k8s.io/managed"
WORKLOADS = frozenset({"Deployment", "DaemonSet", "StatefulSet"})
_VOLATILE = (
    "resourceVersion",
    "generation",
    "managedFields",
    "creationTimestamp",
    "uid",
    "selfLink",
)


def require_sdk() -> None:
    """Fail with the install command when the ``k8s`` extra is missing."""
    try:
        import kubernetes.client  # noqa: F401
    except ImportError as exc:
        raise ApplyError(f"{MISSING_EXTRA} ({exc.name} is missing)") from None


@dataclass(frozen=True, slots=True)
class ApiResource:
    """A served kind: where its objects live in the API."""

    group_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        """API group ("" for the core group)."""
        return self.group_version.rpartition("/")[0]

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """``/apis/<g>/<v>[/namespaces/<ns>]/<plural>[/<name>]``."""
        gv = self.group_version
        base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


def group_of(api_version: str) -> str:
    """API group of an ``apiVersion`` ("" for ``v1``)."""
    return api_version.rpartition("/")[0]


def identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """``(group, kind, namespace, name)``: what makes two objects the same object."""
    md = obj.get("metadata") or {}
    return (
        group_of(str(obj.get("apiVersion", ""))),
        str(obj.get("kind", "")),
        str(md.get("namespace") or ""),
        str(md.get("name", "")),
    )


class ListRefused(ApplyError):
    """The API server would not list a kind (403/404/405): prune cannot see its objects."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _status_message(body: Any, status: int) -> str:
    if isinstance(body, dict) and body.get("message"):
        return scrub(str(body["message"]))
    return f"HTTP {status}"


class Kube:
    """One cluster's API server."""

    def __init__(
        self,
        api_client: Any,
        cluster: str,
        retry: RetrySettings,
        notify: Callable[[str], None] | None = None,
        request_timeout: tuple[float, float] = (10.0, 60.0),
        access_timeout: float = 0.0,
        poll_interval: float = 5.0,
    ) -> None:
        self.api = api_client
        self.cluster = cluster
        self._retry = retry
        self._notify = notify
        self._timeout = request_timeout
        # A role assignment made by this run's deployment takes minutes to reach the
        # API server: 403 is waited out until the first answer that is not 403, or the
        # deadline. After that, 403 means what it says.
        self._access_deadline = time.monotonic() + access_timeout
        self._access_timeout = access_timeout
        self._access_ok = False
        self._poll = poll_interval
        self._discovery: dict[str, dict[str, ApiResource] | None] = {}

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _configuration() -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        # Retries are ours (call_with_retry); urllib3 must surface every failure.
        cfg.retries = False
        return cfg

    @classmethod
    def from_context(
        cls,
        cluster: str,
        context: str | None,
        kubeconfig: str | None,
        retry: RetrySettings,
        notify: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> Kube:
        """A cluster from a kubeconfig context (``--context``)."""
        require_sdk()
        from kubernetes import client, config

        cfg = cls._configuration()
        try:
            load: Any = config.load_kube_config
            load(config_file=kubeconfig, context=context, client_configuration=cfg)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise ApplyError(
                scrub(f"cluster {cluster}: cannot load kubeconfig context {context!r}: {exc}")
            ) from None
        _guard_secrets(cfg)
        return cls(client.ApiClient(cfg), cluster, retry, notify, **kwargs)

    @classmethod
    def from_kubeconfig(
        cls,
        cluster: str,
        kubeconfig: dict[str, Any],
        token: Callable[[str], tuple[str, float]],
        retry: RetrySettings,
        notify: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> Kube:
        """A cluster from a kubeconfig fetched from AKS.

        Entra ID clusters hand out kubeconfigs that run ``kubelogin``; instead of needing
        that binary, ``apply`` asks its own Azure credential for a token of the AKS
        server application (what kubelogin would do) and refreshes it as it expires.
        Admin (local account) kubeconfigs are used as they are.
        """
        require_sdk()
        from kubernetes import client, config

        cfg = cls._configuration()
        ctx_name = kubeconfig.get("current-context")
        contexts = {c.get("name"): c.get("context") or {} for c in kubeconfig.get("contexts") or []}
        ctx = contexts.get(ctx_name) or next(iter(contexts.values()), {})
        users = {u.get("name"): u.get("user") or {} for u in kubeconfig.get("users") or []}
        user = users.get(ctx.get("user"), {})
        if "exec" in user or "auth-provider" in user:
            clusters = {
                c.get("name"): c.get("cluster") or {} for c in kubeconfig.get("clusters") or []
            }
            server = clusters.get(ctx.get("cluster"), {})
            if not server.get("server"):
                raise ApplyError(f"cluster {cluster}: the AKS kubeconfig names no server")
            cfg.host = str(server["server"])
            ca = server.get("certificate-authority-data")
            if ca:
                cfg.ca_cert_data = base64.b64decode(ca).decode("utf-8")
            scope = f"{_server_id(user)}/.default"
            state: dict[str, float] = {"expires": 0.0}

            def refresh(c: Any) -> None:
                if time.time() > state["expires"] - 300:
                    value, expires = token(scope)
                    state["expires"] = expires
                    c.api_key = {"authorization": f"Bearer {value}"}

            cfg.refresh_api_key_hook = refresh
            # The client consults the hook only once a key exists: fetch the first token now.
            refresh(cfg)
        else:
            try:
                load: Any = config.load_kube_config_from_dict
                load(kubeconfig, context=ctx_name, client_configuration=cfg)
            except (config.ConfigException, TypeError, ValueError) as exc:
                raise ApplyError(
                    scrub(f"cluster {cluster}: unusable AKS kubeconfig: {exc}")
                ) from None
            _guard_secrets(cfg)
        return cls(client.ApiClient(cfg), cluster, retry, notify, **kwargs)

    @property
    def server(self) -> str:
        """The API server URL this client talks to."""
        return str(self.api.configuration.host)

    def close(self) -> None:
        """Release connections."""
        close = getattr(self.api, "close", None)
        if close is not None:
            close()

    # ---------------------------------------------------------------------- requests

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        """One request, retried while transient; returns ``(status, parsed JSON body)``."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        payload = json.dumps(body) if body is not None else None
        params = list(query)

        def once() -> tuple[int, Any]:
            try:
                call = self.api.param_serialize(
                    method=method,
                    resource_path=path,
                    query_params=params,
                    header_params=dict(headers),
                    body=payload,
                    auth_settings=["BearerToken"],
                )
                response = self.api.call_api(*call, _request_timeout=self._timeout)
                data = response.read()
                status = int(response.status)
                retry_after = response.headers.get("Retry-After")
            except urllib3.exceptions.HTTPError as exc:
                raise TransientError(scrub(f"{type(exc).__name__}: {exc}")) from None
            except ApiException as exc:
                if exc.status == 403:
                    return 403, None
                if exc.status in TRANSIENT_STATUS:
                    raise TransientError(f"HTTP {exc.status}") from None
                raise ApplyError(scrub(f"cluster {self.cluster}: {what}: {exc.reason}")) from None
            except OSError as exc:
                raise TransientError(scrub(f"{type(exc).__name__}: {exc}")) from None
            if status in TRANSIENT_STATUS:
                raise TransientError(f"HTTP {status}", parse_retry_after(retry_after))
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            return status, parsed

        told = False
        while True:
            try:
                status, parsed = call_with_retry(
                    f"cluster {self.cluster}: {what}", once, self._retry, self._notify
                )
            except RetriesExhausted as exc:
                raise ApplyError(str(exc)) from None
            if status != 403 or self._access_ok:
                if status not in (401, 403):
                    self._access_ok = True
                return status, parsed
            if time.monotonic() >= self._access_deadline:
                waited = f" for {self._access_timeout:.0f}s" if self._access_timeout else ""
                raise ApplyError(
                    f"cluster {self.cluster}: {what}: forbidden (HTTP 403){waited}: "
                    f"{_status_message(parsed, status)}. The deploying principal needs an "
                    "AKS RBAC role on the cluster (the template grants one to "
                    "deployerPrincipalId; a new assignment can take minutes to apply)"
                )
            if not told and self._notify is not None:
                self._notify(
                    f"cluster {self.cluster}: {what}: forbidden (HTTP 403); waiting for the "
                    "role assignment to reach the API server"
                )
                told = True
            self._retry.sleep(self._poll)

    # --------------------------------------------------------------------- discovery

    def _group_version(self, gv: str) -> dict[str, ApiResource] | None:
        if gv not in self._discovery:
            path = "/api/v1" if gv == "v1" else f"/apis/{gv}"
            status, body = self.request("GET", path, f"discover {gv}")
            if status == 404:
                self._discovery[gv] = None
            elif status != 200 or not isinstance(body, dict):
                raise ApplyError(
                    f"cluster {self.cluster}: discovery of {gv} failed: "
                    f"{_status_message(body, status)}"
                )
            else:
                self._discovery[gv] = {
                    str(r["kind"]): ApiResource(
                        gv, str(r["kind"]), str(r["name"]), bool(r.get("namespaced"))
                    )
                    for r in body.get("resources") or []
                    if "/" not in str(r.get("name", ""))
                }
        return self._discovery[gv]

    def resource(self, api_version: str, kind: str) -> ApiResource | None:
        """Where ``kind`` of ``api_version`` is served, or None when it is not."""
        served = self._group_version(api_version)
        return None if served is None else served.get(kind)

    def resource_for(self, obj: dict[str, Any]) -> ApiResource:
        """The served resource of ``obj``, or a clear error naming what is missing."""
        api_version, kind = str(obj.get("apiVersion")), str(obj.get("kind"))
        res = self.resource(api_version, kind)
        if res is None:
            hint = {
                "keda.sh": "enable the AKS KEDA add-on (platform.yaml clusters[].keda)",
                "secrets-store.csi.x-k8s.io": "enable the AKS Key Vault secrets-provider add-on",
                "networking.istio.io": "enable the AKS Istio add-on",
                "security.istio.io": "enable the AKS Istio add-on",
            }.get(group_of(api_version), "install the controller that defines it")
            raise ApplyError(
                f"cluster {self.cluster} does not serve {kind} ({api_version}), needed by "
                f"{object_label(obj)}: {hint}"
            )
        if res.namespaced and not (obj.get("metadata") or {}).get("namespace"):
            raise ApplyError(f"{object_label(obj)}: namespaced kind without a namespace")
        return res

    # ------------------------------------------------------------------------ objects

    def get(self, res: ApiResource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The live object, or None."""
        label = f"{res.kind} {namespace}/{name}" if namespace else f"{res.kind} {name}"
        status, body = self.request("GET", res.path(namespace, name), f"GET {label}")
        if status == 404:
            return None
        if status != 200:
            raise ApplyError(
                f"cluster {self.cluster}: GET {label}: {_status_message(body, status)}"
            )
        return dict(body)

    def apply(
        self, res: ApiResource, obj: dict[str, Any], *, dry_run: bool, force: bool
    ) -> dict[str, Any]:
        """Server-side apply of ``obj`` (``dryRun=All`` when ``dry_run``); the result."""
        md = obj.get("metadata") or {}
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        label = object_label(obj)
        status, body = self.request(
            "PATCH",
            res.path(md.get("namespace"), md["name"]),
            f"{'dry-run ' if dry_run else ''}apply {label}",
            query=query,
            body=obj,
            content_type=APPLY_PATCH,
        )
        if status in (200, 201):
            return dict(body)
        message = _status_message(body, status)
        if status == 409:
            raise ApplyError(
                f"cluster {self.cluster}: {label}: {message}. Another field manager owns these "
                "fields; rerun with --force-conflicts to make ai4ec their owner"
            )
        if status == 422 and "immutable" in message:
            raise ApplyError(
                f"cluster {self.cluster}: {label}: {message}. The field cannot change in "
                "place: delete the object (kubectl delete) and apply again"
            )
        if status in (401, 403):
            raise ApplyError(f"cluster {self.cluster}: {label}: not allowed: {message}")
        raise ApplyError(f"cluster {self.cluster}: {label}: HTTP {status}: {message}")

    def list(self, res: ApiResource, selector: str) -> list[dict[str, Any]]:
        """Objects of ``res`` in every namespace matching the label ``selector``."""
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            query = [("labelSelector", selector), ("limit", "500")]
            if cont:
                query.append(("continue", cont))
            status, body = self.request("GET", res.path(), f"list {res.kind}", query=query)
            if status in (403, 404, 405):
                raise ListRefused(
                    f"cluster {self.cluster}: cannot list {res.kind} ({res.group_version}): "
                    f"HTTP {status}: {_status_message(body, status)}",
                    status,
                )
            if status != 200 or not isinstance(body, dict):
                raise ApplyError(
                    f"cluster {self.cluster}: list {res.kind}: {_status_message(body, status)}"
                )
            for item in body.get("items") or []:
                item.setdefault("apiVersion", res.group_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            cont = str((body.get("metadata") or {}).get("continue") or "")
            if not cont:
                return items

    def delete(self, res: ApiResource, obj: dict[str, Any]) -> None:
        """Delete ``obj`` (background propagation); already gone is fine."""
        md = obj.get("metadata") or {}
        label = object_label(obj)
        status, body = self.request(
            "DELETE",
            res.path(md.get("namespace"), md["name"]),
            f"delete {label}",
            body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
            content_type="application/json",
        )
        if status not in (200, 202, 404):
            raise ApplyError(
                f"cluster {self.cluster}: delete {label}: {_status_message(body, status)}"
            )

    def ingress_address(self, external: bool) -> str | None:
        """External IP or host name of the AKS Istio ingress gateway Service, if it has one."""
        name = f"aks-istio-ingressgateway-{'external' if external else 'internal'}"
        res = ApiResource("v1", "Service", "services", True)
        svc = self.get(res, INGRESS_NAMESPACE, name)
        if svc is None:
            return None
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            addr = ing.get("ip") or ing.get("hostname")
            if addr:
                return str(addr)
        return None


def _server_id(user: dict[str, Any]) -> str:
    """The ``--server-id`` kubelogin would use (the AKS AAD server app by default)."""
    from .azure import AKS_AAD_SERVER

    args = [str(a) for a in (user.get("exec") or {}).get("args") or []]
    for i, a in enumerate(args):
        if a == "--server-id" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--server-id="):
            return a.split("=", 1)[1]
    provider = (user.get("auth-provider") or {}).get("config") or {}
    return str(provider.get("apiserver-id") or AKS_AAD_SERVER)


def _guard_secrets(cfg: Any) -> None:
    """Register a configuration's credentials as secrets, now and on every refresh."""
    for v in (cfg.api_key or {}).values():
        register(str(v).removeprefix("Bearer ").strip())
    register(getattr(cfg, "password", None))
    hook = cfg.refresh_api_key_hook
    if hook is not None:

        def guarded(c: Any) -> None:
            hook(c)
            for v in (c.api_key or {}).values():
                register(str(v).removeprefix("Bearer ").strip())

        cfg.refresh_api_key_hook = guarded


# ---------------------------------------------------------------------- comparisons


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    o = copy.deepcopy(obj)
    md = o.get("metadata") or {}
    for k in _VOLATILE:
        md.pop(k, None)
    o.pop("status", None)
    return o


def _ownership(obj: dict[str, Any]) -> Any:
    return [
        m.get("fieldsV1")
        for m in (obj.get("metadata") or {}).get("managedFields") or []
        if m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"
    ]


def compare(
    live: dict[str, Any] | None, dry: dict[str, Any]
) -> tuple[ApplyAction, tuple[str, ...]]:
    """What applying would do, from the live object and the dry-run result."""
    if live is None:
        return ApplyAction.CREATE, ()
    paths = changed_paths(_comparable(live), _comparable(dry))
    if not paths and _ownership(live) != _ownership(dry):
        paths = ["metadata.managedFields (ai4ec takes ownership)"]
    return (ApplyAction.UPDATE, tuple(paths)) if paths else (ApplyAction.NOOP, ())


def applied_by_ai4ec(obj: dict[str, Any]) -> bool:
    """Whether ai4ec's field manager applied (server-side apply) ``obj``."""
    return any(
        m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"
        for m in (obj.get("metadata") or {}).get("managedFields") or []
    )


def prunable(obj: dict[str, Any], desired: set[tuple[str, str, str, str]]) -> bool:
    """Whether a labelled live object may be deleted by ``--prune``.

    Only objects whose ``managedFields`` show that ai4ec applied them (field manager
    ``ai4ec``, operation ``Apply``): labels alone prove nothing, since the shipped Helm
    chart gives its objects the same labels. Never: objects the build still has;
    objects a controller owns (KEDA copies the ScaledObject's labels onto the
    HorizontalPodAutoscaler it creates and owns); Secrets the Secrets Store CSI driver
    syncs; objects already being deleted.
    """
    md = obj.get("metadata") or {}
    if identity(obj) in desired or md.get("deletionTimestamp"):
        return False
    if not applied_by_ai4ec(obj):
        return False
    if any(ref.get("controller") for ref in md.get("ownerReferences") or []):
        return False
    if obj.get("kind") == "Secret" and (
        CSI_MANAGED_LABEL in (md.get("labels") or {}) or md.get("ownerReferences")
    ):
        return False
    return True


def rollout_status(obj: dict[str, Any]) -> tuple[bool, bool, str]:
    """``(ready, failed, words)`` of a Deployment, DaemonSet or StatefulSet."""
    kind = obj.get("kind")
    md, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    gen, seen = int(md.get("generation") or 0), int(st.get("observedGeneration") or 0)
    if seen < gen:
        return False, False, "waiting for the controller to see the new spec"
    if kind == "Deployment":
        for cond in st.get("conditions") or []:
            if (
                cond.get("type") == "Progressing"
                and cond.get("reason") == "ProgressDeadlineExceeded"
            ):
                return False, True, scrub(str(cond.get("message") or "progress deadline exceeded"))
        want = int(spec.get("replicas", 1))
        updated = int(st.get("updatedReplicas") or 0)
        total = int(st.get("replicas") or 0)
        available = int(st.get("availableReplicas") or 0)
        ready = updated >= want and total <= updated and available >= want
        return ready, False, f"{updated}/{want} updated, {available} available"
    if kind == "DaemonSet":
        want = int(st.get("desiredNumberScheduled") or 0)
        updated = int(st.get("updatedNumberScheduled") or 0)
        available = int(st.get("numberAvailable") or 0)
        return (
            updated >= want and available >= want,
            False,
            f"{updated}/{want} updated, {available} available",
        )
    if kind == "StatefulSet":
        want = int(spec.get("replicas", 1))
        ready_n = int(st.get("readyReplicas") or 0)
        updated = int(st.get("updatedReplicas") or 0)
        return ready_n >= want and updated >= want, False, f"{ready_n}/{want} ready"
    return True, False, "ready"
