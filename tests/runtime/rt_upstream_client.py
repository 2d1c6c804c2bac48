"""The upstream distributed task client's HTTP calls, reproduced request for request.

Upstream: ``APIs/1.0/Common/task_management/distributed_api_task.py``
(``DistributedApiTaskManager``). Every update is a GET of the current record (to read
``Endpoint``) followed by a POST of the whole task; ``AddPipelineTask`` builds the next
URL from the scheme and host of the current ``Endpoint``. The env var names and URL
shapes (function key in ``?code=``) are upstream's. Written from the documented
behaviour, with stdlib HTTP instead of aiohttp; no upstream code is copied.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit


class UpstreamTaskClient:
    def __init__(self, upsert_uri: str, get_uri: str) -> None:
        self.upsert_uri = upsert_uri  # CACHE_CONNECTOR_UPSERT_URI
        self.get_uri = get_uri  # CACHE_CONNECTOR_GET_URI

    def _get_url(self, task_id: str) -> str:
        sep = "&" if "?" in self.get_uri else "?"
        return self.get_uri + sep + urlencode({"taskId": task_id})

    def GetTaskStatus(self, task_id: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self._get_url(task_id), timeout=10) as resp:
                if resp.status == 200:
                    doc: dict[str, Any] = json.loads(resp.read())
                    return doc
        except urllib.error.HTTPError:
            pass
        return {"TaskId": task_id, "Status": "not found"}

    def _post(self, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            self.upsert_uri,
            data=json.dumps(doc).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def _update(self, task_id: str, status: str, backend_status: str) -> tuple[int, dict[str, Any]]:
        old = self.GetTaskStatus(task_id)
        return self._post(
            {
                "TaskId": task_id,
                "Timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "Status": status,
                "BackendStatus": backend_status,
                "Endpoint": old.get("Endpoint", "http://localhost"),
                "PublishToGrid": False,
            }
        )

    def UpdateTaskStatus(self, task_id: str, status: str) -> tuple[int, dict[str, Any]]:
        return self._update(task_id, status, "running")

    def CompleteTask(self, task_id: str, status: str) -> tuple[int, dict[str, Any]]:
        return self._update(task_id, status, "completed")

    def FailTask(self, task_id: str, status: str) -> tuple[int, dict[str, Any]]:
        return self._update(task_id, status, "failed")

    def AddPipelineTask(
        self, task_id: str, organization_moniker: str, version: str, api_name: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        old = self.GetTaskStatus(task_id)
        parts = urlsplit(old["Endpoint"])
        next_url = f"{parts.scheme}://{parts.netloc}/{version}/{organization_moniker}/{api_name}"
        return self._post(
            {
                "TaskId": task_id,
                "Timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "Status": "created",
                "BackendStatus": "created",
                "Endpoint": next_url,
                "Body": body,
                "PublishToGrid": True,
            }
        )
