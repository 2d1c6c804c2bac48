"""`ai4ec diff` says first what clients see: public routes removed, moved, or stricter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ai4ec.diff.clients import client_changes, public_routes

from .conftest import Repo

RepoFactory = Callable[[str], Repo]


def _clients(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["route"]: c for e in report["environments"] for c in e["clients"]}


def test_rename_shows_the_public_path_move_and_tasks_in_flight(repo_factory: RepoFactory) -> None:
    """Renaming the detector moves its public path: removed + added, with in-flight tasks."""
    repo = repo_factory("camera-trap")
    repo.edit(
        lambda t: t.replace("  - name: detector\n", "  - name: finder\n", 1).replace(
            "      - api: detector\n", "      - api: finder\n", 1
        )
    )
    code, report = repo.json()
    assert code == 2
    clients = _clients(report)
    gone = clients["POST /v1/camera-trap/detector/detect"]
    assert gone["action"] == "removed" and gone["breaking"]
    assert any("now served at POST /v1/camera-trap/finder/detect" in d for d in gone["details"])
    assert any("tasks in flight" in d for d in gone["details"])
    assert clients["POST /v1/camera-trap/finder/detect"]["action"] == "added"
    text = repo.run().stdout
    assert text.index("What clients see") < text.index("apps/Deployment")
    apim_api = next(
        c
        for e in report["environments"]
        for c in e["changes"]
        if c["kind"] == "Microsoft.ApiManagement/service/apis"
    )
    paths = [f for f in apim_api["fields"] if f["path"] == "properties.path"]
    assert paths, "a rename must not hide the public path change"


def test_stricter_limits_and_auth_are_breaking(repo_factory: RepoFactory) -> None:
    repo = repo_factory("camera-trap")
    repo.edit(
        lambda t: t.replace(
            "rateLimit: {calls: 60, period: 60s}", "rateLimit: {calls: 10, period: 60s}"
        )
    )
    _code, report = repo.json()
    changed = _clients(report)["POST /v1/camera-trap/detector/detect"]
    assert changed["action"] == "changed" and changed["breaking"]
    assert any(
        "partner: rate 60/60s" in d and "partner: rate 10/60s" in d for d in changed["details"]
    )
    markdown = repo.run("--format", "markdown").stdout
    assert "What clients see" in markdown and "breaks callers" in markdown


def test_public_routes_of_a_missing_side_is_empty_and_added_env_lists_all() -> None:
    from ai4ec.pipeline import check_platform, require_ok

    from ..conftest import SAMPLES

    platform = require_ok(check_platform(SAMPLES / "camera-trap" / "platform.yaml"))[0]
    routes = public_routes(platform)
    assert "POST /v1/camera-trap/species/" in routes
    assert public_routes(None) == {}
    added = client_changes(None, platform)
    assert {c.action for c in added} == {"added"} and len(added) == len(routes)
    assert client_changes(platform, platform) == ()
