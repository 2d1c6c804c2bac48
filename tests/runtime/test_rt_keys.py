"""Least-privilege keys of ``ai4ec functions serve --keys``, over real HTTP.

The host runs as the real CLI process against a real redis-server; keys are presented
as Azure Functions takes them (``x-functions-key`` header or ``code`` parameter).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rt_host import ROOT, Host, host_env, post, raw, serve_cmd, start_host
from rt_support import free_port, start_backend

from ai4ec_runtime.auth import AccessKeys, KeysFileError

DETECT = "http://127.0.0.1:9/v1/detector/detect"
CLASSIFY = "http://127.0.0.1:9/v1/classifier/classify"
UPSERT = "/api/CacheConnectorUpsert"


@pytest.fixture
def keyed(tmp_path: Path, redis_url: str) -> Iterator[tuple[Host, AccessKeys]]:
    keys_file = tmp_path / "keys.json"
    host = start_host(tmp_path, redis_url, "--keys", str(keys_file))
    yield host, AccessKeys.load(keys_file)
    host.stop()


def call(host: Host, path: str, doc: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = [f"x-functions-key: {key}"] if key else []
    if doc is None:
        head = [f"GET {path} HTTP/1.1", "Host: x", *headers]
        answer = raw(host, ("\r\n".join(head) + "\r\n\r\n").encode())
    else:
        answer = raw(host, post(path, json.dumps(doc).encode(), *headers))
    assert answer is not None
    return answer.status, json.loads(answer.body) if answer.body else None


def create(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"Endpoint": endpoint, "Body": "{}", "PublishToGrid": False, **extra}


def test_keys_file_written_owner_only_and_read_back(keyed: tuple[Host, AccessKeys]) -> None:
    host, keys = keyed
    path = Path(host.log_path.parent / "keys.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert set(keys.apis) == {"detector-v1", "classifier-v1"}
    for secret in (keys.apim, keys.event_grid, *keys.apis.values()):
        assert secret not in host.log()


def test_anonymous_and_unknown_keys_get_401(keyed: tuple[Host, AccessKeys]) -> None:
    host, _ = keyed
    assert call(host, UPSERT, create(DETECT))[0] == 401
    assert call(host, UPSERT, create(DETECT), key="not-a-key-of-this-host")[0] == 401
    assert call(host, "/api/CacheConnectorGet?taskId=x")[0] == 401
    health = raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert health is not None and health.status == 200  # load balancers carry no key


def test_each_key_reaches_only_its_functions_and_tasks(keyed: tuple[Host, AccessKeys]) -> None:
    host, keys = keyed
    det, cls = keys.apis["detector-v1"], keys.apis["classifier-v1"]
    status, task = call(host, UPSERT + f"?code={keys.apim}", create(DETECT))
    assert status == 200
    tid = task["TaskId"]
    get = f"/api/CacheConnectorGet?taskId={tid}"
    assert call(host, get, key=det)[0] == 200
    assert call(host, get, key=cls)[0] == 403  # another API's task
    update = {"TaskId": tid, "BackendStatus": "running", "Endpoint": DETECT}
    assert call(host, UPSERT, update, key=cls)[0] == 403
    assert call(host, UPSERT, update, key=keys.apim)[0] == 403  # APIM only creates
    assert call(host, UPSERT, update, key=det)[0] == 200
    assert call(host, UPSERT, create(CLASSIFY), key=det)[0] == 403  # create for another API
    assert call(host, "/api/BackendWebhook", [], key=det)[0] == 403
    assert call(host, "/api/BackendWebhook", [], key=keys.event_grid)[0] == 200
    assert call(host, UPSERT, create(DETECT), key=keys.event_grid)[0] == 403
    body = {"ApiPath": "/v1/detector/detect", "ServiceCluster": "c", "IncrementBy": 1}
    assert call(host, "/api/CurrentProcessingUpsert", body, key=det)[0] == 200


def test_pipeline_task_belongs_to_its_current_step(keyed: tuple[Host, AccessKeys]) -> None:
    host, keys = keyed
    status, task = call(host, UPSERT, create(DETECT, Pipeline="species-v1"), key=keys.apim)
    assert status == 200
    get = f"/api/CacheConnectorGet?taskId={task['TaskId']}"
    assert call(host, get, key=keys.apis["detector-v1"])[0] == 200
    assert call(host, get, key=keys.apis["classifier-v1"])[0] == 403  # not its step yet


def test_endpoint_outside_the_routing_table_is_refused(keyed: tuple[Host, AccessKeys]) -> None:
    """400 before anything is stored or sent: a key cannot aim the runtime elsewhere.

    The "elsewhere" is a real listening backend, which records every request it gets.
    """
    host, keys = keyed
    backend = start_backend(host.url, "--mode", "hang")
    try:
        for key in (keys.apim, keys.apis["detector-v1"]):
            doc = create(backend.url + "/latest/meta-data", PublishToGrid=True)
            status, err = call(host, UPSERT, doc, key=key)
            assert status == 400 and err["field"] == "Endpoint"
        det = keys.apis["detector-v1"]
        status, task = call(host, UPSERT, create(DETECT), key=keys.apim)
        hop = create(backend.url + "/v1/elsewhere/x", TaskId=task["TaskId"], PublishToGrid=True)
        hop.update(Status="created", BackendStatus="created")
        assert call(host, UPSERT, hop, key=det)[0] == 400
        time.sleep(0.5)  # give a (wrong) dispatch the time to arrive
        assert backend.log() == []
    finally:
        backend.proc.kill()
        backend.proc.wait()


def test_endpoint_on_another_host_is_refused(tmp_path: Path, redis_url: str) -> None:
    """With the ingress known (as on Azure), an Endpoint must point at it, not merely share
    its path: an API's key cannot aim dispatch at a host of its choosing (a request
    forwarder, a port scanner). The "other host" is a real listening backend that records
    every request; nothing reaches it.
    """
    keys_file = tmp_path / "keys.json"
    host = start_host(
        tmp_path, redis_url, "--keys", str(keys_file), AI4EC_BACKEND_BASE_URL="http://127.0.0.1:9"
    )
    backend = start_backend(host.url, "--mode", "hang")
    try:
        keys = AccessKeys.load(keys_file)
        for key in (keys.apim, keys.apis["detector-v1"]):
            doc = create(backend.url + "/v1/detector/detect", PublishToGrid=True)
            status, err = call(host, UPSERT, doc, key=key)
            assert status == 400 and err["field"] == "Endpoint", err
            assert "ingress" in err["message"]
        status, task = call(host, UPSERT, create(DETECT), key=keys.apim)  # on the ingress
        assert status == 200, task
        time.sleep(0.5)  # give a (wrong) dispatch the time to arrive
        assert backend.log() == []
    finally:
        backend.proc.kill()
        backend.proc.wait()
        host.stop()


def test_userinfo_never_echoed_or_logged(keyed: tuple[Host, AccessKeys]) -> None:
    host, keys = keyed
    for url in ("http://user:s3cret@10.0.0.1/v1/detector/detect", "ftp://user:s3cret@x/y"):
        status, err = call(host, UPSERT, create(url), key=keys.apim)
        assert status == 400 and "s3cret" not in json.dumps(err)
    assert "s3cret" not in host.log()


def test_bad_keys_file_is_one_line_and_exit_1(tmp_path: Path, redis_url: str) -> None:
    bad = tmp_path / "keys.json"
    bad.write_text('{"apim": "short", "eventGrid": 1}')
    done = subprocess.run(
        serve_cmd(free_port(), redis_url, "--keys", str(bad)),
        capture_output=True,
        text=True,
        env=host_env(tmp_path),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == f"error: {bad}: apim must be a string of 16 characters or more\n"
    with pytest.raises(KeysFileError, match="eventGrid"):
        bad.write_text('{"apim": "%s"}' % ("a" * 20))
        AccessKeys.load(bad)


def test_no_keys_option_means_no_start_and_insecure_is_loud(tmp_path: Path, redis_url: str) -> None:
    done = subprocess.run(
        serve_cmd(free_port(), redis_url, auth=True),
        capture_output=True,
        text=True,
        env=host_env(tmp_path),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "--keys" in done.stderr and "--insecure-no-auth" in done.stderr
    host = start_host(tmp_path, redis_url, "--insecure-no-auth")
    try:
        assert "WARNING" in host.log() and "no key" in host.log()
        assert call(host, UPSERT, create("http://elsewhere.example/x"))[0] == 200
    finally:
        host.stop()
