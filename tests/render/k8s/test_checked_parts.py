"""manifests.yaml is parsed back once, by parts: each object when it is rendered, then only
the joints at write time; ``build --verify`` still parses the whole file.

The write stage trusts :attr:`Artifact.checked_documents` instead of parsing 15 MB again,
so these tests pin both halves of that proof: a broken part never gets that far (the
render raises), and a file whose joints do not match its claim is refused, as is a broken
file under ``--verify`` whatever it claims.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import yaml

from ai4ec.errors import RenderError
from ai4ec.pipeline import check_platform, render_platforms
from ai4ec.render.artifact import Artifact
from ai4ec.render.k8s.objects import parse_objects
from ai4ec.write import verify_artifact

from ...conftest import SAMPLES

HEAD = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n  namespace: n\n"


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        # After the identity: the event read that finds kind and name stops before it.
        ("data: [unclosed\n", "does not parse back"),
        ("data:\n  a: 'open\n", "does not parse back"),
        ("data:\n  a: 1\n a: 2\n", "does not parse back"),
        # A second document inside one part would slip past the split and the sort.
        ("--- {kind: Namespace}\n", "document marker"),
        ("...\n", "document marker"),
    ],
)
def test_a_broken_part_is_a_render_error(tail: str, problem: str) -> None:
    with pytest.raises(RenderError) as err:
        parse_objects("chart secret.yaml of api1", HEAD + tail)
    assert problem in str(err.value)
    assert "chart secret.yaml of api1" in str(err.value)
    assert err.value.diagnostics[0].code == "E-RENDER-PARSE"


def _manifests(*bodies: str, header: str = "# generated\n", claim: int | None = None) -> Artifact:
    content = header + "".join(f"---\n{b}\n" for b in bodies)
    n = len(bodies) if claim is None else claim
    return Artifact(PurePosixPath("k8s/c/manifests.yaml"), content.encode(), checked_documents=n)


def test_joints_that_hold_pass_without_a_parse() -> None:
    verify_artifact(_manifests("kind: A", "kind: B\nx: |\n  ---\n  text"))


@pytest.mark.parametrize(
    "artifact",
    [
        _manifests("kind: A", "kind: B", claim=3),
        _manifests("kind: A", "kind: B\n---\nkind: C"),
        _manifests("kind: A", "kind: B\n...\n"),
        _manifests("kind: A", header="# generated\nkind: stray\n"),
        _manifests("kind: A", header="# a name with a\u2028break: in it\n"),
        _manifests("kind: A", header="%YAML 1.1\n"),
    ],
    ids=["count", "extra-start", "extra-end", "content-in-header", "odd-break", "directive"],
)
def test_joints_that_do_not_hold_are_refused(artifact: Artifact) -> None:
    with pytest.raises(RenderError, match="does not parse"):
        verify_artifact(artifact)


def test_verify_parses_a_checked_file_whole() -> None:
    """``--verify`` (and so CI and the goldens) does not take the renderer's word for it."""
    broken = _manifests("kind: [unclosed")
    verify_artifact(broken)  # the claim is trusted by a plain build
    with pytest.raises(RenderError, match="does not parse"):
        verify_artifact(broken, full=True)


def test_a_rendered_manifests_file_claims_exactly_its_documents(renders: list[str]) -> None:
    """The claim the k8s target makes is true: the full parse finds as many documents."""
    result = check_platform(SAMPLES / "camera-trap" / "platform.yaml")
    files = [
        a
        for rendered, _ in render_platforms(result)
        for a in rendered.artifacts
        if a.path.name == "manifests.yaml"
    ]
    assert files and renders, "rendered, not served from the render cache"
    for artifact in files:
        docs = list(yaml.safe_load_all(artifact.content.decode()))
        assert artifact.checked_documents == len(docs) > 10
        assert all(isinstance(d, dict) and d.get("kind") for d in docs)
        verify_artifact(artifact)
        verify_artifact(artifact, full=True)


def test_checked_parts_do_not_change_equality(tmp_path: Path) -> None:
    """A render-cache hit (no claim) is the same artifact as a fresh render (a claim)."""
    del tmp_path
    a = Artifact(PurePosixPath("k8s/c/manifests.yaml"), b"---\nkind: A\n", checked_documents=1)
    assert a == Artifact(PurePosixPath("k8s/c/manifests.yaml"), b"---\nkind: A\n")
