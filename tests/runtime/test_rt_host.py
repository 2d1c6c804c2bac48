"""``ai4ec functions serve`` as a process, over real HTTP, against a real redis-server.

The host is started through the real CLI (``python -m ai4ec functions serve``) and
spoken to with raw sockets, so what is tested is what a client on the network sees:
framing, sizes, nesting, odd URLs and header injection each get a JSON 4xx answer, one
log line and no traceback; the host refuses to start (exit 1, one line, no banner) when
its port is taken or Redis does not answer; ``/health`` follows Redis.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rt_host import ROOT, Host, host_env, post, raw, read_answer, serve_cmd, start_host
from rt_support import RedisServer, free_port, wait_for

MAX_BODY = 64 * 1024


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        host.stop()


@pytest.fixture
def host(tmp_path: Path, redis_url: str, hosts: list[Host]) -> Host:
    h = start_host(tmp_path, redis_url, "--max-body-bytes", str(MAX_BODY), "--idle-timeout", "1.5")
    hosts.append(h)
    return h


UPSERT = "/api/CacheConnectorUpsert?code=k"


def create_doc(endpoint: str) -> bytes:
    return json.dumps(
        {"Status": "created", "BackendStatus": "created", "Endpoint": endpoint, "Body": "{}"}
    ).encode()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


MALFORMED: dict[str, bytes] = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "unknown method": b"BREW /api/CacheConnectorGet HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length not a number": b"POST /api/CacheConnectorUpsert HTTP/1.1\r\n"
    b"Host: x\r\nContent-Length: abc\r\n\r\n",
    "negative Content-Length": b"POST /api/CacheConnectorUpsert HTTP/1.1\r\n"
    b"Host: x\r\nContent-Length: -1\r\n\r\n",
    "two different Content-Lengths": b"POST /api/CacheConnectorUpsert HTTP/1.1\r\n"
    b"Host: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "Content-Length and chunked": b"POST /api/CacheConnectorUpsert HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"{}"),
    "bad chunk size": b"POST /api/CacheConnectorUpsert HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "huge Content-Length": post(UPSERT, b"").replace(
        b"Content-Length: 0", b"Content-Length: 99999999999"
    ),
    "body over the cap": post(UPSERT, b" " * (MAX_BODY + 1)),
    "chunked body over the cap": b"POST /api/CacheConnectorUpsert HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*[b" " * 16384] * 5),
    "header line too long": b"GET /api/CacheConnectorGet HTTP/1.1\r\nHost: x\r\nX-Long: "
    + b"a" * 70000
    + b"\r\n\r\n",
    "too many headers": b"GET /api/CacheConnectorGet HTTP/1.1\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(300))
    + b"\r\n",
    "NUL in a header": b"GET /api/CacheConnectorGet HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "deeply nested JSON": post(UPSERT, b"[" * 50000),
    "deeply nested object": post(UPSERT, b'{"a":' * 20000 + b"1" + b"}" * 20000),
    "not JSON": post(UPSERT, b"{nope"),
    "JSON number": post(UPSERT, b"42"),
    "empty array": post(UPSERT, b"[]"),
    "gzip body, not decoded": post(UPSERT, b"\x1f\x8b\x08\x00garbage", "Content-Encoding: gzip"),
    "Endpoint with a broken IPv6 host": post(UPSERT, create_doc("http://[::1/x")),
    "Endpoint with a space": post(UPSERT, create_doc("http://a b/c")),
    "Endpoint with a control character": post(UPSERT, create_doc("http://a\x01b/c")),
    "Endpoint with a bad port": post(UPSERT, create_doc("http://a:99999/c")),
    "Endpoint not http": post(UPSERT, create_doc("file:///etc/passwd")),
    "BackendStatus unknown": post(UPSERT, b'{"BackendStatus":"exploded"}'),
    "validation event with string data": post(
        "/api/BackendWebhook",
        b'[{"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":"x"}]',
    ),
    "IncrementBy 2**70": post(
        "/api/CurrentProcessingUpsert",
        json.dumps({"ApiPath": "/v1/x", "ServiceCluster": "c", "IncrementBy": 2**70}).encode(),
    ),
    "IncrementBy not a number": post(
        "/api/CurrentProcessingUpsert",
        b'{"ApiPath":"/v1/x","ServiceCluster":"c","IncrementBy":"lots"}',
    ),
    "bare CR in WebHook-Request-Origin": b"OPTIONS /api/BackendWebhook HTTP/1.1\r\nHost: x\r\n"
    b"WebHook-Request-Origin: eventgrid.azure.net\rSet-Cookie: a=b\r\n\r\n",
    "percent-encoded CR/LF in the Origin": b"OPTIONS /api/BackendWebhook HTTP/1.1\r\nHost: x\r\n"
    b"WebHook-Request-Origin: a%0d%0aSet-Cookie:%20a=b\r\n\r\n",
    "dead-letter body nested": post("/api/BackendDeadLetter", b"[" * 50000),
    "webhook body nested": post("/api/BackendWebhook", b"[" * 50000),
    "unknown route": b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n",
    "dot segments": b"GET /api/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad percent escape": b"GET /api/%zz%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    "raw 8-bit path": b"GET /api/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "asterisk target": b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form target": b"GET http://evil.example/api/Nope HTTP/1.1\r\nHost: x\r\n\r\n",
    "NUL in the query": b"GET /api/CacheConnectorGet?taskId=%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "very long query": b"GET /api/CacheConnectorGet?taskId="
    + b"a" * 12000
    + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "missing query parameters": b"GET /api/CurrentProcessingGet HTTP/1.1\r\nHost: x\r\n\r\n",
    "wrong method": b"DELETE /api/CacheConnectorGet HTTP/1.1\r\nHost: x\r\n\r\n",
}


def test_malformed_input_gets_json_4xx_and_one_log_line(host: Host) -> None:
    """Every case: an answer (never a bare close), a 4xx, a JSON body, no traceback."""
    before = len(host.log().splitlines())
    problems = []
    for name, data in MALFORMED.items():
        answer = raw(host, data)
        if answer is None:
            problems.append(f"{name}: closed without an answer")
            continue
        if not 400 <= answer.status < 500:
            problems.append(f"{name}: {answer.status} {answer.body[:200]!r}")
            continue
        if not answer.headers.get("content-type", "").startswith("application/json"):
            problems.append(f"{name}: {answer.headers.get('content-type')}")
            continue
        doc = json.loads(answer.body)
        if not doc.get("error"):
            problems.append(f"{name}: no error code in {doc}")
        if "set-cookie" in answer.headers or "webhook-allowed-origin" in answer.headers:
            problems.append(f"{name}: a request header was reflected: {answer.headers}")
    assert not problems, "\n".join(problems)
    # The host still serves normally afterwards.
    health = raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert health is not None and (health.status, health.body) == (200, b'{"status":"ok"}')
    log = host.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    new_lines = log.splitlines()[before:]
    # One line per refused request; an unparsable request may be cut into two messages
    # by the parser (both answered on the same connection), hence ">=".
    assert len(new_lines) >= len(MALFORMED), "\n".join(new_lines)
    assert len(new_lines) <= len(MALFORMED) + 3, "\n".join(new_lines)


def test_endpoint_refused_at_create_never_reaches_a_worker(host: Host) -> None:
    """An unusable Endpoint is a 400 at create; the delivery workers keep working."""
    answer = raw(host, post(UPSERT, create_doc("http://a b/c")))
    assert answer is not None and answer.status == 400
    assert json.loads(answer.body)["field"] == "Endpoint"
    good = json.dumps(
        {"Endpoint": "http://127.0.0.1:9/v1/detector/detect", "Body": "{}", "PublishToGrid": True}
    ).encode()
    answer = raw(host, post(UPSERT, good))
    assert answer is not None and answer.status == 200
    assert "Traceback" not in host.log()


def test_validation_handshakes_still_answer(host: Host) -> None:
    event = b'[{"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent",'
    event += b'"data":{"validationCode":"abc"}}]'
    answer = raw(host, post("/api/BackendWebhook", event))
    assert answer is not None and json.loads(answer.body) == {"validationResponse": "abc"}
    answer = raw(
        host,
        b"OPTIONS /api/BackendWebhook HTTP/1.1\r\nHost: x\r\n"
        b"WebHook-Request-Origin: eventgrid.azure.net\r\n\r\n",
    )
    assert answer is not None and answer.status == 200
    assert answer.headers["webhook-allowed-origin"] == "eventgrid.azure.net"


def test_stalled_body_and_idle_connections_time_out(host: Host) -> None:
    """A body that stops arriving gets 408; a silent connection is closed by the host."""
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.sendall(b"POST /api/CacheConnectorUpsert HTTP/1.1\r\nHost: x\r\n")
        sock.sendall(b"Content-Length: 100\r\n\r\n{")
        answer = read_answer(sock)
        assert answer is not None and answer.status == 408
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the host's idle timer, not by us
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        sock.settimeout(10)
        assert sock.recv(1) == b""


def test_many_idle_connections_cost_no_threads(tmp_path: Path, redis_url: str) -> None:
    """500 idle sockets: the host's thread count does not grow with them."""
    host = start_host(tmp_path, redis_url, "--idle-timeout", "30")
    try:
        threads_before = len(os.listdir(f"/proc/{host.proc.pid}/task"))
        socks = [socket.create_connection(("127.0.0.1", host.port)) for _ in range(500)]
        try:
            answer = raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer is not None and answer.status == 200
            threads = len(os.listdir(f"/proc/{host.proc.pid}/task"))
            assert threads <= threads_before + 8
        finally:
            for s in socks:
                s.close()
    finally:
        host.stop()


