"""Targets render in two processes (``build --jobs``, issue 15): same bytes, same errors.

Real builds of the samples: the APIM and Azure targets run in a forked worker while the
Kubernetes target renders through the real Helm engine in the test's process. A renderer
made to fail (monkeypatched before the fork, so the worker inherits it) must fail the
build exactly as a serial render does: same exit code, same report, no traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ai4ec.render
from ai4ec import cache
from ai4ec.cli import cli
from ai4ec.errors import Diagnostic, RenderError
from ai4ec.pipeline import build_platform, check_platform, render_platforms
from ai4ec.render import worker

from ..conftest import SAMPLES


@pytest.fixture(autouse=True)
def _no_render_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached environment would be served without rendering (or forking) at all."""
    monkeypatch.setenv("AI4EC_NO_CACHE", "1")
    monkeypatch.delenv(worker.JOBS_ENV, raising=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _apim_pids(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Record the pid of every process that renders the APIM target (in a file: a fork's
    memory is its own)."""
    real = ai4ec.render.render_apim

    def recording(*args: Any, **kwargs: Any) -> Any:
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(ai4ec.render, "render_apim", recording)


@pytest.mark.parametrize("sample", ["camera-trap", "multi-env"])
def test_a_parallel_build_is_the_serial_bytes(
    sample: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = SAMPLES / sample / "platform.yaml"
    log = tmp_path / "pids"
    _apim_pids(monkeypatch, log)
    build_platform(path, tmp_path / "serial", jobs=1)
    serial_pids = set(log.read_text().split())
    log.unlink()
    build_platform(path, tmp_path / "parallel", jobs=2)
    parallel_pids = set(log.read_text().split())
    assert serial_pids == {str(os.getpid())}
    assert parallel_pids and str(os.getpid()) not in parallel_pids, "APIM rendered in a worker"
    assert _tree(tmp_path / "parallel") == _tree(tmp_path / "serial")


def _render_error(*_args: object, **_kwargs: object) -> None:
    message = "generated apim/policies/x.xml: forced by the test"
    raise RenderError(
        message,
        (Diagnostic(code="E-RENDER-PARSE", message=message, hint="this is an ai4ec bug"),),
    )


def _crash(*_args: object, **_kwargs: object) -> None:
    raise KeyError("forced by the test")


@pytest.mark.parametrize("target", ["render_apim", "render_azure"])
@pytest.mark.parametrize("failure", [_render_error, _crash], ids=["render-error", "crash"])
def test_a_failing_worker_reports_as_a_serial_build(
    target: str, failure: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ai4ec.render, target, failure)
    path = SAMPLES / "minimal" / "platform.yaml"
    runner = CliRunner()
    results = {
        jobs: runner.invoke(cli, ["build", str(path), "-o", str(tmp_path / jobs), "-j", jobs])
        for jobs in ("1", "2")
    }
    serial, parallel = results["1"], results["2"]
    assert parallel.exit_code == serial.exit_code == 70, parallel.output
    assert parallel.output == serial.output
    assert "forced by the test" in parallel.output and "Traceback" not in parallel.output
    assert not (tmp_path / "2").exists()


def test_debug_shows_where_in_the_worker_it_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ai4ec.render, "render_azure", _crash)
    path = SAMPLES / "minimal" / "platform.yaml"
    res = CliRunner().invoke(cli, ["--debug", "build", str(path), "-o", str(tmp_path), "-j", "2"])
    assert res.exit_code == 70
    assert "in the render worker" in res.output and "_crash" in res.output


def test_with_two_failures_the_first_target_in_order_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """APIM fails in the worker, Kubernetes here: a serial render would meet APIM first."""

    def k8s_fails(*_args: object, **_kwargs: object) -> None:
        raise RenderError("the chart rejected the values: forced by the test")

    monkeypatch.setattr(ai4ec.render, "render_apim", _render_error)
    monkeypatch.setattr(ai4ec.render, "render_k8s", k8s_fails)
    result = check_platform(SAMPLES / "minimal" / "platform.yaml")
    for jobs in (1, 2):
        with pytest.raises(RenderError, match="apim/policies/x.xml"):
            render_platforms(result, jobs=jobs)


class _Recorder:
    def __init__(self) -> None:
        self.total = 0
        self.labels: list[str] = []

    def start(self, total: int) -> None:
        self.total = total

    def step(self, label: str) -> None:
        self.labels.append(label)


def test_progress_is_still_per_environment_and_target() -> None:
    result = check_platform(SAMPLES / "multi-env" / "platform.yaml")
    seen = {}
    for jobs in (1, 2):
        progress = _Recorder()
        render_platforms(result, progress, jobs=jobs)
        assert len(progress.labels) == progress.total
        seen[jobs] = sorted(progress.labels)
    assert seen[1] == seen[2]
    assert "prod: kubernetes" in seen[2] and "prod: apim" in seen[2]


def _no_fork() -> int:
    raise AssertionError("forked although told to render serially")


@pytest.mark.parametrize("how", ["flag", "env", "one-core"])
def test_serial_when_asked_or_on_one_core(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fork", _no_fork)
    args = ["build", str(SAMPLES / "minimal" / "platform.yaml"), "-o", str(tmp_path), "-q"]
    if how == "flag":
        args += ["--jobs", "1"]
    elif how == "env":
        monkeypatch.setenv(worker.JOBS_ENV, "1")
    else:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("bad", [["--jobs", "0"], ["--jobs", "two"]])
def test_a_bad_jobs_value_is_a_usage_error(bad: list[str], tmp_path: Path) -> None:
    args = ["build", str(SAMPLES / "minimal" / "platform.yaml"), "-o", str(tmp_path), *bad]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and "--jobs" in res.output and "Traceback" not in res.output


def test_the_worker_cache_writes_count_for_pruning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is pruned after a run that grew it, also when a worker did the writing."""
    monkeypatch.delenv("AI4EC_NO_CACHE")
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_written", 0)
    monkeypatch.setattr(cache, "_NAMESPACES", set())

    def write() -> str:
        cache.DiskCache("test-worker").put(cache.key_of("x"), b"payload")
        return "done"

    assert worker.Forked(write).result() == "done"
    written, namespaces = cache.usage()
    assert "test-worker" in namespaces
    assert written > 0


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_no_cache_holds_on_every_thread_and_in_the_worker(
    jobs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Istio objects render on a thread, APIM and Azure in a fork: none writes a cache."""
    monkeypatch.delenv("AI4EC_NO_CACHE")
    monkeypatch.setenv("AI4EC_CACHE_DIR", str(tmp_path / "cache"))
    path = SAMPLES / "camera-trap" / "platform.yaml"
    args = ["build", str(path), "-o", str(tmp_path / "o"), "--no-cache", "-j", jobs, "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    written = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert written == []


def test_an_istio_error_comes_before_a_release_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Istio and the releases render at once; the error met first serially still wins."""
    import ai4ec.render.k8s as k8s

    def istio_fails(*_args: object, **_kwargs: object) -> None:
        raise RenderError("generated istio/security.yaml: forced by the test")

    def releases_fail(*_args: object, **_kwargs: object) -> None:
        raise RenderError("the chart rejected the values: forced by the test")

    monkeypatch.setattr(k8s, "istio_objects", istio_fails)
    monkeypatch.setattr(k8s, "render_releases", releases_fail)
    result = check_platform(SAMPLES / "minimal" / "platform.yaml")
    with pytest.raises(RenderError, match="istio/security.yaml"):
        render_platforms(result, jobs=1)


def test_no_process_to_fork_renders_serially(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fork`` failing (a process limit, no memory) costs the speed-up, not the build."""

    def refuse() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    path = SAMPLES / "minimal" / "platform.yaml"
    build_platform(path, tmp_path / "serial", jobs=1)
    monkeypatch.setattr(os, "fork", refuse)
    build_platform(path, tmp_path / "refused", jobs=2)
    assert _tree(tmp_path / "refused") == _tree(tmp_path / "serial")


def test_macos_renders_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No fork without exec on macOS (its libraries are not fork-safe with threads)."""

    def forbidden() -> int:
        raise AssertionError("forked on macOS")

    with monkeypatch.context() as m:
        m.setattr(worker.sys, "platform", "darwin")
        assert not worker.can_fork()
    assert worker.can_fork()  # Linux
    monkeypatch.setattr(worker, "can_fork", lambda: False)
    monkeypatch.setattr(os, "fork", forbidden)
    path = SAMPLES / "minimal" / "platform.yaml"
    build_platform(path, tmp_path / "mac", jobs=2)
    assert (tmp_path / "mac" / "default" / "manifest.json").is_file()
