"""The local host runs the Redis-only routes on its event loop (ai4ec_runtime.aio).

The store's suites (lifecycles, malformed input, fencing, replay after a lost reply,
a Redis restart, KEDA's key) run against this path through the ``both_paths`` fixture;
the tests here check what only the host shows: that it takes the path, that a lost reply
over HTTP still runs a create once, that a flushed script cache and an unreachable Redis
are handled, that a cancelled request leaves the pipelined connection in step, and that
a store the path cannot drive keeps the thread pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from rt_support import DETECT, DropProxy, EventLoopHandle, RedisServer, make_runtime

from ai4ec_runtime import keys
from ai4ec_runtime.aio import AsyncDriver, supported
from ai4ec_runtime.dispatch import RecordingDispatcher
from ai4ec_runtime.handlers import Request, Runtime
from ai4ec_runtime.localhost import HostOptions, LocalServer, make_server
from ai4ec_runtime.models import endpoint_path
from ai4ec_runtime.scripts import TASK_SCRIPT
from ai4ec_runtime.settings import Settings
from ai4ec_runtime.store import connect_redis

Factory = Callable[..., LocalServer]


@pytest.fixture
def host(redis_url: str, r: redis.Redis, routing_doc: dict[str, Any]) -> Iterator[Factory]:
    servers: list[LocalServer] = []

    def start(url: str = redis_url, **options: Any) -> LocalServer:
        server = make_server(
            "127.0.0.1",
            0,
            url,
            routing=routing_doc,
            settings=Settings.from_env(env={}, bundled=None),
            dispatcher=RecordingDispatcher(),
            options=HostOptions(**options),
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.shutdown()


def call(
    server: LocalServer, method: str, path: str, doc: Any = None, **headers: str
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=30)
    try:
        body = None if doc is None else json.dumps(doc).encode()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


NEW = {"Endpoint": DETECT, "Body": '{"n":1}', "PublishToGrid": True}


def test_event_loop_handle_takes_the_event_loop_path(runtime: Runtime) -> None:
    """The fixture the store suites use really drives the steps on a loop."""
    on_loop = EventLoopHandle()
    try:
        body = json.dumps(NEW).encode()
        resp = on_loop(runtime, "CacheConnectorUpsert", Request("POST", body=body))
        assert resp.status == 200
        tid = json.loads(resp.body)["TaskId"]
        got = on_loop(runtime, "CacheConnectorGet", Request("GET", params={"taskId": tid}))
        assert json.loads(got.body)["TaskId"] == tid
        assert on_loop.used == 2
    finally:
        on_loop.close()


def _shape(body: bytes) -> dict[str, Any]:
    doc = dict(json.loads(body))
    doc.pop("TaskId", None)
    doc.pop("Timestamp", None)
    return doc


def test_both_host_paths_answer_alike(host: Factory) -> None:
    """Creates, updates, reads and the request reporter, on the loop and in threads."""
    answers = []
    for on_loop in (True, False):
        server = host(event_loop_store=on_loop)
        assert (server._aio is not None) is on_loop  # noqa: SLF001
        seen = []
        status, body = call(server, "POST", "/api/CacheConnectorUpsert", NEW)
        seen.append((status, _shape(body)))
        tid = json.loads(body)["TaskId"]
        for bs in ("running", "completed", "running"):
            doc = {"TaskId": tid, "Status": bs, "BackendStatus": bs, "Endpoint": DETECT}
            status, body = call(server, "POST", "/api/CacheConnectorUpsert", doc)
            seen.append((status, _shape(body)))
        status, body = call(server, "GET", f"/api/CacheConnectorGet?taskId={tid}")
        seen.append((status, _shape(body)))
        seen.append(call(server, "GET", "/api/CacheConnectorGet?taskId=nope")[0:1])
        seen.append(call(server, "POST", "/api/CacheConnectorUpsert", {"Body": 1}))
        seen.append(call(server, "POST", "/api/CacheConnectorUpsert", [[]]))
        counter = {"ApiPath": "/v1/x", "ServiceCluster": f"c{on_loop}", "IncrementBy": 3}
        seen.append(call(server, "POST", "/api/CurrentProcessingUpsert", counter))
        seen.append(call(server, "GET", f"/api/CurrentProcessingGet?cluster=c{on_loop}&path=/v1/x"))
        answers.append(seen)
    assert answers[0] == answers[1]
    assert answers[0][3][0] == 200 and answers[0][3][1]["BackendStatus"] == "completed"


def test_lost_reply_over_http_runs_the_create_once(
    host: Factory, redis_server: RedisServer, r: redis.Redis
) -> None:
    """Redis ran the create, its reply was lost with the connection: the host sends the
    same call again and answers with the first reply; one task, one dispatch."""
    proxy = DropProxy(redis_server.port)
    try:
        server = host(f"redis://127.0.0.1:{proxy.port}/0")
        assert server._aio is not None  # noqa: SLF001
        assert call(server, "GET", "/api/CacheConnectorGet?taskId=nope")[0] == 404  # connected
        r.script_load(TASK_SCRIPT)  # so the armed call is the one that runs the script
        proxy.arm("create")
        status, body = call(server, "POST", "/api/CacheConnectorUpsert", NEW)
        assert status == 200, body
        assert proxy.dropped == 1
        tid = json.loads(body)["TaskId"]
        assert r.zrange(endpoint_path(DETECT) + "_created", 0, -1) == [tid.encode()]
        dispatcher = server.runtime.dispatcher
        assert [d.task_id for d in dispatcher.items] == [tid]  # type: ignore[attr-defined]
        status, body = call(server, "GET", f"/api/CacheConnectorGet?taskId={tid}")
        assert status == 200 and json.loads(body)["BackendStatus"] == "created"
    finally:
        proxy.close()


def test_flushed_scripts_are_loaded_again(host: Factory, r: redis.Redis) -> None:
    server = host()
    assert call(server, "POST", "/api/CacheConnectorUpsert", NEW)[0] == 200
    r.script_flush()
    status, body = call(server, "POST", "/api/CacheConnectorUpsert", NEW)
    assert status == 200, body


def test_unreachable_redis_answers_503(host: Factory, tmp_path: Path) -> None:
    """Redis gone: the retries run out and the answer is a 503 that names no address."""
    server = RedisServer(tmp_path / "gone").start()
    try:
        host_ = host(server.url)
        assert host_._aio is not None  # noqa: SLF001
        assert call(host_, "POST", "/api/CacheConnectorUpsert", NEW)[0] == 200
    finally:
        server.stop()
    status, body = call(host_, "POST", "/api/CacheConnectorUpsert", NEW)
    assert status == 503, body
    assert json.loads(body)["error"] == "store_unavailable"
    assert "127.0.0.1" not in body.decode()


def test_many_concurrent_requests_share_one_connection(host: Factory, r: redis.Redis) -> None:
    """200 concurrent creates and their reads, pipelined: every answer is its own."""
    server = host()
    netloc = urlsplit(server.url).netloc

    def client(n: int) -> list[tuple[str, str]]:
        conn = http.client.HTTPConnection(netloc, timeout=30)
        out = []
        for i in range(10):
            body = json.dumps({**NEW, "Body": f"{n}-{i}"})
            conn.request("POST", "/api/CacheConnectorUpsert", body=body)
            resp = conn.getresponse()
            assert resp.status == 200
            tid = json.loads(resp.read())["TaskId"]
            conn.request("GET", f"/api/CacheConnectorGet?taskId={tid}")
            resp = conn.getresponse()
            assert json.loads(resp.read())["TaskId"] == tid
            out.append((tid, f"{n}-{i}"))
        conn.close()
        return out

    with ThreadPoolExecutor(20) as pool:
        made = [x for chunk in pool.map(client, range(20)) for x in chunk]
    assert len({tid for tid, _ in made}) == 200
    for tid, body in made[::17]:
        assert r.get(tid + "_ORIG") == body.encode()


def test_a_cancelled_request_leaves_the_connection_in_step(
    r: redis.Redis, routing_doc: dict[str, Any]
) -> None:
    """A request whose client went away is cancelled; its reply is still read and dropped."""
    rt = make_runtime(r, routing_doc)
    for n in range(50):
        r.set(keys.task(f"00000000-0000-0000-0000-{n:012d}"), f"v{n}")

    async def main() -> list[bytes | None]:
        driver = AsyncDriver(rt.store, ThreadPoolExecutor(1))
        try:
            tasks = [
                asyncio.ensure_future(
                    driver.run(rt.store.get_io(f"00000000-0000-0000-0000-{n:012d}"))
                )
                for n in range(50)
            ]
            await asyncio.sleep(0)  # every request is written
            for t in tasks[::3]:
                t.cancel()
            kept = [t for i, t in enumerate(tasks) if i % 3]
            got = await asyncio.gather(*kept)
            again = await driver.run(rt.store.get_io("00000000-0000-0000-0000-000000000049"))
            return [*got, again]
        finally:
            driver.close()
            await asyncio.sleep(0.01)

    got = asyncio.run(main())
    want = [f"v{n}".encode() for n in range(50) if n % 3] + [b"v49"]
    assert got == want


def test_a_store_it_cannot_drive_keeps_the_thread_pool(redis_cluster: Any) -> None:
    redis_cluster.flush()
    client = connect_redis(redis_cluster.url, "cluster")
    try:
        rt = make_runtime(client, {"schemaVersion": 1, "apis": {}})
        assert supported(rt.store) == "a Redis Cluster"
        with pytest.raises(ValueError, match="Redis Cluster"):
            AsyncDriver(rt.store, ThreadPoolExecutor(1))
    finally:
        client.close()
    base = Settings.from_env(env={}, bundled=None)
    server = make_server(
        "127.0.0.1",
        0,
        redis_cluster.url,
        routing={"schemaVersion": 1, "apis": {}},
        settings=dataclasses.replace(base, redis_mode="cluster"),
        dispatcher=RecordingDispatcher(),
    ).start()
    try:
        assert server._aio is None  # noqa: SLF001
        status, body = call(server, "POST", "/api/CacheConnectorUpsert", NEW)
        assert status == 200, body
    finally:
        server.shutdown()


def test_a_password_an_acl_user_and_a_database(host: Factory, tmp_path: Path) -> None:
    """The loop's connection authenticates and selects the database as redis-py's does."""
    server = RedisServer(tmp_path / "auth").start()
    admin = redis.Redis(port=server.port)
    try:
        admin.execute_command("ACL", "SETUSER", "ai4ec", "on", ">pw-2", "~*", "+@all")
        admin.config_set("requirepass", "pw-1")
        for url in (
            f"redis://:pw-1@127.0.0.1:{server.port}/3",
            f"redis://ai4ec:pw-2@127.0.0.1:{server.port}/5",
        ):
            served = host(url)
            assert served._aio is not None  # noqa: SLF001
            status, body = call(served, "POST", "/api/CacheConnectorUpsert", NEW)
            assert status == 200, body
            tid = json.loads(body)["TaskId"]
            db = int(url.rsplit("/", 1)[1])
            check = redis.Redis.from_url(url.rsplit("/", 1)[0] + f"/{db}")
            assert json.loads(check.get(tid) or b"{}")["TaskId"] == tid
            check.close()
            served.shutdown()
    finally:
        admin.close()
        server.stop()


def test_a_unix_socket(host: Factory, tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "unix", "--unixsocket", str(sock), "--appendonly", "no")
    server.start()
    try:
        served = host(f"unix://{sock}?db=2")
        assert served._aio is not None  # noqa: SLF001
        status, body = call(served, "POST", "/api/CacheConnectorUpsert", NEW)
        assert status == 200, body
        tid = json.loads(body)["TaskId"]
        status, body = call(served, "GET", f"/api/CacheConnectorGet?taskId={tid}")
        assert status == 200 and json.loads(body)["TaskId"] == tid
        check = redis.Redis(port=server.port, db=2)
        assert check.exists(tid) == 1
        check.close()
    finally:
        server.stop()
