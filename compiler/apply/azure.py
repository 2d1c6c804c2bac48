"""Azure through its SDKs: resource group, deployments, what-if, Functions, AKS credentials.

Every call goes through an azure-core pipeline (the management clients' own, or one built
here for Kudu and Blob storage), so authentication (DefaultAzureCredential), retries of
429/5xx/dropped connections (honouring ``Retry-After``) and ARM's long-running operation
polling (``Azure-AsyncOperation``/``Location``) are the SDK's.

azure-mgmt-resource 26 no longer carries the deployments API (it moved to
azure-mgmt-resource-deployments), so deployments are addressed as the generic ARM
resources they are: ``resources.begin_create_or_update_by_id`` for the PUT and its
long-running operation, ``resources.get_by_id`` for outputs, and the client's
``send_request`` for the ``whatIf`` action and the operations list.

SDK imports stay inside functions: ``ai4ec validate`` and ``build`` must start fast and
work without the ``azure`` extra.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ApplyError
from .retry import RetrySettings
from .scrub import register, scrub, scrub_any

LOG = logging.getLogger("ai4ec.apply")

#: API version of Microsoft.Resources/deployments (and whatIf) requests.
DEPLOYMENTS_API = "2025-04-01"
WEB_API = "2024-04-01"
STORAGE_API = "2023-05-01"
#: Entra ID application of AKS-managed AAD clusters (the same in every cloud); kubelogin
#: asks for a token of this audience, and so does ``apply``.
AKS_AAD_SERVER = "6dae42f8-4368-4678-94ff-3960e28e3630"
#: Seconds between "still running" lines while a deployment runs.
HEARTBEAT = 60.0
#: ARM actions of a Function App that apply uses (anything else is not an ARM action).
SITE_ACTIONS = ("restart", "syncfunctiontriggers", "host/default/sync")
#: Deployment states in which ARM refuses a PUT of the same name (409 DeploymentActive).
ACTIVE_STATES = frozenset({"accepted", "running", "creating", "deploying", "validating", "waiting"})
CONTAINER_API = "2025-02-01"
#: x-ms-version of Blob requests (2017-11-09 or later accepts Entra ID tokens).
BLOB_API = "2023-11-03"


@dataclass(frozen=True, slots=True)
class Cloud:
    """Endpoints of one Azure cloud."""

    name: str
    resource_manager: str
    scope: str
    #: Entra ID authority host (None: azure-identity's default, or AZURE_AUTHORITY_HOST).
    authority: str | None
    scm_suffix: str


CLOUDS: dict[str, Cloud] = {
    "AzureCloud": Cloud(
        "AzureCloud",
        "https://management.azure.com",
        "https://management.azure.com/.default",
        "login.microsoftonline.com",
        "scm.azurewebsites.net",
    ),
    "AzureChinaCloud": Cloud(
        "AzureChinaCloud",
        "https://management.chinacloudapi.cn",
        "https://management.chinacloudapi.cn/.default",
        "login.chinacloudapi.cn",
        "scm.chinacloudsites.cn",
    ),
    "AzureUSGovernment": Cloud(
        "AzureUSGovernment",
        "https://management.usgovcloudapi.net",
        "https://management.usgovcloudapi.net/.default",
        "login.microsoftonline.us",
        "scm.azurewebsites.us",
    ),
}

MISSING_EXTRA = "Azure support is not installed: pip install 'ai4ec[azure,k8s]'"


def require_sdk() -> None:
    """Fail with the install command when the ``azure`` extra is missing."""
    try:
        import azure.core  # noqa: F401
        import azure.identity  # noqa: F401
        import azure.mgmt.resource.resources  # noqa: F401
    except ImportError as exc:
        raise ApplyError(f"{MISSING_EXTRA} ({exc.name} is missing)") from None


class _ScrubbingCredential:
    """Wraps a TokenCredential and registers every token it hands out as a secret."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        token = self._inner.get_token(*scopes, **kwargs)
        register(token.token)
        return token

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def _retry_policy(settings: RetrySettings, notify: Callable[[str], None]) -> Any:
    """azure-core's RetryPolicy with ``settings``, retrying POST too, telling each retry.

    ARM's POST actions used here (whatIf, list credentials, zip deploy, restart) are safe
    to repeat, and azure-core would otherwise not retry a POST whose connection dropped.
    """
    from azure.core.pipeline.policies import RetryPolicy

    base: Any = RetryPolicy

    class _Policy(base):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._method_whitelist = frozenset(
                {"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST", "PATCH"}
            )

        def increment(self, settings_: Any, response: Any = None, error: Any = None) -> bool:
            more = bool(super().increment(settings_, response=response, error=error))
            if more:
                req = getattr(response, "http_request", None)
                where = f"{req.method} {req.url.split('?')[0]}" if req is not None else "request"
                status = getattr(getattr(response, "http_response", None), "status_code", None)
                cause = f"HTTP {status}" if status else type(error).__name__ if error else "error"
                message = scrub(f"{where}: {cause}; retrying")
                LOG.warning("%s", message)
                notify(message)
            return more

    n = max(0, settings.attempts - 1)
    return _Policy(
        retry_total=n,
        retry_connect=n,
        retry_read=n,
        retry_status=n,
        retry_backoff_factor=settings.backoff,
        retry_backoff_max=settings.max_delay,
    )


