"""The pure parts of apply: scrubbing, template splitting, placeholders, comparisons.

No server is involved in this file; everything is computed in memory.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ai4ec.apply import arm, scrub
from ai4ec.apply.builddir import Template, load_build, resolve_build_dir
from ai4ec.apply.bundle import function_names
from ai4ec.apply.kube import compare, prunable, rollout_status
from ai4ec.apply.placeholders import lookup, normalize_outputs, placeholders_in, resolve
from ai4ec.apply.plan import ApplyAction, PlannedChange, StepPlan, changed_paths
from ai4ec.apply.retry import (
    RetriesExhausted,
    RetrySettings,
    TransientError,
    call_with_retry,
    parse_retry_after,
)
from ai4ec.errors import ApplyError

# ------------------------------------------------------------------------------ scrub


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("token eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4f", "eyJhbGciOiJIUzI1"),
        ("https://app.azurewebsites.net/api/X?code=Zm9vYmFyYmF6&x=1", "Zm9vYmFyYmF6"),
        ("https://acct.blob.core.windows.net/c/b?sv=2023&sig=c2lnbmF0dXJl", "c2lnbmF0dXJl"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=a2V5a2V5a2V5;", "a2V5a2V5a2V5"),
        ("rediss://:cmVkaXNrZXk0NQ@cache.redis.cache.windows.net:6380/0", "cmVkaXNrZXk0NQ"),
        ('{"x-functions-key": "ZnVuY3Rpb25rZXk"}', "ZnVuY3Rpb25rZXk"),
        ("client-key-data: LS0tLS1CRUdJTiBSU0E", "LS0tLS1CRUdJTiBSU0E"),
    ],
)
def test_scrub_masks_secret_shapes(text: str, secret: str) -> None:
    """Secret-looking values are masked even when apply never saw them (no server)."""
    out = scrub.scrub(text)
    assert secret not in out
    assert scrub.MASK in out


def test_scrub_masks_registered_values_and_log_records(caplog: pytest.LogCaptureFixture) -> None:
    """Known secrets vanish from text and from every log record while a run lasts."""
    scrub.register("plain-secret-value-42", "short")
    assert scrub.scrub("x plain-secret-value-42 y") == "x *** y"
    assert scrub.scrub("short") == "short"  # too short to mask usefully
    with scrub.scrubbed_logging():
        logging.getLogger("somebody.else").warning("got %s", "plain-secret-value-42")
    logging.getLogger("somebody.else").warning("after: %s", "plain-secret-value-42")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "got ***"
    assert "plain-secret-value-42" in messages[1]  # the factory is restored afterwards


# -------------------------------------------------------------------------------- arm


def _template() -> dict[str, Any]:
    return {
        "$schema": "s",
        "parameters": {
            "p": {"type": "string", "defaultValue": "d"},
            "deployEventSubscription": {"type": "bool", "defaultValue": False},
            "ai4ecIngressUrls": {
                "type": "object",
                "defaultValue": {"a": "http://a.ingress.invalid", "b": "https://b.example.org"},
            },
            "backendBaseUrl": {"type": "string", "defaultValue": ""},
        },
        "variables": {"v": 1},
        "resources": [
            {
                "type": "Microsoft.Web/sites",
                "name": "app",
                "properties": {"url": "[parameters('backendBaseUrl')]", "p": "[parameters('p')]"},
            },
            {
                "type": "Microsoft.Authorization/roleAssignments",
                "name": "[guid('x')]",
                "scope": "Microsoft.KeyVault/vaults/kv",
            },
            {
                "type": "Microsoft.Authorization/roleAssignments",
                "name": "[guid('y')]",
                "scope": "Microsoft.KeyVault/vaults/kv",
                "dependsOn": ["[resourceId('Microsoft.Web/sites', 'app')]"],
            },
            {
                "type": "Microsoft.EventGrid/topics/eventSubscriptions",
                "name": "t/s",
                "condition": "[parameters('deployEventSubscription')]",
                "dependsOn": ["[resourceId('Microsoft.Web/sites', 'app')]"],
            },
            {
                "type": "Microsoft.ApiManagement/service/apis",
                "name": "apim/x",
                "properties": {"u": "[parameters('ai4ecIngressUrls').a]", "p": "[parameters('p')]"},
                "dependsOn": [
                    "[resourceId('Microsoft.Web/sites', 'app')]",
                    "[extensionResourceId(resourceId('Microsoft.KeyVault/vaults', 'kv'), "
                    "'Microsoft.Authorization/roleAssignments', guid('x'))]",
                    "[resourceId('Microsoft.ApiManagement/service/apis', 'apim', 'y')]",
                ],
            },
            {
                "type": "Microsoft.ApiManagement/service/apis",
                "name": "apim/y",
                "tags": "[variables('v')]",
            },
        ],
        "outputs": {
            "o": {
                "type": "string",
                "value": "[reference(resourceId('Microsoft.Web/sites', 'app'), '1').x]",
            }
        },
    }


def test_split_main_cuts_dependencies_on_earlier_parts() -> None:
    """Parts by kind (no server): a resource follows what it needs to a later part;
    dependsOn kept only inside a part; each part declares only what it reads."""
    parts = arm.split_main(Template("main", _template(), {}))
    assert list(parts) == ["data", "functions", "dispatch", "apim"]
    assert [r["name"] for r in parts["data"]["resources"]] == ["[guid('x')]"]
    # The role on the vault for the site goes with the site, after it.
    assert [r["name"] for r in parts["functions"]["resources"]] == ["app", "[guid('y')]"]
    assert parts["functions"]["resources"][1]["dependsOn"] == [
        "[resourceId('Microsoft.Web/sites', 'app')]"
    ]
    assert "dependsOn" not in parts["dispatch"]["resources"][0]
    assert set(parts["functions"]["parameters"]) == {"backendBaseUrl", "p"}
    assert set(parts["dispatch"]["parameters"]) == {"deployEventSubscription"}
    assert parts["data"]["parameters"] == {} and parts["data"]["variables"] == {}
    apis = parts["apim"]["resources"]
    assert apis[0]["dependsOn"] == [
        "[resourceId('Microsoft.ApiManagement/service/apis', 'apim', 'y')]"
    ]
    # The outputs read the site: they go with its part.
    assert "outputs" in parts["functions"] and "outputs" not in parts["apim"]
    assert parts["apim"]["variables"] == {"v": 1}


def test_build_parts_fills_parameters_in_order_of_precedence() -> None:
    """Defaults < parameters file < discovered stand-ins < --parameter (no server)."""
    t = Template("main", _template(), {"p": "file"})
    discovered = {
        "ai4ecIngressUrls": {"a": "http://1.2.3.4", "b": "https://9.9.9.9"},
        "backendBaseUrl": "http://1.2.3.4",
    }
    parts = arm.build_parts([t], {}, discovered)
    assert [p.name for p in parts["azure"]] == ["data", "functions"]
    infra = parts["azure"][1].parameters
    assert infra["p"] == "file"
    assert infra["backendBaseUrl"] == "http://1.2.3.4"
    # Only the stand-in is replaced; a real host from platform.yaml stays.
    apim = parts["apim"][0].parameters
    assert apim["ai4ecIngressUrls"] == {"a": "http://1.2.3.4", "b": "https://b.example.org"}
    assert parts["dispatch"][0].parameters["deployEventSubscription"] is True
    over = arm.build_parts(
        [t], arm.parse_overrides(('p="x"', "backendBaseUrl=http://h")), discovered
    )
    assert over["apim"][0].parameters["p"] == "x"
    assert over["azure"][1].parameters["backendBaseUrl"] == "http://h"
    assert parts["azure"][1].digest() != over["azure"][1].digest()
    # ...and a part that does not read the changed values keeps its digest (not redeployed).
    assert parts["azure"][0].digest() == over["azure"][0].digest()
    with pytest.raises(ApplyError, match="no such template parameter"):
        arm.build_parts([t], {"zzz": 1}, {})
    with pytest.raises(ApplyError, match="expected NAME=VALUE"):
        arm.parse_overrides(("novalue",))


def test_whatif_changes_are_listed_without_values() -> None:
    """An ARM what-if result (no server) becomes +/~/= changes with paths, never values."""
    rid = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app"
    result = {
        "status": "Succeeded",
        "properties": {
            "changes": [
                {
                    "resourceId": rid,
                    "changeType": "Modify",
                    "delta": [
                        {
                            "path": "properties.siteConfig",
                            "propertyChangeType": "Modify",
                            "children": [
                                {
                                    "path": "appSettings",
                                    "propertyChangeType": "Modify",
                                    "before": "s3cret-old",
                                    "after": "s3cret-new",
                                }
                            ],
                        }
                    ],
                },
                {"resourceId": rid + "/config/web", "changeType": "Create"},
                {
                    "resourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault"
                    "/vaults/kv/providers/Microsoft.Authorization/roleAssignments/g",
                    "changeType": "NoChange",
                },
                {"resourceId": rid, "changeType": "Ignore"},
                {"resourceId": rid, "changeType": "Deploy"},
            ]
        },
    }
    changes = arm.whatif_changes(result)
    lines = [c.line() for c in changes]
    assert lines == [
        "~ Microsoft.Web/sites app: properties.siteConfig.appSettings",
        "+ Microsoft.Web/sites/config app/web",
        "= Microsoft.Authorization/roleAssignments g",
        "? Microsoft.Web/sites app (ARM cannot preview it; redeployed)",
    ]
    assert "s3cret" not in json.dumps([c.to_dict() for c in changes])


def test_step_plan_summary_and_listing() -> None:
    """Plans count and list changes (no server)."""
    plan = StepPlan(
        "k8s:main",
        [
            PlannedChange(ApplyAction.NOOP, "A", "a"),
            PlannedChange(ApplyAction.DELETE, "B", "ns/b", note="prune"),
            PlannedChange(ApplyAction.UPDATE, "C", "c", tuple(f"p{i}" for i in range(8))),
        ],
    )
    assert plan.summary() == "0 to create, 1 to change, 1 to delete, 1 unchanged"
    assert plan.lines() == [
        "- B ns/b (prune)",
        "~ C c: p0, p1, p2, p3, p4, p5, +2 more",
        "= 1 unchanged",
    ]
    assert [c.name for c in plan.destructive] == ["ns/b"]
    assert changed_paths({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}], "c": 1}) == ["a[1].b", "c"]


# ----------------------------------------------------------------------- placeholders


def test_placeholders_resolve_from_outputs() -> None:
    """$(azure:path) is filled from either output form (no server)."""
    outputs = normalize_outputs(
        {
            "TenantId": {"type": "String", "value": "t"},
            "clusters": {"type": "Object", "value": {"main": {"id": "c", "flag": True}}},
        }
    )
    obj = {
        "kind": "X",
        "metadata": {"name": "n", "namespace": "ns"},
        "spec": {
            "a": "$(azure:tenantId)",
            "b": ["id=$(azure:clusters.main.id)"],
            "c": "$(azure:clusters.main.flag)",
        },
    }
    assert placeholders_in(obj) == ["tenantId", "clusters.main.id", "clusters.main.flag"]
    assert resolve(obj, outputs)["spec"] == {"a": "t", "b": ["id=c"], "c": "true"}
    assert lookup(outputs, "clusters.main") is None  # an object is not a value
    with pytest.raises(
        ApplyError, match=r"X ns/n: unresolved placeholder \$\(azure:clusters.other.id\)"
    ):
        resolve(
            {
                "kind": "X",
                "metadata": {"name": "n", "namespace": "ns"},
                "v": "$(azure:clusters.other.id)",
            },
            outputs,
        )
    with pytest.raises(ApplyError, match="no Azure deployment outputs"):
        resolve(obj, None)


# -------------------------------------------------------------------------- Kubernetes


def _obj(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "d",
            "namespace": "ns",
            "resourceVersion": "1",
            "generation": 1,
            "managedFields": [
                {"manager": "ai4ec", "operation": "Apply", "fieldsV1": {"f:spec": {}}, "time": "t1"}
            ],
        },
        "spec": {"replicas": 1},
        "status": {"replicas": 1},
    }
    base.update(extra)
    return base


def test_compare_ignores_bookkeeping_but_not_ownership() -> None:
    """Dry-run vs live (no server): status and timestamps don't count; fields and owners do."""
    live = _obj()
    dry = _obj(status={"replicas": 9})
    dry["metadata"] = {
        **dry["metadata"],
        "resourceVersion": "2",
        "managedFields": [
            {"manager": "ai4ec", "operation": "Apply", "fieldsV1": {"f:spec": {}}, "time": "t2"}
        ],
    }
    assert compare(live, dry) == (ApplyAction.NOOP, ())
    assert compare(None, dry) == (ApplyAction.CREATE, ())
    assert compare(live, _obj(spec={"replicas": 2})) == (ApplyAction.UPDATE, ("spec.replicas",))
    adopted = _obj()
    adopted["metadata"] = {
        **adopted["metadata"],
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
    }
    action, paths = compare(adopted, live)
    assert action is ApplyAction.UPDATE and "ownership" in paths[0]


