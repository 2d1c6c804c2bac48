"""The Function App enforces the same least-privilege keys as the local host.

On Azure the HTTP triggers are anonymous to the Functions host and the runtime checks
the keys of the app setting ``AI4EC_ACCESS_KEYS`` (a Key Vault reference to the document
``ai4ec apply`` generates). The registered functions of ``function_app.app`` are called
as the host calls them, against a real redis-server; the setting is the only input.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
import redis
from rt_support import CLASSIFY, DETECT, make_runtime, registered_functions

from ai4ec_runtime import app as app_module
from ai4ec_runtime.auth import AccessKeys

Invoke = Callable[..., func.HttpResponse]


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    return registered_functions()


@pytest.fixture
def keys() -> AccessKeys:
    return AccessKeys.generate(["detector-v1", "classifier-v1"])


@pytest.fixture
def call(
    functions: dict[str, Any],
    r: redis.Redis,
    routing_doc: dict[str, Any],
    keys: AccessKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Invoke]:
    """Invoke a function with the keys document in the app setting, as on Azure."""
    monkeypatch.setenv(app_module.ACCESS_KEYS_SETTING, keys.to_json())
    app_module.set_access_keys(None)  # read the setting on the first call
    app_module.set_runtime(make_runtime(r, routing_doc, strict_answers=False))

    def invoke(
        name: str, method: str, body: Any = None, key: str | None = None, **params: str
    ) -> func.HttpResponse:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["x-functions-key"] = key
        req = func.HttpRequest(
            method=method,
            url=f"/api/{name}",
            params=params,
            body=b"" if body is None else json.dumps(body).encode(),
            headers=headers,
        )
        resp: func.HttpResponse = functions[name].get_user_function()(req)
        return resp

    yield invoke
    app_module.set_runtime(None)
    app_module.set_access_keys(None)


def create(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"Endpoint": endpoint, "Body": "{}", "PublishToGrid": False, **extra}


def test_anonymous_and_unknown_keys_get_401(call: Invoke, r: redis.Redis) -> None:
    assert call("CacheConnectorUpsert", "POST", create(DETECT)).status_code == 401
    assert call("CacheConnectorUpsert", "POST", create(DETECT), key="x" * 40).status_code == 401
    assert call("BackendWebhook", "POST", []).status_code == 401
    assert r.dbsize() == 0  # refused before any store write


def test_apim_event_grid_and_api_scopes(call: Invoke, keys: AccessKeys) -> None:
    det, cls = keys.apis["detector-v1"], keys.apis["classifier-v1"]
    created = call("CacheConnectorUpsert", "POST", create(DETECT), key=keys.apim)
    assert created.status_code == 200
    tid = json.loads(created.get_body())["TaskId"]
    assert call("CacheConnectorGet", "GET", key=det, taskId=tid).status_code == 200
    assert call("CacheConnectorGet", "GET", key=cls, taskId=tid).status_code == 403
    update = {"TaskId": tid, "BackendStatus": "running", "Endpoint": DETECT}
    assert call("CacheConnectorUpsert", "POST", update, key=cls).status_code == 403
    assert call("CacheConnectorUpsert", "POST", update, key=keys.apim).status_code == 403
    assert call("CacheConnectorUpsert", "POST", update, key=det).status_code == 200
    assert call("CacheConnectorUpsert", "POST", create(CLASSIFY), key=det).status_code == 403
    # Event Grid's key opens the webhook and nothing else; no one else opens the webhook.
    assert call("BackendWebhook", "POST", [], key=keys.event_grid).status_code == 200
    assert call("BackendWebhook", "POST", [], key=keys.apim).status_code == 403
    assert call("BackendWebhook", "POST", [], key=det).status_code == 403
    assert (
        call("CacheConnectorUpsert", "POST", create(DETECT), key=keys.event_grid).status_code == 403
    )


def test_code_query_parameter_is_accepted(call: Invoke, keys: AccessKeys) -> None:
    """Upstream containers put the key in the URI (``?code=``), as Azure Functions takes it."""
    answer = call("CacheConnectorUpsert", "POST", create(DETECT), code=keys.apim)
    assert answer.status_code == 200


def test_endpoint_outside_routing_table_is_400(call: Invoke, keys: AccessKeys) -> None:
    doc = create("http://169.254.169.254/latest/meta-data", PublishToGrid=True)
    answer = call("CacheConnectorUpsert", "POST", doc, key=keys.apim)
    assert answer.status_code == 400
    assert json.loads(answer.get_body())["field"] == "Endpoint"


@pytest.mark.parametrize(
    "setting",
    [
        "",
        "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/ai4ec-access-keys/)",
        '{"apim": "short"}',
        "not json",
    ],
    ids=["unset", "unresolved-reference", "invalid", "not-json"],
)
def test_missing_or_bad_setting_fails_closed(
    functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    keys: AccessKeys,
    setting: str,
) -> None:
    """No keys means no entry (503), never open access; the log names the setting only."""
    monkeypatch.setenv(app_module.ACCESS_KEYS_SETTING, setting)
    app_module.set_access_keys(None)
    try:
        req = func.HttpRequest(
            method="POST",
            url="/api/CacheConnectorUpsert",
            params={},
            body=json.dumps(create(DETECT)).encode(),
            headers={"x-functions-key": keys.apim},
        )
        with caplog.at_level(logging.ERROR, logger="ai4ec_runtime.app"):
            answer = functions["CacheConnectorUpsert"].get_user_function()(req)
        assert answer.status_code == 503
        assert app_module.ACCESS_KEYS_SETTING in caplog.text
        assert "short" not in caplog.text and "kv.vault" not in answer.get_body().decode()
    finally:
        app_module.set_access_keys(None)
