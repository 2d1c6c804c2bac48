"""Issue 13, cluster side: the gateway is the only way in, and each pod holds only its own.

Every test reads the objects built from every sample (each environment, each cluster),
or from a sample edited in one place, never hand-written objects:

* no Gateway server on a public load balancer accepts a connection without the client
  certificate (tls MUTUAL);
* every API workload has an AuthorizationPolicy selecting exactly its pods and naming the
  principals it admits (the ingress gateway's), and workloads without one admit nothing;
* allowedSourceRanges adds a rule at the gateway and never takes API Management out;
* no SecretProviderClass uses the node identity: each signs in with the workload identity
  of the ServiceAccount of the pods that mount it, and an API's lists only its own secrets;
* pods cannot reach the instance metadata endpoint; the securityContext comes from
  platform.yaml.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai4ec.model.naming import results_container, workload_name
from ai4ec.model.types import Platform
from ai4ec.pipeline import check_platform, render_platforms

from ...conftest import ROOT, sample_files

Docs = list[dict[str, Any]]


def _build(platform_file: Path) -> list[tuple[Platform, str, Docs]]:
    """(platform, cluster, objects) of every environment and cluster of one platform.yaml."""
    result = check_platform(platform_file)
    if not result.ok:
        return []
    platforms = {p.environment: p for p in result.platforms()}
    out = []
    for rendered, _manifest in render_platforms(result):
        for a in rendered.artifacts:
            path = str(a.path)
            if path.endswith("manifests.yaml"):
                docs = [d for d in yaml.safe_load_all(a.content) if d]
                out.append((platforms[rendered.environment], path.split("/")[1], docs))
    return out


BUILDS = [b for sample in sample_files() for b in _build(sample)]
IDS = [f"{p.name}-{p.environment}-{c}" for p, c, _ in BUILDS]


def _kind(docs: Docs, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _edited(tmp_path: Path, sample: str, old: str, new: str) -> list[tuple[Platform, str, Docs]]:
    """A sample with one text edit, built (it must stay valid)."""
    text = (ROOT / "samples" / sample / "platform.yaml").read_text()
    assert old in text, old
    f = tmp_path / "platform.yaml"
    f.write_text(text.replace(old, new))
    return _build(f)


@pytest.mark.parametrize(("platform", "cluster", "docs"), BUILDS, ids=IDS)
def test_no_public_listener_without_client_certificate(
    platform: Platform, cluster: str, docs: Docs
) -> None:
    ingress = platform.cluster(cluster).ingress
    (gateway,) = _kind(docs, "Gateway")
    for server in gateway["spec"]["servers"]:
        if ingress.external:
            assert server["port"]["protocol"] == "HTTPS"
            assert server["tls"]["mode"] == "MUTUAL"
        assert server["tls"]["credentialName"] == "ai4ec-gateway-credential"
        # The platform's host names when it gives them, never a wider match.
        assert server["hosts"] == list(ingress.hosts)
    # The credential holds the server certificate and, as ca.crt, the client certificate.
    (spc,) = [
        s
        for s in _kind(docs, "SecretProviderClass")
        if s["metadata"]["name"] == ("ai4ec-gateway-credential")
    ]
    assert spc["metadata"]["namespace"] == "aks-istio-ingress"
    (synced,) = spc["spec"]["secretObjects"]
    assert synced["secretName"] == "ai4ec-gateway-credential"
    assert {d["key"]: d["objectName"] for d in synced["data"]} == {
        "tls.key": ingress.certificate or "ai4ec-gateway-server",
        "tls.crt": ingress.certificate or "ai4ec-gateway-server",
        "ca.crt": "ai4ec-gateway-client",
    }
    objects = [
        yaml.safe_load(o) for o in yaml.safe_load(spc["spec"]["parameters"]["objects"])["array"]
    ]
    assert {"objectName": "ai4ec-gateway-client", "objectType": "cert"} in objects


def test_plain_http_only_in_a_development_environment(tmp_path: Path) -> None:
    """http + development: true builds (with W-INGRESS-HTTP); the Gateway has no TLS."""
    builds = _edited(
        tmp_path,
        "minimal",
        "        hosts: [api.my-platform.example.org]  # DNS name of the gateway's address\n"
        "        certificate: {keyVaultCertificate: hello-ingress}\n",
        "        protocol: http\n",
    )
    assert builds == []  # an error: not a development environment
    f = tmp_path / "platform.yaml"
    f.write_text(f.read_text() + "\nenvironments:\n  dev: {development: true}\n")
    result = check_platform(f)
    assert [d.code for d in result.diagnostics] == ["W-INGRESS-HTTP"]
    ((platform, _cluster, docs),) = _build(f)
    assert platform.development
    (gateway,) = _kind(docs, "Gateway")
    assert [s["port"]["protocol"] for s in gateway["spec"]["servers"]] == ["HTTP"]
    assert "tls" not in gateway["spec"]["servers"][0]
    assert not [s for s in _kind(docs, "SecretProviderClass") if "gateway" in s["metadata"]["name"]]


def test_client_certificate_disabled_only_behind_an_internal_load_balancer(tmp_path: Path) -> None:
    old = "        certificate: {keyVaultCertificate: hello-ingress}\n"
    new = old + "        clientCertificate: disabled\n"
    assert _edited(tmp_path, "minimal", old, new) == []  # E-INGRESS-MTLS-OFF
    ((platform, _c, docs),) = _edited(tmp_path, "minimal", old, new + "        external: false\n")
    assert not platform.clusters[0].ingress.external
    (gateway,) = _kind(docs, "Gateway")
    assert gateway["spec"]["selector"] == {"istio": "aks-istio-ingressgateway-internal"}
    assert gateway["spec"]["servers"][0]["tls"]["mode"] == "SIMPLE"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(("platform", "cluster", "docs"), BUILDS, ids=IDS)
def test_every_api_admits_only_the_ingress_gateway(
    platform: Platform, cluster: str, docs: Docs
) -> None:
    ns = platform.cluster(cluster).namespace
    policies = [p for p in _kind(docs, "AuthorizationPolicy") if p["metadata"]["namespace"] == ns]
    # An ALLOW policy with no rules over the whole namespace: what has no policy of its
    # own admits nothing.
    (nothing,) = [p for p in policies if "selector" not in p["spec"]]
    assert nothing["spec"] == {"action": "ALLOW"}
    kind = "external" if platform.cluster(cluster).ingress.external else "internal"
    gateway = f"cluster.local/ns/aks-istio-ingress/sa/aks-istio-ingressgateway-{kind}"
    apis = [a for a in platform.apis if a.cluster == cluster]
    workloads = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    for api in apis:
        pod_labels = workloads[workload_name(api)]["spec"]["template"]["metadata"]["labels"]
        mine = [
            p
            for p in policies
            if _selects(p["spec"].get("selector", {}).get("matchLabels", {"-": "-"}), pod_labels)
        ]
        assert len(mine) == 1, api.id
        (rule,) = mine[0]["spec"]["rules"]
        assert [s["source"] for s in rule["from"]] == [{"principals": [gateway]}]
        paths = {p for t in rule["to"] for p in t["operation"]["paths"]}
        served = {
            (api.api_prefix.rstrip("/") + e.path) if e.path != "/" else api.api_prefix
            for e in api.endpoints
        }
        assert paths == served
        # The policy selects this API's pods and no other API's.
        for other in apis:
            if other.id != api.id:
                other_labels = workloads[workload_name(other)]["spec"]["template"]["metadata"][
                    "labels"
                ]
                assert not _selects(mine[0]["spec"]["selector"]["matchLabels"], other_labels)
    (peer,) = _kind(docs, "PeerAuthentication")
    assert peer["metadata"]["namespace"] == ns and peer["spec"]["mtls"]["mode"] == "STRICT"


def _gateway_admits(policy: dict[str, Any], source_ip: str, path: str) -> bool:
    """Istio's ALLOW semantics for the conditions ai4ec writes: any rule matches."""
    for rule in policy["spec"]["rules"]:
        sources = [f["source"] for f in rule.get("from", [])]
        from_ok = not sources or any(
            any(
                ipaddress.ip_address(source_ip) in ipaddress.ip_network(block)
                for block in s.get("remoteIpBlocks", [])
            )
            for s in sources
        )
        to_ok = any(path in t["operation"]["paths"] for t in rule.get("to", []))
        if from_ok and to_ok:
            return True
    return False


