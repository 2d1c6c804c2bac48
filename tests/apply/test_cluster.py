"""``apply`` against a real Kubernetes cluster (the one ``KUBECONFIG`` points at).

Skipped unless ``KUBECONFIG`` is set and the cluster answers. The minimal sample is
applied for real (Kubernetes step only, Azure outputs from a file) into a namespace of
its own, applied again to show that nothing changes, and removed afterwards. The
sample's objects include SecretProviderClass, ScaledObject and Istio kinds, so the
cluster needs the Key Vault CSI driver, KEDA and Istio CRDs (AKS with its add-ons); the
test is skipped, naming what is missing, on a cluster without them.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from ai4ec.apply import ApplyOptions, Console, run_apply
from ai4ec.apply.builddir import load_build
from ai4ec.apply.kube import Kube
from ai4ec.apply.retry import RetrySettings
from ai4ec.pipeline import build_platform

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.cluster
def test_minimal_sample_on_a_real_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real kube-apiserver (KUBECONFIG): apply, re-apply without changes, clean up."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        pytest.skip("KUBECONFIG does not point at a cluster")
    kube = Kube.from_context("main", None, kubeconfig, RetrySettings(attempts=3))
    try:
        status, _body = kube.request("GET", "/version", "version")
    except Exception as exc:  # noqa: BLE001 - any failure means "no cluster here"
        pytest.skip(f"cluster unreachable: {exc}")
    assert status == 200

    suffix = uuid.uuid4().hex[:6]
    root = tmp_path / "proj"
    shutil.copytree(ROOT / "samples" / "minimal", root)
    monkeypatch.chdir(root)
    text = Path("platform.yaml").read_text()
    text = text.replace("name: my-platform", f"name: apply-test-{suffix}")
    text = text.replace(
        "  - name: main\n", f"  - name: main\n    namespace: ai4ec-apply-{suffix}\n", 1
    )
    Path("platform.yaml").write_text(text)
    build_platform(Path("platform.yaml"), Path("out"))
    build = load_build(Path("out"))
    objects = build.manifests("main")
    missing = sorted(
        {
            f"{o['kind']} ({o['apiVersion']})"
            for o in objects
            if kube.resource(o["apiVersion"], o["kind"]) is None
        }
    )
    if missing:
        pytest.skip("the cluster does not serve " + ", ".join(missing))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "tenantId": "00000000-0000-0000-0000-000000000000",
                "clusters": {
                    "main": {
                        "keyVaultProviderClientId": "00000000-0000-0000-0000-000000000000",
                        "ingressHost": "",
                    }
                },
            }
        )
    )
    options = ApplyOptions(
        build_dir=Path("out"),
        targets=("k8s",),
        contexts={"": None},
        kubeconfig=kubeconfig,
        outputs_file=outputs,
        yes=True,
        wait=False,
        check_contexts=False,  # a kind/minikube cluster, not the build's AKS
    )
    lines: list[str] = []
    console = Console(lambda t, _err: lines.append(t))
    try:
        first = run_apply(options, console, lambda _q: False)
        assert first.changed
        second = run_apply(options, console, lambda _q: False)
        assert not second.changed, "\n".join(lines)
    finally:
        for obj in reversed(objects):
            res = kube.resource(obj["apiVersion"], obj["kind"])
            if res is not None:
                kube.delete(res, obj)
        kube.close()
