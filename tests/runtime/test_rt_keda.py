"""The key a KEDA ``redis`` trigger reads tracks pending work exactly.

A ScaledObject trigger ``type: redis`` with ``listName: ai4ec:pending:<apiId>`` asks
Redis for the key's TYPE and then its length with the matching command. The Lua
script below does the same, so the test reads what KEDA would read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from rt_support import CLASSIFY, DETECT, make_runtime

from ai4ec_runtime.handlers import Request, handle

pytestmark = pytest.mark.usefixtures("both_paths")

KEDA_LENGTH = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'zset' then return redis.call('ZCARD', KEYS[1]) end
if t == 'set' then return redis.call('SCARD', KEYS[1]) end
return redis.call('LLEN', KEYS[1])
"""


def keda(r: redis.Redis, api: str) -> int:
    return int(r.eval(KEDA_LENGTH, 1, f"ai4ec:pending:{api}"))  # type: ignore[arg-type]


def upsert(rt: Any, doc: dict[str, Any]) -> dict[str, Any]:
    resp = handle(rt, "CacheConnectorUpsert", Request("POST", body=json.dumps(doc).encode()))
    assert resp.status == 200, resp.body
    return dict(json.loads(resp.body))


def test_pending_key_follows_the_work(r: redis.Redis, routing_doc: dict[str, Any]) -> None:
    rt = make_runtime(r, routing_doc)
    assert keda(r, "detector-v1") == 0  # missing key: TYPE none -> LLEN -> 0
    a = upsert(rt, {"Endpoint": DETECT, "Body": "{}", "PublishToGrid": True})["TaskId"]
    b = upsert(
        rt, {"Endpoint": DETECT, "Body": "{}", "PublishToGrid": True, "Pipeline": "species-v1"}
    )["TaskId"]
    assert (keda(r, "detector-v1"), keda(r, "classifier-v1")) == (2, 0)
    upsert(rt, {"TaskId": a, "BackendStatus": "running"})
    upsert(rt, {"TaskId": b, "BackendStatus": "running"})
    assert keda(r, "detector-v1") == 2  # running work keeps the API scaled up
    upsert(rt, {"TaskId": a, "BackendStatus": "completed"})
    assert keda(r, "detector-v1") == 1
    upsert(rt, {"TaskId": b, "BackendStatus": "completed", "Status": '{"boxes":[]}'})  # hop
    assert (keda(r, "detector-v1"), keda(r, "classifier-v1")) == (0, 1)
    assert rt.store.claim(b, CLASSIFY, 60, want_body=False).state == "ok"  # step 2 delivered
    assert upsert(rt, {"TaskId": b, "BackendStatus": "running"})["Endpoint"] == CLASSIFY
    assert keda(r, "classifier-v1") == 1
    upsert(rt, {"TaskId": b, "BackendStatus": "failed", "Status": "model error"})
    assert (keda(r, "detector-v1"), keda(r, "classifier-v1")) == (0, 0)
    assert r.type("ai4ec:pending:classifier-v1") in (b"zset", b"none")
