"""The local gateway answers the platform's public routes as API Management would.

Everything is real: the embedded Redis, the task manager (functions/ai4ec_runtime), the
gateway and ingress of ``ai4ec dev`` and its demo backends, over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ai4ec.dev.gateway import INVALID_KEY, JWT_FAILED, MISSING_KEY
from ai4ec.dev.redis import redis_server_binary
from ai4ec.dev.session import DevSession

from ..conftest import SAMPLES
from .conftest import poll, run_session

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server")

CAMERA_TRAP = SAMPLES / "camera-trap" / "platform.yaml"
KEY = "Ocp-Apim-Subscription-Key"


def test_keys_tasks_and_the_status_route(tmp_path: Path) -> None:
    """No key 401, a wrong key 401, a key 202 with Location, polling it gives the result."""

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        url = f"{s.gateway_url}/v1/camera-trap/detector/detect"
        async with c.post(url, json={"image": "a"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["message"] == MISSING_KEY
        async with c.post(url, json={"image": "a"}, headers={KEY: "0" * 32}) as resp:
            assert resp.status == 401
            assert (await resp.json())["message"] == INVALID_KEY
        async with c.post(url, json={"image": "a"}, headers={KEY: s.keys["public"]}) as resp:
            assert resp.status == 401, "the public product does not include the async detector"
        partner = {KEY: s.keys["partner"]}
        async with c.post(url, json={"image": "a"}, headers=partner) as resp:
            assert resp.status == 202
            location = resp.headers["Location"]
            assert resp.headers["Retry-After"].isdigit()
            created = await resp.json()
        assert location == f"/taskmanagement/task/{created['TaskId']}"
        record = await poll(c, s.gateway_url + location, partner)
        assert record["BackendStatus"] == "completed"
        assert json.loads(record["Status"]) == {
            "api": "detector-v1",
            "endpoint": "/detect",
            "input": {"image": "a"},
        }
        async with c.get(f"{s.gateway_url}/taskmanagement/task/{created['TaskId']}") as resp:
            assert resp.status == 401

    run_session(CAMERA_TRAP, tmp_path, scenario)


def test_pipeline_end_to_end_and_sync_proxy(tmp_path: Path) -> None:
    """The species pipeline runs detector then classifier; the sync detector is proxied."""

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        partner = {KEY: s.keys["partner"]}
        async with c.post(
            f"{s.gateway_url}/v1/camera-trap/species/", json={"image": "b"}, headers=partner
        ) as resp:
            assert resp.status == 202, await resp.text()
            location = resp.headers["Location"]
        record = await poll(c, s.gateway_url + location, partner)
        final = json.loads(record["Status"])
        assert final["api"] == "classifier-v1"
        assert final["input"]["api"] == "detector-v1", "step 2 got step 1's output"
        assert final["input"]["input"] == {"image": "b"}
        async with c.post(
            f"{s.gateway_url}/v1/camera-trap/detector-sync/detect?x=1",
            json={"image": "c"},
            headers={KEY: s.keys["public"]},
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["input"] == {"image": "c"}

    run_session(CAMERA_TRAP, tmp_path, scenario)


def test_rate_limit_quota_size_and_json_checks(tmp_path: Path) -> None:
    """Product limits answer 429 with Retry-After; oversized 413; non-JSON async body 400."""

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        public = {KEY: s.keys["public"]}
        url = f"{s.gateway_url}/v1/camera-trap/detector-sync/detect"
        codes = []
        for _ in range(6):
            async with c.post(url, json={}, headers=public) as resp:
                codes.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        assert codes == [200] * 5 + [429]
        assert retry_after is not None and 0 < int(retry_after) <= 60
        partner = {KEY: s.keys["partner"]}
        too_big = io.BytesIO(b"x" * (2 * 1024 * 1024 + 1))
        async with c.post(url, data=too_big, headers=partner) as resp:
            assert resp.status == 413
        async with c.post(
            f"{s.gateway_url}/v1/camera-trap/detector/detect", data=b"not json", headers=partner
        ) as resp:
            assert resp.status == 400
        async with c.get(f"{s.gateway_url}/nowhere", headers=partner) as resp:
            assert resp.status == 404

    run_session(CAMERA_TRAP, tmp_path, scenario)


def _entra_platform(tmp_path: Path) -> Path:
    """camera-trap with Entra ID required on the async detector and CORS on the classifier."""
    text = CAMERA_TRAP.read_text(encoding="utf-8")
    text = text.replace(
        "    concurrency: 2\n",
        "    concurrency: 2\n"
        "    auth:\n"
        "      entraId:\n"
        "        tenantId: 11111111-1111-1111-1111-111111111111\n"
        "        audiences: [api://camera-trap]\n"
        "        requiredRoles: [Detect]\n",
        1,
    )
    text = text.replace(
        "    concurrency: 4\n",
        "    concurrency: 4\n    cors:\n      allowedOrigins: [https://app.example.org]\n",
        1,
    )
    path = tmp_path / "platform.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_entra_tokens_and_cors(tmp_path: Path) -> None:
    """The printed token passes validate-jwt; none or a forged one is 401; CORS preflight."""
    path = _entra_platform(tmp_path)

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        partner = {KEY: s.keys["partner"]}
        url = f"{s.gateway_url}/v1/camera-trap/detector/detect"
        async with c.post(url, json={}, headers=partner) as resp:
            assert resp.status == 401
            assert (await resp.json())["message"] == JWT_FAILED
        forged = s.token[:-4] + ("AAAA" if not s.token.endswith("AAAA") else "BBBB")
        async with c.post(
            url, json={}, headers={**partner, "Authorization": f"Bearer {forged}"}
        ) as resp:
            assert resp.status == 401
        async with c.post(
            url, json={}, headers={**partner, "Authorization": f"Bearer {s.token}"}
        ) as resp:
            assert resp.status == 202
        classify = f"{s.gateway_url}/v1/camera-trap/classifier/classify"
        preflight = {
            "Origin": "https://app.example.org",
            "Access-Control-Request-Method": "POST",
        }
        async with c.options(classify, headers=preflight) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
        async with c.options(classify, headers={**preflight, "Origin": "https://evil"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with c.post(
            classify, json={}, headers={**partner, "Origin": "https://app.example.org"}
        ) as resp:
            assert resp.status == 202
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.org"

    run_session(path, tmp_path / "state", scenario)


def test_product_tokens_and_keyless_limits(tmp_path: Path) -> None:
    """As the rendered policies do (tests/render/apim/test_keyless.py): a product with
    ``entraId`` asks its callers for the token; an API without subscription keys limits
    keyless calls per token subject with its products' limits (429 + Retry-After)."""
    text = CAMERA_TRAP.read_text(encoding="utf-8")
    entra = "{tenantId: 11111111-1111-1111-1111-111111111111, audiences: [api://camera-trap]}"
    text = text.replace(
        "    concurrency: 4\n",
        f"    concurrency: 4\n    auth: {{subscriptionKey: false, entraId: {entra}}}\n",
        1,
    )
    text = text.replace(
        "    rateLimit: {calls: 5, period: 60s}\n",
        f"    rateLimit: {{calls: 5, period: 60s}}\n    entraId: {entra}\n",
        1,
    )
    text = text.replace("rateLimit: {calls: 60, period: 60s}", "rateLimit: {calls: 2, period: 60s}")
    path = tmp_path / "platform.yaml"
    path.write_text(text, encoding="utf-8")

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        token = {"Authorization": f"Bearer {s.token}"}
        public = {KEY: s.keys["public"]}
        sync = f"{s.gateway_url}/v1/camera-trap/detector-sync/detect"
        async with c.post(sync, json={}, headers=public) as resp:
            assert resp.status == 401  # the public product now asks for the token
            assert (await resp.json())["message"] == JWT_FAILED
        async with c.post(sync, json={}, headers={**public, **token}) as resp:
            assert resp.status == 200
        classify = f"{s.gateway_url}/v1/camera-trap/classifier/classify"
        async with c.post(classify, json={}) as resp:
            assert resp.status == 401  # no key needed, but the token is
        codes = []
        for _ in range(3):
            async with c.post(classify, json={}, headers=token) as resp:
                codes.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        assert codes == [202, 202, 429]  # partner's 2 calls a minute, per token subject
        assert retry_after is not None and 0 < int(retry_after) <= 60

    run_session(path, tmp_path / "state", scenario)


