"""Compile-time scaling: validate + model, and full build, for 100 / 1,000 / 5,000 APIs.

Each size runs in its own subprocess so peak memory (ru_maxrss) belongs to that size
alone. As a same-run reference it also times what a plain schema checker does on the
same file (PyYAML's C loader + jsonschema, no positions, no semantic rules), and prints
ai4ec's time as a ratio of it: the machine is noisy, ratios are not.

    python bench/compile_scale.py [--sizes 100,1000,5000] [--no-build] [--chart N]

The build column is a cold render cache; ``warm`` builds the same file again with the
cache the cold build filled, and ``10 changed`` a copy with ten APIs' images changed
(only their Helm releases are rendered anew).

5,000 APIs need more role assignments than one Azure subscription holds, so validation
refuses that size (E-AZ-ROLE-LIMIT). To still measure how the build scales, the bench
then renders and writes it with that one rule's errors set aside, and prints the time as
a ratio of the largest size it built normally. That output is not deployable.

``--chart N`` instead times the Helm chart alone for N releases: the compiler's path
(schema-free chart archive, values checked by a compiled validator) beside Helm's own
(the chart loaded once, its values schema compiled on every render), in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def make_platform(n_apis: int) -> dict:
    n_pools = 4
    apis = []
    for i in range(n_apis):
        is_async = i % 2 == 0
        gpu = i % 5 == 0
        apis.append(
            {
                "name": f"api{i}",
                "version": "v1",
                "image": f"models/api{i}:1.{i % 7}.0",
                "mode": "async" if is_async else "sync",
                "pool": "gpu" if gpu else f"cpu{i % n_pools}",
                "endpoints": [
                    {"path": "/run", "timeout": "10m" if is_async else "30s"},
                    {"path": "/status", "methods": ["GET", "POST"], "mode": "sync"}
                    if not is_async
                    else {"path": "/batch", "timeout": "30m"},
                ],
                "resources": {"cpu": "1", "memory": "4Gi", "gpu": 1 if gpu else 0},
                "env": {"MODEL_NAME": f"model-{i}", "THRESHOLD": "0.5"},
                "secrets": {"STORAGE_KEY": {"keyVaultSecret": f"storage-key-{i % 10}"}},
                "scaling": {"minReplicas": 0 if is_async else 1, "maxReplicas": 5},
                "products": [f"product{i % 10}"],
            }
        )
    pipelines = [
        {
            "name": f"pipe{j}",
            "version": "v1",
            "steps": [
                {"api": f"api{j * 4}", "endpoint": "/run"},
                {"api": f"api{j * 4 + 2}", "endpoint": "/run"},
            ],
            "products": [f"product{j % 10}"],
        }
        for j in range(n_apis // 10)
    ]
    return {
        "apiVersion": "ai4ec/v1",
        "kind": "Platform",
        "metadata": {"name": "bench", "tags": {"owner": "bench"}},
        "azure": {
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "resourceGroup": "bench-rg",
            "location": "eastus",
            "namePrefix": "bench",
            "apiManagement": {
                "sku": "Premium",
                "capacity": 2,
                "publisherName": "B",
                "publisherEmail": "b@example.org",
            },
        },
        "clusters": [
            {
                "name": "main",
                "kubernetesVersion": "1.35",
                "pools": [
                    *(
                        {
                            "name": f"cpu{k}",
                            "vmSize": "Standard_D8s_v5",
                            "autoscale": {"min": 1, "max": 50},
                        }
                        for k in range(n_pools)
                    ),
                    {
                        "name": "gpu",
                        "vmSize": "Standard_NC96ads_A100_v4",
                        # 4 GPUs a node; room for every GPU API at minReplicas (validate
                        # refuses less: E-CAPACITY-GPU-MIN), within AKS's 1,000 nodes.
                        "autoscale": {"min": 0, "max": min(1000, max(50, -(-n_apis // 4)))},
                    },
                ],
                "istio": {
                    "ingress": {
                        "hosts": ["api.bench.example.org"],
                        "certificate": {"keyVaultCertificate": "ingress-tls"},
                    }
                },
            }
        ],
        "apis": apis,
        "pipelines": pipelines,
        "products": [
            {"name": f"product{k}", "rateLimit": {"calls": 100, "period": "60s"}} for k in range(10)
        ],
    }


def _child(mode: str, path: str, out: str) -> None:
    t0 = time.perf_counter()
    if mode == "baseline":
        import jsonschema

        from ai4ec.resources import platform_schema

        data = yaml.load(Path(path).read_text(), Loader=yaml.CSafeLoader)
        errors = list(jsonschema.Draft202012Validator(platform_schema()).iter_errors(data))
        assert not errors, errors[:1]
    elif mode == "validate":
        from ai4ec.errors import Severity
        from ai4ec.pipeline import check_platform

        result = check_platform(path)
        refused = sorted({d.code for d in result.diagnostics if d.severity is Severity.ERROR})
        if refused:  # a size Azure cannot take (E-AZ-ROLE-LIMIT past ~1,300 APIs)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            elapsed = time.perf_counter() - t0
            print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "refused": refused}))
            return
    elif mode == "targets":
        from ai4ec.pipeline import check_platform, require_ok
        from ai4ec.render import RenderContext
        from ai4ec.render.apim import render_apim
        from ai4ec.render.azure.target import render_azure
        from ai4ec.render.k8s import render_k8s
        from ai4ec.render.runtime import render_runtime

        platforms = require_ok(check_platform(path))
        ctx = RenderContext(source_name=path, source_dir=str(Path(path).parent))
        times = {"apim": 0.0, "azure": 0.0, "kubernetes": 0.0, "functions": 0.0}
        for platform in platforms:
            t = time.perf_counter()
            apim = render_apim(platform, ctx)  # once: the Azure target reuses its result
            times["apim"] += time.perf_counter() - t
            t = time.perf_counter()
            render_azure(platform, ctx, apim.infrastructure)
            times["azure"] += time.perf_counter() - t
            t = time.perf_counter()
            render_k8s(platform, ctx)
            times["kubernetes"] += time.perf_counter() - t
            t = time.perf_counter()
            render_runtime(platform, ctx)
            times["functions"] += time.perf_counter() - t
        print(json.dumps({"targets": times}))
        return
    elif mode == "build-over-limit":
        # A size validation refuses only for Azure's role-assignment limit: lift that one
        # limit in this process and build, to measure how the build scales. Not
        # deployable; bench only.
        from ai4ec.model import azure_limits
        from ai4ec.pipeline import build_platform

        azure_limits.ROLE_ASSIGNMENTS_PER_SUBSCRIPTION = 10**9
        azure_limits.ROLE_ASSIGNMENT_BUDGET = 10**9
        build_platform(path, out)
        assert sum(1 for f in Path(out).rglob("*") if f.is_file()) > 1000, "built nothing"
    else:
        from ai4ec.pipeline import build_platform

        build_platform(path, out)
    elapsed = time.perf_counter() - t0
    # The largest process: this one, or the render worker it forked (RUSAGE_CHILDREN is
    # the largest child waited for).
    peak_kb = max(
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    peak_mb = peak_kb / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb}))


def chart_speed(n_apis: int) -> None:
    """Print the compiler's chart rendering time for ``n_apis`` releases beside Helm's own."""
    import helm_python

    from ai4ec.pipeline import check_platform, require_ok
    from ai4ec.render.k8s.chart import chart_dir, load_chart, release_values, values_validator

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "platform.yaml"
        path.write_text(yaml.safe_dump(make_platform(n_apis), sort_keys=False))
        platform = require_ok(check_platform(str(path)))[0]
    cluster = platform.clusters[0]
    releases = [release_values(platform, cluster, a) for a in platform.apis]
    ns = cluster.namespace

    t = time.perf_counter()
    with helm_python.Chart.load(chart_dir()) as helm_chart:
        for values in releases:
            helm_chart.render(values, name=values["name"], namespace=ns)
    baseline = time.perf_counter() - t

    t = time.perf_counter()
    chart, check = load_chart(), values_validator()
    for values in releases:
        check(values)
        chart.render(values, name=values["name"], namespace=ns)
    ours = time.perf_counter() - t
    print(f"chart, {len(releases)} releases:")
    print(f"  ai4ec (schema-free archive + compiled validator) {ours:7.2f} s")
    print(f"  baseline (Helm, schema compiled on every render) {baseline:7.2f} s")
    print(f"  ratio ai4ec / baseline                           {ours / baseline:7.2f}")


def _run(mode: str, path: Path, out: Path, repeat: int, cache: Path | None = None) -> dict:
    """Best of ``repeat`` child runs; ``cache`` is the render cache they use (else none)."""
    env = dict(os.environ)
    if cache is None:
        env["AI4EC_NO_CACHE"] = "1"
    else:
        env["AI4EC_CACHE_DIR"] = str(cache)
    best = None
    for _ in range(repeat):
        res = subprocess.run(
            [sys.executable, __file__, "--child", mode, str(path), str(out)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        data = json.loads(res.stdout.strip().splitlines()[-1])
        if best is None or data["seconds"] < best["seconds"]:
            best = data
    assert best is not None
    return best


def _output_size(out: Path, input_bytes: int) -> str:
    """What a build wrote: total MB and files, by kind of file, and the ratio to the
    platform.yaml it came from (issue 15's goal: < 25 MB for 1,000 APIs)."""
    total = files = 0
    kinds: dict[str, int] = {}
    for f in out.rglob("*"):
        if f.is_file():
            size = f.stat().st_size
            total, files = total + size, files + 1
            kind = {
                "manifests.yaml": "Kubernetes objects",
                "manifest.json": "manifest.json",
            }.get(f.name) or {
                ".json": "ARM JSON",
                ".bicep": "Bicep",
                ".xml": "APIM XML",
                ".zip": "Functions bundle",
            }.get(f.suffix, "other")
            kinds[kind] = kinds.get(kind, 0) + size
    parts = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    return (
        f"output {total / 1e6:.1f} MB, {files} files ({parts}); platform.yaml "
        f"{input_bytes / 1e6:.1f} MB, ratio {total / input_bytes:.0f}x"
    )


def _process_seconds(argv: list[str], repeat: int, check: bool = True) -> float:
    """Best wall time of ``argv`` as a whole process (start-up included)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=check)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--chart", type=int, metavar="N", help="time the chart alone for N releases")
    args = ap.parse_args()
    if args.chart:
        chart_speed(args.chart)
        return
    if args.child:
        _child(*args.child)
        return
    cols = [("APIs", 6), ("lines", 7), ("validate+model", 15), ("baseline", 9), ("ratio", 6)]
    cols += [("peak MB", 8), ("build", 8), ("build MB", 9), ("warm", 8), ("10 changed", 11)]
    print(" ".join(f"{name:>{width}}" for name, width in cols))
    builds: dict[int, float] = {}  # cold build seconds by size, for the scaling ratio
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"platform-{n}.yaml"
            text = yaml.safe_dump(make_platform(n), sort_keys=False)
            path.write_text(text)
            v = _run("validate", path, Path(tmp) / "out", args.repeat)
            b = _run("baseline", path, Path(tmp) / "out", args.repeat)
            ratio = v["seconds"] / b["seconds"]
            row = f"{n:>6} {text.count(chr(10)):>7} {v['seconds']:>14.3f}s {b['seconds']:>8.3f}s"
            row += f" {ratio:>6.2f} {v['peak_mb']:>8.0f}"
            refused = v.get("refused")
            if refused:
                # Validation refuses this size: past about 1,300 APIs one subscription
                # cannot hold their role assignments (Azure's fixed 4,000). The timing
                # above is still the whole validation's; the build below only measures
                # how rendering scales, and says it is not deployable.
                row += f"  validation refuses it ({', '.join(refused)})"
                if refused == ["E-AZ-ROLE-LIMIT"] and not args.no_build and builds:
                    cache = Path(tmp) / f"cache-{n}"
                    bu = _run("build-over-limit", path, Path(tmp) / f"out-{n}", 1, cache)
                    ref_n, ref_s = max(builds.items())
                    row += (
                        f"\n{'':>6} build anyway (bench only: over Azure's role-assignment "
                        f"limit, not deployable) {bu['seconds']:.2f}s, peak {bu['peak_mb']:.0f} "
                        f"MB; {bu['seconds'] / ref_s:.1f}x the {ref_n:,}-API build for "
                        f"{n / ref_n:.0f}x the APIs (goal < 6x for 5x)"
                    )
            elif not args.no_build:
                cache = Path(tmp) / f"cache-{n}"
                bu = _run("build", path, Path(tmp) / f"out-{n}", 1, cache)  # cold cache
                builds[n] = bu["seconds"]
                row += f" {bu['seconds']:>7.2f}s {bu['peak_mb']:>9.0f}"
                warm = _run("build", path, Path(tmp) / f"out-{n}", 1, cache)
                changed = path.with_name(f"changed-{n}.yaml")
                data = make_platform(n)
                for api in data["apis"][:10]:
                    api["image"] = api["image"].replace(":1.", ":2.")
                changed.write_text(yaml.safe_dump(data, sort_keys=False))
                ten = _run("build", changed, Path(tmp) / f"out-{n}", 1, cache)
                row += f" {warm['seconds']:>7.2f}s {ten['seconds']:>10.2f}s"
            print(row, flush=True)
            argv = [sys.executable, "-m", "ai4ec", "validate", str(path)]
            whole = _process_seconds(argv, 3, check=not refused)
            load = "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=yaml.CSafeLoader)"
            bare = _process_seconds([sys.executable, "-c", load, str(path)], 3)
            print(
                f"{'':>6} `ai4ec validate` as a process {whole:.2f}s (goal < 1.5 s); baseline "
                f"bare PyYAML C load as a process {bare:.2f}s; ratio {whole / bare:.1f}",
                flush=True,
            )
            if not args.no_build and not refused:
                print(
                    f"{'':>6} {_output_size(Path(tmp) / f'out-{n}', len(text))} (goal < 25 MB)",
                    flush=True,
                )
                res = subprocess.run(
                    [sys.executable, __file__, "--child", "targets", str(path), "-"],
                    capture_output=True,
                    text=True,
                    check=True,
                    # Cold like the build column (and never the user's ~/.cache/ai4ec).
                    env={**os.environ, "AI4EC_NO_CACHE": "1"},
                )
                targets = json.loads(res.stdout.strip().splitlines()[-1])["targets"]
                per = ", ".join(f"{k} {v:.2f}s" for k, v in targets.items())
                print(f"{'':>6} per target: {per}", flush=True)


if __name__ == "__main__":
    main()
