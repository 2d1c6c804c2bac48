"""Objects of the Kubernetes room: identity read from the parsed document, not the text."""

from __future__ import annotations

import pytest

from ai4ec.errors import RenderError
from ai4ec.render.k8s.objects import KIND_ORDER, KubeObject, parse_objects

TWO_DOCS = """\
# Source: ai4ec-api/templates/service.yaml
---
apiVersion: v1
kind: Service
metadata:
  labels:
    name: not-the-name
  annotations: {a: "1", b: [x, y]}
  namespace: "apis"
  name: 'landcover-v1'
spec:
  ports: [{port: 80}]
---
# a comment-only document is dropped
---
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apis"}}
"""


def test_identity_comes_from_the_parsed_document() -> None:
    service, namespace = parse_objects("chart service.yaml", TWO_DOCS)
    # Quoting, flow style, key order and nested look-alike keys do not matter.
    assert (service.api_version, service.kind, service.namespace, service.name) == (
        "v1",
        "Service",
        "apis",
        "landcover-v1",
    )
    assert (namespace.kind, namespace.name, namespace.namespace) == ("Namespace", "apis", "")
    # The text is kept as rendered (without comment lines), never re-dumped.
    assert service.text.startswith("apiVersion: v1\nkind: Service\n")
    assert "ports: [{port: 80}]" in service.text


def test_kind_after_metadata_is_still_read() -> None:
    (obj,) = parse_objects("x", "metadata:\n  name: a\nkind: Secret\napiVersion: v1\n")
    assert (obj.kind, obj.name, obj.api_version) == ("Secret", "a", "v1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- not\n- an object\n", "not a Kubernetes object"),
        ("kind: [unclosed\n", "does not parse back"),
    ],
)
def test_a_broken_document_is_a_render_error_naming_its_source(text: str, problem: str) -> None:
    with pytest.raises(RenderError) as err:
        parse_objects("istio/gateway.yaml", text)
    assert "istio/gateway.yaml" in str(err.value)
    assert problem in str(err.value)
    assert err.value.diagnostics[0].code == "E-RENDER-PARSE"


def test_apply_key_ranks_known_kinds_first_and_unknown_last() -> None:
    def obj(kind: str, name: str = "n") -> KubeObject:
        return KubeObject(api_version="v1", kind=kind, name=name, namespace="ns", text="")

    assert obj("Namespace").apply_key < obj("Deployment").apply_key
    assert obj("VirtualService").apply_key < obj("SomethingNew").apply_key
    assert obj("SomethingNew").apply_key[0] == len(KIND_ORDER)
    assert obj("Service", "a").apply_key < obj("Service", "b").apply_key