def test_api_without_backend_answers_503_through_the_gateway(tmp_path: Path) -> None:
    """Without --demo or --backend an API is reported and its sync calls answer 503."""

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> Any:
        assert {b.kind for b in s.backends} == {"none"}
        assert any("NO BACKEND" in line for line in s.banner())
        async with c.post(
            f"{s.gateway_url}/v1/camera-trap/detector-sync/detect",
            json={},
            headers={KEY: s.keys["public"]},
        ) as resp:
            assert resp.status == 503
            assert "--backend" in (await resp.json())["message"]
        async with c.post(
            f"{s.gateway_url}/v1/camera-trap/species/",
            json={},
            headers={KEY: s.keys["partner"]},
        ) as resp:
            assert resp.status == 503, "a task that can never run is not accepted"
            assert "detector-v1" in (await resp.json())["message"]

    run_session(CAMERA_TRAP, tmp_path, scenario, demo=False)


def test_state_files_are_private_and_keys_survive_a_restart(tmp_path: Path) -> None:
    """dev.json and the env files hold keys: owner-only; a second run keeps the same keys."""

    async def first(s: DevSession, c: aiohttp.ClientSession) -> dict[str, str]:
        return dict(s.keys)

    keys = run_session(CAMERA_TRAP, tmp_path, first)
    state = json.loads((tmp_path / "dev.json").read_text())
    assert set(state) == {"gateway", "keys", "token"} and state["keys"] == keys
    for path in [tmp_path / "dev.json", *sorted((tmp_path / "env").iterdir())]:
        assert path.stat().st_mode & 0o077 == 0, path
    env = (tmp_path / "env" / "detector-v1.env").read_text()
    assert "CACHE_CONNECTOR_UPSERT_URI=http://127.0.0.1:" in env and "?code=" in env
    assert run_session(CAMERA_TRAP, tmp_path, first) == keys


