"""The real upstream Framework task client against ``ai4ec functions serve``, over HTTP.

``DistributedApiTaskManager`` (``../shared/upstream/distributed_api_task.py``, loaded at
run time by rt_framework_driver.py in a child process, as an API container runs it)
raises on any non-200 answer. These tests drive its call sequences against the host
process and a real redis-server and check that it never raises, by default, including
while Redis is down; and that ``AI4EC_STRICT_ANSWERS=true`` gives the strict codes.
Skipped where ``../shared/upstream`` is absent (a user's clone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rt_framework_driver import UPSTREAM
from rt_host import Host, start_host
from rt_support import HERE, Backend, RedisServer, start_backend, wait_for

pytestmark = pytest.mark.skipif(not UPSTREAM.is_file(), reason="needs ../shared/upstream")


def drive(host: Host, *calls: list[Any]) -> list[Any]:
    """Run the upstream client's ``calls`` in a child process; results in order."""
    env = {
        **os.environ,
        "CACHE_CONNECTOR_UPSERT_URI": f"{host.url}/api/CacheConnectorUpsert?code=local",
        "CACHE_CONNECTOR_GET_URI": f"{host.url}/api/CacheConnectorGet?code=local",
    }
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(HERE / "rt_framework_driver.py"), json.dumps(calls)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    return [
        json.loads(x.removeprefix("RESULT "))["result"] for x in lines if x.startswith("RESULT ")
    ]


