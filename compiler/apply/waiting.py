"""Waiting for what Azure and Kubernetes finish on their own, with deadlines.

The Functions host indexing a new bundle, and the rollouts of a cluster's workloads.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ApplyError
from .context import Context
from .placeholders import object_label


def wait_indexed(ctx: Context, expected: list[str]) -> None:
    """Wait until the host lists every function of the bundle (or fail clearly).

    The host restarts after a publish and indexes the new code; until it lists
    ``BackendWebhook``, Event Grid's validation handshake would fail, and a bundle
    the host cannot import never lists anything.
    """
    if not expected:
        return
    t = ctx.target()
    o = ctx.options
    az = ctx.azure()
    deadline = time.monotonic() + o.ready_timeout
    ctx.console.say(f"  waiting for the Functions host to index {len(expected)} function(s)")
    while True:
        listed = az.list_functions(t.resource_group, t.function_app)
        missing = [f for f in expected if f not in listed]
        if not missing:
            ctx.console.say(f"  Functions host lists all {len(expected)} function(s)")
            return
        if time.monotonic() >= deadline:
            raise ApplyError(
                f"Function App {t.function_app}: after {o.ready_timeout:.0f}s the host lists "
                f"{len(listed)} of {len(expected)} functions (missing: {', '.join(missing)}); "
                "the host could not load the bundle (a missing dependency or an import "
                "error): see the app's logs (Application Insights, 'Diagnose and solve')"
            )
        o.retry.sleep(o.poll_interval)


def wait_rollouts(
    ctx: Context, cluster: str, kube: Any, workloads: list[tuple[Any, dict[str, Any]]]
) -> None:
    """Poll the changed workloads until they are rolled out (or fail, or time out)."""
    from .kube import rollout_status

    if not workloads:
        return
    o = ctx.options
    ctx.console.say(f"  waiting for {len(workloads)} rollout(s) (timeout {o.timeout:.0f}s)")
    deadline = time.monotonic() + o.timeout
    pending = list(workloads)
    last: dict[str, str] = {}
    while pending:
        still = []
        for res, obj in pending:
            md = obj["metadata"]
            live = kube.get(res, md.get("namespace"), md["name"]) or {}
            ready, failed, words = rollout_status(live)
            label = object_label(obj)
            if failed:
                raise ApplyError(f"cluster {cluster}: {label} rollout failed: {words}")
            if ready:
                ctx.console.say(f"  {label} ready ({words})")
                continue
            if last.get(label) != words:
                ctx.console.say(f"  {label}: {words}")
                last[label] = words
            still.append((res, obj))
        pending = still
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(
                f"{object_label(obj)} ({last.get(object_label(obj), '')})" for _r, obj in pending
            )
            raise ApplyError(
                f"cluster {cluster}: not rolled out after {o.timeout:.0f}s: {names} "
                "(rerun apply to keep waiting, or raise --timeout)"
            )
        o.retry.sleep(o.poll_interval)
