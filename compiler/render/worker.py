"""One call run in a forked worker process while the caller goes on with other work.

The render stage uses it to render the Azure and APIM targets (pure Python, bound to one
core by the GIL) while the parent renders the Kubernetes target, which mostly waits on
Helm's Go engine. A fork, not a spawned interpreter: the child starts in a few
milliseconds with the model, the imports, the warm template caches and the caller's
context (``--no-cache``) already in place, and nothing has to be pickled on the way in.
Only the result comes back, pickled through a pipe.

The child never calls into Go (Helm runs in the parent only), so forking a process whose
Go runtime already started is safe; it leaves with ``os._exit`` (no atexit handler, no
inherited buffer flushed twice, never back into a test runner). An :class:`Ai4ecError`
raised in the child is raised again in the parent as the same class with the same
message and diagnostics; any other exception is raised again as itself (or, if it cannot
be pickled, as a :class:`WorkerError` with its type and text), caused by the child's
traceback: the CLI reports it as the same internal error (exit 70) as in one process.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

from .. import cache
from ..errors import Ai4ecError

T = TypeVar("T")

#: How many processes render one environment (``build --jobs``; 1 renders serially).
JOBS_ENV = "AI4EC_JOBS"


def can_fork() -> bool:
    """Whether a fork without exec is safe here: not on Windows (no ``fork``), not on macOS.

    macOS's system libraries are not fork-safe once a process has threads (Python's own
    multiprocessing spawns there since 3.8), and a build has Helm's Go threads by the
    second environment; there, the targets render in one process.
    """
    return hasattr(os, "fork") and sys.platform != "darwin"


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS has no affinity call
        return os.cpu_count() or 1


def render_jobs(requested: int | None = None) -> int:
    """Processes to render with: ``requested``, else ``$AI4EC_JOBS``, else the usable cores.

    More than two buys nothing (the render splits in two), and one core gets one: a
    second process would only take turns with the first.
    """
    if requested is None:
        raw = os.environ.get(JOBS_ENV, "").strip()
        requested = int(raw) if raw.isdigit() and int(raw) > 0 else usable_cores()
    return max(1, min(2, requested))


class WorkerError(RuntimeError):
    """A forked worker died, or failed with an error that cannot be sent back as it is."""


class Forked(Generic[T]):
    """``call()`` running in a forked child; :meth:`result` waits for what it returned."""

    def __init__(self, call: Callable[[], T]) -> None:
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # pragma: no cover - the child's lines run where coverage does not look
            os.close(read_end)
            _child(call, write_end)
        os.close(write_end)
        self._pid = pid
        self._read = os.fdopen(read_end, "rb")

    def result(self) -> T:
        """The child's return value, or its error raised again here.

        Raises:
            Ai4ecError: the child raised one (same class, message and diagnostics).
            WorkerError: the child raised anything else, or died.
        """
        try:
            data = self._read.read()
        finally:
            self._read.close()
            _, status = os.waitpid(self._pid, 0)
            self._pid = 0
        if not data:
            raise WorkerError(f"the render worker died ({_describe(status)})")
        kind, value, written, namespaces = pickle.loads(data)
        cache.add_usage(written, namespaces)
        if kind == "error":
            error_type, message, diagnostics = value
            raise error_type(message, diagnostics)
        if kind == "bug":
            error, child_traceback = value
            raise error from _ChildTraceback(child_traceback)
        result: T = value
        return result

    def cancel(self) -> None:
        """Stop the child (the parent failed or was interrupted) and reap it."""
        if not self._pid:
            return
        self._read.close()
        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it had just exited
            pass
        os.waitpid(self._pid, 0)
        self._pid = 0


def _child(call: Callable[[], object], write_end: int) -> None:  # pragma: no cover - child
    """Run ``call``, send its outcome to the parent, and leave without cleaning up."""
    code = 0
    try:
        before = cache.usage()[0]
        payload: tuple[str, object]
        try:
            payload = ("ok", call())
        except Ai4ecError as exc:
            payload = ("error", (type(exc), exc.message, exc.diagnostics))
        except BaseException as exc:  # noqa: BLE001 - a bug (or Ctrl-C): the parent reports it
            payload = ("bug", (_portable(exc), "".join(traceback.format_exception(exc))))
        written, namespaces = cache.usage()
        data = pickle.dumps(
            (*payload, written - before, namespaces), protocol=pickle.HIGHEST_PROTOCOL
        )
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)
    except BaseException:  # noqa: BLE001 - nothing may escape into the parent's stack
        code = 70
    finally:
        os._exit(code)


class _ChildTraceback(Exception):
    """Where the child's error came from (``--debug`` shows it as the cause)."""

    def __str__(self) -> str:
        return f"in the render worker:\n{self.args[0]}"


def _portable(exc: BaseException) -> BaseException:  # pragma: no cover - child
    """``exc`` itself when it survives pickling (same type and text in the parent)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any exception type that cannot travel
        return WorkerError(f"{type(exc).__name__}: {exc}")
    return exc


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


__all__ = ["JOBS_ENV", "Forked", "WorkerError", "can_fork", "render_jobs", "usable_cores"]
