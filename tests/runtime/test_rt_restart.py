"""A Redis crash with ``appendfsync always`` loses no acknowledged task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from rt_support import DETECT, RedisServer, make_runtime

from ai4ec_runtime.handlers import Request, connect, handle

pytestmark = pytest.mark.usefixtures("both_paths")


def test_redis_crash_and_restart_loses_no_task(tmp_path: Path, routing_doc: dict[str, Any]) -> None:
    server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        client = connect(server.url)
        rt = make_runtime(client, routing_doc)

        def upsert(doc: dict[str, Any]) -> dict[str, Any]:
            resp = handle(
                rt, "CacheConnectorUpsert", Request("POST", body=json.dumps(doc).encode())
            )
            assert resp.status == 200, resp.body
            return dict(json.loads(resp.body))

        ids = [
            upsert({"Endpoint": DETECT, "Body": f'{{"n":{i}}}', "PublishToGrid": True})["TaskId"]
            for i in range(200)
        ]
        for tid in ids[:100]:
            upsert({"TaskId": tid, "BackendStatus": "running"})
        for tid in ids[:50]:
            upsert({"TaskId": tid, "BackendStatus": "completed", "Status": "ok"})
        before = {tid: rt.store.get(tid) for tid in ids}

        server.kill()  # SIGKILL: no shutdown save, only what the AOF fsynced
        server.start()  # same port, same directory

        # The same client recovers: it reconnects, and reloads the flushed script.
        after = {tid: rt.store.get(tid) for tid in ids}
        assert after == before
        check = redis.Redis(port=server.port)
        assert check.zcard("/v1/detector/detect_completed") == 50
        assert check.zcard("/v1/detector/detect_running") == 50
        assert check.zcard("/v1/detector/detect_created") == 100
        assert check.zcard("ai4ec:pending:detector-v1") == 150
        for tid in ids[50:100]:
            assert (
                upsert({"TaskId": tid, "BackendStatus": "completed"})["BackendStatus"]
                == "completed"
            )
        assert check.zcard("ai4ec:pending:detector-v1") == 100
        check.close()
    finally:
        server.stop()
