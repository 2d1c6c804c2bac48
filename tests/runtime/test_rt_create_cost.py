"""What a create costs in Redis commands, and the reply parsers the host may use (issue 14).

Structural checks, not timings: they read ``INFO commandstats`` of the real redis-server
before and after a number of requests through the local host over HTTP. A create must
stay one ``EVALSHA`` (one round trip, the script's SHA cached: no ``SCRIPT LOAD`` or
``SCRIPT EXISTS`` per call), a status read one ``GET``. A change that adds a round trip
to the hot path fails here instead of only showing up as a slower bench.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser
from rt_support import DETECT

from ai4ec_runtime.dispatch import RecordingDispatcher
from ai4ec_runtime.localhost import LocalServer, make_server
from ai4ec_runtime.models import UpsertRequest
from ai4ec_runtime.routing import Routing
from ai4ec_runtime.settings import Settings
from ai4ec_runtime.store import TaskStore

N = 25


def calls(r: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v}


@pytest.fixture
def host(
    redis_url: str, r: redis.Redis, routing_doc: dict[str, Any]
) -> Iterator[tuple[LocalServer, RecordingDispatcher]]:
    """A local host whose dispatches are recorded: no delivery lanes or sweeper that
    would send their own commands while the counts are taken."""
    recorder = RecordingDispatcher()
    base = Settings.from_env(env={}, bundled=None)
    server = make_server(
        "127.0.0.1",
        0,
        redis_url,
        routing=routing_doc,
        settings=dataclasses.replace(base),
        dispatcher=recorder,
    ).start()
    yield server, recorder
    server.shutdown()


def post_create(conn: http.client.HTTPConnection, publish: bool) -> dict[str, Any]:
    doc = {
        "Status": "created",
        "BackendStatus": "created",
        "Endpoint": DETECT,
        "Body": '{"image":"a.jpg"}',
        "PublishToGrid": publish,
    }
    conn.request("POST", "/api/CacheConnectorUpsert?code=k", body=json.dumps(doc).encode())
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, data
    return dict(json.loads(data))


@pytest.mark.parametrize("publish", [False, True])
def test_a_create_is_one_evalsha_with_a_cached_script(
    host: tuple[LocalServer, RecordingDispatcher], r: redis.Redis, publish: bool
) -> None:
    server, recorder = host
    r.script_flush()  # as after a Redis restart: the first create loads the script once
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    try:
        first = calls(r)
        post_create(conn, publish)
        warm = delta(first, calls(r))
        assert warm.get("script|load") == 1
        assert warm.get("evalsha") == 2  # NOSCRIPT, then the same bytes again

        before = calls(r)
        ids = [post_create(conn, publish)["TaskId"] for _ in range(N)]
        spent = delta(before, calls(r))
    finally:
        conn.close()
    assert len(set(ids)) == N
    assert spent["evalsha"] == N
    for per_call in ("eval", "script|load", "script|exists", "multi", "exec", "ping"):
        assert per_call not in spent, spent
    # Inside the script: one metadata write and one record write per new task.
    assert spent["hset"] == N
    assert spent["exists"] == N
    # One dispatch per create, handed over once (the recorder stands for the transport).
    assert len(recorder.items) == (N + 1 if publish else 0)


def test_a_status_read_is_one_get(
    host: tuple[LocalServer, RecordingDispatcher], r: redis.Redis
) -> None:
    server, _ = host
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    try:
        task_id = post_create(conn, False)["TaskId"]
        before = calls(r)
        for _ in range(N):
            conn.request("GET", f"/api/CacheConnectorGet?code=k&taskId={task_id}")
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["TaskId"] == task_id
        spent = delta(before, calls(r))
    finally:
        conn.close()
    assert spent == {"get": N, "info": 1}  # the INFO is the first calls() above


PARSERS = [_RESP2Parser, _RESP3Parser]
if redis.utils.HIREDIS_AVAILABLE:
    PARSERS.append(_HiredisParser)


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
def test_the_store_reads_alike_with_every_reply_parser(
    redis_server: Any, r: redis.Redis, routing_doc: dict[str, Any], parser: Any
) -> None:
    """``ai4ec functions serve`` reads replies with hiredis (the ``serve`` extra); the
    Azure bundle has no compiled code and uses redis-py's own parser. The store packs
    its commands by hand and reads raw replies, so both must give the same results,
    errors included (``NOSCRIPT`` after a script flush, a conflict reply)."""
    protocol = 3 if parser is _RESP3Parser else 2
    client = redis.Redis.from_url(
        f"redis://127.0.0.1:{redis_server.port}/0", parser_class=parser, protocol=protocol
    )
    store = TaskStore(client, Routing(routing_doc))
    try:
        r.script_flush()
        made = store.upsert(
            UpsertRequest(None, "created", None, DETECT, '{"image":"a.jpg"}', True, None)
        )
        assert made.created and made.dispatch is not None
        task_id = made.dispatch.task_id
        done = store.upsert(UpsertRequest(task_id, "done", None, None, None, None, None))
        assert json.loads(done.record)["Status"] == "done"
        stored = store.get(task_id)
        assert stored is not None and json.loads(stored)["TaskId"] == task_id
        assert store.get("00000000-0000-0000-0000-000000000000") is None
        batch = store.upsert_many(
            [UpsertRequest(None, "created", None, DETECT, "{}", False, None)] * 3
        )
        assert all(not isinstance(b, Exception) and b.created for b in batch)
    finally:
        store.close()
        client.close()


def test_a_queued_create_is_in_its_delivery_queue_after_one_call(
    r: redis.Redis, routing_doc: dict[str, Any]
) -> None:
    """The local host's publishing create: the task and its durable delivery-queue entry
    come from one script call (before, a second ``enqueue`` call followed), and only a
    publishing create asks for the entry."""
    store = TaskStore(r, Routing(routing_doc))
    try:
        req = UpsertRequest(None, "created", None, DETECT, '{"image":"a.jpg"}', True, None)
        store.upsert(req)  # loads the script
        before = calls(r)
        made = store.upsert(req, queue=True)
        spent = delta(before, calls(r))
        assert spent["evalsha"] == 1 and "script|load" not in spent
        assert made.dispatch is not None and made.dispatch.queued
        api = store.routing.resolve("/v1/detector/detect")
        assert api is not None
        assert store.backlog([api.api_id]) == {api.api_id: 1}  # the unqueued one is not
        quiet = store.upsert(
            UpsertRequest(None, "created", None, DETECT, "{}", False, None), queue=True
        )
        assert quiet.dispatch is None
        assert store.backlog([api.api_id]) == {api.api_id: 1}
        (taken,) = store.take(api.api_id, 10, 60.0)
        assert taken.item.task_id == made.dispatch.task_id
        assert taken.item.body == '{"image":"a.jpg"}'
    finally:
        store.close()


@pytest.mark.parametrize("c_packer", [True, False], ids=["hiredis", "python"])
def test_both_packers_write_the_bytes_of_the_generic_one(
    r: redis.Redis, routing_doc: dict[str, Any], c_packer: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script call is packed by hiredis's C packer when it is installed and by the
    store's own otherwise (the Azure bundle); both must write what the generic RESP
    packer writes, for every argument type the store passes (non-ASCII text included),
    and a real Redis must run what they write."""
    from ai4ec_runtime import store as store_mod

    if c_packer and store_mod._HIREDIS is None:  # noqa: SLF001
        pytest.skip("hiredis is not installed")
    if not c_packer:
        monkeypatch.setattr(store_mod, "_HIREDIS", None)
    store = TaskStore(r, Routing(routing_doc))
    try:
        args = ("ai4ec:slot", "update", b"", "", "0123abcd", b"120", "é ☃ \r\n", "",
                0, -1, 2**63 - 1, 0.5, 30.0, 1e-07, "x" * 600)  # fmt: skip
        head = [b"EVALSHA", store._sha_b, b"1"]  # noqa: SLF001
        generic = store_mod._pack(  # noqa: SLF001
            [*head, *(a if isinstance(a, bytes) else str(a).encode() for a in args)]
        )
        assert store._pack_evalsha(args) == generic  # noqa: SLF001
        made = store.upsert(UpsertRequest(None, "é ☃", None, DETECT, "{}", True, None))
        assert json.loads(made.record)["Status"] == "é ☃"
    finally:
        store.close()
