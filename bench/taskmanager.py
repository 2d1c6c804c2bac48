"""Task-manager benchmark: ai4ec store and local host vs. Celery, Dramatiq, redis-benchmark.

Run from the repository root:

    .venv/bin/python bench/taskmanager.py                # defaults: 10,000 of each
    .venv/bin/python bench/taskmanager.py --n 2000 --skip-peers

What it measures, all against one private redis-server on loopback (AOF everysec unless
``--no-aof``), on whatever cores the machine has (Redis, server and load share them):

* store: full lifecycles (create -> running -> completed, 3 Lua transitions each)
  sequentially, from 8 threads, and pipelined in batches; plus an open-loop run at a fixed
  offered rate (default 1,000 lifecycles/s) for latency percentiles;
* HTTP: the local host (``ai4ec_runtime.localhost``) in its own process, driven over
  kept-alive connections: creates (``CacheConnectorUpsert``), status reads
  (``CacheConnectorGet``) and full lifecycles;
* peers: the same number of no-op jobs (one Redis INCR each) through Celery and Dramatiq
  on the same Redis, in their own venv (``--peer-python``, default ``.venv-bench``;
  create it with ``python3 -m venv .venv-bench && .venv-bench/bin/pip install
  celery==5.7.0 'dramatiq[redis]==2.2.1' redis==8.1.0 packaging==26.4``, or ``make
  bench-runtime``, which installs setup.cfg's ``bench-peers`` lines: Celery pins a python-dateutil
  that conflicts with kubernetes in the main venv);
* ``redis-benchmark`` for the raw Redis ceiling.

Nothing here is asserted: figures on a shared 2-core VM vary by 2x between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))

import redis  # noqa: E402

from ai4ec_runtime.models import BackendStatus, UpsertRequest  # noqa: E402
from ai4ec_runtime.routing import Routing  # noqa: E402
from ai4ec_runtime.store import TaskStore, connect_redis  # noqa: E402

ENDPOINT = "http://10.0.0.1/v1/detector/detect"
ROUTING = {
    "schemaVersion": 1,
    "apis": {
        "detector-v1": {
            "taskTtlSeconds": 3600,
            "timeoutSeconds": 600,
            "paths": ["/v1/detector/detect"],
        }
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


RESULTS: list[tuple[str, float, str, str]] = []


def report(name: str, count: int, elapsed: float, lat: list[float] | None = None) -> float:
    rate = count / elapsed
    p50 = ms(pct(lat, 50)) if lat else "-"
    p99 = ms(pct(lat, 99)) if lat else "-"
    RESULTS.append((name, rate, p50, p99))
    print(f"  {name:52s} {rate:10,.0f}/s   p50 {p50:>7} ms   p99 {p99:>7} ms", flush=True)
    return rate


# -- Redis ------------------------------------------------------------------------------


class RedisProc:
    def __init__(self, aof: bool, *extra: str, port: int = 0) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="ai4ec-bench-redis-")
        persist = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else []
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", self.dir, *(persist or ["--appendonly", "no"]), *extra],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.01)
        client.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- store level ----------------------------------------------------------------------------


class ClusterProc:
    """Three cluster-enabled redis-servers joined by ``redis-cli --cluster create``."""

    def __init__(self, aof: bool) -> None:
        self.nodes: list[RedisProc] = []
        for _ in range(3):
            port = free_port()
            while port >= 55000:  # the cluster bus listens on port + 10000
                port = free_port()
            self.nodes.append(RedisProc(aof, "--cluster-enabled", "yes", port=port))
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)  # fmt: skip
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                time.sleep(0.05)
            client.close()
        self.url = self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def new_store(url: str, mode: str = "single") -> TaskStore:
    return TaskStore(connect_redis(url, mode), Routing(ROUTING))


CREATE = UpsertRequest(None, "created", None, ENDPOINT, '{"image":"a.jpg"}', True, None)


def lifecycle(store: TaskStore, lat: list[float] | None = None) -> None:
    t0 = time.perf_counter()
    res = store.upsert(CREATE)
    assert res.dispatch is not None
    tid = res.dispatch.task_id
    t1 = time.perf_counter()
    store.upsert(UpsertRequest(tid, "running", BackendStatus.RUNNING, None, None, False, None))
    t2 = time.perf_counter()
    store.upsert(UpsertRequest(tid, "done", BackendStatus.COMPLETED, None, None, False, None))
    t3 = time.perf_counter()
    if lat is not None:
        lat += [t1 - t0, t2 - t1, t3 - t2]


def bench_store(url: str, n: int, rate: float, mode: str = "single") -> dict[str, float]:
    print(f"\n== store level (TaskStore, one Lua script per transition), Redis {mode}")
    store = new_store(url, mode)
    out: dict[str, float] = {}
    lat: list[float] = []
    seq_n = min(n, 5000)
    t = time.perf_counter()
    for _ in range(seq_n):
        lifecycle(store, lat)
    out["seq"] = report(
        "lifecycles, 1 thread (latency per transition)", seq_n, time.perf_counter() - t, lat
    )

    threads = 8
    per = n // threads
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: [lifecycle(store) for _ in range(per)], range(threads)))
    out["threads"] = report(
        f"lifecycles, {threads} threads", per * threads, time.perf_counter() - t
    )

    # Pipelined batches from 4 threads: while Redis runs one thread's batch, the others
    # pack theirs, so both cores work. Each transition is still its own script call.
    batch, bthreads = 50, 4

    def batched(rounds: int) -> None:
        for _ in range(rounds):
            created = store.upsert_many([CREATE] * batch)
            ids = [
                c.dispatch.task_id for c in created if not isinstance(c, Exception) and c.dispatch
            ]
            store.upsert_many(
                [
                    UpsertRequest(i, "running", BackendStatus.RUNNING, None, None, False, None)
                    for i in ids
                ]
            )
            store.upsert_many(
                [
                    UpsertRequest(i, "done", BackendStatus.COMPLETED, None, None, False, None)
                    for i in ids
                ]
            )

    rounds = n // (batch * bthreads)
    t = time.perf_counter()
    with ThreadPoolExecutor(bthreads) as pool:
        list(pool.map(lambda _: batched(rounds), range(bthreads)))
    out["batched"] = report(
        f"lifecycles, {bthreads} threads x pipelined batches of {batch}",
        rounds * batch * bthreads,
        time.perf_counter() - t,
    )

    # Open loop: lifecycles start on a fixed schedule whether or not earlier ones finished;
    # latency is scheduled start -> completed, so queueing delay counts.
    duration = 5.0
    total = int(rate * duration)
    done: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.05
    nxt = iter(range(total))

    def worker() -> None:
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            lifecycle(store)
            with lock:
                done.append(time.perf_counter() - due)

    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(worker)
    elapsed = time.perf_counter() - t
    out["open_p50"], out["open_p99"] = pct(done, 50), pct(done, 99)
    report(
        f"open loop at {rate:,.0f} lifecycles/s offered (lifecycle latency)", total, elapsed, done
    )
    store.redis.close()
    return out


# -- HTTP -------------------------------------------------------------------------------------

SERVE = """
import logging, sys, json
sys.path.insert(0, {functions!r})
logging.basicConfig(level=logging.WARNING)
from ai4ec_runtime.localhost import HostOptions, serve
serve("127.0.0.1", {port}, {url!r}, routing=json.loads({routing!r}),
      options=HostOptions(processes={processes}, uvloop={uvloop}))
