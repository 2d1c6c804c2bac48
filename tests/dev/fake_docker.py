"""A stand-in for the ``docker`` CLI and engine, strict about what ``ai4ec dev`` sends.

No container engine runs on the test machine, so this script plays one: ``info``
answers like a running daemon; ``run`` checks the flags a real engine needs from ai4ec
(``--rm``, ``--name``, ``--add-host host.docker.internal:host-gateway``, ``-p`` bound to
127.0.0.1 only, ``-e`` pairs, an image) and refuses anything else with exit 125 as
docker does, then runs the "container": a small Framework-like server on the published
port that reports tasks through the task-manager URIs it was given (the host alias is
the host itself here); ``stop -t N NAME`` stops that process. Every call is appended to
``$FAKE_DOCKER_LOG`` as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STATE = Path(os.environ["FAKE_DOCKER_STATE"])


def _log(entry: dict[str, object]) -> None:
    with open(os.environ["FAKE_DOCKER_LOG"], "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def _refuse(message: str) -> None:
    print(f"docker: {message}", file=sys.stderr)
    sys.exit(125)


def _run(args: list[str]) -> None:
    env: dict[str, str] = {}
    name = publish = add_host = ""
    rm = False
    i = 0
    while i < len(args) and args[i].startswith("-"):
        flag = args[i]
        if flag == "--rm":
            rm = True
            i += 1
            continue
        if i + 1 >= len(args):
            _refuse(f"flag needs an argument: {flag}")
        value = args[i + 1]
        if flag == "--name":
            name = value
        elif flag == "-p":
            publish = value
        elif flag == "--add-host":
            add_host = value
        elif flag == "-e":
            key, sep, val = value.partition("=")
            if not sep:
                _refuse(f"invalid env {value!r}")
            env[key] = val
        else:
            _refuse(f"unknown flag: {flag}")
        i += 2
    image = args[i] if i < len(args) else ""
    host, _, ports = publish.partition(":")
    if not (rm and name and image and host == "127.0.0.1" and ports.count(":") == 1):
        _refuse(f"unexpected run: rm={rm} name={name!r} image={image!r} publish={publish!r}")
    if add_host != "host.docker.internal:host-gateway":
        _refuse(f"the host alias is missing: {add_host!r}")
    host_port = int(ports.split(":")[0])
    _log({"cmd": "run", "name": name, "image": image, "publish": publish, "env": env})
    (STATE / name).write_text(str(os.getpid()))
    _serve(host_port, image, env)


def _serve(port: int, image: str, env: dict[str, str]) -> None:
    def uri(key: str) -> str:
        return env[key].replace("host.docker.internal", "127.0.0.1")

    def post(body: dict[str, object]) -> None:
        req = urllib.request.Request(
            uri("CACHE_CONNECTOR_UPSERT_URI"),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).read()

    def work(task_id: str, given: object) -> None:
        sep = "&" if "?" in uri("CACHE_CONNECTOR_GET_URI") else "?"
        get = uri("CACHE_CONNECTOR_GET_URI") + sep + urllib.parse.urlencode({"taskId": task_id})
        record = json.loads(urllib.request.urlopen(get, timeout=10).read())
        result = json.dumps({"image": image, "saw": given}, sort_keys=True)
        post({"TaskId": task_id, "Status": result, "BackendStatus": "completed",
              "Endpoint": record.get("Endpoint"), "PublishToGrid": False})  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            given = json.loads(raw) if raw else None
            task_id = self.headers.get("taskId")
            text = f"TaskId: {task_id}" if task_id else json.dumps({"image": image, "saw": given})
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if task_id:
                threading.Thread(target=work, args=(task_id, given), daemon=True).start()

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"container {image} listening", flush=True)
    server.serve_forever()


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "info":
        _log({"cmd": "info"})
        return
    if cmd == "run":
        _run(args)
        return
    if cmd == "stop" and len(args) == 3 and args[0] == "-t":
        _log({"cmd": "stop", "name": args[2]})
        pid_file = STATE / args[2]
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()
        return
    _refuse(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