def test_allowed_source_ranges_add_a_rule_and_never_remove_api_management(
    tmp_path: Path,
) -> None:
    """APIM (an address outside the ranges) still passes; a VPN address passes too."""
    old = "        certificate: {keyVaultCertificate: hello-ingress}\n"
    new = old + "        allowedSourceRanges: [10.8.0.0/16]\n"
    ((_p, _c, docs),) = _edited(tmp_path, "minimal", old, new)
    (policy,) = [
        p
        for p in _kind(docs, "AuthorizationPolicy")
        if p["metadata"]["namespace"] == "aks-istio-ingress"
    ]
    path = "/v1/hello/echo"
    apim = "20.50.60.70"
    assert _gateway_admits(policy, apim, path)
    assert _gateway_admits(policy, "10.8.1.2", path)
    assert not _gateway_admits(policy, apim, "/admin")
    blocks = [s["source"] for r in policy["spec"]["rules"] for s in r.get("from", [])]
    assert blocks == [{"remoteIpBlocks": ["10.8.0.0/16"]}]


@pytest.mark.parametrize(("platform", "cluster", "docs"), BUILDS, ids=IDS)
def test_no_secret_provider_class_uses_the_node_identity(
    platform: Platform, cluster: str, docs: Docs
) -> None:
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in _kind(docs, "ServiceAccount")
    }
    mounted_by: dict[tuple[str, str], list[str]] = {}
    for dep in _kind(docs, "Deployment"):
        pod = dep["spec"]["template"]
        for vol in pod["spec"].get("volumes", []):
            spc = (vol.get("csi") or {}).get("volumeAttributes", {}).get("secretProviderClass")
            if spc:
                ns = dep["metadata"]["namespace"]
                sa = pod["spec"].get("serviceAccountName", "default")
                mounted_by.setdefault((ns, spc), []).append(sa)
                # The pod federates its ServiceAccount token (workload identity).
                assert pod["metadata"]["labels"].get("azure.workload.identity/use") == "true"
    spcs = _kind(docs, "SecretProviderClass")
    assert spcs
    for spc in spcs:
        params = spc["spec"]["parameters"]
        assert "useVMManagedIdentity" not in params and "userAssignedIdentityID" not in params
        assert params["usePodIdentity"] == "false"
        key = (spc["metadata"]["namespace"], spc["metadata"]["name"])
        # Every pod that mounts it signs in as the identity the class names.
        assert mounted_by.get(key), key
        for sa in mounted_by[key]:
            annotations = accounts[(key[0], sa)]["metadata"]["annotations"]
            assert annotations["azure.workload.identity/client-id"] == params["clientID"]


