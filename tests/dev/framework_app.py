"""A Framework-style model API, built on the upstream service wrapper (run as a process).

``python framework_app.py PORT NAME PATH`` with the container environment ``ai4ec dev``
wrote (``API_PREFIX``, ``CACHE_CONNECTOR_*_URI``) serves one async endpoint the way an AI
for Earth container does: the upstream ``APIService`` (``../shared/upstream/
ai4e_service.py``) answers ``TaskId: <id>``, runs the function in a thread, and the
function reports through the upstream task client (``distributed_api_task.py``). Neither
file is copied into the project: both are loaded from ``../shared/upstream/`` here.

The wrapper imports ``task_management.api_task``, ``ai4e_app_insights_wrapper`` and
``flask_restful``; the first two are small stand-ins below, as the Framework image
provides them: its ``TaskManager`` takes the task id from the ``taskId`` header that the
platform's dispatch sends, and delegates the rest to the distributed client.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "upstream"


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stand_ins() -> None:
    client = _load("distributed_api_task", UPSTREAM / "distributed_api_task.py")

    class TaskManager(client.DistributedApiTaskManager):  # type: ignore[name-defined,misc]
        def AddTask(self, request: Any) -> dict[str, str]:  # noqa: N802 - upstream's name
            return {"TaskId": request.headers.get("taskId", "-1"), "Status": "created"}

    package = types.ModuleType("task_management")
    api_task = types.ModuleType("task_management.api_task")
    api_task.TaskManager = TaskManager  # type: ignore[attr-defined]
    sys.modules["task_management"] = package
    sys.modules["task_management.api_task"] = api_task

    insights = types.ModuleType("ai4e_app_insights_wrapper")

    class AI4EAppInsights:  # noqa: N801 - upstream's name
        pass

    insights.AI4EAppInsights = AI4EAppInsights  # type: ignore[attr-defined]
    sys.modules["ai4e_app_insights_wrapper"] = insights


class _Log:
    """The logger the wrapper expects (``tracer`` off, exceptions printed)."""

    tracer = None

    def log_exception(self, text: Any) -> None:
        print(text, flush=True)

    def track_metric(self, *_args: Any) -> None:
        pass


def main() -> None:
    port, name, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    _stand_ins()
    service_module = _load("ai4e_service", UPSTREAM / "ai4e_service.py")
    from flask import Flask

    app = Flask(name)
    service = service_module.APIService(app, _Log())

    def read_body(req: Any) -> dict[str, Any]:
        # Runs in the request context, as upstream's examples read their input.
        return {"body": req.get_json(force=True, silent=True)}

    @service.api_async_func(
        api_path=path,
        methods=["POST"],
        request_processing_function=read_body,
        maximum_concurrent_requests=8,
    )
    def work(*_args: Any, **kwargs: Any) -> None:
        task_id = kwargs["taskId"]
        service.api_task_manager.UpdateTaskStatus(task_id, f"running {name}")
        result = {"model": name, "saw": kwargs["body"]}
        service.api_task_manager.CompleteTask(task_id, json.dumps(result, sort_keys=True))

    app.run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