"""


def start_host(
    url: str,
    processes: int = 1,
    uvloop: bool = True,
    hiredis: bool = True,
    functions: Path = ROOT / "functions",
) -> tuple[subprocess.Popen[bytes], int]:
    """The local host in its own process(es); the port answers once the first listens.

    ``hiredis=False`` hides hiredis from every host process (a module of that name that
    fails to import, first on ``PYTHONPATH``, which spawned processes inherit), so
    redis-py reads replies with its own parser, as in the Azure bundle.
    """
    port = free_port()
    code = SERVE.format(functions=str(functions), port=port, url=url,
                        routing=json.dumps(ROUTING), processes=processes,
                        uvloop=uvloop)  # fmt: skip
    env = dict(os.environ)
    if not hiredis:
        shadow = tempfile.mkdtemp(prefix="ai4ec-bench-nohiredis-")
        Path(shadow, "hiredis.py").write_text('raise ImportError("hidden by the bench")\n')
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [shadow, env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("local host did not start")


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head_end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:head_end])
    m = re.search(rb"Content-Length: (\d+)", head)
    length = int(m.group(1)) if m else 0
    while len(buf) < head_end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    body = bytes(buf[head_end : head_end + length])
    del buf[: head_end + length]
    return int(head[9:12]), body


def http_load(
    port: int, requests: list[bytes], conns: int, check: Callable[[int, bytes], bool]
) -> tuple[int, float, list[float]]:
    """Send ``requests`` over ``conns`` kept-alive connections; one request in flight each."""
    lat: list[float] = []
    lock = threading.Lock()
    errors = [0]

    def run(chunk: list[bytes]) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        mine = []
        bad = 0
        for req in chunk:
            t0 = time.perf_counter()
            sock.sendall(req)
            status, body = _read_response(sock, buf)
            mine.append(time.perf_counter() - t0)
            bad += not check(status, body)
        sock.close()
        with lock:
            lat.extend(mine)
            errors[0] += bad

    chunks = [requests[i::conns] for i in range(conns)]
    t = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors[0]:
        print(f"  !! {errors[0]} unexpected responses")
    return len(requests), elapsed, lat


def post(path: str, doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


WRK_CREATE = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""

WRK_READS = """
local ids = {{{ids}}}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/CacheConnectorGet?code=x&taskId=" .. ids[(i % #ids) + 1])
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrk_ms(value: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * scale
    return float(value)


def wrk(port: int, path: str, script: str, conns: int, seconds: int) -> dict[str, float]:
    """One wrk run (C load generator, 2 threads); requests/s and latency percentiles."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        res = subprocess.run(
            ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", f.name,
             f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=seconds + 60,
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    text = res.stdout
    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}  # type: ignore[union-attr]
    for pct_label in ("50", "99"):
        m = re.search(rf"^\s+{pct_label}%\s+(\S+)", text, re.M)
        out[f"p{pct_label}"] = _wrk_ms(m.group(1)) if m else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if bad:
        print(f"  !! {bad.group(1)} non-2xx answers")
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (Linux ``/proc``); 0 if gone."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _cpu_seconds(int(child))
    except (OSError, IndexError, ValueError):
        pass
    return total


def bench_http_wrk(
    url: str,
    conns: int,
    seconds: int,
    processes: int = 1,
    uvloop: bool = True,
    hiredis: bool = True,
    redis_pid: int = 0,
    functions: Path = ROOT / "functions",
) -> dict[str, float]:
    """Creates and status reads driven by wrk: the issue's HTTP targets are measured so.

    Beside the creates/s it prints what one create cost: Redis commands sent by the host
    (``INFO commandstats``; the script's inner commands are not round trips), and the
    CPU time of the host processes and of redis-server per create. CPU per create
    varies far less than requests/s when other work shares the cores.
    """
    loop = "uvloop" if uvloop else "asyncio loop"
    parser = "hiredis" if hiredis else "redis-py parser"
    print(f"\n== HTTP with wrk ({conns} connections, {seconds} s each, aiohttp host, "
          f"{processes} process{'es' if processes > 1 else ''}, {loop}, {parser})")  # fmt: skip
    if functions != ROOT / "functions":
        print(f"  (host code from {functions})")
    proc, port = start_host(url, processes, uvloop, hiredis, functions)
    if processes > 1:
        time.sleep(3)  # the spawned processes import and bind after the first one
    out: dict[str, float] = {}
    try:
        body = json.dumps({"Status": "created", "BackendStatus": "created", "Endpoint": ENDPOINT,
                           "Body": '{"image":"a.jpg"}', "PublishToGrid": False})  # fmt: skip
        create = WRK_CREATE.format(body=_lua_string(body))
        wrk(port, "/api/CacheConnectorUpsert?code=x", create, conns, 2)  # warm-up
        stats = redis.Redis.from_url(url)
        calls0 = {k: v["calls"] for k, v in stats.info("commandstats").items()}
        cpu0 = (_cpu_seconds(proc.pid), _cpu_seconds(redis_pid) if redis_pid else 0.0)
        r = wrk(port, "/api/CacheConnectorUpsert?code=x", create, conns, seconds)
        cpu1 = (_cpu_seconds(proc.pid), _cpu_seconds(redis_pid) if redis_pid else 0.0)
        spent = {
            k.removeprefix("cmdstat_"): v["calls"] - calls0.get(k, 0)
            for k, v in stats.info("commandstats").items()
        }
        stats.close()
        print(f"  {'creates (wrk)':44s} {r['rps']:10,.0f}/s   p50 {r['p50']:.2f} ms   "
              f"p99 {r['p99']:.2f} ms")  # fmt: skip
        done = max(r["rps"] * seconds, 1.0)
        print(f"    per create: {spent.get('evalsha', 0) / done:.2f} EVALSHA, "
              f"{(spent.get('script|load', 0) + spent.get('script|exists', 0)) / done:.2f} "
              f"SCRIPT LOAD/EXISTS; CPU {1e6 * (cpu1[0] - cpu0[0]) / done:.0f} us host, "
              f"{1e6 * (cpu1[1] - cpu0[1]) / done:.0f} us redis-server")  # fmt: skip
        out["host_us"] = 1e6 * (cpu1[0] - cpu0[0]) / done
        out["redis_us"] = 1e6 * (cpu1[1] - cpu0[1]) / done
        out["creates"], out["creates_p99"] = r["rps"], r["p99"]
        store = new_store(url)
        ids = [
            json.loads(x.record)["TaskId"]  # type: ignore[union-attr]
            for x in store.upsert_many([CREATE] * 2000)
        ]
        store.redis.close()
        reads = WRK_READS.format(ids=",".join(_lua_string(i) for i in ids))
        r = wrk(port, "/api/CacheConnectorGet", reads, conns, seconds)
        print(f"  {'status reads (wrk)':44s} {r['rps']:10,.0f}/s   p50 {r['p50']:.2f} ms   "
              f"p99 {r['p99']:.2f} ms")  # fmt: skip
        out["reads"], out["reads_p99"] = r["rps"], r["p99"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return out


def bench_http(url: str, n: int, conns: int) -> dict[str, float]:
    print(
        f"\n== HTTP (local host process, {conns} kept-alive connections, 1 request in flight each)"
    )
    proc, port = start_host(url)
    out: dict[str, float] = {}
    try:

        def ok(status: int, _body: bytes) -> bool:
            return status == 200

        # Creates without PublishToGrid: the task manager's own work (parse, script,
        # answer), not the backend delivery the local dispatcher would add.
        create = post("/api/CacheConnectorUpsert?code=x",
                      {"Status": "created", "BackendStatus": "created", "Endpoint": ENDPOINT,
                       "Body": '{"image":"a.jpg"}', "PublishToGrid": False})  # fmt: skip
        http_load(port, [create] * 500, conns, ok)  # warm-up
        count, elapsed, lat = http_load(port, [create] * n, conns, ok)
        out["creates"] = report("CacheConnectorUpsert creates", count, elapsed, lat)

        store = new_store(url)
        ids = [
            json.loads(r.record)["TaskId"]  # type: ignore[union-attr]
            for r in store.upsert_many([CREATE] * 2000)
        ]
        reads = [
            f"GET /api/CacheConnectorGet?code=x&taskId={ids[i % len(ids)]} HTTP/1.1\r\n"
            "Host: bench\r\n\r\n".encode()
            for i in range(n)
        ]
        count, elapsed, lat = http_load(port, reads, conns, ok)
        out["reads"] = report("CacheConnectorGet status reads", count, elapsed, lat)

        # Full lifecycles over HTTP: create, then running and completed updates.
        life_n = n // 3
        created: list[str] = []

        def keep(status: int, body: bytes) -> bool:
            created.append(json.loads(body)["TaskId"])
            return status == 200

        count1, e1, _ = http_load(port, [create] * life_n, conns, keep)
        updates = [
            [
                post(
                    "/api/CacheConnectorUpsert?code=x",
                    {"TaskId": tid, "Status": bs, "BackendStatus": bs, "Endpoint": ENDPOINT,
                     "PublishToGrid": False},
                )
                for tid in created
            ]
            for bs in ("running", "completed")
        ]  # fmt: skip
        count2, e2, _ = http_load(port, updates[0], conns, ok)
        count3, e3, _ = http_load(port, updates[1], conns, ok)
        out["lifecycles"] = report("lifecycles over HTTP (3 requests each)", life_n, e1 + e2 + e3)
        store.redis.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return out


# -- peers ------------------------------------------------------------------------------------

CELERY = r"""
import sys, time, redis
from celery import Celery
url, n = sys.argv[1], int(sys.argv[2])
app = Celery("bench", broker=url)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
                task_ignore_result=True, worker_prefetch_multiplier=64)
r = redis.Redis.from_url(url)
@app.task(name="noop")
def noop():
    r.incr("bench:celery")
if __name__ == "__main__":
    r.delete("bench:celery")
    t = time.perf_counter()
    for _ in range(n):
        noop.delay()
    enq = time.perf_counter() - t
    import threading
    t = time.perf_counter()
    th = threading.Thread(target=app.worker_main, daemon=True, args=([
        "worker", "-P", "threads", "-c", "8", "--without-mingle", "--without-gossip",
        "--without-heartbeat", "-l", "WARNING", "-Q", "celery"],))
    th.start()
    while int(r.get("bench:celery") or 0) < n:
        time.sleep(0.01)
    print(f"BENCHRESULT {enq:.4f} {time.perf_counter() - t:.4f}", flush=True)
    import os; os._exit(0)
"""

DRAMATIQ = r"""
import sys, time, os, subprocess, redis, dramatiq
from dramatiq.brokers.redis import RedisBroker
url = os.environ["BENCH_REDIS"]
dramatiq.set_broker(RedisBroker(url=url))
r = redis.Redis.from_url(url)
@dramatiq.actor(max_retries=0)
def noop():
    r.incr("bench:dramatiq")
if __name__ == "__main__":
    n = int(sys.argv[1])
    r.delete("bench:dramatiq")
    t = time.perf_counter()
    for _ in range(n):
        noop.send()
    enq = time.perf_counter() - t
    t = time.perf_counter()
    here = os.path.dirname(os.path.abspath(__file__))
    w = subprocess.Popen([sys.executable, "-m", "dramatiq", "bench_dramatiq", "-p", "1", "-t", "8"],
                         cwd=here, env=dict(os.environ, PYTHONPATH=here),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while int(r.get("bench:dramatiq") or 0) < n:
        time.sleep(0.01)
    print(f"BENCHRESULT {enq:.4f} {time.perf_counter() - t:.4f}", flush=True)
    w.terminate(); w.wait()
"""


def peer_versions(python: str) -> str:
    code = (
        "import celery, dramatiq, redis; "
        "print(celery.__version__, dramatiq.__version__, redis.__version__)"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    celery_v, dramatiq_v, redis_v = out.stdout.split()
    return f"celery=={celery_v}, dramatiq=={dramatiq_v}, redis=={redis_v}"


def _peer_result(res: subprocess.CompletedProcess[str]) -> tuple[float, float]:
    m = re.search(r"BENCHRESULT ([\d.]+) ([\d.]+)", res.stdout + res.stderr)
    if not m:
        raise RuntimeError(f"peer run failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return float(m.group(1)), float(m.group(2))


def bench_peers(url: str, n: int, python: str) -> dict[str, float]:
    print(f"\n== peers: {n:,} no-op jobs (one Redis INCR each), drain includes worker start")
    print(f"  ({peer_versions(python)} from {python})")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_celery.py").write_text(CELERY)
        Path(tmp, "bench_dramatiq.py").write_text(DRAMATIQ)
        env = dict(os.environ, BENCH_REDIS=url)
        res = subprocess.run([python, "bench_celery.py", url, str(n)], cwd=tmp, env=env,
                             capture_output=True, text=True, timeout=900)  # fmt: skip
        enq, drain = _peer_result(res)
        report("Celery enqueue (threads pool -c 8)", n, enq)
        out["celery"] = report("Celery drain", n, drain)
        res = subprocess.run([python, "bench_dramatiq.py", str(n)], cwd=tmp, env=env,
                             capture_output=True, text=True, timeout=900)  # fmt: skip
        enq, drain = _peer_result(res)
        report("Dramatiq enqueue (-p 1 -t 8)", n, enq)
        out["dramatiq"] = report("Dramatiq drain", n, drain)
    return out


def bench_redis(port: int) -> None:
    print("\n== redis-benchmark (same server)")
    for label, args in (
        ("50 clients", ["-c", "50", "-n", "100000", "-t", "set,get,zadd"]),
        ("1 client", ["-c", "1", "-n", "20000", "-t", "set"]),
        ("EVAL (1 client)", ["-c", "1", "-n", "20000", "eval", "return 1", "0"]),
    ):
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-q", *args],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        for line in out.stdout.replace("\r", "\n").splitlines():
            m = re.match(r"^\s*(\S.*?): ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?", line)
            if m and "rps=" not in line:
                name, rate, p50 = m.group(1), float(m.group(2)), m.group(3)
                print(f"  {label:16s} {name:28s} {rate:10,.0f}/s   p50 {p50} ms")


def bench_store_of(tree: Path, url: str, n: int, rate: float) -> dict[str, float]:
    """:func:`bench_store` with the store code of another checkout (``--baseline``).

    Run in a child process (two versions of ``ai4ec_runtime`` cannot share one), with
    that checkout's own ``bench_store``, against the same Redis.
    """
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import taskmanager as tm; "
        "out = tm.bench_store(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])); "
        "print('BENCHSTORE ' + json.dumps(out), flush=True)"
    )
    print(f"\n(store code from {tree})", flush=True)
    res = subprocess.run(
        [sys.executable, "-c", code, str(tree / "bench"), url, str(n), str(rate)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = res.stdout.splitlines()
    print("\n".join(line for line in lines if not line.startswith("BENCHSTORE")), flush=True)
    for line in lines:
        if line.startswith("BENCHSTORE "):
            return dict(json.loads(line.removeprefix("BENCHSTORE ")))
    raise RuntimeError(f"baseline store bench failed:\n{res.stderr[-2000:]}")


def _child_cpu() -> float:
    """User + system CPU of this process's waited-for children so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _store_lifecycles(n: int, rate: float) -> int:
    """Lifecycles :func:`bench_store` runs: 1 thread, 8 threads, batches, open loop."""
    return min(n, 5000) + (n // 8) * 8 + (n // 200) * 200 + int(rate * 5.0)


def print_ab(runs: dict[str, list[dict[str, float]]]) -> None:
    """Means per side and current/baseline ratios of an interleaved ``--baseline`` run."""
    rows = [
        ("creates", "creates/s"),
        ("creates_p99", "creates p99 ms"),
        ("reads", "reads/s"),
        ("reads_p99", "reads p99 ms"),
        ("host_us", "host CPU us/create"),
        ("redis_us", "redis-server CPU us/create"),
        ("threads", "store lifecycles/s, 8 threads"),
        ("seq", "store lifecycles/s, 1 thread"),
        ("batched", "store lifecycles/s, pipelined"),
        ("store_client_us", "store client CPU us/lifecycle"),
        ("store_redis_us", "store redis CPU us/lifecycle"),
    ]
    base, new = runs.get("baseline", []), runs.get("current", [])
    print(f"\n== A/B, interleaved, same Redis ({len(new)} rounds; means, then each round)")
    for key, label in rows:
        b = [r[key] for r in base if key in r]
        c = [r[key] for r in new if key in r]
        if not b or not c:
            continue
        mb, mc = sum(b) / len(b), sum(c) / len(c)
        each = "  ".join(f"{x:,.1f}/{y:,.1f}" for x, y in zip(b, c, strict=False))
        print(f"  {label:32s} baseline {mb:10,.1f}   current {mc:10,.1f}   "
              f"x{mc / mb:5.2f}   [{each}]")  # fmt: skip


def run_ab(args: argparse.Namespace, rp: RedisProc, sections: set[str]) -> None:
    """``--baseline``: the baseline's and this checkout's code alternately (ABBA), same Redis."""
    procs, loop, parser = (args.host_configs.split(",")[0].split(":") + ["", ""])[:3]
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
    sides = [("baseline", args.baseline.resolve()), ("current", ROOT)]
    for i in range(args.rounds):
        # ABBA order: load that drifts during the run favours neither side.
        for side, tree in sides if i % 2 == 0 else sides[::-1]:
            print(f"\n#### round {i + 1}, {side} ({tree}), load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
            out: dict[str, float] = {}
            if "store" in sections:
                # Both sides in a child process, so each one's CPU can be read: CPU per
                # lifecycle varies far less than lifecycles/s when other work shares
                # the cores.
                cpu0 = (_child_cpu(), _cpu_seconds(rp.proc.pid))
                out.update(bench_store_of(tree, rp.url, args.n, args.rate))
                cpu1 = (_child_cpu(), _cpu_seconds(rp.proc.pid))
                done = _store_lifecycles(args.n, args.rate)
                out["store_client_us"] = 1e6 * (cpu1[0] - cpu0[0]) / done
                out["store_redis_us"] = 1e6 * (cpu1[1] - cpu0[1]) / done
                print(f"    store CPU per lifecycle (all four runs): "
                      f"{out['store_client_us']:.0f} us client, "
                      f"{out['store_redis_us']:.0f} us redis-server")  # fmt: skip
            if "wrk" in sections and shutil.which("wrk"):
                out.update(bench_http_wrk(
                    rp.url, args.conns, args.wrk_seconds, int(procs), loop != "asyncio",
                    hiredis=parser != "python", redis_pid=rp.proc.pid,
                    functions=tree / "functions",
                ))  # fmt: skip
            runs[side].append(out)
    print_ab(runs)
    print(f"  load average now: {os.getloadavg()[0]:.2f} (1 min), "
          f"{os.getloadavg()[1]:.2f} (5 min)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="lifecycles / requests / jobs per run")
    ap.add_argument("--rate", type=float, default=1000.0, help="open-loop offered lifecycles/s")
    ap.add_argument("--conns", type=int, default=16, help="HTTP connections")
    ap.add_argument("--wrk-seconds", type=int, default=10, help="length of each wrk run")
    ap.add_argument("--no-aof", action="store_true", help="run Redis without persistence")
    ap.add_argument(
        "--host-configs",
        default="1:asyncio,1:uvloop,2:uvloop",
        help="local host set-ups measured with wrk: PROCESSES:LOOP[:python], comma "
        "separated; ':python' hides hiredis (redis-py's own reply parser, as in Azure)",
    )
    ap.add_argument(
        "--sections",
        default="store,http,wrk,peers,redis,cluster",
        help="what to run, comma separated (e.g. 'wrk,redis' for the HTTP targets only)",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. git worktree add /tmp/base <commit>): its store and "
        "host run alternately with this one's, same Redis, for --rounds rounds (store and "
        "wrk sections, first --host-configs entry)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds with --baseline")
    ap.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    print(f"ai4ec task-manager bench: n={args.n:,}, cores={os.cpu_count()}, "
          f"redis AOF={'off' if args.no_aof else 'everysec'}, "
          f"load average before: {os.getloadavg()[0]:.2f}")  # fmt: skip
    sections = set(args.sections.split(","))
    rp = RedisProc(aof=not args.no_aof)
    if args.baseline is not None:
        try:
            run_ab(args, rp, sections)
        finally:
            rp.stop()
        return
    store: dict[str, float] = {}
    http: dict[str, float] = {}
    cstore: dict[str, float] = {}
    try:
        if "store" in sections:
            store = bench_store(rp.url, args.n, args.rate)
        if "http" in sections:
            http = bench_http(rp.url, args.n, args.conns)
        wrk_runs: dict[str, dict[str, float]] = {}
        if "wrk" not in sections:
            pass
        elif shutil.which("wrk"):
            for config in args.host_configs.split(","):
                procs, loop, parser = (config.split(":") + ["", ""])[:3]
                label = f"{procs} proc, {loop or 'uvloop'}" + (", python parser" if parser else "")
                if label in wrk_runs:  # a set-up listed again (alternating A/B runs)
                    same = [k for k in wrk_runs if k == label or k.startswith(label + " #")]
                    label += f" #{len(same) + 1}"
                wrk_runs[label] = bench_http_wrk(
                    rp.url,
                    args.conns,
                    args.wrk_seconds,
                    int(procs),
                    loop != "asyncio",
                    hiredis=parser != "python",
                    redis_pid=rp.proc.pid,
                )
        else:
            print("\n(wrk figures skipped: no wrk on PATH; apt-get install -y wrk)")
        peers: dict[str, float] = {}
        if "peers" in sections and not args.skip_peers:
            if Path(args.peer_python).exists():
                try:
                    peers = bench_peers(rp.url, args.n, args.peer_python)
                except RuntimeError as exc:  # a broken peer venv costs its rows, not the run
                    print(f"\n(peers failed; the other sections go on)\n{exc}")
            else:
                print(f"\n(peers skipped: {args.peer_python} missing; see the module docstring)")
        if "redis" in sections:
            bench_redis(rp.port)
    finally:
        rp.stop()
    if "cluster" in sections:
        cp = ClusterProc(aof=not args.no_aof)
        try:
            cstore = bench_store(cp.url, args.n, args.rate, "cluster")
        finally:
            cp.stop()

    print(f"\n== summary vs. targets (load average now: {os.getloadavg()[0]:.2f})")
    rows: list[tuple[str, float, bool]] = []
    if store:
        best = max(store["threads"], store["batched"], store["seq"])
        rows += [
            ("store lifecycles/s (best mode) >= 5,000", best, best >= 5000),
            (
                "store p99 at offered rate < 25 ms",
                store["open_p99"] * 1000,
                store["open_p99"] < 0.025,
            ),
        ]
    if cstore:
        cbest = max(cstore["threads"], cstore["batched"], cstore["seq"])
        rows.append(("cluster store lifecycles/s (best mode)", cbest, True))
    if http:
        rows += [
            ("HTTP creates/s >= 4,000 (Python client)", http["creates"], http["creates"] >= 4000),
            ("HTTP status reads/s >= 8,000 (Python client)", http["reads"], http["reads"] >= 8000),
        ]
    for label, w in wrk_runs.items():
        rows += [
            (f"HTTP creates/s >= 4,000 (wrk, {label})", w["creates"], w["creates"] >= 4000),
            (f"HTTP creates p99 < 25 ms (wrk, {label})", w["creates_p99"], w["creates_p99"] < 25),
            (f"HTTP status reads/s >= 8,000 (wrk, {label})", w["reads"], w["reads"] >= 8000),
            (f"HTTP reads p99 < 25 ms (wrk, {label})", w["reads_p99"], w["reads_p99"] < 25),
        ]
    for label, value, ok in rows:
        print(f"  {label:58s} {value:10,.1f}   {'met' if ok else 'MISSED'}")
    for peer in ("celery", "dramatiq"):
        if peer in peers and store and http:
            print(f"  ratio ai4ec store lifecycles / {peer} jobs: "
                  f"{store['threads'] / peers[peer]:.1f}x (threads), "
                  f"{store['batched'] / peers[peer]:.1f}x (batched), "
                  f"HTTP lifecycles {http['lifecycles'] / peers[peer]:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