def _error_text(exc: Exception) -> str:
    """The most useful message of an azure-core error: code, message, details."""
    err = getattr(exc, "error", None)
    parts: list[str] = []
    if err is not None:
        code = getattr(err, "code", None)
        message = getattr(err, "message", None)
        if code or message:
            parts.append(f"{code}: {message}" if code else str(message))
        for d in getattr(err, "details", None) or []:
            dc, dm = getattr(d, "code", None), getattr(d, "message", None)
            if dm:
                parts.append(f"{dc}: {dm}" if dc else str(dm))
    if not parts:
        response = getattr(exc, "response", None)
        if response is not None:
            try:
                body = response.json()
                e = body.get("error") or body
                parts.append(f"{e.get('code')}: {e.get('message')}")
            except Exception:  # noqa: BLE001 - fall back to the exception text
                pass
    if not parts:
        parts.append(str(getattr(exc, "message", None) or exc).splitlines()[0])
    return scrub("; ".join(parts))


class DeploymentFailed(ApplyError):
    """An ARM deployment that failed; ``codes`` are ARM's error codes (nested ones too)."""

    def __init__(self, message: str, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.codes = codes


def _error_codes(exc: Exception) -> list[str]:
    """Every error code of an azure-core error, nested details included."""
    err = getattr(exc, "error", None)
    out: list[str] = []
    stack = [err] if err is not None else []
    while stack:
        e = stack.pop()
        code = getattr(e, "code", None)
        if code:
            out.append(str(code))
        stack.extend(getattr(e, "details", None) or [])
    return out


def _body(response: Any) -> Any:
    try:
        return response.json()
    except Exception:  # noqa: BLE001 - an empty or non-JSON body
        return None


class Azure:
    """One subscription through the Azure SDKs."""

    def __init__(
        self,
        subscription_id: str,
        *,
        cloud: str = "AzureCloud",
        arm_endpoint: str | None = None,
        credential: Any = None,
        connection_verify: bool | str = True,
        retry: RetrySettings | None = None,
        poll_interval: float = 10.0,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        require_sdk()
        from azure.mgmt.resource.resources import ResourceManagementClient

        self.subscription_id = subscription_id
        self._retry = retry or RetrySettings()
        self._notify = notify or (lambda _m: None)
        self._verify = connection_verify
        self._poll = poll_interval
        self.cloud = self._cloud(cloud, arm_endpoint)
        if credential is None:
            from azure.identity import DefaultAzureCredential

            kwargs = {"authority": self.cloud.authority} if self.cloud.authority else {}
            credential = DefaultAzureCredential(**kwargs)
        self.credential = _ScrubbingCredential(credential)
        self._common: dict[str, Any] = {
            "base_url": self.cloud.resource_manager,
            "credential_scopes": [self.cloud.scope],
            "connection_verify": connection_verify,
            "polling_interval": poll_interval,
            "retry_policy": _retry_policy(self._retry, self._notify),
            "user_agent": "ai4ec-apply",
        }
        self.resources = ResourceManagementClient(self.credential, subscription_id, **self._common)
        self._aks: Any = None

    def client_options(self) -> dict[str, Any]:
        """What every SDK client of this subscription gets: endpoint, scope, TLS, retries.

        Other commands (``ai4ec catalog refresh``) build their own SDK clients with the
        same cloud, CA trust and retry policy as ``apply``, so they sign in the same way.
        """
        return dict(self._common)

    # ----------------------------------------------------------------------- plumbing

    def _cloud(self, name: str, arm_endpoint: str | None) -> Cloud:
        """The named cloud, or one described by a custom Resource Manager's metadata."""
        if not arm_endpoint:
            try:
                return CLOUDS[name]
            except KeyError:
                raise ApplyError(
                    f"unknown cloud {name!r}; choose {', '.join(CLOUDS)} or pass --arm-endpoint"
                ) from None
        endpoint = arm_endpoint.rstrip("/")
        scope, authority = f"{endpoint}/.default", None
        meta = self._metadata(endpoint)
        if meta:
            auth = meta.get("authentication") or {}
            audiences = auth.get("audiences") or []
            if audiences:
                scope = audiences[0].rstrip("/") + "/.default"
            login = str(auth.get("loginEndpoint") or "")
            authority = login.split("://", 1)[-1].strip("/") or None
        host = endpoint.split("://", 1)[-1]
        return Cloud("custom", endpoint, scope, authority, f"scm.{host}")

    def _metadata(self, endpoint: str) -> dict[str, Any] | None:
        """GET ``<endpoint>/metadata/endpoints`` (no sign-in): audience and login host."""
        from azure.core import PipelineClient
        from azure.core.exceptions import AzureError
        from azure.core.pipeline.transport import RequestsTransport
        from azure.core.rest import HttpRequest

        client: Any = PipelineClient(
            endpoint,
            policies=[_retry_policy(self._retry, self._notify)],
            transport=RequestsTransport(connection_verify=self._verify),
        )
        try:
            r = client.send_request(
                HttpRequest(
                    "GET", f"{endpoint}/metadata/endpoints", params={"api-version": "2022-09-01"}
                )
            )
        except AzureError as exc:
            LOG.warning("cannot read %s/metadata/endpoints: %s", endpoint, scrub_any(exc))
            return None
        if r.status_code != 200:
            return None
        meta = _body(r)
        return meta if isinstance(meta, dict) else None

    def _fail(self, what: str, exc: Exception) -> ApplyError:
        """A permanent failure, naming the resource and the service's own cause."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        if isinstance(exc, ClientAuthenticationError):
            return ApplyError(
                f"{what}: Azure sign-in failed: {_error_text(exc)} (DefaultAzureCredential: "
                "run `az login`, or set AZURE_CLIENT_ID/AZURE_TENANT_ID with a federated token "
                "or secret in CI)"
            )
        if isinstance(exc, HttpResponseError):
            status = getattr(exc, "status_code", None)
            prefix = f"HTTP {status}: " if status else ""
            return ApplyError(f"{what}: {prefix}{_error_text(exc)}")
        return ApplyError(f"{what}: {scrub_any(exc)}")

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from azure.core.exceptions import AzureError

        try:
            return fn()
        except AzureError as exc:
            raise self._fail(what, exc) from None

    def _send(self, what: str, method: str, path: str, body: Any = None, api: str = "") -> Any:
        """One ARM request through the resource client's pipeline; returns the response."""
        from azure.core.rest import HttpRequest

        params = {"api-version": api or DEPLOYMENTS_API}
        req = (
            HttpRequest(method, path, params=params, json=body)
            if body is not None
            else HttpRequest(method, path, params=params)
        )
        return self._call(what, lambda: self.resources.send_request(req))

    def _rg_path(self, rg: str) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{rg}"

    def _deployment_id(self, rg: str, name: str) -> str:
        return (
            f"subscriptions/{self.subscription_id}/resourceGroups/{rg}"
            f"/providers/Microsoft.Resources/deployments/{name}"
        )

    # ------------------------------------------------------------------ resource group

    def resource_group(self, rg: str) -> dict[str, Any] | None:
        """The resource group (``{location, tags}``), or None when it does not exist."""
        what = f"resource group {rg}"
        if not self._call(what, lambda: self.resources.resource_groups.check_existence(rg)):
            return None
        group = self._call(what, lambda: self.resources.resource_groups.get(rg))
        return {"location": group.location, "tags": dict(group.tags or {})}

    def create_resource_group(self, rg: str, location: str, tags: dict[str, str]) -> None:
        """Create ``rg`` (only called when it does not exist: never rewrites its tags)."""
        self._call(
            f"resource group {rg}",
            lambda: self.resources.resource_groups.create_or_update(
                rg, {"location": location, "tags": tags}
            ),
        )

    def merge_tags(self, rg: str, tags: dict[str, str]) -> None:
        """Add or update ``tags`` on the resource group, keeping every other tag."""
        scope = self._rg_path(rg).lstrip("/")
        self._call(
            f"tags of resource group {rg}",
            lambda: self.resources.tags.begin_update_at_scope(
                scope, {"operation": "Merge", "properties": {"tags": tags}}
            ).result(),
        )

    # -------------------------------------------------------------------- deployments

    def what_if(self, rg: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """ARM's preview of deploying ``payload`` (incremental) into ``rg``."""
        what = f"what-if of deployment {name} in {rg}"
        settings = {"resultFormat": "FullResourcePayloads"}
        body = {"properties": {**payload, "whatIfSettings": settings}}
        path = (
            f"/subscriptions/{self.subscription_id}/resourcegroups/{rg}"
            f"/providers/Microsoft.Resources/deployments/{name}/whatIf"
        )
        response = self._send(what, "POST", path, body)
        deadline = time.monotonic() + 1800
        while response.status_code in (201, 202):
            location = response.headers.get("Location") or response.headers.get(
                "Azure-AsyncOperation"
            )
            if not location:
                raise ApplyError(f"{what}: ARM accepted it but gave no Location to poll")
            if time.monotonic() > deadline:
                raise ApplyError(f"{what}: no result after 30 minutes")
            self._sleep(response.headers.get("Retry-After"))
            response = self._get_absolute(what, location)
        if response.status_code != 200:
            raise ApplyError(
                f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
            )
        result = _body(response) or {}
        if str(result.get("status", "Succeeded")).lower() == "failed":
            err = result.get("error") or {}
            raise ApplyError(scrub(f"{what}: {err.get('code')}: {err.get('message')}"))
        return dict(result)

    def _sleep(self, retry_after: str | None) -> None:
        from .retry import parse_retry_after

        wait = parse_retry_after(retry_after)
        self._retry.sleep(self._poll if wait is None else min(wait, self._retry.max_retry_after))

    def _get_absolute(self, what: str, url: str) -> Any:
        from azure.core.rest import HttpRequest

        return self._call(what, lambda: self.resources.send_request(HttpRequest("GET", url)))

    @staticmethod
    def _response_error(response: Any) -> str:
        body = _body(response)
        if isinstance(body, dict):
            e = body.get("error") or body
            return scrub(f"{e.get('code')}: {e.get('message')}")
        return scrub(str(getattr(response, "text", lambda: "")())[:300])

    def wait_until_idle(self, rg: str, name: str, timeout: float) -> None:
        """Wait while deployment ``name`` still runs (a Ctrl-C'd or concurrent run).

        ARM answers 409 ``DeploymentActive`` to a PUT of a deployment that is running,
        and cancelling it could leave AKS or APIM half-updated; waiting is the safe move.
        """
        what = f"deployment {name} in {rg}"
        deadline = time.monotonic() + timeout
        told = False
        while True:
            response = self._send(what, "GET", "/" + self._deployment_id(rg, name))
            if response.status_code == 404:
                return
            if response.status_code != 200:
                raise ApplyError(
                    f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
                )
            props = (_body(response) or {}).get("properties") or {}
            state = str(props.get("provisioningState", "")).lower()
            if state not in ACTIVE_STATES:
                return
            if not told:
                self._notify(f"deployment {name} is still running ({state}): waiting for it")
                told = True
            if time.monotonic() > deadline:
                raise ApplyError(
                    f"{what} is still {state} after {timeout:.0f}s (another apply, or one that "
                    "was interrupted); wait for it or cancel it in the portal, then rerun"
                )
            self._sleep(response.headers.get("Retry-After"))

    def deploy(self, rg: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run deployment ``name`` to completion; returns its outputs (ARM form).

        Raises:
            DeploymentFailed: the deployment failed; the message names each failed
                resource with ARM's reason, and ``codes`` holds every error code (so the
                caller can tell a transient failure from a permanent one).
        """
        from azure.core.exceptions import AzureError

        rid = self._deployment_id(rg, name)
        accepted = False
        try:
            poller = self.resources.resources.begin_create_or_update_by_id(
                rid, {"properties": payload}, api_version=DEPLOYMENTS_API
            )
            accepted = True
            started = time.monotonic()
            while not poller.done():  # AKS takes minutes: show that it is alive
                poller.wait(HEARTBEAT)
                if not poller.done():
                    minutes = (time.monotonic() - started) / 60
                    self._notify(f"deployment {name}: still running ({minutes:.0f} min)")
            result = poller.result()
        except AzureError as exc:
            # Operations belong to the deployment's last accepted run: after a preflight
            # rejection (400 before anything ran) they are the previous run's, not ours.
            failed = self.failed_operations(rg, name) if accepted else []
            error = self._fail(f"deployment {name} in {rg}", exc)
            codes = {c for c, _t in failed} or set(_error_codes(exc)) - {"DeploymentFailed"}
            text = error.message
            if failed:
                text += "\n" + "\n".join(f"  {t}" for _c, t in failed)
            raise DeploymentFailed(text, codes=tuple(sorted(codes))) from None
        props = result.get("properties") if hasattr(result, "get") else result.properties
        props = dict(props or {})
        state = str(props.get("provisioningState", "Succeeded"))
        if state.lower() != "succeeded":
            failed = self.failed_operations(rg, name)
            detail = "\n".join(f"  {t}" for _c, t in failed)
            raise DeploymentFailed(
                f"deployment {name} in {rg} ended {state}\n{detail}".rstrip(),
                codes=tuple(sorted({c for c, _t in failed})),
            )
        return dict(props.get("outputs") or {})

    def deployment_outputs(self, rg: str, name: str) -> dict[str, Any] | None:
        """Outputs of the existing deployment ``name``, or None when there is none."""
        response = self._send(
            f"deployment {name} in {rg}", "GET", "/" + self._deployment_id(rg, name)
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ApplyError(
                f"deployment {name} in {rg}: HTTP {response.status_code}: "
                f"{self._response_error(response)}"
            )
        props = (_body(response) or {}).get("properties") or {}
        if str(props.get("provisioningState", "")).lower() != "succeeded":
            return None
        return dict(props.get("outputs") or {})

    def failed_operations(self, rg: str, name: str) -> list[tuple[str, str]]:
        """``(code, "<type> <name>: <code>: <message>")`` per failed operation.

        Every page is read (``nextLink``): a large APIM deployment has hundreds of
        operations and the failed one is rarely on the first page.
        """
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        path = "/" + self._deployment_id(rg, name) + "/operations"
        req = HttpRequest("GET", path, params={"api-version": DEPLOYMENTS_API})
        out: list[tuple[str, str]] = []
        for _page in range(100):
            try:
                response = self.resources.send_request(req)
            except AzureError:
                return out
            if response.status_code != 200:
                return out
            body = _body(response) or {}
            for op in body.get("value") or []:
                p = op.get("properties") or {}
                if str(p.get("provisioningState", "")).lower() != "failed":
                    continue
                target = p.get("targetResource") or {}
                msg = p.get("statusMessage") or {}
                err = msg.get("error") or msg if isinstance(msg, dict) else {"message": msg}
                details = "; ".join(
                    f"{d.get('code')}: {d.get('message')}" for d in err.get("details") or []
                )
                code = str(err.get("code") or "")
                text = f"{code}: {err.get('message')}" + (f" ({details})" if details else "")
                out.append(
                    (
                        code,
                        scrub(
                            f"{target.get('resourceType', '?')} "
                            f"{target.get('resourceName', '?')}: {text}"
                        ),
                    )
                )
            link = body.get("nextLink")
            if not link:
                break
            req = HttpRequest("GET", str(link))
        return out

    # ------------------------------------------------------------------------- reads

    def get_resource(self, rid: str, api: str) -> dict[str, Any] | None:
        """A resource by id (GET), or None when it does not exist."""
        response = self._send(rid, "GET", "/" + rid.lstrip("/"), api=api)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ApplyError(
                f"{rid}: HTTP {response.status_code}: {self._response_error(response)}"
            )
        body = _body(response)
        return dict(body) if isinstance(body, dict) else None

    def list_children(self, path: str, api: str) -> list[dict[str, Any]] | None:
        """Every item of an ARM collection (``nextLink`` followed); None on 404.

        Any other failure (403, 405, 5xx after retries) is an error: prune must not read
        a collection it may not list as empty.
        """
        what = f"list {path}"
        response = self._send(what, "GET", path, api=api)
        items: list[dict[str, Any]] = []
        for _page in range(1000):
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise ApplyError(
                    f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
                )
            body = _body(response) or {}
            items.extend(i for i in body.get("value") or [] if isinstance(i, dict))
            link = body.get("nextLink")
            if not link:
                break
            response = self._get_absolute(what, str(link))
        return items

    def delete_child(self, path: str, api: str) -> None:
        """DELETE an API Management child with ``If-Match: *`` (APIM requires an ETag).

        A 404 means someone deleted it already: the goal is reached.
        """
        from azure.core.rest import HttpRequest

        what = f"delete {path}"
        req = HttpRequest("DELETE", path, params={"api-version": api}, headers={"If-Match": "*"})
        response = self._call(what, lambda: self.resources.send_request(req))
        if response.status_code not in (200, 202, 204, 404):
            raise ApplyError(
                f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
            )

    def delete_resource(self, rid: str, api: str, what: str) -> None:
        """DELETE a resource by id and wait for ARM to finish; a 404 means it is gone."""
        from azure.core.exceptions import AzureError

        try:
            self.resources.resources.begin_delete_by_id(rid.lstrip("/"), api_version=api).result()
        except AzureError as exc:
            if getattr(exc, "status_code", None) != 404:
                raise self._fail(f"delete {what}", exc) from None

    def site_id(self, rg: str, app: str) -> str:
        """Resource id of a Function App."""
        return (
            f"subscriptions/{self.subscription_id}/resourceGroups/{rg}"
            f"/providers/Microsoft.Web/sites/{app}"
        )

    def scm_host(self, rg: str, app: str) -> str | None:
        """Kudu (SCM) host of a Function App, or None when the app does not exist."""
        site = self.get_resource(self.site_id(rg, app), WEB_API)
        if site is None:
            return None
        for s in (site.get("properties") or {}).get("hostNameSslStates") or []:
            if str(s.get("hostType", "")).lower() == "repository" and s.get("name"):
                return str(s["name"])
        return f"{app}.{self.cloud.scm_suffix}"

    def site_action(self, rg: str, app: str, action: str) -> None:
        """POST an ARM action of a Function App: ``restart``, ``syncfunctiontriggers``.

        Only real ARM actions belong here (WebApps_Restart, WebApps_SyncFunctionTriggers,
        ``host/default/sync`` = WebApps_SyncFunctions); ARM answers 404 to any other.
        """
        if action not in SITE_ACTIONS:
            raise ApplyError(f"{action} is not an ARM action of a Function App")
        what = f"{action} of Function App {app}"
        response = self._send(what, "POST", "/" + self.site_id(rg, app) + f"/{action}", {}, WEB_API)
        if response.status_code >= 300:
            raise ApplyError(
                f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
            )

    def list_functions(self, rg: str, app: str) -> set[str]:
        """Names of the functions the app's host has indexed (WebApps_ListFunctions).

        The host lists a function only once it has loaded the code and indexed it, so
        this is what tells that a published bundle is really running.
        """
        what = f"functions of Function App {app}"
        path = "/" + self.site_id(rg, app) + "/functions"
        response = self._send(what, "GET", path, api=WEB_API)
        names: set[str] = set()
        for _page in range(100):
            if response.status_code == 404:
                return names
            if response.status_code != 200:
                raise ApplyError(
                    f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
                )
            body = _body(response) or {}
            for f in body.get("value") or []:
                names.add(str(f.get("name", "")).rpartition("/")[2])
            link = body.get("nextLink")
            if not link:
                break
            response = self._get_absolute(what, str(link))
        return names

    def blob_endpoint(self, rg: str, account: str) -> str:
        """``https://<account>.blob.<suffix>/`` of a storage account."""
        rid = (
            f"subscriptions/{self.subscription_id}/resourceGroups/{rg}"
            f"/providers/Microsoft.Storage/storageAccounts/{account}"
        )
        res = self.get_resource(rid, STORAGE_API)
        if res is None:
            raise ApplyError(f"storage account {account} does not exist in {rg}")
        endpoint = ((res.get("properties") or {}).get("primaryEndpoints") or {}).get("blob")
        if not endpoint:
            raise ApplyError(f"storage account {account} reports no blob endpoint")
        return str(endpoint)

    # ----------------------------------------------------------------- data planes

    def _client(self, base_url: str, scope: str) -> Any:
        """An azure-core pipeline with our retries and an Entra ID token for ``scope``."""
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (
            BearerTokenCredentialPolicy,
            HeadersPolicy,
            UserAgentPolicy,
        )
        from azure.core.pipeline.transport import RequestsTransport

        policies = [
            HeadersPolicy(),
            UserAgentPolicy(user_agent="ai4ec-apply"),
            _retry_policy(self._retry, self._notify),
            BearerTokenCredentialPolicy(self.credential, scope),
        ]
        return PipelineClient(
            base_url, policies=policies, transport=RequestsTransport(connection_verify=self._verify)
        )

    def zip_deploy(self, scm_host: str, data: bytes, timeout: float = 900.0) -> None:
        """Publish a Functions zip through Kudu's ``/api/zipdeploy`` and wait for it.

        Kudu accepts the Resource Manager token of the caller (basic publishing
        credentials are disabled by the template); ``isAsync=true`` returns at once with
        a Location to poll, so a slow remote build cannot time out the request.
        """
        from azure.core.rest import HttpRequest

        base = f"https://{scm_host}"
        client = self._client(base, self.cloud.scope)
        what = f"zip deploy to {scm_host}"
        req = HttpRequest(
            "POST",
            f"{base}/api/zipdeploy",
            params={"isAsync": "true"},
            headers={"Content-Type": "application/zip"},
            content=data,
        )
        response = self._call(what, lambda: client.send_request(req))
        if response.status_code not in (200, 202):
            raise ApplyError(
                f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
            )
        location = response.headers.get("Location") or f"{base}/api/deployments/latest"
        deadline = time.monotonic() + timeout
        while response.status_code == 202 or self._kudu_pending(response):
            if time.monotonic() > deadline:
                raise ApplyError(f"{what}: not finished after {timeout:.0f}s")
            self._sleep(response.headers.get("Retry-After"))
            response = self._call(what, lambda: client.send_request(HttpRequest("GET", location)))
            if response.status_code not in (200, 202):
                raise ApplyError(
                    f"{what}: HTTP {response.status_code}: {self._response_error(response)}"
                )
        status = (_body(response) or {}).get("status")
        if status == 3:
            text = (_body(response) or {}).get("status_text") or "failed"
            raise ApplyError(scrub(f"{what}: Kudu reports the deployment failed: {text}"))

    @staticmethod
    def _kudu_pending(response: Any) -> bool:
        body = _body(response)
        if not isinstance(body, dict) or "status" not in body:
            return False
        return body.get("status") not in (3, 4) and not body.get("complete", False)

    def upload_blob(self, url: str, data: bytes) -> None:
        """PUT ``data`` as a block blob at ``url`` with an Entra ID token for the account."""
        from azure.core.rest import HttpRequest

        account = url.split("://", 1)[-1].split("/", 1)[0]
        client = self._client(f"https://{account}", f"https://{account}/.default")
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - integrity
        req = HttpRequest(
            "PUT",
            url,
            headers={
                "x-ms-blob-type": "BlockBlob",
                "x-ms-version": BLOB_API,
                "Content-Type": "application/zip",
                "Content-MD5": md5,
            },
            content=data,
        )
        response = self._call(f"upload to {url}", lambda: client.send_request(req))
        if response.status_code not in (200, 201):
            raise ApplyError(
                scrub(f"upload to {url}: HTTP {response.status_code}: {response.text()[:300]}")
            )

    def delete_tags(self, rg: str, tags: dict[str, str]) -> None:
        """Remove ``tags`` (name and value must match) from the resource group."""
        scope = self._rg_path(rg).lstrip("/")
        self._call(
            f"tags of resource group {rg}",
            lambda: self.resources.tags.begin_update_at_scope(
                scope, {"operation": "Delete", "properties": {"tags": tags}}
            ).result(),
        )

    def principal(self) -> tuple[str, str] | None:
        """``(object id, "User" | "ServicePrincipal")`` of whoever is signed in, if known.

        Read from the claims of the Resource Manager token (``oid``, ``idtyp``): the
        identity ARM sees is exactly the one the template must grant access to.
        """
        token = str(self.credential.get_token(self.cloud.scope).token)
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
            claims = json.loads(raw)
        except ValueError:
            return None
        oid = claims.get("oid") if isinstance(claims, dict) else None
        if not oid:
            return None
        idtyp = str(claims.get("idtyp") or "")
        user = idtyp == "user" or (not idtyp and ("upn" in claims or "unique_name" in claims))
        return str(oid), "User" if user else "ServicePrincipal"

    def aks_hosts(self, rg: str, cluster: str) -> set[str] | None:
        """API server host names of an AKS cluster (public, private), None if no cluster."""
        rid = (
            f"subscriptions/{self.subscription_id}/resourceGroups/{rg}"
            f"/providers/Microsoft.ContainerService/managedClusters/{cluster}"
        )
        res = self.get_resource(rid, CONTAINER_API)
        if res is None:
            return None
        props = res.get("properties") or {}
        return {
            str(props[k]).lower()
            for k in ("fqdn", "privateFQDN", "azurePortalFQDN")
            if props.get(k)
        }

    # ----------------------------------------------------------------------------- AKS

    def kubeconfig(self, rg: str, cluster: str, admin: bool) -> dict[str, Any] | None:
        """The cluster's kubeconfig (user or admin credentials), or None if no cluster.

        The kubeconfig never touches the disk here and its credentials are registered as
        secrets, so they cannot show up in output.
        """
        from azure.core.exceptions import ResourceNotFoundError

        if self._aks is None:
            from azure.mgmt.containerservice import ContainerServiceClient

            self._aks = ContainerServiceClient(
                self.credential, self.subscription_id, **self._common
            )
        ops = self._aks.managed_clusters
        fn = ops.list_cluster_admin_credentials if admin else ops.list_cluster_user_credentials
        kind = "admin" if admin else "user"
        try:
            result = fn(rg, cluster)
        except ResourceNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - converted with the service's message
            from azure.core.exceptions import AzureError

            if isinstance(exc, AzureError):
                raise self._fail(f"{kind} credentials of AKS cluster {cluster}", exc) from None
            raise
        configs = result.get("kubeconfigs") if hasattr(result, "get") else result.kubeconfigs
        if not configs:
            raise ApplyError(f"AKS cluster {cluster} returned no {kind} kubeconfig")
        first = configs[0]
        raw = first.get("value") if hasattr(first, "get") else first.value
        if isinstance(raw, str):
            raw = base64.b64decode(raw)
        try:
            config = yaml.safe_load(bytes(raw).decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            raise ApplyError(f"AKS cluster {cluster}: unreadable kubeconfig") from None
        for user in config.get("users") or []:
            u = user.get("user") or {}
            register(u.get("token"), u.get("client-key-data"), u.get("password"))
        return dict(config)

    def token(self, scope: str) -> tuple[str, float]:
        """An Entra ID token for ``scope`` and its expiry (epoch seconds)."""
        t = self._call(f"token for {scope}", lambda: self.credential.get_token(scope))
        return str(t.token), float(t.expires_on)

    def close(self) -> None:
        """Release connections."""
        for client in (self.resources, self._aks):
            if client is not None:
                client.close()
        self.credential.close()


def json_text(value: Any) -> str:
    """Compact JSON, for hashing and logs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