def test_prunable_rules() -> None:
    """Prune never touches desired, controller-owned, CSI-synced or terminating objects,
    nor any object ai4ec's field manager did not apply (labels alone prove nothing)."""
    desired = {("apps", "Deployment", "ns", "keep")}
    ours = [{"manager": "ai4ec", "operation": "Apply"}]
    assert prunable(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "gone", "namespace": "ns", "managedFields": ours},
        },
        desired,
    )
    for fields in ([], [{"manager": "helm", "operation": "Update"}], [{"manager": "ai4ec"}]):
        assert not prunable(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "gone", "namespace": "ns", "managedFields": fields},
            },
            desired,
        )
    assert not prunable(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "keep", "namespace": "ns"},
        },
        desired,
    )
    assert not prunable(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "ownerReferences": [{"controller": True}]},
        },
        desired,
    )
    assert not prunable(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "labels": {"secrets-store.csi.k8s.io/managed": "true"}},
        },
        desired,
    )
    assert not prunable(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "s",
                "ownerReferences": [{"kind": "SecretProviderClassPodStatus"}],
            },
        },
        desired,
    )
    assert not prunable(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "deletionTimestamp": "now"},
        },
        desired,
    )


@pytest.mark.parametrize(
    ("obj", "ready", "failed"),
    [
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 2},
                "status": {"observedGeneration": 1},
            },
            False,
            False,
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "replicas": 3,
                    "updatedReplicas": 2,
                    "availableReplicas": 2,
                },
            },
            False,
            False,
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "availableReplicas": 2,
                },
            },
            True,
            False,
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 0},
                "status": {"observedGeneration": 1},
            },
            True,
            False,
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "reason": "ProgressDeadlineExceeded",
                            "message": "too slow",
                        }
                    ],
                },
            },
            False,
            True,
        ),
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 2,
                },
            },
            False,
            False,
        ),
        (
            {
                "kind": "StatefulSet",
                "metadata": {"generation": 1},
                "spec": {"replicas": 1},
                "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
            },
            True,
            False,
        ),
    ],
)
def test_rollout_status(obj: dict[str, Any], ready: bool, failed: bool) -> None:
    """Rollout readiness as kubectl rollout status judges it (no server)."""
    got_ready, got_failed, _words = rollout_status(obj)
    assert (got_ready, got_failed) == (ready, failed)


