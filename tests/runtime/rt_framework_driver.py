"""Drive the real upstream Framework task client (``DistributedApiTaskManager``).

Run as a child process by the tests: ``python rt_framework_driver.py CALLS_JSON`` with
``CACHE_CONNECTOR_UPSERT_URI`` and ``CACHE_CONNECTOR_GET_URI`` set, exactly as an API
container runs it. The client is imported from ``../shared/upstream/`` at run time
(never copied into the project). Each call is ``[method, arg, ...]``; the driver prints
one ``RESULT <json>`` line per call (the client prints too) with what it returned. Any
exception the client raises escapes with its traceback and a non-zero exit, which is
what the tests look for: the client crashes on answers it does not expect, and a crash
in a container loses the task's completion.

A child process keeps the client's habits (a new event loop per call, sessions it never
closes on error paths) away from the test process's warning filters.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "upstream" / "distributed_api_task.py"


def load() -> type:
    """The upstream ``DistributedApiTaskManager`` class."""
    spec = importlib.util.spec_from_file_location("distributed_api_task", UPSTREAM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type = module.DistributedApiTaskManager
    return cls


def main() -> None:
    client = load()()
    for method, *args in json.loads(sys.argv[1]):
        result = getattr(client, method)(*args)
        print("RESULT " + json.dumps({"call": method, "result": result}), flush=True)


if __name__ == "__main__":
    main()
