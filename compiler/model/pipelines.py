"""Pipelines: steps expanded (nested pipelines inlined, cycles reported) and linked to APIs."""

from __future__ import annotations

from dataclasses import replace

from ..load import JsonPath, format_path
from .context import ModelContext
from .defaults import (
    byte_size,
    read_auth,
    read_cors,
    read_tasks,
)
from .refs import (
    find_api,
    resolve_pipeline,
)
from .rules import unique
from .types import (
    Api,
    Mode,
    Pipeline,
    PipelineStep,
)


def read_pipelines(ctx: ModelContext, apis: list[Api]) -> list[Pipeline]:
    """Every pipeline with nested pipelines expanded; cycles and bad steps reported."""
    raw = ctx.data.get("pipelines", [])
    unique(
        ctx,
        [f"{p['name']}-{p['version']}" for p in raw],
        ("pipelines",),
        "pipeline (name + version)",
    )
    by_name: dict[str, list[int]] = {}
    for i, p in enumerate(raw):
        by_name.setdefault(p["name"], []).append(i)
    expanded: dict[int, list[PipelineStep] | None] = {}
    current: dict[int, int] = {}  # pipeline index -> the step being expanded now
    reported: set[frozenset[int]] = set()

    def report_cycle(members: tuple[int, ...], step_of: dict[int, int]) -> None:
        """One error at every step that closes the cycle, each naming the whole loop.

        Which reference the user just added cannot be known, so each one is shown where
        it is written; reporting only where the walk noticed the loop pointed at the far
        end, often not the line that was edited.
        """
        if frozenset(members) in reported:
            return
        reported.add(frozenset(members))
        loop = " -> ".join(raw[k]["name"] for k in (*members, members[0]))
        for n, k in enumerate(members):
            nxt = members[(n + 1) % len(members)]
            ctx.report(
                "E-PIPELINE-CYCLE",
                f"pipeline {raw[k]['name']!r} includes {raw[nxt]['name']!r}, "
                f"which leads back to it: {loop}",
                ("pipelines", k, "steps", step_of[k], "pipeline"),
                "remove one of these pipeline steps to break the loop",
            )

    def expand(i: int, stack: tuple[int, ...]) -> list[PipelineStep] | None:
        if i in expanded:
            return expanded[i]
        p = raw[i]
        steps: list[PipelineStep] | None = []
        for j, s in enumerate(p["steps"]):
            spath: JsonPath = ("pipelines", i, "steps", j)
            if "pipeline" in s:
                target = resolve_pipeline(ctx, s, by_name, raw, spath)
                if target is None:
                    steps = None
                    continue
                if target in stack or target == i:
                    members = (*stack[stack.index(target) :], i) if target in stack else (i,)
                    report_cycle(members, {**current, i: j})
                    steps = None
                    continue
                current[i] = j
                sub = expand(target, (*stack, i))
                if sub is None or steps is None:
                    steps = None
                    continue
                steps.extend(sub)
                continue
            api = find_api(ctx, s["api"], s.get("version"), apis, (*spath, "api"), "step")
            if api is None:
                steps = None
                continue
            rel = s["endpoint"].rstrip("/") or "/"
            ep = next((e for e in api.endpoints if e.path == rel), None)
            if ep is None:
                ctx.report(
                    "E-REF-ENDPOINT",
                    f"API {api.id!r} has no endpoint {rel!r}",
                    (*spath, "endpoint"),
                    f"its endpoints: {', '.join(e.path for e in api.endpoints)}",
                )
                steps = None
                continue
            if ep.mode is not Mode.ASYNC:
                ctx.report(
                    "E-PIPELINE-STEP-SYNC",
                    f"step {api.id} {rel} is a sync endpoint; pipeline steps are "
                    "dispatched as tasks",
                    (*spath, "endpoint"),
                    f"add an async endpoint to {api.id} for pipelines (mode: async) and "
                    "name it here; making this one async would change what its sync "
                    "callers get",
                )
                steps = None
                continue
            if steps is not None:
                steps.append(PipelineStep(api=api.id, endpoint_path=ep.backend_path))
        expanded[i] = steps
        return steps

    out: list[Pipeline] = []
    for i, p in enumerate(raw):
        steps = expand(i, ())
        if steps is None:
            continue
        paths = [s.endpoint_path for s in steps]
        dup = next((x for x in paths if paths.count(x) > 1), None)
        if dup is not None:
            ctx.report(
                "E-PIPELINE-CYCLE",
                f"pipeline {p['name']!r} visits {dup} twice; the task manager routes by "
                "endpoint, so the task would loop",
                ("pipelines", i, "steps"),
                "each endpoint may appear once per pipeline",
            )
            continue
        if len(steps) < 2:
            ctx.report(
                "W-PIPELINE-SHORT",
                f"pipeline {p['name']!r} has a single step; the API itself would do",
                ("pipelines", i, "steps"),
                warning=True,
            )
        out.append(
            Pipeline(
                id=f"{p['name']}-{p['version']}",
                name=p["name"],
                version=p["version"],
                display_name=p.get("displayName", f"{p['name']} {p['version']}"),
                description=p.get("description", ""),
                path=(p.get("path") or f"/{p['version']}/{p['name']}").rstrip("/"),
                steps=tuple(steps),
                max_body_bytes=byte_size(p.get("maxBodySize", "4Mi")),
                tasks=read_tasks(p.get("tasks")),
                products=tuple(p.get("products", [])),
                auth=read_auth(p.get("auth")),
                cors=read_cors(p.get("cors")),
                upstream_status_codes=(p.get("compatibility") or {}).get(
                    "upstreamStatusCodes", False
                ),
                json_path=format_path(("pipelines", i)),
            )
        )
    return out


def link_pipelines(apis: list[Api], pipelines: list[Pipeline]) -> list[Api]:
    """Tell each API which API follows it in each pipeline (for NEXT_API_NAME...)."""
    nxt: dict[str, set[tuple[str, str]]] = {}
    for p in pipelines:
        for cur, following in zip(p.steps, p.steps[1:], strict=False):
            nxt.setdefault(cur.api, set()).add((cur.endpoint_path, following.api))
    if not nxt:
        return apis
    return [replace(a, next_in_pipeline=tuple(sorted(nxt.get(a.id, ())))) for a in apis]