# ----------------------------------------------------------------------------- retry


def test_retry_honours_retry_after_then_gives_up() -> None:
    """Transient failures are retried with the server's delay, then reported (no server)."""
    slept: list[float] = []
    settings = RetrySettings(attempts=3, backoff=0.5, max_retry_after=10, sleep=slept.append)
    calls = iter([TransientError("HTTP 429", 2.0), TransientError("HTTP 503"), None])

    def fn() -> str:
        exc = next(calls)
        if exc:
            raise exc
        return "ok"

    notes: list[str] = []
    assert call_with_retry("GET x", fn, settings, notes.append) == "ok"
    assert slept[0] == 2.0 and 0.5 <= slept[1] <= 1.0  # 2nd retry: doubled, jittered
    assert "HTTP 429; retrying in 2.0s (attempt 2 of 3)" in notes[0]
    with pytest.raises(RetriesExhausted, match="GET y: still failing after 3 attempts: HTTP 503"):
        call_with_retry(
            "GET y", lambda: (_ for _ in ()).throw(TransientError("HTTP 503")), settings
        )
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


# ----------------------------------------------------------------------------- build


def test_build_dir_resolution(tmp_path: Path) -> None:
    """out/ with one environment is accepted; several are named; none is explained."""
    (tmp_path / "out" / "dev").mkdir(parents=True)
    (tmp_path / "out" / "dev" / "manifest.json").write_text(
        json.dumps({"platform": "p", "environment": "dev", "artifacts": []})
    )
    assert resolve_build_dir(tmp_path / "out") == tmp_path / "out" / "dev"
    assert load_build(tmp_path / "out").environment == "dev"
    (tmp_path / "out" / "prod").mkdir()
    (tmp_path / "out" / "prod" / "manifest.json").write_text("{}")
    with pytest.raises(ApplyError, match="several environments"):
        resolve_build_dir(tmp_path / "out")
    with pytest.raises(ApplyError, match="lacks"):
        load_build(tmp_path / "out" / "prod")
    with pytest.raises(ApplyError, match="no manifest.json"):
        resolve_build_dir(tmp_path / "nowhere")