def test_connections_over_the_limit_get_503(tmp_path: Path, redis_url: str) -> None:
    host = start_host(tmp_path, redis_url, "--max-connections", "4")
    try:
        socks = [socket.create_connection(("127.0.0.1", host.port)) for _ in range(4)]
        try:
            wait_for(lambda: raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") is not None)
            answer = raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer is not None and answer.status == 503
            assert json.loads(answer.body)["error"] == "busy"
        finally:
            for s in socks:
                s.close()
        wait_for(
            lambda: (a := raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")) and a.status == 200
        )
    finally:
        host.stop()


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            serve_cmd(port, redis_url),
            capture_output=True,
            text=True,
            env=host_env(tmp_path),
            cwd=ROOT,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: the port is in use\n"
    assert done.stdout == ""


def test_redis_unreachable_at_start_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        serve_cmd(free_port(), f"redis://:secret@127.0.0.1:{port}/0"),
        capture_output=True,
        text=True,
        env=host_env(tmp_path),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == f"error: cannot reach Redis at 127.0.0.1:{port} (ConnectionError)\n"
    assert "secret" not in done.stderr


def test_health_follows_redis(tmp_path: Path, hosts: list[Host]) -> None:
    """/health is 503 while Redis is down (generic text, no address) and 200 again after."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        host = start_host(tmp_path, server.url)
        hosts.append(host)
        answer = raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer is not None and answer.status == 200
        server.kill()
        answer = raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer is not None and answer.status == 503
        doc = json.loads(answer.body)
        assert doc["error"] == "store_unavailable"
        assert str(server.port) not in answer.body.decode() and "127.0.0.1" not in doc["message"]
        answer = raw(host, b"GET /api/CacheConnectorGet?taskId=x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer is not None and str(server.port).encode() not in answer.body
        server.start()
        wait_for(
            lambda: (
                (a := raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")) and a.status == 200
            ),
            timeout=20,
        )
    finally:
        server.stop()


def test_health_is_cheap_to_poll(host: Host) -> None:
    """Kept-alive /health polling on one connection (what a load balancer does)."""
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        for _ in range(20):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200


def test_refused_updates_answer_200_in_the_client_shape_unless_strict(host: Host) -> None:
    """An update with a TaskId never gets a non-200 by default (the Framework client
    raises on one); ``X-Ai4ec-Answers: strict`` gets the real code."""
    created = raw(host, post(UPSERT, create_doc("http://127.0.0.1:9/v1/detector/detect")))
    assert created is not None and created.status == 200
    tid = json.loads(created.body)["TaskId"]
    done = raw(
        host, post(UPSERT, json.dumps({"TaskId": tid, "BackendStatus": "completed"}).encode())
    )
    assert done is not None and done.status == 200 and "x-ai4ec-error" not in done.headers
    cases = {
        "bad_request": {"TaskId": tid, "Endpoint": "http://a b/c", "BackendStatus": "running"},
        "not_found": {"TaskId": "f0000000-0000-4000-8000-000000000000", "Status": "x"},
        "illegal_transition": {"TaskId": tid, "BackendStatus": "running", "Status": "late"},
    }
    strict_status = {"bad_request": 400, "not_found": 404, "illegal_transition": 409}
    for code, doc in cases.items():
        answer = raw(host, post(UPSERT, json.dumps(doc).encode()))
        assert answer is not None and answer.status == 200, (code, answer)
        assert answer.headers["x-ai4ec-error"] == code
        assert json.loads(answer.body)["TaskId"] == doc["TaskId"]
        answer = raw(host, post(UPSERT, json.dumps(doc).encode(), "X-Ai4ec-Answers: strict"))
        assert answer is not None and answer.status == strict_status[code]
        assert json.loads(answer.body)["error"] == code
    assert "Traceback" not in host.log()


def _listeners(port: int) -> dict[int, int]:
    """pid -> listening sockets on ``port`` (from /proc: the kernel's own view)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    out: dict[int, int] = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (pid_dir / "fd").iterdir()]
        except OSError:
            continue
        count = sum(1 for link in links if link in inodes)
        if count:
            out[int(pid_dir.name)] = count
    return out


def test_processes_share_the_port_and_die_with_the_host(tmp_path: Path, redis_url: str) -> None:
    """``--processes 3``: three processes listen on one port (SO_REUSEPORT) and answer.

    Killing the first one with SIGKILL takes the others down too (parent-death signal),
    so no orphan keeps serving a port nobody manages.
    """
    host = start_host(tmp_path, redis_url, "--processes", "3")
    try:
        wait_for(lambda: len(_listeners(host.port)) == 3, timeout=30)
        pids = set(_listeners(host.port))
        assert host.proc.pid in pids
        for i in range(30):  # fresh connections: the kernel spreads them over the three
            ans = raw(host, post("/api/CacheConnectorUpsert", create_doc(f"http://b/v1/p/{i}")))
            assert ans is not None and ans.status == 200, ans
        host.proc.kill()
        host.proc.wait(timeout=10)
        wait_for(lambda: not _listeners(host.port), timeout=20)
        assert "Traceback" not in host.log()
    finally:
        host.stop()
