"""``apply --prune`` and API Management (local HTTPS ARM fake, real azure-core client).

ARM deployments are incremental, so an API removed from platform.yaml stayed published,
pointing at backends Kubernetes prune had deleted. The APIM step now lists the service's
children and deletes those ai4ec created (the ``ai4ec`` tag linked to APIs and products,
the tag on named values, the ``ai4ec:`` description of backends) that the build no
longer has, under the same confirmation as Kubernetes prune. The ARM fake refuses what
API Management refuses: a DELETE without ``If-Match``, a named value or backend a
remaining policy uses, any child of a service that does not exist.
"""

from __future__ import annotations

import copy
from typing import Any

from ai4ec.apply import prune
from ai4ec.errors import ApplyError

from .conftest import Project, run, synthetic_template, write_template
from .support import FakeAzure, FakeKube, Tls

SVC = "Microsoft.ApiManagement/service"


def _rid(name: str) -> str:
    return "[resourceId(" + ", ".join(f"'{x}'" for x in name.split("|")) + ")]"


def _owned_template(project: Project) -> tuple[dict[str, Any], str]:
    """The synthetic template plus what the APIM target marks as ai4ec's: the tag, an
    API ``bye-v1`` (linked, with an operation and a policy using named value
    ``ai4ec-old``), that tagged named value, and a product ``old`` linked to the tag."""
    template = synthetic_template(project.platform_file)
    apim = next(r["name"] for r in template["resources"] if r["type"] == SVC)

    def res(kind: str, name: str, props: Any = None, deps: tuple[str, ...] = ()) -> None:
        r: dict[str, Any] = {"type": f"{SVC}/{kind}", "apiVersion": "2024-05-01", "name": name}
        if props is not None:
            r["properties"] = props
        if deps:
            r["dependsOn"] = list(deps)
        template["resources"].append(r)

    svc = _rid(f"{SVC}|{apim}")
    tag = _rid(f"{SVC}/tags|{apim}|ai4ec")
    res("tags", f"{apim}/ai4ec", {"displayName": "ai4ec"}, (svc,))
    res("apis/tags", f"{apim}/hello-v1/ai4ec", None, (tag,))
    res(
        "namedValues",
        f"{apim}/ai4ec-old",
        {"displayName": "ai4ec-old", "value": "x", "tags": ["ai4ec"]},
        (svc,),
    )
    res("apis", f"{apim}/bye-v1", {"path": "v1/bye", "protocols": ["https"]}, (svc,))
    bye = _rid(f"{SVC}/apis|{apim}|bye-v1")
    res("apis/tags", f"{apim}/bye-v1/ai4ec", None, (bye, tag))
    res("apis/operations", f"{apim}/bye-v1/wave", {"method": "POST"}, (bye,))
    res(
        "apis/policies",
        f"{apim}/bye-v1/policy",
        {"format": "xml", "value": "<policies><inbound>{{ai4ec-old}}</inbound></policies>"},
        (bye, _rid(f"{SVC}/namedValues|{apim}|ai4ec-old")),
    )
    res("products", f"{apim}/old", {"displayName": "old"}, (svc,))
    res("products/tags", f"{apim}/old/ai4ec", None, (_rid(f"{SVC}/products|{apim}|old"), tag))
    return template, apim


def _without(template: dict[str, Any], *names: str) -> dict[str, Any]:
    out = copy.deepcopy(template)
    out["resources"] = [
        r for r in out["resources"] if not any(str(r["name"]).startswith(n) for n in names)
    ]
    return out


def _seed_hand_made(azure: FakeAzure, apim: str) -> None:
    """An API and a named value someone created in the portal: no ai4ec marker."""
    base = f"/subscriptions/{azure.subscription}/resourcegroups/my-platform-rg/providers/"
    svc = f"{base}microsoft.apimanagement/service/{apim}".lower()
    azure.resources[f"{svc}/apis/manual"] = {
        "type": f"{SVC}/apis",
        "name": f"{apim}/manual",
        "properties": {"path": "manual"},
    }
    azure.resources[f"{svc}/namedvalues/manual-nv"] = {
        "type": f"{SVC}/namedValues",
        "name": f"{apim}/manual-nv",
        "properties": {"displayName": "manual-nv", "value": "y"},
    }


