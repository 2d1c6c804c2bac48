"""The health probe App Service calls (``GET /api/health``, ``siteConfig.healthCheckPath``).

The registered ``Health`` function of ``function_app.app`` is called as the Functions
host calls it, against a real redis-server that the test stops: the answer follows
Redis, names no host, port or key, and needs no key while every other function keeps
asking for its own (issue #13). The local host answers ``/health`` with the same code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import redis
from rt_host import raw, start_host
from rt_support import DETECT, RedisServer, invoke_function, make_runtime, registered_functions

from ai4ec.render.azure.functions import HEALTH_CHECK_PATH
from ai4ec_runtime import app as app_module
from ai4ec_runtime.auth import AccessKeys
from ai4ec_runtime.health import HEALTH_ROUTE

Invoke = Callable[..., func.HttpResponse]


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    return registered_functions()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: the test stops it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def call(
    functions: dict[str, Any],
    own_redis: RedisServer,
    routing_doc: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Invoke]:
    """Invoke a function with real keys configured, as on Azure; no key is presented."""
    keys = AccessKeys.generate(["detector-v1", "classifier-v1"])
    monkeypatch.setenv(app_module.ACCESS_KEYS_SETTING, keys.to_json())
    app_module.set_access_keys(None)
    client = redis.Redis(port=own_redis.port)
    app_module.set_runtime(make_runtime(client, routing_doc, strict_answers=False))

    def invoke(name: str, method: str, body: Any = None) -> func.HttpResponse:
        resp: func.HttpResponse = invoke_function(name, method, body)
        return resp

    yield invoke
    app_module.set_runtime(None)
    app_module.set_access_keys(None)
    client.close()


def test_health_binding_is_the_template_path(functions: dict[str, Any]) -> None:
    """The Function App's healthCheckPath is this function's route, and it is GET only."""
    trigger = functions["Health"].get_bindings()[0]
    assert trigger.type == "httpTrigger" and trigger.route == HEALTH_ROUTE
    assert {str(m.value) for m in trigger.methods} == {"GET"}
    assert HEALTH_CHECK_PATH == f"/api/{HEALTH_ROUTE}"


def test_health_follows_redis_without_a_key(call: Invoke, own_redis: RedisServer) -> None:
    """200 {"status":"ok"} while Redis answers, a generic 503 once it is gone."""
    resp = call("Health", "GET")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert json.loads(resp.get_body()) == {"status": "ok"}
    # Every other function still wants its key: anonymous is for the probe only.
    assert call("CacheConnectorUpsert", "POST", {"Endpoint": DETECT}).status_code == 401
    assert call("CacheConnectorGet", "GET").status_code == 401
    own_redis.kill()
    resp = call("Health", "GET")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    text = resp.get_body().decode()
    assert json.loads(text)["error"] == "store_unavailable"
    assert str(own_redis.port) not in text and "127.0.0.1" not in text
    assert "localhost" not in text
    own_redis.start()  # same port: the probe recovers without a restart
    assert call("Health", "GET").status_code == 200


def test_health_without_a_task_store_configured_is_503(
    functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No Redis setting at all: unhealthy, and the log (not the answer) says why."""
    for name in ("AI4EC_REDIS_URL", "REDIS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    app_module.set_runtime(None)
    req = func.HttpRequest(method="GET", url="/api/health", params={}, body=b"")
    try:
        resp = functions["Health"].get_user_function()(req)
    finally:
        app_module.set_runtime(None)
    assert resp.status_code == 503
    assert json.loads(resp.get_body())["error"] == "store_unavailable"
    assert "REDIS" in caplog.text


def test_local_host_answers_like_the_function(tmp_path: Path, own_redis: RedisServer) -> None:
    """``functions serve`` answers /health and /api/health with the same body."""
    host = start_host(tmp_path, own_redis.url)
    try:
        for path in (b"/health", b"/api/health"):
            answer = raw(host, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer is not None and answer.status == 200
            assert json.loads(answer.body) == {"status": "ok"}
    finally:
        host.stop()
