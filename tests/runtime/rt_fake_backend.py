"""A tiny stand-in for an API Framework async endpoint (stdlib only, run as a process).

Like ``ai4e_service``'s ``api_async_func``: on POST with a ``taskId`` header it answers
``200 TaskId: <id>`` at once, then a worker thread reports progress through the task
manager with the upstream client (GET then POST): running, then completed. Options make
it busy (answer 429/503 first), hang (never report), stall (report running, then
nothing), or fail.

``GET /_log`` returns every request received: path, taskId header and body.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rt_upstream_client import UpstreamTaskClient


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upsert-uri", required=True)
    ap.add_argument("--get-uri", required=True)
    ap.add_argument("--busy", default="", help="comma list of status codes for first POSTs")
    ap.add_argument("--mode", default="complete", choices=["complete", "hang", "stall", "fail"])
    ap.add_argument("--work-seconds", type=float, default=0.05)
    args = ap.parse_args()
    client = UpstreamTaskClient(args.upsert_uri, args.get_uri)
    busy = [int(c) for c in args.busy.split(",") if c]
    received: list[dict[str, object]] = []
    lock = threading.Lock()

    def work(task_id: str, path: str, body: str) -> None:
        client.UpdateTaskStatus(task_id, f"running {path}")
        if args.mode == "stall":
            return  # the process "died" mid-task: no completion ever comes
        time.sleep(args.work_seconds)
        if args.mode == "fail":
            client.FailTask(task_id, "Task failed - try again")
            return
        output = {"step": path, "input": json.loads(body) if body else None}
        client.CompleteTask(task_id, json.dumps(output, separators=(",", ":")))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def _reply(self, code: int, text: str) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with lock:
                data = json.dumps(received)
            self._reply(200, data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            task_id = self.headers.get("taskId", "")
            with lock:
                received.append({"path": self.path, "taskId": task_id, "body": body})
                code = busy.pop(0) if busy else 200
            if code != 200:
                self._reply(code, "busy")
                return
            self._reply(200, f"TaskId: {task_id}")
            if args.mode != "hang":
                threading.Thread(target=work, args=(task_id, self.path, body), daemon=True).start()

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