def _apim_keys(azure: FakeAzure) -> set[str]:
    return {k.rsplit("/service/", 1)[1] for k in azure.resources if "/service/" in k}


def test_prune_deletes_only_apim_objects_ai4ec_created(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """The API, its operation and policy, the named value and the product the build
    dropped go; the hand-made API and named value stay; named values go last."""
    azure, kube = fakes
    template, apim = _owned_template(project)
    write_template(project.env_dir, template)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    _seed_hand_made(azure, apim)
    write_template(
        project.env_dir,
        _without(template, f"{apim}/bye-v1", f"{apim}/ai4ec-old", f"{apim}/old"),
    )
    plan = run(azure, tls, project.env_dir, plan=True, prune=True)
    assert plan.error is None, plan.text
    assert f"- {SVC}/apis {apim}/bye-v1 (prune)" in plan.text
    assert f"- {SVC}/namedValues {apim}/ai4ec-old (prune)" in plan.text
    assert f"- {SVC}/products {apim}/old (prune)" in plan.text
    assert "manual" not in plan.text
    assert not [w for w in azure.writes() if w.startswith("DELETE")]

    r = run(azure, tls, project.env_dir, yes=True, prune=True)
    assert r.error is None, r.text
    deletes = [w.rsplit("/service/", 1)[1] for w in azure.writes() if w.startswith("DELETE")]
    assert deletes == [
        f"{apim}/apis/bye-v1",
        f"{apim}/products/old",
        f"{apim}/namedValues/ai4ec-old",
    ]
    keys = _apim_keys(azure)
    assert f"{apim}/apis/manual".lower() in keys
    assert f"{apim}/namedvalues/manual-nv".lower() in keys
    assert f"{apim}/apis/hello-v1".lower() in keys
    assert not any("bye-v1" in k or "ai4ec-old" in k or "/products/old" in k for k in keys)
    assert azure.violations == [] and kube.violations == []

    again = run(azure, tls, project.env_dir, yes=True, prune=True)
    assert again.error is None, again.text
    assert not [w for w in azure.writes() if w.startswith("DELETE")][len(deletes) :]


def test_prune_of_an_operation_in_a_kept_api(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """An operation dropped from an API the build keeps is deleted, the API is not."""
    azure, _kube = fakes
    template, apim = _owned_template(project)
    write_template(project.env_dir, template)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    write_template(project.env_dir, _without(template, f"{apim}/bye-v1/wave"))
    r = run(azure, tls, project.env_dir, yes=True, prune=True)
    assert r.error is None, r.text
    deletes = [w.rsplit("/service/", 1)[1] for w in azure.writes() if w.startswith("DELETE")]
    assert deletes == [f"{apim}/apis/bye-v1/operations/wave"]


def test_apim_prune_asks_first_and_deletes_nothing_when_refused(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    azure, _kube = fakes
    template, apim = _owned_template(project)
    write_template(project.env_dir, template)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    write_template(project.env_dir, _without(template, f"{apim}/old"))
    r = run(azure, tls, project.env_dir, answers=[False], prune=True)
    assert isinstance(r.error, ApplyError)
    assert "apim: delete the 1 object(s) marked '-' above?" in r.text
    assert "deletion not confirmed" in str(r.error)
    assert not [w for w in azure.writes() if w.startswith("DELETE")]
    assert f"{apim}/products/old".lower() in _apim_keys(azure)


def test_without_prune_apim_leftovers_stay(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    azure, _kube = fakes
    template, apim = _owned_template(project)
    write_template(project.env_dir, template)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    write_template(project.env_dir, _without(template, f"{apim}/old"))
    r = run(azure, tls, project.env_dir, yes=True)
    assert r.error is None, r.text
    assert not [w for w in azure.writes() if w.startswith("DELETE")]


def test_owner_marker_is_the_apim_targets() -> None:
    """apply reads the marker the APIM target writes (no server)."""
    from ai4ec.render.apim import resources

    assert prune.OWNER_TAG == resources.OWNER_TAG
    src = (resources.__file__ or "").replace(".pyc", ".py")
    with open(src, encoding="utf-8") as f:
        assert f'"description": f"{prune.OWNER_DESCRIPTION} ' in f.read()


def test_prune_of_policy_fragments(
    fakes: tuple[FakeAzure, FakeKube], tls: Tls, project: Project
) -> None:
    """Fragments (issue 15): ai4ec's (described ``ai4ec: ...``) that the build dropped
    go, after the APIs whose policies included them; one a hand-made API's policy still
    includes stays, with a note (the fake, like APIM, refuses deleting a fragment in
    use); a fragment made by hand is never listed."""
    azure, _kube = fakes
    template, apim = _owned_template(project)
    svc = _rid(f"{SVC}|{apim}")
    for name in ("ai4ec-old-check", "ai4ec-shared"):
        template["resources"].append(
            {
                "type": f"{SVC}/policyFragments",
                "apiVersion": "2024-05-01",
                "name": f"{apim}/{name}",
                "properties": {
                    "description": "ai4ec: test fragment",
                    "format": "xml",
                    "value": "<fragment><set-header name='x' exists-action='delete' /></fragment>",
                },
                "dependsOn": [svc],
            }
        )
    # bye-v1's operation policy includes the fragment the build drops with it
    template["resources"].append(
        {
            "type": f"{SVC}/apis/operations/policies",
            "apiVersion": "2024-05-01",
            "name": f"{apim}/bye-v1/wave/policy",
            "properties": {
                "format": "xml",
                "value": '<policies><inbound><include-fragment fragment-id="ai4ec-old-check" />'
                "</inbound></policies>",
            },
            "dependsOn": [
                _rid(f"{SVC}/apis/operations|{apim}|bye-v1|wave"),
                _rid(f"{SVC}/policyFragments|{apim}|ai4ec-old-check"),
            ],
        }
    )
    write_template(project.env_dir, template)
    assert run(azure, tls, project.env_dir, yes=True).error is None
    _seed_hand_made(azure, apim)
    base = f"/subscriptions/{azure.subscription}/resourcegroups/my-platform-rg/providers/"
    root = f"{base}microsoft.apimanagement/service/{apim}".lower()
    azure.resources[f"{root}/apis/manual/policies/policy"] = {
        "type": f"{SVC}/apis/policies",
        "name": f"{apim}/manual/policy",
        "properties": {
            "format": "xml",
            "value": '<policies><inbound><include-fragment fragment-id="ai4ec-shared" />'
            "</inbound></policies>",
        },
    }
    azure.resources[f"{root}/policyfragments/manual-fragment"] = {
        "type": f"{SVC}/policyFragments",
        "name": f"{apim}/manual-fragment",
        "properties": {"format": "xml", "value": "<fragment />"},
    }
    write_template(
        project.env_dir,
        _without(template, f"{apim}/bye-v1", f"{apim}/ai4ec-old-check", f"{apim}/ai4ec-shared"),
    )
    plan = run(azure, tls, project.env_dir, plan=True, prune=True)
    assert plan.error is None, plan.text
    assert f"- {SVC}/policyFragments {apim}/ai4ec-old-check (prune)" in plan.text
    assert "policy fragment ai4ec-shared is no longer built but still included: kept" in plan.text
    assert "manual-fragment" not in plan.text

    r = run(azure, tls, project.env_dir, yes=True, prune=True)
    assert r.error is None, r.text
    deletes = [w.rsplit("/service/", 1)[1] for w in azure.writes() if w.startswith("DELETE")]
    assert deletes.index(f"{apim}/apis/bye-v1") < deletes.index(
        f"{apim}/policyFragments/ai4ec-old-check"
    )
    keys = _apim_keys(azure)
    assert f"{apim}/policyfragments/ai4ec-shared" in keys
    assert f"{apim}/policyfragments/manual-fragment" in keys
    assert f"{apim}/policyfragments/ai4ec-old-check" not in keys
    assert azure.violations == []
