"""Every problem at once: schema errors no longer hide the semantic errors of other parts.

The semantic rules run on every top-level entry whose subtree the schema accepted; the
diagnostics keep the original document's lines and JSON paths, and references to a
refused entry are not reported as unknown (its schema error says what is wrong).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from ai4ec.cli import cli
from ai4ec.errors import Diagnostic
from ai4ec.pipeline import check_platform

HEAD = """\
apiVersion: ai4ec/v1
kind: Platform
metadata:
  name: my-platform
azure:
  subscriptionId: 00000000-0000-0000-0000-000000000000
  resourceGroup: my-platform-rg
  location: eastus
  namePrefix: myplat
  apiManagement: {sku: Developer, publisherName: My Lab, publisherEmail: me@example.org}
clusters:
  - name: main
    kubernetesVersion: "1.35"
    pools:
      - {name: cpu, vmSize: Standard_DS2_v2, autoscale: {min: 1, max: 3}}
    istio: {ingress: {hosts: [api.example.org], certificate: {keyVaultCertificate: tls}}}
"""


def _check(tmp_path: Path, body: str) -> list[Diagnostic]:
    path = tmp_path / "platform.yaml"
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return list(check_platform(path).diagnostics)


def test_one_schema_error_and_two_semantic_errors_in_one_run(tmp_path: Path) -> None:
    diags = _check(
        tmp_path,
        """\
        apis:
          - name: hello
            version: v1
            image: hello:1.0.0
            pool: gpu
            endpoints: [{path: /echo}]
            products: [public]
          - name: broken
            version: v1
            image: hello:1.0.0
            port: twelve
            endpoints: [{path: /echo}]
            products: [public]
          - name: open
            version: v1
            image: hello:1.0.0
            endpoints: [{path: /x}]
            cors: {allowedOrigins: ["https://{{x}}.example.org"]}
            products: [public]
        products:
          - name: public
            apis: [hello, broken, open]
        """,
    )
    assert [(d.code, d.json_path) for d in diags] == [
        ("E-REF-POOL", "$.apis[0].pool"),
        ("E-SCHEMA-TYPE", "$.apis[1].port"),
        ("E-APIM-LITERAL", "$.apis[2].cors.allowedOrigins[0]"),
    ]
    assert [d.line for d in diags] == sorted(d.line or 0 for d in diags)
    # the third API is apis[1] of the pruned document: located at its own line
    assert diags[2].line == 16 + 18 and diags[2].col == 29
    # 'broken' in the product is no "unknown API": its schema error says what is wrong
    assert not any(d.code == "E-REF-API" for d in diags)


def test_references_to_a_refused_cluster_or_pipeline_stay_quiet(tmp_path: Path) -> None:
    path = tmp_path / "platform.yaml"
    text = HEAD + textwrap.dedent(
        """\
          - name: second
            kubernetesVersion: 1.35
            pools: []
        apis:
          - {name: a, version: v1, image: a:1, cluster: second, endpoints: [{path: /a}]}
          - {name: b, version: v1, image: b:1, cluster: main, endpoints: [{path: /b}],
             scaling: {minReplicas: 4, maxReplicas: 2}}
        """
    )
    path.write_text(text, encoding="utf-8")
    codes = [d.code for d in check_platform(path).diagnostics if d.severity == "error"]
    assert "E-REF-CLUSTER" not in codes
    assert "E-MIN-MAX" in codes  # apis[1] on the good cluster is still checked
    assert any(c.startswith("E-SCHEMA") for c in codes)


def test_an_error_every_rule_needs_still_stops_the_semantic_rules(tmp_path: Path) -> None:
    diags = _check(
        tmp_path,
        """\
        apis:
          - {name: b, version: v1, image: b:1, endpoints: [{path: /b}],
             scaling: {minReplicas: 4, maxReplicas: 2}}
        """,
    )
    assert not any(d.code.startswith("E-SCHEMA") for d in diags)
    assert [d.code for d in diags if d.severity == "error"] == ["E-MIN-MAX"]
    path = tmp_path / "platform.yaml"
    path.write_text(path.read_text().replace("myplat", "My-Plat"), encoding="utf-8")
    # azure.namePrefix is broken: every resource name needs it, so only the schema speaks
    assert [d.code for d in check_platform(path).diagnostics] == ["E-SCHEMA-PATTERN"]


def test_cli_reports_all_of_them_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text(
        HEAD
        + textwrap.dedent(
            """\
            apis:
              - {name: a, version: v1, image: a:1, endpoints: [{path: /a}], port: x}
              - {name: b, version: v1, image: b:1, endpoints: [{path: /b}],
                 scaling: {minReplicas: 4, maxReplicas: 2}}
            """
        ),
        encoding="utf-8",
    )
    res = CliRunner().invoke(cli, ["validate", "--format", "github", str(path)])
    assert res.exit_code == 1
    assert "E-SCHEMA-TYPE" in res.output and "E-MIN-MAX" in res.output


def test_a_broken_environments_section_does_not_hide_the_base(tmp_path: Path) -> None:
    diags = _check(
        tmp_path,
        """\
        apis:
          - {name: b, version: v1, image: b:1, endpoints: [{path: /b}],
             scaling: {minReplicas: 4, maxReplicas: 2}}
        environments:
          Prod: {}
        """,
    )
    errors = [d.code for d in diags if d.severity == "error"]
    assert "E-MIN-MAX" in errors
    assert any(c.startswith("E-SCHEMA") for c in errors)


def test_a_duplicate_after_a_refused_entry_names_the_document_index(tmp_path: Path) -> None:
    diags = _check(
        tmp_path,
        """\
        apis:
          - {name: x, version: v1, image: x:1, endpoints: [{path: /x}], port: bad}
          - {name: a, version: v1, image: a:1, endpoints: [{path: /a}]}
          - {name: a, version: v1, image: a:1, endpoints: [{path: /a}]}
        """,
    )
    (dup,) = [d for d in diags if d.code == "E-DUPLICATE-NAME"]
    assert dup.json_path == "$.apis[2]"
    assert "(first at index 1)" in dup.message