def test_tracebacks_in_log_records_are_scrubbed() -> None:
    """A logged exception's traceback is masked too (it is formatted before any handler)."""
    scrub.register("traceback-secret-0123456789")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("ai4ec.test.traceback")
    log.addHandler(handler)
    try:
        with scrub.scrubbed_logging():
            try:
                raise RuntimeError("token traceback-secret-0123456789 refused")
            except RuntimeError:
                log.exception("call failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "RuntimeError: token *** refused" in text
    assert "traceback-secret-0123456789" not in text


# ------------------------------------------------------------------------ bundle, what-if


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_bundle_function_names_are_read_without_importing() -> None:
    """Apply waits for exactly the functions the bundle declares (v2 decorators)."""
    bundle = _zip(
        {
            "function_app.py": "from pkg.app import app\n",
            "pkg/app.py": (
                "import not_installed_anywhere\n"
                "@app.function_name('B')\n@app.route(route='b')\ndef b(req): ...\n"
                "@app.function_name(name='A')\nasync def a(req): ...\n"
            ),
            ".python_packages/lib/site-packages/x.py": (
                "@app.function_name('Vendored')\ndef v(): ...\n"
            ),
        }
    )
    assert function_names(bundle) == ["A", "B"]
    with pytest.raises(ApplyError, match=r"pkg/app.py, line 1"):
        function_names(_zip({"pkg/app.py": "def (:\n"}))
    with pytest.raises(ApplyError, match="not a zip"):
        function_names(b"nope")


def test_bundle_function_names_of_the_real_runtime(built_sample: Path) -> None:
    """The shipped runtime declares BackendWebhook, which Event Grid validates."""
    data = (built_sample / "out" / "default" / "functions" / "bundle.zip").read_bytes()
    names = function_names(data)
    assert "BackendWebhook" in names and len(names) >= 5


def test_whatif_noeffect_and_noise_are_not_changes() -> None:
    """NoEffect, and a Modify whose every property is NoEffect, deploy nothing."""
    result = {
        "changes": [
            {"resourceId": "/x/providers/A.B/c/one", "changeType": "NoEffect"},
            {
                "resourceId": "/x/providers/A.B/c/two",
                "changeType": "Modify",
                "delta": [
                    {"path": "properties.provisioningState", "propertyChangeType": "NoEffect"}
                ],
            },
            {
                "resourceId": "/x/providers/A.B/c/three",
                "changeType": "Modify",
                "delta": [
                    {"path": "properties.state", "propertyChangeType": "NoEffect"},
                    {"path": "properties.size", "propertyChangeType": "Modify"},
                ],
            },
            {"resourceId": "/x/providers/A.B/c/four", "changeType": "Deploy"},
        ]
    }
    got = {c.name: (c.action, c.paths) for c in arm.whatif_changes(result)}
    assert got == {
        "one": (ApplyAction.NOOP, ()),
        "two": (ApplyAction.NOOP, ()),
        "three": (ApplyAction.UPDATE, ("properties.size",)),
        "four": (ApplyAction.UNKNOWN, ()),
    }


def test_deployer_principal_comes_from_the_token_claims() -> None:
    """The template's deployerPrincipalId is whoever ARM sees: the token's oid claim."""
    from azure.core.credentials import AccessToken

    from ai4ec.apply.azure import Azure

    def jwt(claims: dict[str, Any]) -> str:
        def part(d: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

        return f"{part({'alg': 'none'})}.{part(claims)}.sig"

    class Cred:
        token = ""

        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            return AccessToken(self.token, 2**31)

    cred = Cred()
    az = Azure("sub", credential=cred, arm_endpoint=None)
    try:
        cred.token = jwt({"oid": "11111111-aaaa", "idtyp": "app"})
        assert az.principal() == ("11111111-aaaa", "ServicePrincipal")
        cred.token = jwt({"oid": "22222222-bbbb", "upn": "dev@example.org"})
        assert az.principal() == ("22222222-bbbb", "User")
        cred.token = "opaque-token-without-claims"
        assert az.principal() is None
    finally:
        az.close()
