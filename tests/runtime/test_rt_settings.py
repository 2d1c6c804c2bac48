"""App settings parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai4ec_runtime.models import ConfigurationError
from ai4ec_runtime.routing import Routing, step_url
from ai4ec_runtime.settings import Settings, parse_stackexchange


def test_stackexchange_connection_string() -> None:
    conn = "ai4ec.redis.cache.windows.net:6380,password=ab+c/d==,ssl=True,abortConnect=False"
    assert (
        parse_stackexchange(conn)
        == "rediss://:ab%2Bc%2Fd%3D%3D@ai4ec.redis.cache.windows.net:6380/0"
    )
    assert parse_stackexchange("localhost") == "redis://localhost:6379/0"
    with pytest.raises(ConfigurationError):
        parse_stackexchange("password=x")


def test_settings_precedence(tmp_path: Path) -> None:
    bundled = tmp_path / "ai4ec_settings.json"
    bundled.write_text(json.dumps({"AI4EC_NOT_FOUND_STATUS": "204", "AI4EC_DISPATCH": "local"}))
    s = Settings.from_env(
        env={
            "REDIS_CONNECTION_STRING": "h:1,password=p",
            "AI4EC_DISPATCH": "eventgrid",
            "AI4EC_BACKEND_BASE_URL": "https://in.example/",
        },
        bundled=bundled,
    )
    assert (s.not_found_status, s.dispatch, s.redis_url) == (204, "eventgrid", "redis://:p@h:1/0")
    assert s.backend_base_url == "https://in.example"
    s = Settings.from_env(
        env={"AI4EC_REDIS_URL": "redis://x:1/0", "REDIS_CONNECTION_STRING": "y"}, bundled=None
    )
    assert s.redis_url == "redis://x:1/0"


def test_missing_and_invalid_settings() -> None:
    s = Settings.from_env(env={}, bundled=None)
    with pytest.raises(ConfigurationError, match="AI4EC_REDIS_URL"):
        s.require_redis_url()
    with pytest.raises(ConfigurationError, match="EVENT_GRID_TOPIC_URI"):
        s.require_event_grid()
    for env in (
        {"AI4EC_NOT_FOUND_STATUS": "200"},
        {"AI4EC_DISPATCH": "sb"},
        {"AI4EC_DEFAULT_TASK_TTL_SECONDS": "week"},
    ):
        with pytest.raises(ConfigurationError):
            Settings.from_env(env=env, bundled=None)


def test_routing_validation_and_resolution(tmp_path: Path) -> None:
    doc = {"schemaVersion": 1, "apis": {"a-v1": {"paths": ["/v1/a"]}}}
    routing = Routing(doc)
    assert routing.resolve("/v1/a").api_id == "a-v1"  # type: ignore[union-attr]
    assert routing.resolve("/v1/a/sub").api_id == "a-v1"  # type: ignore[union-attr]
    assert routing.resolve("/v1/ab") is None
    assert Routing.load(tmp_path / "missing.json").apis == {}
    bad = [
        {"schemaVersion": 2},
        {"apis": {"a": {"paths": ["/x"]}, "b": {"paths": ["/x"]}}},
        {"apis": {"a": {"timeoutSeconds": -1}}},
        {"pipelines": {"p": {"steps": [{"api": "nope", "path": "/x"}]}}},
        {"pipelines": {"p": {"steps": []}}},
    ]
    for d in bad:
        with pytest.raises(ConfigurationError):
            Routing(d)
    assert step_url("http://1.2.3.4:80/v1/a?x=1", "/v1/b", None) == "http://1.2.3.4:80/v1/b"
    assert (
        step_url("http://1.2.3.4/v1/a", "/v1/b", "https://in.example/") == "https://in.example/v1/b"
    )


def test_backend_base_urls_per_cluster() -> None:
    """AI4EC_BACKEND_BASE_URLS maps clusters to ingresses; stand-ins fall back."""
    raw = json.dumps(
        {
            "east": "https://east.example.org/",
            "west": "http://20.1.2.3",
            "north": "http://north.ingress.invalid",
            "south": "",
        }
    )
    urls = Settings.from_env(env={"AI4EC_BACKEND_BASE_URLS": raw}, bundled=None).backend_base_urls
    assert urls == {"east": "https://east.example.org", "west": "http://20.1.2.3"}
    assert Settings.from_env(env={}, bundled=None).backend_base_urls == {}
    for bad in ("[1]", "{", '{"a": 1}', '{"a": "ftp://x"}'):
        with pytest.raises(ConfigurationError, match="AI4EC_BACKEND_BASE_URLS"):
            Settings.from_env(env={"AI4EC_BACKEND_BASE_URLS": bad}, bundled=None)
    table = Routing(
        {
            "apis": {
                "a-v1": {"paths": ["/v1/a"], "cluster": "east"},
                "b-v1": {"paths": ["/v1/b"], "cluster": "north"},
                "c-v1": {"paths": ["/v1/c"]},
            }
        }
    )
    assert table.apis["a-v1"].cluster == "east"
    assert table.base_url("a-v1", urls, "https://fallback") == "https://east.example.org"
    assert table.base_url("b-v1", urls, "https://fallback") == "https://fallback"
    assert table.base_url("c-v1", urls, None) is None
    with pytest.raises(ConfigurationError, match="cluster"):
        Routing({"apis": {"a-v1": {"paths": ["/v1/a"], "cluster": 3}}})


def test_queue_timeout_defaults_to_minutes() -> None:
    """Without queueTimeoutSeconds a lost task is retried or failed within 15 minutes."""
    route = Routing({"apis": {"a-v1": {"paths": ["/v1/a"]}}}).apis["a-v1"]
    assert route.queue_timeout_seconds == 15 * 60
    assert Settings.from_env(env={}, bundled=None).default_queue_timeout_seconds == 15 * 60


def test_strict_answers_setting() -> None:
    """Off by default (upstream clients need 200s); true/1 turn the strict codes on."""
    assert Settings.from_env(env={}, bundled=None).strict_answers is False
    for raw, expected in (("true", True), ("1", True), ("FALSE", False), ("0", False)):
        env = {"AI4EC_STRICT_ANSWERS": raw}
        assert Settings.from_env(env=env, bundled=None).strict_answers is expected
    with pytest.raises(ConfigurationError, match="AI4EC_STRICT_ANSWERS"):
        Settings.from_env(env={"AI4EC_STRICT_ANSWERS": "maybe"}, bundled=None)