def test_cli_refuses_bad_backends_and_a_busy_port(tmp_path: Path) -> None:
    """One-line errors, exit 1, no banner: a malformed or unknown --backend, a port in use."""
    import socket

    from click.testing import CliRunner

    from ai4ec.cli import cli

    runner = CliRunner()
    base = ["dev", str(CAMERA_TRAP), "--state-dir", str(tmp_path)]
    res = runner.invoke(cli, [*base, "--backend", "detector-v1"])
    assert res.exit_code == 1 and "write it as API=URL" in res.output
    res = runner.invoke(cli, [*base, "--backend", "nope=http://127.0.0.1:1"])
    assert res.exit_code == 1 and "names no API" in res.output and "detector-v1" in res.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = runner.invoke(cli, [*base, "--demo", "--port", str(port)])
    assert res.exit_code == 1, res.output
    assert f"cannot listen on 127.0.0.1:{port}" in res.output
    assert "gateway " not in res.output and "Traceback" not in res.output


def test_images_run_in_containers_when_an_engine_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each API without --backend or --demo runs from its image; all stopped at the end.

    No container engine exists here: ``fake_docker.py`` plays the docker CLI and engine,
    refusing a run without --rm, a port published beyond loopback, or no host alias.
    """
    import os
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    fake = Path(__file__).with_name("fake_docker.py")
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$@"\n')
    docker.chmod(0o755)
    (tmp_path / "fake").mkdir()
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(tmp_path / "fake"))

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        assert {b.kind for b in s.backends} == {"container"}
        partner = {KEY: s.keys["partner"]}
        image = ""
        for _ in range(100):  # the containers start in the background
            async with c.post(
                f"{s.gateway_url}/v1/camera-trap/detector-sync/detect",
                json={"n": 1},
                headers=partner,
            ) as resp:
                if resp.status == 200:
                    image = (await resp.json(content_type=None))["image"]
                    assert image.endswith("/camera-trap/detector:4.1.0"), image
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the detector-sync container never answered")
        async with c.post(
            f"{s.gateway_url}/v1/camera-trap/detector/detect", json={"n": 2}, headers=partner
        ) as resp:
            location = resp.headers["Location"]
        record = await poll(c, s.gateway_url + location, partner)
        result = json.loads(record["Status"])
        assert result["saw"] == {"n": 2} and result["image"] == image

    run_session(CAMERA_TRAP, tmp_path / "state", scenario, demo=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    runs = [c for c in calls if c["cmd"] == "run"]
    assert sorted(c["name"] for c in runs) == [
        "ai4ec-dev-camera-trap-classifier-v1",
        "ai4ec-dev-camera-trap-detector-sync-v1",
        "ai4ec-dev-camera-trap-detector-v1",
    ]
    assert all("host.docker.internal" in c["env"]["CACHE_CONNECTOR_UPSERT_URI"] for c in runs)
    assert sorted(c["name"] for c in calls if c["cmd"] == "stop") == sorted(c["name"] for c in runs)
    assert not list((tmp_path / "fake").iterdir()), "a container was left running"


def test_query_key_and_an_external_redis(tmp_path: Path) -> None:
    """`?subscription-key=` works like the header; `--redis-url` keeps tasks in that Redis.

    The external Redis is a real redis-server on a free port, started here; no embedded
    one is started, and the task the gateway created is found in it.
    """
    import shutil
    import socket
    import subprocess
    import time

    import redis

    binary = shutil.which("redis-server") or redis_server_binary()
    assert binary is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(binary), "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)

        async def scenario(s: DevSession, c: aiohttp.ClientSession) -> str:
            url = f"{s.gateway_url}/v1/camera-trap/detector/detect"
            async with c.post(f"{url}?subscription-key={s.keys['partner']}", json={}) as resp:
                assert resp.status == 202
                return str((await resp.json())["TaskId"])

        url = f"redis://127.0.0.1:{port}/0"
        task_id = run_session(CAMERA_TRAP, tmp_path / "state", scenario, redis_url=url)
        assert any(task_id.encode() in key for key in client.scan_iter(count=1000))
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