@pytest.mark.parametrize(("platform", "cluster", "docs"), BUILDS, ids=IDS)
def test_each_api_secret_provider_class_lists_only_its_own_secrets(
    platform: Platform, cluster: str, docs: Docs
) -> None:
    spcs = {s["metadata"]["name"]: s for s in _kind(docs, "SecretProviderClass")}
    identities = set()
    for api in (a for a in platform.apis if a.cluster == cluster):
        w = workload_name(api)
        spc = spcs[f"{api.id}-secrets"]
        params = spc["spec"]["parameters"]
        assert params["clientID"] == f"$(azure:apis.{w}.clientId)"
        identities.add(params["clientID"])
        listed = {
            yaml.safe_load(o)["objectName"] for o in yaml.safe_load(params["objects"])["array"]
        }
        assert listed == {f"ai4ec-api-key-{w}"} | {ref.key_vault_secret for _, ref in api.secrets}
    # One identity per API: none reads another API's secrets.
    assert len(identities) == len([a for a in platform.apis if a.cluster == cluster])


@pytest.mark.parametrize(("platform", "cluster", "docs"), BUILDS, ids=IDS)
def test_each_api_pod_is_told_its_own_results_container(
    platform: Platform, cluster: str, docs: Docs
) -> None:
    """The pods' env names their API's container (the one its identity may write), and
    they sign in as that identity: workload identity label, their own ServiceAccount,
    annotated with their own API's client id (the webhook then sets AZURE_CLIENT_ID)."""
    deployments = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    accounts = {s["metadata"]["name"]: s for s in _kind(docs, "ServiceAccount")}
    account_url = f"https://{platform.azure.storage.name}.blob.core.windows.net"
    seen: set[str] = set()
    for api in (a for a in platform.apis if a.cluster == cluster):
        w = workload_name(api)
        pod = deployments[w]["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        own = results_container(platform.azure, api)
        assert env["AI4EC_RESULTS_ACCOUNT_URL"] == account_url
        assert env["AI4EC_RESULTS_CONTAINER"] == own
        assert env["AI4EC_RESULTS_URL"] == f"{account_url}/{own}"
        seen.add(own)
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert pod["spec"]["serviceAccountName"] == w
        annotations = accounts[w]["metadata"]["annotations"]
        assert annotations["azure.workload.identity/client-id"] == f"$(azure:apis.{w}.clientId)"
    assert len(seen) == len([a for a in platform.apis if a.cluster == cluster])


@pytest.mark.parametrize(("platform", "cluster", "docs"), BUILDS, ids=IDS)
def test_pods_cannot_reach_the_instance_metadata_endpoint(
    platform: Platform, cluster: str, docs: Docs
) -> None:
    ns = platform.cluster(cluster).namespace
    (np,) = _kind(docs, "NetworkPolicy")
    assert np["metadata"]["namespace"] == ns
    assert np["spec"]["podSelector"] == {} and np["spec"]["policyTypes"] == ["Egress"]
    imds = ipaddress.ip_address("169.254.169.254")
    for rule in np["spec"]["egress"]:
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block is None:
                # In-cluster peers only (pods of any namespace): the endpoint is no pod.
                assert peer == {"namespaceSelector": {}}
                continue
            excepted = any(imds in ipaddress.ip_network(e) for e in block.get("except", []))
            assert imds not in ipaddress.ip_network(block["cidr"]) or excepted


def test_security_context_comes_from_platform_yaml(tmp_path: Path) -> None:
    """Root for an upstream Framework image is a choice in platform.yaml, never the default."""
    docs = _build(ROOT / "samples" / "minimal" / "platform.yaml")[0][2]
    (dep,) = [d for d in _kind(docs, "Deployment") if d["metadata"]["name"] == "hello-v1"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    old = "    port: 1212\n"
    new = old + (
        "    securityContext: {runAsNonRoot: false, runAsUser: 0, runAsGroup: 0, fsGroup: 0}\n"
    )
    ((_p, _c, docs),) = _edited(tmp_path, "minimal", old, new)
    (dep,) = [d for d in _kind(docs, "Deployment") if d["metadata"]["name"] == "hello-v1"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is False
    assert pod["securityContext"]["runAsUser"] == 0
    container = pod["containers"][0]["securityContext"]
    assert container["runAsNonRoot"] is False
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
