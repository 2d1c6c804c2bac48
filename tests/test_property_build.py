"""Valid means buildable: every platform ``validate`` accepts, ``build`` renders (issue 12).

Hypothesis mutates the samples - adds, removes and copies APIs, endpoints, products and
pipelines, switches modes, scaling, pools, KEDA and CORS - drawing user values from the
patterns of schemas/platform.schema.json (so a CORS origin may be ``https://{{x}}``, as
the schema allows). Each mutant that validates is rendered in memory through the library
(no subprocess); any render failure is an ai4ec bug: a rule missing from validate.

Mutants that do not validate are fine (the corpus tests what validate says); the test
only insists that enough of them validate for the property to mean something.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from ai4ec.pipeline import check_platform, render_platforms

from .conftest import ROOT, sample_files

SCHEMA = json.loads((ROOT / "schemas" / "platform.schema.json").read_text(encoding="utf-8"))
DEFS = SCHEMA["$defs"]
SAMPLES = {p.parent.name: p for p in sample_files()}
SAMPLE_DATA = {n: yaml.safe_load(p.read_text(encoding="utf-8")) for n, p in SAMPLES.items()}

Draw = Callable[[st.SearchStrategy[Any]], Any]


def _pattern(pattern: str, max_size: int = 24) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) <= max_size)


ORIGINS = st.one_of(
    _pattern(DEFS["cors"]["properties"]["allowedOrigins"]["items"]["pattern"]),
    st.sampled_from(["https://{{x}}.example.org", "*", "https://ok.example.org"]),
)
HEADERS = st.one_of(st.just("*"), st.text(alphabet="Ab9-", min_size=1, max_size=8)).filter(
    lambda h: bool(
        re.fullmatch(DEFS["cors"]["properties"]["allowedHeaders"]["items"]["pattern"], h)
    )
)
#: Path segments from the characters the schema's path pattern allows.
SEGMENT = st.text(alphabet="az09._~!$&'()*+,;=:@%-", min_size=1, max_size=5)
PATHS = st.one_of(
    st.lists(SEGMENT, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["/detect", "/", "/it's", "/a/b", "/x&y"]),
).filter(lambda p: bool(re.fullmatch(DEFS["path"]["pattern"], p)))
MODES = st.sampled_from(["sync", "async"])
METHODS = st.lists(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), min_size=1, unique=True)
PERIODS = st.sampled_from(["1s", "30s", "60s", "5m", "10m", "1h", "1d", "30d"])
TEXT = st.text(alphabet="ab@{}()/:.-", min_size=1, max_size=12)


def _api(data: dict[str, Any], draw: Draw) -> dict[str, Any] | None:
    apis = data.get("apis") or []
    return draw(st.sampled_from(apis)) if apis else None


def add_cors(data: dict[str, Any], draw: Draw) -> None:
    target = draw(st.sampled_from(["apis", "pipelines"]))
    entries = data.get(target) or []
    if not entries:
        return
    entry = draw(st.sampled_from(entries))
    cors: dict[str, Any] = {"allowedOrigins": draw(st.lists(ORIGINS, min_size=1, max_size=3))}
    if draw(st.booleans()):
        cors["allowedHeaders"] = draw(st.lists(HEADERS, min_size=1, max_size=2))
    if draw(st.booleans()):
        cors["allowCredentials"] = draw(st.booleans())
    entry["cors"] = cors


def add_entra(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None:
        api["auth"] = {
            "entraId": {
                "tenantId": "11111111-2222-3333-4444-555555555555",
                "audiences": draw(st.lists(TEXT, min_size=1, max_size=2)),
                "requiredRoles": draw(st.lists(TEXT, max_size=2)),
            }
        }


def add_endpoint(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None:
        endpoint: dict[str, Any] = {"path": draw(PATHS), "methods": draw(METHODS)}
        if draw(st.booleans()):
            endpoint["mode"] = draw(MODES)
        if draw(st.booleans()):
            endpoint["timeout"] = draw(st.sampled_from(["5s", "30s", "4m", "10m", "2h"]))
        api["endpoints"].append(endpoint)


def remove_endpoint(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None and len(api["endpoints"]) > 1:
        api["endpoints"].pop(draw(st.integers(0, len(api["endpoints"]) - 1)))


def change_mode(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None:
        api["mode"] = draw(MODES)
        for endpoint in api["endpoints"]:
            if draw(st.booleans()):
                endpoint.pop("mode", None)


def change_scaling(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is None:
        return
    scaling: dict[str, Any] = {
        "minReplicas": draw(st.integers(0, 3)),
        "maxReplicas": draw(st.integers(1, 6)),
    }
    for key, values in (
        ("pendingTasksPerReplica", st.integers(1, 8)),
        ("cpuUtilization", st.integers(10, 95)),
        ("memoryUtilization", st.integers(10, 95)),
        ("requestsPerSecond", st.integers(1, 100)),
    ):
        if draw(st.booleans()):
            scaling[key] = draw(values)
    api["scaling"] = scaling


def change_pool(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is None:
        return
    clusters = data["clusters"]
    cluster = next((c for c in clusters if c["name"] == api.get("cluster")), clusters[0])
    names = [p["name"] for p in cluster.get("pools", [])]
    choice = draw(st.sampled_from([None, *names]))
    if choice is None:
        api.pop("pool", None)
    else:
        api["pool"] = choice


def change_pools(data: dict[str, Any], draw: Draw) -> None:
    cluster = draw(st.sampled_from(data["clusters"]))
    for pool in cluster.get("pools", []):
        low = draw(st.integers(0, 2))
        pool["autoscale"] = {"min": low, "max": low + draw(st.integers(0, 4))}
    if draw(st.booleans()):
        cluster["keda"] = {"enabled": draw(st.booleans())}


def change_resources(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None:
        res = api.setdefault("resources", {})
        res["cpu"] = draw(st.sampled_from(["250m", "500m", "1", "2", "4"]))
        res["memory"] = draw(st.sampled_from(["512Mi", "1Gi", "4Gi", "16Gi"]))


def copy_api(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None:
        twin = copy.deepcopy(api)
        twin["version"] = draw(st.sampled_from(["v7", "v8", "v9beta"]))
        for key in ("basePath", "apiPrefix"):
            twin.pop(key, None)
        data["apis"].append(twin)


def remove_api(data: dict[str, Any], draw: Draw) -> None:
    apis = data.get("apis") or []
    if len(apis) > 1:
        apis.pop(draw(st.integers(0, len(apis) - 1)))


def remove_pipeline(data: dict[str, Any], draw: Draw) -> None:
    pipelines = data.get("pipelines") or []
    if pipelines:
        pipelines.pop(draw(st.integers(0, len(pipelines) - 1)))


def change_product(data: dict[str, Any], draw: Draw) -> None:
    products = data.get("products") or []
    if not products:
        return
    product = draw(st.sampled_from(products))
    product["rateLimit"] = {"calls": draw(st.integers(1, 100)), "period": draw(PERIODS)}
    if draw(st.booleans()):
        product["quota"] = {"calls": draw(st.integers(100, 10**6)), "period": draw(PERIODS)}
    else:
        product.pop("quota", None)


def add_product(data: dict[str, Any], draw: Draw) -> None:
    apis = data.get("apis") or []
    if apis:
        member = draw(st.sampled_from(apis))
        data.setdefault("products", []).append(
            {"name": "extra", "apis": [f"{member['name']}@{member['version']}"]}
        )


def rename_api(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is None:
        return
    old = (api["name"], api["version"])
    api["name"] = draw(_pattern(DEFS["apiName"]["pattern"], 30))
    api["version"] = draw(_pattern(DEFS["apiVersionName"]["pattern"], 40))
    for product in data.get("products") or []:
        product.get("apis", []).clear()
    for pipeline in data.get("pipelines") or []:
        for step in pipeline["steps"]:
            if step.get("api") == old[0]:
                step["api"] = api["name"]
                step["version"] = api["version"]


def change_texts(data: dict[str, Any], draw: Draw) -> None:
    target = draw(st.sampled_from(["apis", "pipelines", "products"]))
    entries = data.get(target) or []
    if entries:
        entry = draw(st.sampled_from(entries))
        entry[draw(st.sampled_from(["displayName", "description"]))] = draw(st.text(max_size=20))


def change_env(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None:
        api["env"] = {"SETTING": draw(st.one_of(st.text(max_size=20), st.booleans()))}


def change_ingress(data: dict[str, Any], draw: Draw) -> None:
    cluster = draw(st.sampled_from(data["clusters"]))
    ingress = cluster.setdefault("istio", {}).setdefault("ingress", {})
    if draw(st.booleans()):
        ingress["protocol"] = "http"
        ingress.pop("certificate", None)
    else:
        ingress["protocol"] = "https"
        ingress["certificate"] = {"keyVaultCertificate": "ingress-cert"}
        ingress["hosts"] = draw(st.sampled_from([["api.example.org"], ["*.example.org"]]))


def change_gpu(data: dict[str, Any], draw: Draw) -> None:
    api = _api(data, draw)
    if api is not None:
        api.setdefault("resources", {})["gpu"] = draw(st.integers(0, 2))
    cluster = draw(st.sampled_from(data["clusters"]))
    for pool in cluster.get("pools", []):
        if draw(st.booleans()):
            pool["spot"] = {"maxPrice": -1, "evictionPolicy": "Delete"}


def add_pipeline(data: dict[str, Any], draw: Draw) -> None:
    apis = data.get("apis") or []
    if not apis:
        return
    steps = [
        {
            "api": a["name"],
            "version": a["version"],
            "endpoint": draw(st.sampled_from(a["endpoints"]))["path"],
        }
        for a in draw(st.lists(st.sampled_from(apis), min_size=1, max_size=3))
    ]
    data.setdefault("pipelines", []).append(
        {"name": "chain", "version": "v1", "path": draw(PATHS), "steps": steps}
    )


MUTATIONS = [
    change_gpu,
    add_pipeline,
    rename_api,
    change_texts,
    change_env,
    change_ingress,
    add_cors,
    add_entra,
    add_endpoint,
    remove_endpoint,
    change_mode,
    change_scaling,
    change_pool,
    change_pools,
    change_resources,
    copy_api,
    remove_api,
    remove_pipeline,
    change_product,
    add_product,
]


@st.composite
def platforms(draw: Draw) -> tuple[str, dict[str, Any]]:
    """A sample with one to four mutations applied."""
    name = draw(st.sampled_from(sorted(SAMPLE_DATA)))
    data = copy.deepcopy(SAMPLE_DATA[name])
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4)):
        mutation(data, draw)
    return name, data


def test_what_validates_also_builds(tmp_path: Path) -> None:
    """Each mutant that validates renders; enough of them validate to make that mean something."""
    outcomes: Counter[str] = Counter()

    @settings(
        # AI4EC_PROPERTY_EXAMPLES=2000 for a long hunt; the default keeps the suite quick
        # and, derandomized, the same from run to run.
        max_examples=int(os.environ.get("AI4EC_PROPERTY_EXAMPLES", "60")),
        deadline=None,
        derandomize="AI4EC_PROPERTY_EXAMPLES" not in os.environ,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=platforms())
    def property_(case: tuple[str, dict[str, Any]]) -> None:
        name, data = case
        folder = tmp_path / name
        if not folder.exists():
            shutil.copytree(SAMPLES[name].parent, folder)
        path = folder / "platform.yaml"
        text = yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        result = check_platform(path)
        if not result.ok:
            outcome = "refused by validate"
        else:
            outcome = "validated"
        event(outcome)
        outcomes[outcome] += 1
        if outcome == "validated":
            note(text)
            render_platforms(result)  # any exception here is the bug this test looks for

    property_()
    # a generator whose every mutant fails validation would prove nothing
    assert outcomes["validated"] >= 10, outcomes
