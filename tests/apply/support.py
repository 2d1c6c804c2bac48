"""Local stand-ins for Azure Resource Manager, Kudu, AKS and a kube-apiserver.

Every fake is a stdlib ``ThreadingHTTPServer`` on a free 127.0.0.1 port, speaking TLS
with a throwaway CA made with ``cryptography`` (azure-core refuses bearer tokens over
plain http, and the real SDK clients are what is under test). Each fake checks the
requests it gets the way the real service would (method, path, api-version, auth, body,
SSA content type and query) and records a *violation* instead of raising inside its
thread; tests assert ``violations == []``. Faults (an HTTP status with headers, or a
dropped connection) are injected per method and path pattern.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import io
import ipaddress
import json
import re
import ssl
import threading
import uuid
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from .catalog_reads import CatalogReads

ARM_API = "2025-04-01"
AKS_AAD_SERVER = "6dae42f8-4368-4678-94ff-3960e28e3630"
ARM_AUDIENCE = "https://management.core.windows.net/"
#: Fake tokens: secrets the output must never contain.
TOKENS = {
    f"{ARM_AUDIENCE}.default": "tok-arm-7f3a9c2e5b1d4e6f",
    f"{AKS_AAD_SERVER}/.default": "tok-aks-91b2c3d4e5f60718",
}
ADMIN_TOKEN = "k8s-admin-token-0a1b2c3d4e5f"
FUNCTION_KEY = "FUNCKEY-s3cr3t-9z8y7x6w"
REDIS_KEY = "REDISKEY-abcdef0123456789"


# -------------------------------------------------------------------------------- TLS


@dataclass
class Tls:
    """A CA and a 127.0.0.1 server certificate signed by it."""

    ca_file: Path
    ca_pem: str
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_tls(directory: Path) -> Tls:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ai4ec test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_file.write_text(ca_pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Tls(ca_file, ca_pem, cert_file, key_file)


def other_token(scope: str) -> str:
    """The fake token of a scope that is not ARM's or AKS's (a storage account)."""
    return "tok-other-" + hashlib.sha256(scope.encode()).hexdigest()[:16]


class FakeCredential:
    """A TokenCredential handing out one fixed token per scope."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        scope = scopes[0]
        self.scopes.append(scope)
        token = TOKENS.get(scope) or other_token(scope)
        return AccessToken(token, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


# ---------------------------------------------------------------------- generic server


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    times: int
    response: Response | None  # None: drop the connection
    when: Any = None  # optional predicate on the Request


class FakeServer(ABC):
    """HTTPS server dispatching to :meth:`handle`; records requests, injects faults."""

    name = "fake"

    def __init__(self, tls: Tls) -> None:
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = Request(self.command, url.path, query, headers, body)
                with server.lock:
                    server.requests.append(req)
                    fault = server._fault(req)
                if fault is not None:
                    if fault.response is None:
                        self.close_connection = True
                        return
                    resp = fault.response
                else:
                    try:
                        with server.lock:  # one request at a time, like a consistent store
                            resp = server.handle(req)
                    except Exception as exc:  # noqa: BLE001 - becomes a violation + 500
                        server.violate(f"{req.method} {req.path}: handler crashed: {exc!r}")
                        resp = Response(500, {"error": {"code": "FakeCrash", "message": str(exc)}})
                data = (
                    resp.raw
                    if resp.raw is not None
                    else (json.dumps(resp.body).encode() if resp.body is not None else b"")
                )
                self.send_response(resp.status)
                headers = {"Content-Type": "application/json", **resp.headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = tls.server_context().wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def violate(self, message: str) -> None:
        with self.lock:
            self.violations.append(f"{self.name}: {message}")

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        when: Any = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` instead."""
        resp = Response(
            status,
            body or {"error": {"code": "Injected", "message": f"HTTP {status}"}},
            headers or {},
        )
        self.faults.append(Fault(method, re.compile(pattern), times, resp, when))

    def drop(self, method: str, pattern: str, times: int = 1) -> None:
        """Close the connection without answering the next ``times`` matching requests."""
        self.faults.append(Fault(method, re.compile(pattern), times, None))

    def _fault(self, req: Request) -> Fault | None:
        for f in self.faults:
            if (
                f.times > 0
                and f.method == req.method
                and f.pattern.search(req.path)
                and (f.when is None or f.when(req))
            ):
                f.times -= 1
                return f
        return None

    @abstractmethod
    def handle(self, req: Request) -> Response:
        """Answer one request as the faked service would."""

    def count(self, method: str, pattern: str, query: dict[str, str] | None = None) -> int:
        rx = re.compile(pattern)
        return sum(
            1
            for r in self.requests
            if r.method == method
            and rx.search(r.path)
            and all(r.query.get(k) == v for k, v in (query or {}).items())
        )

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()


# ------------------------------------------------------------------------- fake Azure


_PARAM = re.compile(r"^\[parameters\('([^']+)'\)(?:\.([A-Za-z0-9_-]+))?\]$")
_RESOURCE_ID = re.compile(r"^\[resourceId\((.*)\)\]$")
#: The condition of the template's deployer role (``not(empty(parameters('x')))``).
_NOT_EMPTY = re.compile(r"^\[not\(empty\(parameters\('([^']+)'\)\)\)\]$")
_VARIABLE = re.compile(r"^\[variables\('([^']+)'\)\]$")


#: Collections the fake lists (``apply --prune`` reads them): a resource group's
#: user-assigned identities and role assignments, a cluster's node pools.
LISTS = re.compile(
    r"^([^/]+)/providers/(?:(Microsoft\.ManagedIdentity/userAssignedIdentities)"
    r"|(Microsoft\.Authorization/roleAssignments)"
    r"|Microsoft\.ContainerService/managedClusters/([^/]+)/agentPools)$",
    re.IGNORECASE,
)
_IDENTITY_REF = re.compile(
    r"resourceId\('Microsoft\.ManagedIdentity/userAssignedIdentities', '([^']+)'\)"
)
_ROLE_DEF = re.compile(r"roleDefinitions', '([^']+)'\)")


def type_of(path: str) -> str:
    """``microsoft.keyvault/vaults/secrets`` of a resource id (lower-cased)."""
    tail = path.rpartition("/providers/")[2]
    # The fake stores a resource named by an expression (``[guid(...)]``) under that
    # text, which may hold slashes: the type ends where it starts.
    tail = tail.split("[", 1)[0].rstrip("/")
    parts = tail.split("/")
    return "/".join([parts[0], *parts[1::2]]).lower()


def _literal_args(text: str) -> list[str] | None:
    args = [a.strip() for a in text.split(",")]
    if not all(a.startswith("'") and a.endswith("'") for a in args):
        return None
    return [a[1:-1] for a in args]


def _evaluate(value: Any, params: dict[str, Any], variables: dict[str, Any] | None = None) -> Any:
    """The fake's tiny ARM evaluator: whole-string ``[parameters('x')(.y)]``,
    ``[not(empty(parameters('x')))]`` (so a conditional resource is left out as ARM leaves
    it out) and ``[variables('x')]`` of a literal variable (the template's tags)."""
    if isinstance(value, str):
        var = _VARIABLE.match(value)
        if var and variables is not None and var.group(1) in variables:
            return copy.deepcopy(variables[var.group(1)])
        cond = _NOT_EMPTY.match(value)
        if cond:
            return bool(params.get(cond.group(1)))
        m = _PARAM.match(value)
        if m:
            got = params.get(m.group(1))
            return got.get(m.group(2)) if m.group(2) and isinstance(got, dict) else got
        return value
    if isinstance(value, dict):
        return {k: _evaluate(v, params, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_evaluate(v, params, variables) for v in value]
    return value


def resource_path(rtype: str, name: str) -> str:
    ns, *types = rtype.split("/")
    if name.startswith("[guid("):
        # ARM names the resource by the GUID it computes (a role assignment): the fake's
        # stand-in is a GUID of the expression's text, the same on every deployment.
        name = str(uuid.uuid5(uuid.NAMESPACE_OID, name))
    names = name.split("/") if not name.startswith("[") else [name]
    parts = [ns]
    for i, t in enumerate(types):
        parts += [t, names[i] if i < len(names) else "?"]
    return "/".join(parts)


def _paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            p = f"{prefix}.{k}" if prefix else k
            if k not in before or k not in after:
                out.append(p)
            else:
                out += _paths(before[k], after[k], p)
        return out
    return [] if before == after else [prefix]


def _failed_op(r: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {
        "properties": {
            "provisioningState": "Failed",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "targetResource": {"resourceType": r["type"], "resourceName": r["name"]},
            "statusMessage": {"error": {"code": code, "message": message}},
        }
    }


_IMPORT_SCRIPT = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/.python_packages/lib/site-packages"]
import function_app
import azure.functions as func
apps = [v for v in vars(function_app).values() if isinstance(v, func.FunctionApp)]
print(json.dumps(sorted(f.get_function_name() for a in apps for f in a.get_functions())))
"""


def without_packages(bundle: bytes) -> bytes:
    """``bundle`` without its vendored ``.python_packages``: what the host cannot import."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bundle)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if not info.filename.startswith(".python_packages/"):
                dst.writestr(info, src.read(info))
    return out.getvalue()


class FunctionsHost:
    """The Functions host behind a Function App, as strict as the real one on two points.

    * It imports ``function_app.py`` of the bundle (in a subprocess, like the Python
      worker) and lists only the functions that import declared: a bundle it cannot
      import lists nothing, as on Azure. ``dependencies`` says where imports may come
      from: ``"bundle"`` (the default: only the bundle and its ``.python_packages``, as
      on Azure without a remote build) or ``"environment"`` (the test's own packages
      too).
    * After a publish it restarts: the first ``index_delay`` listings are empty.

    Its ``BackendWebhook`` answers Event Grid's validation handshake by echoing the
    validation code, once it is indexed. ``unanswered`` handshakes after that get no
    answer at all, as while the Python worker of a just-restarted host is still loading
    (listed, but not yet serving): Event Grid then fails the subscription's creation.
    """

    _cache: dict[tuple[str, str], tuple[list[str], str]] = {}

    def __init__(self) -> None:
        self.dependencies = "bundle"
        #: Drop the bundle's .python_packages on arrival: a package without its
        #: dependencies, as ai4ec built them before the bundle vendored them.
        self.strip_packages = False
        self.index_delay = 2
        #: Validation handshakes of an indexed BackendWebhook left unanswered (cold worker).
        self.unanswered = 0
        self.indexed: list[str] = []
        self.error = ""
        self._pending: list[str] = []
        self._left = 0
        self.publishes = 0

    def load(self, bundle: bytes) -> tuple[list[str], str]:
        """(function names, import error) of a bundle, as the worker would find them."""
        import subprocess
        import sys
        import tempfile

        if self.strip_packages:
            bundle = without_packages(bundle)
        key = (hashlib.sha256(bundle).hexdigest(), self.dependencies)
        if key in self._cache:
            return self._cache[key]
        with tempfile.TemporaryDirectory() as d:
            try:
                zipfile.ZipFile(io.BytesIO(bundle)).extractall(d)
            except zipfile.BadZipFile:
                return [], "not a zip"
            flags = ["-I", "-S"] if self.dependencies == "bundle" else ["-I"]
            proc = subprocess.run(  # noqa: S603 - the test's own interpreter
                [sys.executable, *flags, "-c", _IMPORT_SCRIPT, d],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        if proc.returncode != 0:
            result: tuple[list[str], str] = ([], (proc.stderr.strip().splitlines() or ["?"])[-1])
        else:
            result = (list(json.loads(proc.stdout)), "")
        self._cache[key] = result
        return result

    def publish(self, bundle: bytes) -> None:
        self.publishes += 1
        self._pending, self.error = self.load(bundle)
        self.indexed = []
        self._left = self.index_delay

    def _tick(self) -> None:
        if self._left > 0:
            self._left -= 1  # still restarting: this listing is empty
        else:
            self.indexed = list(self._pending)

    def listing(self, app: str) -> list[dict[str, Any]]:
        """WebApps_ListFunctions: ``{name: "<app>/<function>"}`` per indexed function."""
        self._tick()
        return [
            {"name": f"{app}/{n}", "properties": {"name": n, "isDisabled": False}}
            for n in self.indexed
        ]

    def webhook(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """BackendWebhook's answer to a SubscriptionValidationEvent (None: not served)."""
        if "BackendWebhook" not in self.indexed:
            return None
        if self.unanswered > 0:
            self.unanswered -= 1  # the worker is still loading: the request times out
            return None
        return {"validationResponse": (event.get("data") or {}).get("validationCode")}

    def handshake(self) -> str:
        """Event Grid's validation handshake; "" when it passed, else ARM's message."""
        code = str(uuid.uuid4())
        event = {
            "id": str(uuid.uuid4()),
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {"validationCode": code},
        }
        answer = self.webhook(event)
        if answer is not None and answer.get("validationResponse") == code:
            return ""
        return (
            "Webhook validation handshake failed for https://app/api/BackendWebhook. Http POST "
            "request failed with response code Unknown. For troubleshooting, visit "
            "https://aka.ms/esvalidation."
        )


class FakeAzure(FakeServer):
    """Resource Manager (groups, tags, deployments, what-if, sites, AKS) plus Kudu."""

    name = "azure"

    def __init__(self, tls: Tls, subscription: str) -> None:
        super().__init__(tls)
        self.subscription = subscription
        self.groups: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.output_values: dict[str, Any] = {}
        self.deploy_polls = 1
        self.kudu: list[bytes] = []
        self.kudu_polls = 1
        self.kube: FakeKube | None = None
        #: A Key Vault stand-in told of role assignments deployed on its vault.
        self.vault: Any = None
        self.tls = tls
        self.fail_resource: tuple[str, str] | None = None
        #: More (type, name) pairs whose deployment fails, and the operations page size.
        self.fail_resources: set[tuple[str, str]] = set()
        self.operations_page = 2
        self._kudu_left = 0
        self.blobs: dict[str, bytes] = {}
        #: Put a Key Vault secret's value into what-if results, as ARM may.
        self.whatif_secret = REDIS_KEY
        #: The Functions host: after a publish it restarts and lists nothing for
        #: ``index_delay`` reads of ``/functions``, then the functions it could import.
        self.functions_host = FunctionsHost()
        #: The AKS cluster's API server host name (default: the kube fake's address),
        #: and per AKS cluster name, for builds with more than one cluster.
        self.aks_fqdn: str | None = None
        self.aks_fqdns: dict[str, str] = {}
        #: Deployment name -> GETs for which a deployment left running (a Ctrl-C'd run)
        #: still reports Running; a PUT meanwhile is 409 DeploymentActive, as in ARM.
        self.active: dict[str, int] = {}
        #: Resource type -> what-if changeType forced for it ("Deploy", "NoEffect"), and
        #: whether unchanged resources come back as a Modify of NoEffect properties only
        #: (what-if "noise": server-side defaults, read-only values).
        self.whatif_forced: dict[str, str] = {}
        self.whatif_noise = False
        #: Deployment name -> error code its next ``times`` PUTs fail with (in a resource
        #: operation, as ARM reports AnotherOperationInProgress or PrincipalNotFound), and
        #: optionally ARM's message (a ``listKeys`` of a restarting site is ``BadRequest``
        #: "Encountered an error (ServiceUnavailable) from host runtime.").
        self.transient: dict[str, tuple[str, int] | tuple[str, int, str]] = {}
        #: The region's offer for apply --plan's live catalog checks (catalog_reads.py).
        self.catalog_reads = CatalogReads()
        #: Resource type (lower) -> apiVersion of the template that deployed it.
        self.type_api: dict[str, str] = {}
        #: Items per page of a listed collection (identities, role assignments, pools).
        self.page_size = 100
        #: Role assignments above the resource group, listed with those in it.
        self.inherited: list[dict[str, Any]] = []

    # -- helpers

    def _auth(self, req: Request, scope: str = f"{ARM_AUDIENCE}.default") -> bool:
        want = f"Bearer {TOKENS[scope]}"
        if req.headers.get("authorization") != want:
            self.violate(f"{req.method} {req.path}: Authorization is not the {scope} token")
            return False
        return True

    def _api(self, req: Request, version: str) -> None:
        if req.query.get("api-version") != version:
            self.violate(
                f"{req.method} {req.path}: api-version {req.query.get('api-version')} != {version}"
            )

    def _rid(self, rg: str, rtype: str, name: str) -> str:
        base = f"/subscriptions/{self.subscription}/resourceGroups/{rg}"
        return f"{base}/providers/{resource_path(rtype, name)}"

    def _expand(
        self, template: dict[str, Any], params: dict[str, Any]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource, evaluated body) of every resource whose condition holds."""
        out = []
        for r in template["resources"]:
            cond = _evaluate(r.get("condition", True), params)
            if cond is False:
                continue
            body = {k: v for k, v in r.items() if k not in ("dependsOn", "condition", "apiVersion")}
            out.append((r, _evaluate(body, params, template.get("variables") or {})))
        return out

    def _params(
        self, template: dict[str, Any], props: dict[str, Any], where: str
    ) -> dict[str, Any]:
        declared = template.get("parameters") or {}
        given = props.get("parameters") or {}
        for k, v in given.items():
            if k not in declared:
                self.violate(f"{where}: parameter {k} is not declared by the template")
            if isinstance(v, dict) and "reference" in v:
                # ARM reads a Key Vault secret only into a secure parameter, from a vault
                # named by its full resource id.
                ref = v["reference"]
                kind = str((declared.get(k) or {}).get("type", "")).lower()
                vault = str((ref.get("keyVault") or {}).get("id", ""))
                if kind not in ("securestring", "secureobject"):
                    self.violate(f"{where}: Key Vault reference for non-secure parameter {k}")
                if not re.fullmatch(
                    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                    r"Microsoft\.KeyVault/vaults/[^/]+",
                    vault,
                ) or not ref.get("secretName"):
                    self.violate(f"{where}: parameter {k}: malformed Key Vault reference")
                continue
            if not isinstance(v, dict) or "value" not in v:
                self.violate(f"{where}: parameter {k} is not {{'value': ...}}")
        values = {k: (d or {}).get("defaultValue") for k, d in declared.items()}
        values.update({k: v.get("value") for k, v in given.items() if isinstance(v, dict)})
        for k, v in given.items():
            if isinstance(v, dict) and "reference" in v:
                values[k] = f"<keyvault:{v['reference'].get('secretName')}>"
        return values

    def _check_depends(self, template: dict[str, Any], where: str) -> None:
        present = {(r["type"].lower(), str(r["name"]).lower()) for r in template["resources"]}
        for r in template["resources"]:
            for d in r.get("dependsOn") or []:
                m = _RESOURCE_ID.match(d)
                if m:
                    args = _literal_args(m.group(1))
                    if args and (args[0].lower(), "/".join(args[1:]).lower()) not in present:
                        self.violate(
                            f"{where}: {r['name']} depends on {d}, which is not in the template"
                        )
                elif d.startswith("[extensionResourceId("):
                    hits = [
                        x
                        for x in template["resources"]
                        if "scope" in x
                        and f"'{x['type']}'" in d
                        and str(x["name"]).strip("[]") in d
                    ]
                    if not hits:
                        self.violate(
                            f"{where}: {r['name']} depends on {d[:80]}..., not in the template"
                        )

    def _check_template(self, props: dict[str, Any], where: str) -> dict[str, Any]:
        if props.get("mode") != "Incremental":
            self.violate(f"{where}: mode {props.get('mode')} (apply must deploy incrementally)")
        template = props.get("template") or {}
        if "resources" not in template or "$schema" not in template:
            self.violate(f"{where}: not an ARM template")
        self._check_depends(template, where)
        return template

    # -- routing

    def handle(self, req: Request) -> Response:
        p = req.path
        if p == "/metadata/endpoints":
            return Response(
                200,
                {
                    "authentication": {
                        "loginEndpoint": "https://login.example.test/",
                        "audiences": [ARM_AUDIENCE],
                    }
                },
            )
        if p.startswith("/api/"):
            return self._kudu(req)
        if p.startswith("/ai4ec-packages/"):
            return self._blob(req)
        if not self._auth(req):
            return Response(
                401, {"error": {"code": "AuthenticationFailed", "message": "bad token"}}
            )
        if re.match(
            rf"^/subscriptions/{self.subscription}/providers/Microsoft\.(Compute|ContainerService)/",
            p,
        ):
            return self.catalog_reads.handle(self, req)  # apply --plan's live checks
        if req.method == "GET" and re.match(
            rf"^/subscriptions/{self.subscription}/providers/Microsoft\.KeyVault/locations/"
            r"[^/]+/deletedVaults/[^/]+$",
            p,
        ):
            # No vault is soft-deleted here (lifecycle.py models soft delete).
            return Response(404, {"error": {"code": "ResourceNotFound", "message": p}})
        m = re.match(rf"^/subscriptions/{self.subscription}/resource[gG]roups/([^/]+)(/.*)?$", p)
        if p.startswith("/operations/"):
            return self._operation(req)
        if not m:
            self.violate(f"unexpected {req.method} {p}")
            return Response(404, {"error": {"code": "NotFound", "message": p}})
        rg, rest = m.group(1), m.group(2) or ""
        if rest == "":
            return self._group(req, rg)
        listing = LISTS.match(f"{rg}{rest}")
        if listing and req.method == "GET":
            return self._list(req, listing)
        if rest == "/resources" and req.method == "GET":
            return self._group_resources(req, rg)
        if rest == "/providers/Microsoft.Resources/tags/default":
            self._api(req, ARM_API)
            body = req.json()
            tags = self.groups[rg.lower()]["tags"]
            if body.get("operation") == "Delete":  # removes the tags whose values match
                for k, v in body["properties"]["tags"].items():
                    if tags.get(k) == v:
                        del tags[k]
            elif body.get("operation") != "Merge":
                self.violate(f"tags PATCH operation {body.get('operation')} (must merge)")
            else:
                tags.update(body["properties"]["tags"])
            return Response(200, {"properties": {"tags": self.groups[rg.lower()]["tags"]}})
        d = re.match(
            r"^/providers/Microsoft\.Resources/deployments/([^/]+)(/whatIf|/operations)?$", rest
        )
        if d:
            return self._deployment(req, rg, d.group(1), d.group(2) or "")
        s = re.match(r"^/providers/Microsoft\.Web/sites/([^/]+)(/.+)?$", rest)
        if s:
            return self._site(req, rg, s.group(1), s.group(2) or "")
        st = re.match(r"^/providers/Microsoft\.Storage/storageAccounts/([^/]+)$", rest)
        if st:
            if (
                self._rid(rg, "Microsoft.Storage/storageAccounts", st.group(1)).lower()
                not in self.resources
            ):
                return Response(
                    404, {"error": {"code": "ResourceNotFound", "message": "no account"}}
                )
            return Response(
                200,
                {"name": st.group(1), "properties": {"primaryEndpoints": {"blob": f"{self.url}/"}}},
            )
        a = re.match(
            r"^/providers/Microsoft\.ContainerService/managedClusters/([^/]+)/(listClusterUserCredential|listClusterAdminCredential)$",
            rest,
        )
        if a:
            return self._aks(req, rg, a.group(1), a.group(2))
        apim = re.match(r"^/providers/Microsoft\.ApiManagement/service/([^/]+)/(.+)$", rest)
        if apim:
            return self._apim(req, rg, apim.group(1), apim.group(2))
        mc = re.match(r"^/providers/Microsoft\.ContainerService/managedClusters/([^/]+)$", rest)
        if mc and req.method == "GET":
            rid = self._rid(rg, "Microsoft.ContainerService/managedClusters", mc.group(1)).lower()
            if rid not in self.resources:
                return Response(404, {"error": {"code": "ResourceNotFound", "message": "none"}})
            fqdn = (
                self.aks_fqdns.get(mc.group(1))
                or self.aks_fqdn
                or urlparse(self.kube.url if self.kube else "").hostname
            )
            return Response(200, {"name": mc.group(1), "properties": {"fqdn": fqdn}})
        self.violate(f"unexpected {req.method} {p}")
        return Response(404, {"error": {"code": "NotFound", "message": p}})

    # -- collections

    def principal(self, rg: str, identity: str) -> str:
        """The principal id ARM gives a user-assigned identity (stable per resource id)."""
        rid = self._rid(rg, "Microsoft.ManagedIdentity/userAssignedIdentities", identity)
        return str(uuid.uuid5(uuid.NAMESPACE_URL, rid.lower()))

    def _list(self, req: Request, m: re.Match[str]) -> Response:
        """One page of a collection, ``nextLink`` to the next (``page_size`` items each).

        The API version must be the one of the template that deployed the type, as ARM
        refuses versions a type does not have. Role assignments are every one at or below
        the resource group, plus :attr:`inherited` (above it), as ARM lists them.
        """
        rg = m.group(1)
        base = f"/subscriptions/{self.subscription}/resourceGroups/{rg}"
        if m.group(2):
            kind = "microsoft.managedidentity/userassignedidentities"
        elif m.group(3):
            kind = "microsoft.authorization/roleassignments"
        else:
            kind = "microsoft.containerservice/managedclusters/agentpools"
        # A pool's API versions are its cluster's (one resource provider, one version set).
        want = self.type_api.get(kind) or (
            self.type_api.get("microsoft.containerservice/managedclusters") if m.group(4) else None
        )
        if want is None or req.query.get("api-version") != want:
            self.violate(f"list {req.path}: api-version {req.query.get('api-version')} ({want})")
        items: list[dict[str, Any]] = []
        for key, body in sorted(self.resources.items()):
            if str(body.get("type", "")).lower() != kind or not key.startswith(base.lower() + "/"):
                continue
            if m.group(2):
                name = str(body.get("name"))
                props = {**(body.get("properties") or {}), "principalId": self.principal(rg, name)}
                items.append({**body, "id": self._rid(rg, body["type"], name), "properties": props})
            elif m.group(3):
                items.append(self._assignment(rg, body))
            else:
                cluster, _, pool = str(body.get("name")).partition("/")
                if cluster.lower() != str(m.group(4)).lower():
                    continue
                rid = self._rid(rg, body["type"], str(body["name"]))
                items.append({**body, "id": rid, "name": pool})
        if m.group(3):
            items.extend(self.inherited)
        else:
            cluster_key = self._rid(
                rg, "Microsoft.ContainerService/managedClusters", str(m.group(4))
            )
            if m.group(4) and cluster_key.lower() not in self.resources:
                return Response(404, {"error": {"code": "ResourceNotFound", "message": req.path}})
        return self._page(req, items)

    def _page(self, req: Request, items: list[dict[str, Any]]) -> Response:
        """One page of ``items`` (``page_size``), with a ``nextLink`` when more follow."""
        start = int(req.query.get("$skiptoken") or 0)
        page = items[start : start + self.page_size]
        body_out: dict[str, Any] = {"value": page}
        if start + self.page_size < len(items):
            body_out["nextLink"] = (
                f"{self.url}{req.path}?api-version={req.query.get('api-version')}"
                f"&$skiptoken={start + self.page_size}"
            )
        return Response(200, body_out)

    def _group_resources(self, req: Request, rg: str) -> Response:
        """``GET <group>/resources``: the group's top-level resources with their tags.

        As ARM: no properties, and a ``$filter`` by tag is refused here because ARM would
        then leave the tags out (a caller filtering client-side must not use it).
        """
        self._api(req, ARM_API)
        if "$filter" in req.query:
            self.violate(f"{req.path}: $filter by tag drops the tags from ARM's answer")
        base = f"/subscriptions/{self.subscription}/resourceGroups/{rg}".lower()
        items = []
        for key, body in sorted(self.resources.items()):
            kind = str(body.get("type", ""))
            if kind.count("/") != 1 or not key.startswith(base + "/"):
                continue
            items.append(
                {
                    "id": self._rid(rg, kind, str(body.get("name"))),
                    "name": body.get("name"),
                    "type": kind,
                    "location": body.get("location"),
                    "tags": body.get("tags") or {},
                }
            )
        return self._page(req, items)

    def _assignment(self, rg: str, body: dict[str, Any]) -> dict[str, Any]:
        """A stored role assignment as ARM lists it: full scope, role and principal ids."""
        base = f"/subscriptions/{self.subscription}/resourceGroups/{rg}"
        scope = str(body.get("scope") or "")
        full_scope = f"{base}/providers/{scope}" if scope else base
        name = resource_path(str(body["type"]), str(body["name"])).rpartition("/")[2]
        props = dict(body.get("properties") or {})
        who = _IDENTITY_REF.search(str(props.get("principalId", "")))
        if who:
            props["principalId"] = self.principal(rg, who.group(1))
        role = _ROLE_DEF.search(str(props.get("roleDefinitionId", "")))
        if role:
            props["roleDefinitionId"] = (
                f"/subscriptions/{self.subscription}/providers/Microsoft.Authorization/"
                f"roleDefinitions/{role.group(1)}"
            )
        props["scope"] = full_scope
        rid = f"{full_scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
        return {"id": rid, "name": name, "type": body["type"], "properties": props}

    def _apim(self, req: Request, rg: str, service: str, rel: str) -> Response:
        """API Management children: list a collection, read or delete one item.

        As the service does: a DELETE without ``If-Match`` is refused (the header is
        required), a named value a remaining policy uses (``{{name}}``), a backend a
        policy routes to (``backend-id``) or a fragment a policy includes
        (``include-fragment``) cannot be deleted, deleting an API deletes its
        operations, policies, tag links and product links, and a missing service is 404.
        """
        self._api(req, "2024-05-01")
        svc = self._rid(rg, "Microsoft.ApiManagement/service", service).lower()
        if svc not in self.resources:
            return Response(404, {"error": {"code": "ResourceNotFound", "message": service}})
        segs = rel.split("/")
        prefix = f"{svc}/{rel.lower()}"
        if len(segs) % 2 == 1 and req.method == "GET":
            items = []
            for key, body in sorted(self.resources.items()):
                if key.startswith(prefix + "/") and "/" not in key[len(prefix) + 1 :]:
                    items.append(
                        {
                            "id": key,
                            "type": body.get("type"),
                            "name": str(body.get("name", "")).rsplit("/", 1)[-1],
                            "properties": body.get("properties") or {},
                        }
                    )
            return Response(200, {"value": items})
        if len(segs) % 2 == 0 and req.method == "GET":
            body = self.resources.get(prefix)
            if body is None:
                return Response(404, {"error": {"code": "ResourceNotFound", "message": rel}})
            return Response(200, {"id": prefix, **body})
        if len(segs) % 2 == 0 and req.method == "DELETE":
            if not req.headers.get("if-match"):
                return Response(
                    400,
                    {
                        "error": {
                            "code": "ValidationError",
                            "message": "If-Match header is required",
                        }
                    },
                )
            if prefix not in self.resources:
                return Response(404, {"error": {"code": "ResourceNotFound", "message": rel}})
            name = segs[-1]
            doomed = {k for k in self.resources if k == prefix or k.startswith(prefix + "/")}
            if segs[0] == "apis":
                doomed |= {
                    k
                    for k in self.resources
                    if re.fullmatch(
                        rf"{re.escape(svc)}/products/[^/]+/apis/{re.escape(name.lower())}", k
                    )
                }
            policies = [
                str((b.get("properties") or {}).get("value") or "")
                for k, b in self.resources.items()
                if k.startswith(svc + "/")
                and k not in doomed
                and str(b.get("type", "")).endswith("/policies")
            ]
            if segs[0] == "namedvalues" or segs[0] == "namedValues":
                if any("{{" + name + "}}" in text for text in policies):
                    return Response(
                        400,
                        {
                            "error": {
                                "code": "ValidationError",
                                "message": f"Named value '{name}' is used in policies",
                            }
                        },
                    )
            if segs[0].lower() == "policyfragments":
                if any(f'fragment-id="{name}"' in text for text in policies):
                    return Response(
                        400,
                        {
                            "error": {
                                "code": "ValidationError",
                                "message": f"Policy fragment '{name}' is used in policies",
                            }
                        },
                    )
            if segs[0] == "backends":
                if any(f'backend-id="{name}"' in text for text in policies):
                    return Response(
                        400,
                        {
                            "error": {
                                "code": "ValidationError",
                                "message": f"Backend '{name}' is used in policies",
                            }
                        },
                    )
            for k in doomed:
                del self.resources[k]
            return Response(200, None)
        self.violate(f"unexpected {req.method} {req.path}")
        return Response(405, {"error": {"code": "MethodNotAllowed", "message": req.method}})

    def _site(self, req: Request, rg: str, app: str, action_path: str) -> Response:
        p = req.path
        self._api(req, "2024-04-01")
        rid = self._rid(rg, "Microsoft.Web/sites", app).lower()
        if rid not in self.resources:
            return Response(404, {"error": {"code": "ResourceNotFound", "message": "no site"}})
        action = action_path
        if action == "/functions" and req.method == "GET":
            return Response(200, {"value": self.functions_host.listing(app)})
        if action in ("/restart", "/syncfunctiontriggers", "/host/default/sync"):
            if req.method != "POST":
                self.violate(f"{action} with {req.method}")
            if action == "/restart":
                bundle = self.blobs.get("/ai4ec-packages/functions.zip")
                if bundle is not None:
                    self.functions_host.publish(bundle)
            return Response(200, {})
        if action:
            # ARM has no such action (e.g. /syncfunctions): 404, as the real API answers.
            self.violate(f"{req.method} {p}: not an ARM action of a site")
            return Response(
                404,
                {
                    "error": {
                        "code": "NotFound",
                        "message": f"No route registered for '{action}'",
                    }
                },
            )
        return Response(
            200,
            {
                "name": app,
                "properties": {
                    "hostNameSslStates": [
                        {"name": f"{app}.azurewebsites.net", "hostType": "Standard"},
                        {"name": f"127.0.0.1:{self.port}", "hostType": "Repository"},
                    ]
                },
            },
        )

    def _group(self, req: Request, rg: str) -> Response:
        self._api(req, ARM_API)
        key = rg.lower()
        if req.method == "HEAD":
            return Response(204 if key in self.groups else 404)
        if req.method == "GET":
            if key not in self.groups:
                return Response(404, {"error": {"code": "ResourceGroupNotFound", "message": rg}})
            g = self.groups[key]
            return Response(
                200,
                {
                    "id": f"/subscriptions/{self.subscription}/resourceGroups/{rg}",
                    "name": rg,
                    "location": g["location"],
                    "tags": g["tags"],
                },
            )
        if req.method == "PUT":
            body = req.json()
            if key in self.groups:
                self.violate(f"resource group {rg} PUT although it exists (would replace its tags)")
            self.groups[key] = {"location": body["location"], "tags": dict(body.get("tags") or {})}
            return Response(
                201, {"name": rg, "location": body["location"], "tags": body.get("tags") or {}}
            )
        self.violate(f"unexpected {req.method} on resource group")
        return Response(405)

    def _deployment(self, req: Request, rg: str, name: str, action: str) -> Response:
        self._api(req, ARM_API)
        where = f"deployment {name}"
        if rg.lower() not in self.groups:
            return Response(
                404,
                {
                    "error": {
                        "code": "ResourceGroupNotFound",
                        "message": f"Resource group '{rg}' could not be found.",
                    }
                },
            )
        if action == "/operations":
            return self._operations_page(name, req)
        if action == "/whatIf":
            return self._whatif(req, rg, where)
        if req.method == "GET":
            if self.active.get(name, 0) > 0:
                self.active[name] -= 1
                return Response(200, {"name": name, "properties": {"provisioningState": "Running"}})
            dep = self.deployments.get(name)
            if dep is None:
                return Response(404, {"error": {"code": "DeploymentNotFound", "message": name}})
            return Response(200, dep["resource"])
        if req.method != "PUT":
            self.violate(f"{where}: {req.method}")
            return Response(405)
        if self.active.get(name, 0) > 0:
            return Response(
                409,
                {
                    "error": {
                        "code": "DeploymentActive",
                        "message": f"Unable to edit or replace deployment '{name}': previous "
                        "deployment is still active (state: Running).",
                    }
                },
            )
        props = (req.json() or {}).get("properties") or {}
        template = self._check_template(props, where)
        params = self._params(template, props, where)
        failed = []
        code, times, *said = self.transient.get(name, ("", 0))
        message = said[0] if said else f"{code}: injected transient failure"
        if times > 0:
            self.transient[name] = (code, times - 1, message)
        for r, body in self._expand(template, params):
            if times > 0:
                failed.append(_failed_op(r, code, message))
                times = 0
                continue
            if r["type"] == "Microsoft.EventGrid/topics/eventSubscriptions":
                refused = self.functions_host.handshake()
                if refused:
                    failed.append(_failed_op(r, "Url validation", refused))
                    continue
            refused = self.refuse(rg, r, body)
            if refused is not None:
                failed.append(_failed_op(r, *refused))
                continue
            if r["type"] == "Microsoft.Authorization/roleAssignments" and self.kube is not None:
                self.kube.grant(str((body.get("properties") or {}).get("principalId")))
            if r["type"] == "Microsoft.Authorization/roleAssignments" and self.vault is not None:
                # Single-resource scopes are "<type>/<name>" here, roles an expression.
                scope = str(body.get("scope") or "")
                if re.fullmatch(r"Microsoft\.KeyVault/vaults/[^/]+", scope):
                    self.vault.grant(str((body.get("properties") or {}).get("roleDefinitionId")))
            if (r["type"], r["name"]) == self.fail_resource or (
                r["type"],
                r["name"],
            ) in self.fail_resources:
                failed.append(
                    {
                        "properties": {
                            "provisioningState": "Failed",
                            "targetResource": {
                                "resourceType": r["type"],
                                "resourceName": r["name"],
                            },
                            "statusMessage": {
                                "error": {
                                    "code": "BadRequest",
                                    "message": f"invalid value; see https://{r['name']}.azurewebsites.net/api/CacheConnectorUpsert?code={FUNCTION_KEY}",
                                }
                            },
                        }
                    }
                )
                continue
            self.resources[self._rid(rg, r["type"], str(r["name"])).lower()] = body
            self.type_api.setdefault(str(r["type"]).lower(), str(r.get("apiVersion")))
        outputs = {}
        for k, o in (template.get("outputs") or {}).items():
            outputs[k] = {
                "type": o.get("type", "string"),
                "value": self.output_values.get(k, _evaluate(o.get("value"), params)),
            }
        state = "Failed" if failed else "Succeeded"
        resource = {
            "id": f"/subscriptions/{self.subscription}/resourceGroups/{rg}"
            f"/providers/Microsoft.Resources/deployments/{name}",
            "name": name,
            "properties": {"provisioningState": state, "outputs": outputs, "mode": "Incremental"},
        }
        self.deployments[name] = {
            "resource": resource,
            "operations": failed,
            "params": params,
            "template": template,
        }
        op = str(uuid.uuid4())
        result: dict[str, Any] = {"status": state}
        if failed:
            result["error"] = {
                "code": "DeploymentFailed",
                "message": "At least one resource deployment operation failed.",
            }
        self.operations[op] = {"polls": self.deploy_polls, "result": result}
        body = copy.deepcopy(resource)
        body["properties"]["provisioningState"] = "Running" if self.deploy_polls else state
        if self.deploy_polls == 0 and not failed:
            return Response(200, resource)
        return Response(
            201,
            body,
            {
                "Azure-AsyncOperation": f"{self.url}/operations/{op}?api-version={ARM_API}",
                "Retry-After": "0",
            },
        )

    def refuse(self, rg: str, r: dict[str, Any], body: dict[str, Any]) -> tuple[str, str] | None:
        """(code, message) when ARM would refuse creating resource ``r`` now; None: create.

        Subclasses model resource lifecycles (soft-deleted Key Vault names, for one).
        """
        del rg, r, body
        return None

    def _whatif(self, req: Request, rg: str, where: str) -> Response:
        if req.method != "POST":
            self.violate(f"{where}/whatIf with {req.method}")
        props = (req.json() or {}).get("properties") or {}
        template = self._check_template(props, where)
        params = self._params(template, props, where)
        changes = []
        for r, body in self._expand(template, params):
            rid = self._rid(rg, r["type"], str(r["name"]))
            old = self.resources.get(rid.lower())
            if r["type"] == "Microsoft.KeyVault/vaults/secrets" and self.whatif_secret:
                body = copy.deepcopy(body)
                body.setdefault("properties", {})["value"] = (
                    f"rediss://:{self.whatif_secret}@r:6380/0"
                )
                old = None if old is None else body
            forced = self.whatif_forced.get(r["type"])
            if forced:
                changes.append({"resourceId": rid, "changeType": forced, "after": body})
            elif old is None:
                changes.append({"resourceId": rid, "changeType": "Create", "after": body})
            elif old != body:
                delta = [
                    {"path": p, "propertyChangeType": "Modify", "before": "x", "after": "y"}
                    for p in _paths(old, body)
                ]
                changes.append(
                    {
                        "resourceId": rid,
                        "changeType": "Modify",
                        "before": old,
                        "after": body,
                        "delta": delta,
                    }
                )
            elif self.whatif_noise:
                noise = [{"path": "properties.provisioningState", "propertyChangeType": "NoEffect"}]
                changes.append(
                    {
                        "resourceId": rid,
                        "changeType": "Modify",
                        "before": old,
                        "after": body,
                        "delta": noise,
                    }
                )
            else:
                changes.append(
                    {"resourceId": rid, "changeType": "NoChange", "before": old, "after": body}
                )
        op = str(uuid.uuid4())
        self.operations[op] = {
            "polls": 1,
            "result": {"status": "Succeeded", "properties": {"changes": changes}},
        }
        return Response(
            202,
            None,
            {
                "Location": f"{self.url}/operations/{op}?api-version={ARM_API}",
                "Retry-After": "0",
            },
        )

    def _operations_page(self, name: str, req: Request) -> Response:
        """One page of a deployment's operations (``operations_page`` each, nextLink)."""
        ops = self.deployments.get(name, {}).get("operations", [])
        start = int(req.query.get("skip") or 0)
        end = start + self.operations_page
        body: dict[str, Any] = {"value": ops[start:end]}
        if end < len(ops):
            body["nextLink"] = f"{self.url}{req.path}?api-version={ARM_API}&skip={end}"
        return Response(200, body)

    def _operation(self, req: Request) -> Response:
        op = self.operations.get(req.path.rsplit("/", 1)[-1])
        if op is None:
            return Response(404, {"error": {"code": "NotFound", "message": "operation"}})
        if op["polls"] > 0:
            op["polls"] -= 1
            if "properties" in op["result"]:  # what-if: 202 until done
                return Response(
                    202,
                    None,
                    {"Location": f"{self.url}{req.path}?api-version={ARM_API}", "Retry-After": "0"},
                )
            return Response(200, {"status": "Running"}, {"Retry-After": "0"})
        return Response(200, op["result"])

    def _aks(self, req: Request, rg: str, cluster: str, action: str) -> Response:
        if req.method != "POST":
            self.violate(f"{action} with {req.method}")
        rid = self._rid(rg, "Microsoft.ContainerService/managedClusters", cluster).lower()
        if rid not in self.resources or self.kube is None:
            return Response(
                404,
                {"error": {"code": "ResourceNotFound", "message": f"cluster {cluster} not found"}},
            )
        admin = action == "listClusterAdminCredential"
        user: dict[str, Any] = (
            {"token": ADMIN_TOKEN}
            if admin
            else {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": "kubelogin",
                    "args": [
                        "get-token",
                        "--environment",
                        "AzurePublicCloud",
                        "--server-id",
                        AKS_AAD_SERVER,
                        "--login",
                        "devicecode",
                    ],
                }
            }
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster,
                    "cluster": {
                        "server": self.kube.url,
                        "certificate-authority-data": base64.b64encode(
                            self.tls.ca_pem.encode()
                        ).decode(),
                    },
                }
            ],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "u"}}],
            "current-context": cluster,
            "users": [{"name": "u", "user": user}],
        }
        value = base64.b64encode(yaml.safe_dump(config).encode()).decode()
        return Response(
            200,
            {"kubeconfigs": [{"name": "clusterAdmin" if admin else "clusterUser", "value": value}]},
        )

    def _kudu(self, req: Request) -> Response:
        self._auth(req)
        if req.path == "/api/zipdeploy":
            if req.method != "POST" or req.query.get("isAsync") != "true":
                self.violate(f"zipdeploy: {req.method} {req.query}")
            if req.headers.get("content-type") != "application/zip":
                self.violate(f"zipdeploy content type {req.headers.get('Content-Type')}")
            try:
                zipfile.ZipFile(io.BytesIO(req.body)).testzip()
            except zipfile.BadZipFile:
                self.violate("zipdeploy body is not a zip")
            self.kudu.append(req.body)
            self._kudu_left = self.kudu_polls
            self.functions_host.publish(req.body)
            return Response(
                202, None, {"Location": f"{self.url}/api/deployments/latest", "Retry-After": "0"}
            )
        if req.path == "/api/deployments/latest":
            if self._kudu_left > 0:
                self._kudu_left -= 1
                return Response(202, {"status": 1, "complete": False}, {"Retry-After": "0"})
            return Response(200, {"status": 4, "complete": True, "status_text": ""})
        self.violate(f"unexpected Kudu {req.method} {req.path}")
        return Response(404)

    def _blob(self, req: Request) -> Response:
        want = f"Bearer {other_token(f'https://127.0.0.1:{self.port}/.default')}"
        if req.headers.get("authorization") != want:
            self.violate("blob PUT without the storage account's token")
        if req.method != "PUT" or req.headers.get("x-ms-blob-type") != "BlockBlob":
            self.violate(f"blob: {req.method} {req.headers.get('x-ms-blob-type')}")
        if not req.headers.get("x-ms-version"):
            self.violate("blob PUT without x-ms-version")
        self.blobs[req.path] = req.body
        return Response(201, None)

    # -- assertions

    def writes(self) -> list[str]:
        """Every request that changes something in Azure (whatIf and reads excluded)."""
        out = []
        for r in self.requests:
            if r.method in ("PUT", "PATCH", "DELETE") or (
                r.method == "POST" and not r.path.endswith(("/whatIf", "Credential", "/operations"))
            ):
                out.append(f"{r.method} {r.path}")
        return out


# ----------------------------------------------------------------------- fake Kubernetes

DISCOVERY: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("Namespace", "namespaces", False),
        ("ServiceAccount", "serviceaccounts", True),
        ("Secret", "secrets", True),
        ("ConfigMap", "configmaps", True),
        ("Service", "services", True),
    ],
    "apps/v1": [
        ("Deployment", "deployments", True),
        ("DaemonSet", "daemonsets", True),
        ("StatefulSet", "statefulsets", True),
    ],
    "policy/v1": [("PodDisruptionBudget", "poddisruptionbudgets", True)],
    "networking.k8s.io/v1": [("NetworkPolicy", "networkpolicies", True)],
    "autoscaling/v2": [("HorizontalPodAutoscaler", "horizontalpodautoscalers", True)],
    "secrets-store.csi.x-k8s.io/v1": [("SecretProviderClass", "secretproviderclasses", True)],
    "keda.sh/v1alpha1": [
        ("ScaledObject", "scaledobjects", True),
        ("TriggerAuthentication", "triggerauthentications", True),
    ],
    "networking.istio.io/v1": [
        ("DestinationRule", "destinationrules", True),
        ("Gateway", "gateways", True),
        ("VirtualService", "virtualservices", True),
    ],
    "security.istio.io/v1": [
        ("PeerAuthentication", "peerauthentications", True),
        ("AuthorizationPolicy", "authorizationpolicies", True),
    ],
}


def _status(code: int, reason: str, message: str) -> Response:
    return Response(
        code,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
    )


def _leaves(fields: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths of the leaves of a FieldsV1 set (``{"f:a": {"f:b": {}}}`` -> {(a, b)})."""
    out: set[tuple[str, ...]] = set()
    for k, v in (fields or {}).items():
        path = (*prefix, k.removeprefix("f:"))
        if v:
            out |= _leaves(v, path)
        else:
            out.add(path)
    return out


def _get_path(obj: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return _MISSING
        obj = obj[p]
    return obj


def _set_path(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj.setdefault(p, {})
    obj[path[-1]] = copy.deepcopy(value)


_MISSING = object()


def _merge_by_manager(
    live: dict[str, Any], body: dict[str, Any], new: dict[str, Any], force: bool
) -> list[dict[str, Any]] | Response:
    """Server-side apply's merge by field manager, at leaf granularity (lists atomic).

    Fields other managers own and the applied object leaves out are kept (KEDA's
    replica count); a field the applied object sets to a different value than another
    manager's is a 409 conflict naming that manager, unless ``force`` moves it to
    ai4ec. Fields only ai4ec owned and now left out are removed (``new`` starts from the
    applied body). Returns the other managers' entries, ownership updated.
    """
    applied = _leaves(_fields({k: v for k, v in body.items() if k not in ("apiVersion", "kind")}))
    foreign: list[dict[str, Any]] = []
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == "ai4ec":
            continue
        owned = _leaves(entry.get("fieldsV1"))
        clash = {p for p in owned & applied if _get_path(live, p) != _get_path(body, p)}
        if clash and not force:
            field = "." + ".".join(sorted(clash)[0])
            manager = entry.get("manager")
            return _status(
                409,
                "Conflict",
                f'Apply failed with 1 conflict: conflict with "{manager}": {field}',
            )
        for p in owned - applied:
            value = _get_path(live, p)
            if value is not _MISSING and p[0] not in ("status",):
                _set_path(new, p, value)
        kept = owned - clash
        if kept:
            fields: dict[str, Any] = {}
            for p in kept:
                node = fields
                for part in p:
                    node = node.setdefault(f"f:{part}", {})
            foreign.append({**entry, "fieldsV1": fields})
    return foreign


def applied_by(
    obj: dict[str, Any], manager: str = "ai4ec", operation: str = "Apply"
) -> dict[str, Any]:
    """``obj`` with the managedFields entry the API server records for its writer."""
    obj = copy.deepcopy(obj)
    fields = _fields({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")})
    obj["metadata"]["managedFields"] = [
        {
            "manager": manager,
            "operation": operation,
            "apiVersion": obj["apiVersion"],
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }
    ]
    return obj


def _fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {f"f:{k}": _fields(v) for k, v in value.items()}
    return {}


class FakeKube(FakeServer):
    """A kube-apiserver with discovery, server-side apply (dry-run too), list, delete."""

    name = "kube"

    def __init__(self, tls: Tls, token: str = TOKENS[f"{AKS_AAD_SERVER}/.default"]) -> None:
        super().__init__(tls)
        self.token = token
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.discovery = copy.deepcopy(DISCOVERY)
        self.kinds = {
            (gv, kind): (plural, ns) for gv, rs in DISCOVERY.items() for kind, plural, ns in rs
        }
        self.plurals = {(gv, plural): (kind, ns) for (gv, kind), (plural, ns) in self.kinds.items()}
        self.conflicts: set[tuple[str, str]] = set()  # (kind, name) owned by another manager
        self.expect_force = False
        self.slow: dict[str, int] = {}  # workload name -> GETs before it is ready
        #: Entra ID clusters with Azure RBAC: the caller (this principal) gets 403 on
        #: every request until an AKS role is assigned to it, and for ``propagation``
        #: more requests after that (role assignments take minutes to arrive).
        self.caller: str | None = None
        self.granted: set[str] = set()
        self.propagation = 0
        #: Plurals the caller may not list (403), as RBAC without "list" answers.
        self.unlistable: set[str] = set()
        self.version = 100
        self.seed(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "aks-istio-ingress"}}
        )
        self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
        self.seed(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "aks-istio-ingressgateway-external",
                    "namespace": "aks-istio-ingress",
                },
                "spec": {"type": "LoadBalancer"},
                "status": {"loadBalancer": {"ingress": [{"ip": "20.1.2.3"}]}},
            }
        )

    def grant(self, principal: str) -> None:
        """An AKS RBAC role assignment for ``principal`` was deployed."""
        self.granted.add(principal)

    @staticmethod
    def key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
        md = obj["metadata"]
        return (
            obj["apiVersion"].rpartition("/")[0],
            obj["kind"],
            md.get("namespace") or "",
            md["name"],
        )

    def seed(self, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        md = obj["metadata"]
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("resourceVersion", "1")
        md.setdefault("generation", 1)
        self.objects[self.key(obj)] = obj

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return next(
            (
                o
                for (g, k, ns, n), o in self.objects.items()
                if k == kind and ns == namespace and n == name
            ),
            None,
        )

    def handle(self, req: Request) -> Response:
        if req.headers.get("authorization") != f"Bearer {self.token}":
            self.violate(f"{req.method} {req.path}: wrong or missing bearer token")
            return _status(401, "Unauthorized", "Unauthorized")
        if self.caller is not None and (self.caller not in self.granted or self.propagation > 0):
            if self.caller in self.granted:
                self.propagation -= 1
            return _status(
                403,
                "Forbidden",
                f'User "{self.caller}" cannot {req.method.lower()} resource at the cluster scope',
            )
        p = req.path.rstrip("/")
        if p == "/version":
            return Response(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake"})
        if p == "/api":
            return Response(200, {"kind": "APIVersions", "versions": ["v1"]})
        if p == "/apis":
            groups = sorted({gv.rpartition("/")[0] for gv in self.discovery if "/" in gv})
            return Response(
                200,
                {
                    "kind": "APIGroupList",
                    "groups": [
                        {
                            "name": g,
                            "versions": [
                                {"groupVersion": gv, "version": gv.rpartition("/")[2]}
                                for gv in self.discovery
                                if gv.startswith(g + "/")
                            ],
                        }
                        for g in groups
                    ],
                },
            )
        m = re.match(r"^/(?:api/(v1)|apis/([^/]+/[^/]+))(/.*)?$", p)
        if not m:
            return _status(404, "NotFound", "the server could not find the requested resource")
        gv = m.group(1) or m.group(2)
        rest = m.group(3) or ""
        if gv not in self.discovery:
            return _status(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if req.method != "GET":
                self.violate(f"{req.method} on discovery")
            return Response(
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": gv,
                    "resources": [
                        {
                            "name": pl,
                            "kind": k,
                            "namespaced": ns,
                            "verbs": ["get", "list", "patch", "delete"],
                        }
                        for k, pl, ns in self.discovery[gv]
                    ],
                },
            )
        parts = rest.strip("/").split("/")
        namespace = ""
        if parts[0] == "namespaces" and len(parts) >= 3:
            namespace, parts = parts[1], parts[2:]
        plural = parts[0]
        name = parts[1] if len(parts) > 1 else ""
        if (gv, plural) not in self.plurals:
            return _status(404, "NotFound", "the server could not find the requested resource")
        kind, namespaced = self.plurals[(gv, plural)]
        group = gv.rpartition("/")[0]
        if not name:
            if req.method != "GET":
                self.violate(f"{req.method} on a collection")
            if plural in self.unlistable:
                return _status(403, "Forbidden", f'cannot list resource "{plural}"')
            return self._list(req, group, kind, namespace)
        key = (group, kind, namespace, name)
        if req.method == "GET":
            obj = self.objects.get(key)
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            obj = copy.deepcopy(obj)
            if kind in ("Deployment", "DaemonSet", "StatefulSet") and self.slow.get(name, 0) > 0:
                self.slow[name] -= 1
                obj["status"] = {
                    "observedGeneration": obj["metadata"]["generation"],
                    "replicas": 1,
                    "updatedReplicas": 0,
                    "availableReplicas": 0,
                }
            return Response(200, obj)
        if req.method == "PATCH":
            return self._apply(req, gv, kind, namespaced, key)
        if req.method == "DELETE":
            if key not in self.objects:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            del self.objects[key]
            return Response(200, {"kind": "Status", "status": "Success"})
        self.violate(f"unexpected {req.method} {p}")
        return _status(405, "MethodNotAllowed", req.method)

    def _list(self, req: Request, group: str, kind: str, namespace: str) -> Response:
        selector = req.query.get("labelSelector", "")
        terms = dict(t.split("=", 1) for t in selector.split(",") if t)
        items = [
            copy.deepcopy(o)
            for (g, k, ns, _n), o in self.objects.items()
            if g == group
            and k == kind
            and (not namespace or ns == namespace)
            and all((o["metadata"].get("labels") or {}).get(a) == b for a, b in terms.items())
        ]
        return Response(
            200,
            {
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self.version)},
                "items": items,
            },
        )

    def _apply(
        self, req: Request, gv: str, kind: str, namespaced: bool, key: tuple[str, str, str, str]
    ) -> Response:
        where = f"PATCH {kind} {key[2]}/{key[3]}"
        if req.headers.get("content-type") != "application/apply-patch+yaml":
            self.violate(f"{where}: Content-Type {req.headers.get('Content-Type')}")
        if req.query.get("fieldManager") != "ai4ec":
            self.violate(f"{where}: fieldManager {req.query.get('fieldManager')}")
        force = req.query.get("force") == "true"
        if force != self.expect_force:
            self.violate(f"{where}: force={force} but the test expects {self.expect_force}")
        dry = req.query.get("dryRun")
        if dry not in (None, "All"):
            self.violate(f"{where}: dryRun={dry}")
        text = req.body.decode()
        if "$(azure:" in text:
            self.violate(f"{where}: unresolved placeholder sent")
        body = json.loads(text)
        if (
            body.get("kind") != kind
            or body.get("apiVersion") != gv
            or body["metadata"].get("name") != key[3]
        ):
            self.violate(
                f"{where}: body names {body.get('apiVersion')} {body.get('kind')} "
                f"{body['metadata'].get('name')}"
            )
        if namespaced and ("", "Namespace", "", key[2]) not in self.objects:
            return _status(404, "NotFound", f'namespaces "{key[2]}" not found')
        if (kind, key[3]) in self.conflicts and not force:
            return Response(
                409,
                {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "Conflict",
                    "code": 409,
                    "message": f'Apply failed with 1 conflict: conflict with "kubectl-edit" '
                    f"using {gv}: .spec.replicas",
                    "details": {
                        "causes": [
                            {
                                "reason": "FieldManagerConflict",
                                "message": 'conflict with "kubectl-edit"',
                                "field": ".spec.replicas",
                            }
                        ]
                    },
                },
            )
        live = self.objects.get(key)
        new = copy.deepcopy(body)
        md = new["metadata"]
        if kind == "Deployment":
            new.setdefault("spec", {}).setdefault("revisionHistoryLimit", 10)  # server-side default
            new["spec"].setdefault("progressDeadlineSeconds", 600)
        others: list[dict[str, Any]] = []
        if live is not None:
            merged = _merge_by_manager(live, body, new, force)
            if isinstance(merged, Response):
                return merged
            others = merged
        if live is not None:
            lmd = live["metadata"]
            md["uid"], md["creationTimestamp"] = lmd["uid"], lmd.get("creationTimestamp")
            foreign = {
                k: v for k, v in (lmd.get("annotations") or {}).items() if k.startswith("other/")
            }
            if foreign:
                md.setdefault("annotations", {}).update(foreign)
            same_spec = {k: v for k, v in live.items() if k not in ("metadata", "status")} == {
                k: v for k, v in new.items() if k not in ("metadata", "status")
            }
            md["generation"] = lmd.get("generation", 1) + (0 if same_spec else 1)
            unchanged = same_spec and {
                k: v
                for k, v in lmd.items()
                if k
                not in (
                    "resourceVersion",
                    "generation",
                    "managedFields",
                    "uid",
                    "creationTimestamp",
                )
            } == {
                k: v
                for k, v in md.items()
                if k
                not in (
                    "resourceVersion",
                    "generation",
                    "managedFields",
                    "uid",
                    "creationTimestamp",
                )
            }
            md["resourceVersion"] = lmd["resourceVersion"] if unchanged else str(self.version + 1)
        else:
            md["uid"], md["creationTimestamp"], md["generation"] = (
                str(uuid.uuid4()),
                "2025-01-01T00:00:00Z",
                1,
            )
            md["resourceVersion"] = str(self.version + 1)
        md["managedFields"] = [
            *others,
            {
                "manager": "ai4ec",
                "operation": "Apply",
                "apiVersion": gv,
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields(
                    {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
                ),
                "time": "2025-01-01T00:00:00Z" if dry else "2025-01-02T00:00:00Z",
            },
        ]
        if kind in ("Deployment", "StatefulSet"):
            n = new["spec"].get("replicas", 1)
            new["status"] = {
                "observedGeneration": md["generation"],
                "replicas": n,
                "updatedReplicas": n,
                "availableReplicas": n,
                "readyReplicas": n,
            }
        elif kind == "DaemonSet":
            new["status"] = {
                "observedGeneration": md["generation"],
                "desiredNumberScheduled": 2,
                "updatedNumberScheduled": 2,
                "numberAvailable": 2,
            }
        elif live is not None and "status" in live:
            new["status"] = live["status"]
        if not dry:
            if md["resourceVersion"] != (live or {}).get("metadata", {}).get("resourceVersion"):
                self.version += 1
            self.objects[key] = new
        return Response(200 if live is not None else 201, new)

    # -- assertions

    def writes(self) -> list[str]:
        """Requests that change the cluster (dry-run applies excluded)."""
        return [
            f"{r.method} {r.path}"
            for r in self.requests
            if r.method in ("POST", "PUT", "DELETE")
            or (r.method == "PATCH" and r.query.get("dryRun") != "All")
        ]


def write_kubeconfig(path: Path, kube: FakeKube, tls: Tls) -> Path:
    """A kubeconfig at ``path`` whose one context ``ci`` reaches ``kube`` over TLS."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": kube.url, "certificate-authority": str(tls.ca_file)},
                    }
                ],
                "users": [{"name": "u", "user": {"token": kube.token}}],
                "contexts": [{"name": "ci", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ci",
            }
        )
    )
    return path