def create(host: Host, endpoint: str, **extra: Any) -> str:
    """What APIM's async policy sends to create a task."""
    doc = {
        "Status": "created",
        "BackendStatus": "created",
        "Endpoint": endpoint,
        "Body": '{"image":"a"}',
        "PublishToGrid": True,
        **extra,
    }
    req = urllib.request.Request(
        host.url + "/api/CacheConnectorUpsert", json.dumps(doc).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        task_id: str = json.loads(resp.read())["TaskId"]
    return task_id


def get(host: Host, task_id: str) -> tuple[int, dict[str, Any]]:
    url = f"{host.url}/api/CacheConnectorGet?taskId={task_id}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


@pytest.fixture
def hang_backend() -> Iterator[Callable[[Host], Backend]]:
    """A Framework-like backend that accepts tasks and never reports (the test does)."""
    started: list[Backend] = []

    def start(host: Host) -> Backend:
        b = start_backend(host.url, "--mode", "hang")
        started.append(b)
        return b

    yield start
    for b in started:
        b.proc.kill()
        b.proc.wait()


@pytest.fixture
def host(tmp_path: Path, redis_url: str) -> Iterator[Host]:
    h = start_host(tmp_path, redis_url)
    yield h
    h.stop()


def delivered(backend: Backend, task_id: str, path: str) -> None:
    wait_for(lambda: any(e["taskId"] == task_id and e["path"] == path for e in backend.log()))


def test_update_complete_twice_fail_after_complete(
    host: Host, hang_backend: Callable[[Host], Backend]
) -> None:
    """GET then POST upsert; CompleteTask twice; FailTask after CompleteTask: no raise."""
    backend = hang_backend(host)
    tid = create(host, backend.url + "/v1/detector/detect")
    delivered(backend, tid, "/v1/detector/detect")
    got, running, done, again, late = drive(
        host,
        ["GetTaskStatus", tid],
        ["UpdateTaskStatus", tid, "loading model"],
        ["CompleteTask", tid, "done: https://blob/sas"],
        ["CompleteTask", tid, "done again"],
        ["FailTask", tid, "Task failed - try again"],
    )
    assert got["BackendStatus"] == "created" and running["BackendStatus"] == "running"
    assert done["BackendStatus"] == "completed"
    # The refused repeats answer the record as it stands: nothing changed.
    assert again["BackendStatus"] == late["BackendStatus"] == "completed"
    assert again["Status"] == late["Status"] == "done: https://blob/sas"
    assert get(host, tid)[1]["Status"] == "done: https://blob/sas"
    assert "Traceback" not in host.log()


def test_add_pipeline_task(host: Host, hang_backend: Callable[[Host], Backend]) -> None:
    """The imperative hop: the task moves on to the next API and completes there."""
    backend = hang_backend(host)
    tid = create(host, backend.url + "/v1/detector/detect")
    delivered(backend, tid, "/v1/detector/detect")
    running, hop = drive(
        host,
        ["UpdateTaskStatus", tid, "detecting"],
        ["AddPipelineTask", tid, "classifier", "v1", "classify", '{"boxes":[]}'],
    )
    assert running["BackendStatus"] == "running"
    assert hop["Endpoint"] == backend.url + "/v1/classifier/classify"
    delivered(backend, tid, "/v1/classifier/classify")
    (done,) = drive(host, ["CompleteTask", tid, '{"species":"lynx"}'])
    assert (
        done["BackendStatus"] == "completed" and done["EndpointPath"] == "/v1/classifier/classify"
    )


def test_declarative_pipeline_steps_never_raise(
    host: Host, hang_backend: Callable[[Host], Backend]
) -> None:
    """Step 1 completes (the hop), repeats its CompleteTask, then FailTask: no raise.

    Which of those late writes change step 2 is the store's fencing (issue 14 item 2);
    here only the client's side is checked: every call gets a 200 it can parse.
    """
    backend = hang_backend(host)
    tid = create(host, backend.url + "/v1/detector/detect", Pipeline="species-v1")
    delivered(backend, tid, "/v1/detector/detect")
    results = drive(
        host,
        ["UpdateTaskStatus", tid, "detecting"],
        ["CompleteTask", tid, '{"boxes":[1]}'],
        ["CompleteTask", tid, '{"boxes":[1]}'],
        ["FailTask", tid, "Task failed - try again"],
        ["GetTaskStatus", tid],
    )
    assert all(r["TaskId"] == tid for r in results)
    assert results[1]["EndpointPath"] == "/v1/classifier/classify"  # the hop happened


def test_redis_outage_never_crashes_the_client(
    tmp_path: Path, hang_backend: Callable[[Host], Backend]
) -> None:
    """While Redis is down every call answers 200 in the client's shape; nothing changes."""
    server = RedisServer(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    host = start_host(tmp_path, server.start().url)
    try:
        backend = hang_backend(host)
        tid = create(host, backend.url + "/v1/detector/detect")
        delivered(backend, tid, "/v1/detector/detect")
        (running,) = drive(host, ["UpdateTaskStatus", tid, "working"])
        server.kill()
        got, done, hop = drive(
            host,
            ["GetTaskStatus", tid],
            ["CompleteTask", tid, "done"],
            ["AddPipelineTask", tid, "classifier", "v1", "classify", "{}"],
        )
        assert got == {"TaskId": tid, "Status": "not found", "Endpoint": ""}
        assert done == {"TaskId": tid, "Status": "unable to update"}
        assert hop == {"TaskId": "-1", "Status": "error"}  # the client's own "gave up"
        server.start()
        wait_for(lambda: get(host, tid)[1]["BackendStatus"] == "running", timeout=20)
        assert get(host, tid)[1]["Endpoint"] == running["Endpoint"]  # not http://localhost
        (done,) = drive(host, ["CompleteTask", tid, "done"])
        assert done["BackendStatus"] == "completed"
    finally:
        host.stop()
        server.stop()


def test_strict_answers_switch(tmp_path: Path, redis_url: str) -> None:
    """``AI4EC_STRICT_ANSWERS=true`` answers a refused update 409 (the client then raises)."""
    host = start_host(tmp_path, redis_url, AI4EC_STRICT_ANSWERS="true")
    try:
        tid = create(host, "http://127.0.0.1:9/v1/detector/detect", PublishToGrid=False)
        doc = {"TaskId": tid, "BackendStatus": "completed", "Status": "a"}
        for expected in (200, 409):
            req = urllib.request.Request(
                host.url + "/api/CacheConnectorUpsert",
                json.dumps({**doc, "Status": f"text {expected}"}).encode(),
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status = resp.status
            except urllib.error.HTTPError as err:
                status = err.code
                body = json.loads(err.read())
                assert body["error"] == "illegal_transition"
            assert status == expected
    finally:
        host.stop()
