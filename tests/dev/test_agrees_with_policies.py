"""The local gateway and the rendered APIM policies agree, case by case.

The policies are rendered from the same model (``render_apim``) and read as XML: each
operation policy's ``return-response`` elements give the status code, body and headers
APIM answers with, its size check gives the byte limit, and each product policy gives the
call limit. The same requests then go to the running gateway, which must answer with
exactly those codes, bodies and headers. A change to a policy template that the gateway
does not follow fails here.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ai4ec.dev.redis import redis_server_binary
from ai4ec.dev.session import DevSession
from ai4ec.render.apim import render_apim
from ai4ec.render.artifact import RenderContext

from ..conftest import SAMPLES
from ..render.apim.support import as_run
from .conftest import platform_of, run_session

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server")

CAMERA_TRAP = SAMPLES / "camera-trap" / "platform.yaml"
KEY = "Ocp-Apim-Subscription-Key"


@dataclass(frozen=True)
class Answer:
    """One ``return-response`` of a policy."""

    status: int
    body: str | None
    headers: dict[str, str]


def _answers(policy: ET.Element) -> dict[int, Answer]:
    out: dict[int, Answer] = {}
    for ret in policy.iter("return-response"):
        status_el = ret.find("set-status")
        assert status_el is not None
        body = ret.find("set-body")
        headers = {
            h.get("name", ""): "".join((h.find("value").text or "").split())  # type: ignore[union-attr]
            for h in ret.findall("set-header")
            if h.find("value") is not None
        }
        out[int(status_el.get("code", "0"))] = Answer(
            int(status_el.get("code", "0")), body.text if body is not None else None, headers
        )
    return out


def _size_limit(policy: ET.Element) -> int:
    """The byte limit of the size-check ``choose`` (``ai4ec-body-bytes > NL``)."""
    for when in policy.iter("when"):
        found = re.search(r"ai4ec-body-bytes\"\] > (\d+)L", when.get("condition", ""))
        if found:
            return int(found.group(1))
    raise AssertionError("no size check in the policy")


def _rendered() -> dict[str, ET.Element]:
    platform = platform_of(CAMERA_TRAP)
    result = render_apim(platform, RenderContext(CAMERA_TRAP.name, str(CAMERA_TRAP.parent)))
    # As the gateway runs them: fragments included, their variables read.
    files = as_run({str(a.path): a.content for a in result.artifacts})
    return {
        path: ET.fromstring(c.decode("utf-8")) for path, c in files.items() if path.endswith(".xml")
    }


def test_operation_policies_and_gateway_agree(tmp_path: Path) -> None:
    """Size limit, bad JSON and the task-created answer: same code, body and headers."""
    policies = _rendered()
    ops = {
        path: root
        for path, root in policies.items()
        if "/policies/" in path and not path.endswith(("api.xml", "global.xml", "get-task.xml"))
    }
    assert len(ops) == 4, sorted(ops)

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        assert s.plan is not None
        by_policy = {
            op.policy_path: (api, op)
            for api in s.plan.apis
            for op in api.operations
            if op.policy_path
        }
        for path, root in sorted(ops.items()):
            api, op = by_policy[path]
            url = f"{s.gateway_url}/{api.path}{op.url_template}"
            headers = {KEY: s.keys["partner"]}
            answers = _answers(root)
            limit = _size_limit(root)
            async with c.post(
                url, data=io.BytesIO(b"{" + b" " * limit + b"}"), headers=headers
            ) as r:
                assert r.status == 413 and 413 in answers, path
                assert await r.text() == answers[413].body, path
            if not op.is_async:
                continue
            async with c.post(url, data=b"[1, 2", headers=headers) as r:
                assert r.status == 400, path
                assert await r.text() == answers[400].body, path
            accepted = next(a for code, a in answers.items() if code in (200, 202))
            async with c.post(url, json={"ok": True}, headers=headers) as r:
                assert r.status == accepted.status, path
                for name in accepted.headers:
                    assert name in r.headers, (path, name)
                assert r.headers["Retry-After"] == accepted.headers["Retry-After"], path
                task = await r.json()
                assert r.headers["Location"].endswith(task["TaskId"]), path

    run_session(CAMERA_TRAP, tmp_path, scenario)


def test_product_policies_and_gateway_agree(tmp_path: Path) -> None:
    """The call after a product's rate-limit is 429 with Retry-After, not one call sooner."""
    policies = _rendered()

    async def scenario(s: DevSession, c: aiohttp.ClientSession) -> None:
        for product, api_path in (("public", "v1/camera-trap/detector-sync/detect"),):
            root = policies[f"apim/products/{product}.xml"]
            limit = next(root.iter("rate-limit-by-key"))
            calls = int(limit.get("calls", "0"))
            codes = []
            for _ in range(calls + 1):
                async with c.post(
                    f"{s.gateway_url}/{api_path}", json={}, headers={KEY: s.keys[product]}
                ) as r:
                    codes.append(r.status)
                    last = dict(r.headers)
            assert codes == [200] * calls + [429], product
            assert 0 < int(last["Retry-After"]) <= int(limit.get("renewal-period", "0"))

    run_session(CAMERA_TRAP, tmp_path, scenario)
