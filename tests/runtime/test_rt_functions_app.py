"""The registered Azure Functions (function_app.app), called as the host would."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
import redis
from azure.functions.blob import InputStream
from azure.functions.timer import TimerRequest
from rt_support import DETECT, FUNCTIONS, invoke_function, make_runtime, registered_functions

from ai4ec_runtime import app as app_module
from ai4ec_runtime.auth import AccessKeys


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    return registered_functions()


@pytest.fixture
def call(
    functions: dict[str, Any], r: redis.Redis, routing_doc: dict[str, Any]
) -> Iterator[Callable[..., func.HttpResponse]]:
    # The settings the Functions app runs with by default: upstream-shaped answers.
    app_module.set_runtime(make_runtime(r, routing_doc, strict_answers=False))
    # These tests pin the bindings and handlers; key checking has its own suite
    # (test_rt_azure_keys.py), so it is off here, as with --insecure-no-auth.
    app_module.set_access_keys(None, insecure=True)

    def invoke(name: str, method: str, body: Any = None, **params: str) -> func.HttpResponse:
        resp: func.HttpResponse = invoke_function(name, method, body, **params)
        return resp

    yield invoke
    app_module.set_runtime(None)
    app_module.set_access_keys(None)


def test_registered_functions_and_bindings(functions: dict[str, Any]) -> None:
    http = {
        "CacheConnectorUpsert": {"POST"},
        "CacheConnectorGet": {"GET"},
        "CurrentProcessingUpsert": {"POST"},
        "CurrentProcessingGet": {"GET", "POST"},
        "BackendWebhook": {"POST", "OPTIONS"},
        "BackendDeadLetter": {"POST"},
        "Health": {"GET"},
    }
    timers = {
        "TaskQueueLogger": "*/30 * * * * *",
        "TaskProcessLogger": "0 */5 * * * *",
        "TaskTimeoutSweeper": "*/5 * * * * *",
    }
    assert set(functions) == set(http) | set(timers) | {"BackendDeadLetterBlob"}
    for name, methods in http.items():
        trigger = functions[name].get_bindings()[0]
        assert trigger.type == "httpTrigger" and trigger.route == (
            "health" if name == "Health" else name
        )
        assert {str(m.value) for m in trigger.methods} == methods
        # The runtime checks its own least-privilege keys (ai4ec_runtime.auth).
        assert str(trigger.auth_level.value).lower() == "anonymous"
    for name, schedule in timers.items():
        trigger = functions[name].get_bindings()[0]
        assert trigger.type == "timerTrigger" and trigger.schedule == schedule
    blob = functions["BackendDeadLetterBlob"].get_bindings()[0]
    assert (blob.type, blob.path, blob.connection) == (
        "blobTrigger",
        "ai4ec-deadletter/{name}",
        "AzureWebJobsStorage",
    )


def test_lifecycle_through_the_functions(call: Callable[..., func.HttpResponse]) -> None:
    resp = call(
        "CacheConnectorUpsert",
        "POST",
        {
            "Status": "created",
            "BackendStatus": "created",
            "Endpoint": DETECT,
            "Body": '{"image":"a.jpg"}',
            "PublishToGrid": True,
        },
    )
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    tid = json.loads(resp.get_body())["TaskId"]
    for bs in ("running", "completed"):
        resp = call(
            "CacheConnectorUpsert",
            "POST",
            [{"TaskId": tid, "Status": bs, "BackendStatus": bs, "Endpoint": DETECT}],
        )
        assert resp.status_code == 200
    resp = call("CacheConnectorGet", "GET", taskId=tid)
    assert resp.status_code == 200
    assert json.loads(resp.get_body())["BackendStatus"] == "completed"
    resp = call("CacheConnectorUpsert", "POST", {"TaskId": tid, "BackendStatus": "running"})
    # Refused, answered in the upstream client's shape: 200, the record unchanged.
    assert resp.status_code == 200 and resp.headers["X-Ai4ec-Error"] == "illegal_transition"
    assert json.loads(resp.get_body())["BackendStatus"] == "completed"
    assert call("CacheConnectorGet", "GET", taskId="missing").status_code == 404
    resp = call(
        "CurrentProcessingUpsert",
        "POST",
        {"ApiPath": "/v1/x", "ServiceCluster": "c", "IncrementBy": 1},
    )
    assert resp.get_body() == b"1"
    assert call("CurrentProcessingGet", "POST", cluster="c", path="/v1/x").get_body() == b"1"
    validation = [
        {
            "id": "v",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "subject": "",
            "data": {"validationCode": "abc"},
            "dataVersion": "2",
        }
    ]
    resp = call("BackendWebhook", "POST", validation)
    assert json.loads(resp.get_body()) == {"validationResponse": "abc"}


def test_timers_and_dead_letter_blob(
    functions: dict[str, Any],
    call: Callable[..., func.HttpResponse],
    r: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    resp = call(
        "CacheConnectorUpsert", "POST", {"Endpoint": DETECT, "Body": "{}", "PublishToGrid": True}
    )
    tid = json.loads(resp.get_body())["TaskId"]
    caplog.set_level(logging.INFO, logger="ai4ec_runtime")
    timer = TimerRequest(past_due=True)
    for name in ("TaskQueueLogger", "TaskProcessLogger", "TaskTimeoutSweeper"):
        functions[name].get_user_function()(timer)
    messages = [rec.getMessage() for rec in caplog.records]
    assert "ai4ec.metric /v1/detector/detect_created=1" in messages
    assert "ai4ec.metric ai4ec:pending:detector-v1=1" in messages
    assert "ai4ec.metric /v1/detector/detect_running=0" in messages
    assert any("past due" in m for m in messages)
    dead = json.dumps(
        [
            {
                "id": tid,
                "eventType": "task",
                "subject": DETECT,
                "data": "{}",
                "deadLetterReason": "TimeToLiveExceeded",
                "deliveryAttempts": 3,
            }
        ]
    )
    blob = InputStream(data=dead.encode(), name="ai4ec-deadletter/topic/webhook/1.json")
    functions["BackendDeadLetterBlob"].get_user_function()(blob)
    doc = json.loads(call("CacheConnectorGet", "GET", taskId=tid).get_body())
    assert doc["BackendStatus"] == "failed" and "TimeToLiveExceeded" in doc["Status"]


def test_import_needs_no_settings_and_errors_are_clear() -> None:
    """Importing the app with no settings works; the first request names the setting.

    Only the access keys are set (the runtime refuses everyone without them).
    """
    keys = AccessKeys.generate(["detector-v1"])
    code = (
        "import json, azure.functions as func, function_app\n"
        "fn = {f.get_function_name(): f for f in function_app.app.get_functions()}\n"
        "req = func.HttpRequest(method='GET', url='/api/CacheConnectorGet', "
        f"params={{'taskId': 'x'}}, body=b'', headers={{'x-functions-key': {keys.apim!r}}})\n"
        "resp = fn['CacheConnectorGet'].get_user_function()(req)\n"
        "print(resp.status_code, json.loads(resp.get_body())['message'])\n"
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AI4EC_", "REDIS_", "EVENT_GRID"))
    }
    env["AI4EC_ACCESS_KEYS"] = keys.to_json()
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=FUNCTIONS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("500 No Redis configured: set the app setting AI4EC_REDIS_URL")
