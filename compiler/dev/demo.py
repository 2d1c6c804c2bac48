"""``--demo``: a stand-in for every API that behaves like a Framework container.

Like ``ai4e_service``'s async decorator it answers ``TaskId: <id>`` at once, then reports
through the task manager with the upstream task client's calls (GET the task, POST its
status): running, then completed with a JSON echo of what it was given. Sync endpoints
answer the echo directly. So the whole platform - keys, limits, tasks, pipelines - can be
tried before any model exists. One app per API, each with only its own task-manager URIs,
as each container has.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from ..model.types import Api, Mode
from ..render.k8s.istio import workload_path
from .gateway import catch_all_app

log = logging.getLogger("ai4ec.dev.demo")

#: Seconds the stand-in "works" on a task between running and completed.
WORK_SECONDS = 0.2


@dataclass
class DemoApi:
    """The demo backend of one API (``env`` are the variables its container would get)."""

    api: Api
    env: dict[str, str]
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def application(self) -> web.Application:
        """The app to run; it finishes its background reports before closing."""
        return catch_all_app(self._handle, self._open, self._close)

    async def _open(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession()

    async def _close(self, _app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def _endpoint(self, path: str) -> Any:
        """The endpoint served on ``path`` (below API_PREFIX, after the ingress rewrite)."""
        return next((ep for ep in self.api.endpoints if workload_path(self.api, ep) == path), None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ep = self._endpoint(request.rel_url.path)
        if request.method in ("GET", "HEAD") and ep is None:
            return web.Response(text="OK")  # probes
        if ep is None:
            return web.json_response({"error": "not_found"}, status=404)
        raw = await request.read()
        try:
            given: Any = json.loads(raw) if raw else None
        except ValueError:
            given = raw.decode("utf-8", "replace")
        output = {"api": self.api.id, "endpoint": ep.path, "input": given}
        task_id = request.headers.get("taskId", "")
        if ep.mode is Mode.ASYNC and task_id:
            job = asyncio.ensure_future(self._work(task_id, output))
            self._tasks.add(job)
            job.add_done_callback(self._tasks.discard)
            return web.Response(text=f"TaskId: {task_id}")
        return web.json_response(output)

    async def _work(self, task_id: str, output: dict[str, Any]) -> None:
        try:
            await self._report(task_id, f"running {output['endpoint']}", "running")
            await asyncio.sleep(WORK_SECONDS)
            await self._report(task_id, json.dumps(output, separators=(",", ":")), "completed")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s: could not report task %s: %s", self.api.id, task_id, exc)

    async def _report(self, task_id: str, status: str, backend_status: str) -> None:
        """The upstream client's update: GET the task for its Endpoint, then POST the status."""
        assert self._session is not None
        async with self._session.get(
            self.env["CACHE_CONNECTOR_GET_URI"], params={"taskId": task_id}
        ) as resp:
            record = await resp.json(content_type=None) if resp.status == 200 else {}
        async with self._session.post(
            self.env["CACHE_CONNECTOR_UPSERT_URI"],
            json={
                "TaskId": task_id,
                "Status": status,
                "BackendStatus": backend_status,
                "Endpoint": record.get("Endpoint") or "http://localhost",
                "PublishToGrid": False,
            },
        ) as resp:
            await resp.read()
