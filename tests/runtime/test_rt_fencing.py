"""Pipeline steps are fenced against the upstream Framework client's late writes.

Driven by the real upstream task client (``../shared/upstream/distributed_api_task.py``,
loaded at test time and skipped where absent) over HTTP against a small in-test HTTP
server that only converts requests for :func:`ai4ec_runtime.handlers.handle`, so the
test does not depend on which server library ``functions serve`` uses. The client GETs
the task and echoes its *current* Endpoint on every update, so a duplicate
``CompleteTask`` from step 1 names step 2; ``FailTask`` after ``CompleteTask`` is what
the service wrapper sends when the handler raises after completing.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from rt_support import CLASSIFY, DETECT

from ai4ec_runtime.handlers import Request, Runtime, handle

pytestmark = pytest.mark.usefixtures("both_paths")

UPSTREAM = Path(__file__).resolve().parents[2] / ".." / "shared" / "upstream"


def load_upstream_client() -> ModuleType:
    path = (UPSTREAM / "distributed_api_task.py").resolve()
    if not path.is_file():
        pytest.skip(f"upstream task client not found at {path}")
    pytest.importorskip("aiohttp")
    spec = importlib.util.spec_from_file_location("upstream_distributed_api_task", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FunctionsHttp:
    """``/api/<Function>`` over real HTTP, answered by the runtime's handlers."""

    def __init__(self, rt: Runtime) -> None:
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(
                    self.command,
                    params=dict(parse_qsl(parts.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                resp = handle(rt, parts.path.removeprefix("/api/"), req)
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                self.wfile.write(resp.body)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def client(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    module = load_upstream_client()
    http = FunctionsHttp(runtime)
    monkeypatch.setenv("CACHE_CONNECTOR_UPSERT_URI", http.url + "/api/CacheConnectorUpsert")
    monkeypatch.setenv("CACHE_CONNECTOR_GET_URI", http.url + "/api/CacheConnectorGet")
    yield module.DistributedApiTaskManager()
    http.close()
    # The upstream client leaves event loops and aiohttp sessions unclosed; collect them
    # here, where their ResourceWarnings are expected, not during a later test.
    asyncio.set_event_loop(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()


def create(rt: Runtime, **extra: Any) -> str:
    doc = {"Endpoint": DETECT, "Body": '{"image":"a.jpg"}', "PublishToGrid": True, **extra}
    resp = handle(rt, "CacheConnectorUpsert", Request("POST", body=json.dumps(doc).encode()))
    assert resp.status == 200
    return str(json.loads(resp.body)["TaskId"])


def deliver(rt: Runtime, tid: str, endpoint: str) -> None:
    """What the webhook or local dispatcher does before POSTing a step to its API."""
    assert rt.store.claim(tid, endpoint, 60, want_body=False).state == "ok"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_two_step_pipeline_ends_with_step_two_result(runtime: Runtime, client: Any) -> None:
    tid = create(runtime, Pipeline="species-v1")
    deliver(runtime, tid, DETECT)
    assert client.UpdateTaskStatus(tid, "detecting")["BackendStatus"] == "running"
    hop = client.CompleteTask(tid, '{"boxes":[1]}')
    assert (hop["BackendStatus"], hop["Endpoint"]) == ("created", CLASSIFY)
    # Step 1 again: a duplicate CompleteTask, then FailTask (its handler raised after
    # completing). Both echo step 2's Endpoint; both change nothing and answer 200.
    late = client.CompleteTask(tid, '{"boxes":[1]}')
    assert (late["BackendStatus"], late["Endpoint"]) == ("created", CLASSIFY)
    late = client.FailTask(tid, "Task failed - please contact support or try again.")
    assert (late["BackendStatus"], late["Endpoint"]) == ("created", CLASSIFY)
    assert client.GetTaskStatus(tid)["Status"] == "created"
    # Step 2 runs with step 1's output and completes with its own result.
    deliver(runtime, tid, CLASSIFY)
    items = runtime.dispatcher.items  # type: ignore[attr-defined]
    assert [(d.endpoint, d.body) for d in items] == [
        (DETECT, '{"image":"a.jpg"}'),
        (CLASSIFY, '{"boxes":[1]}'),
    ]
    client.UpdateTaskStatus(tid, "classifying")
    done = client.CompleteTask(tid, "species: fox")
    assert (done["BackendStatus"], done["Status"]) == ("completed", "species: fox")
    # FailTask after the last CompleteTask changes nothing either.
    assert client.FailTask(tid, "boom")["Status"] == "species: fox"
    assert client.CompleteTask(tid, '{"boxes":[1]}')["Status"] == "species: fox"
    doc = runtime.store.get_doc(tid)
    assert doc is not None and (doc["BackendStatus"], doc["Status"]) == (
        "completed",
        "species: fox",
    )
    assert len(items) == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_fail_after_complete_of_a_single_task(runtime: Runtime, client: Any) -> None:
    tid = create(runtime)
    client.UpdateTaskStatus(tid, "working")
    assert client.CompleteTask(tid, "done")["BackendStatus"] == "completed"
    answer = client.FailTask(tid, "Task failed - please contact support or try again.")
    assert (answer["BackendStatus"], answer["Status"]) == ("completed", "done")
