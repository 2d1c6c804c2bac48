"""Helpers for the Azure target tests: render samples, read Bicep back with pycep."""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ai4ec.model.types import Platform
from ai4ec.pipeline import check_platform
from ai4ec.render.apim import render_apim
from ai4ec.render.artifact import RenderContext
from ai4ec.render.azure.spec import Cond, Interp, Op, Param, Parameter, Resource, camel
from ai4ec.render.azure.target import ApimChildren, render_azure

from ...conftest import ARTIFACT_CHECK, ROOT, sample_files

SHARED_CHECK = ARTIFACT_CHECK


def sample_envs() -> list[tuple[str, str]]:
    """(sample, environment) for every sample and environment."""
    out = []
    for path in sample_files():
        for p in platforms(str(path)):
            out.append((path.parent.name, p.environment))
    return out


@cache
def platforms(path: str) -> tuple[Platform, ...]:
    result = check_platform(path)
    assert result.ok, result.diagnostics
    return tuple(result.platforms())


def context_for(sample: str) -> RenderContext:
    rel = f"samples/{sample}/platform.yaml"
    return RenderContext(source_name=rel, source_dir=str(ROOT / "samples" / sample))


@cache
def rendered(sample: str, env: str) -> dict[str, bytes]:
    """The azure/ artifacts of one sample environment: {path below out/<env>/: bytes}."""
    plat = next(
        p
        for p in platforms(str(ROOT / "samples" / sample / "platform.yaml"))
        if p.environment == env
    )
    return _files(plat, context_for(sample))


def _files(
    platform: Platform, ctx: RenderContext, apim: ApimChildren | None = None
) -> dict[str, bytes]:
    """The Azure target's files, fed by the real APIM target unless ``apim`` is given."""
    extra: dict[str, bytes] = {}
    if apim is None:
        result = render_apim(platform, ctx)
        apim = result.infrastructure
        # The Bicep loads the policy XML from apim/: a tree without it does not build.
        extra = {str(a.path): a.content for a in result.artifacts}
    files = {str(a.path): a.content for a in render_azure(platform, ctx, apim).artifacts}
    return {**files, **extra}


def render_platform(
    platform: Platform, source: str = "platform.yaml", apim: ApimChildren | None = None
) -> dict[str, bytes]:
    """The azure/ files of ``platform`` (APIM children from ``apim`` or the real target)."""
    return _files(platform, RenderContext(source_name=source, source_dir="."), apim)


def write_tree(files: dict[str, bytes], root: Path) -> Path:
    for name, data in files.items():
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return root


# ------------------------------------------------------------------------------- Bicep read


def parse_bicep(text: str) -> dict[str, Any]:
    from pycep import BicepParser

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.bicep"
        path.write_text(text, encoding="utf-8")
        return BicepParser().parse(file_path=path)  # type: ignore[no-any-return]


_ESC = re.compile(r"\\(u\{([0-9A-Fa-f]+)\}|.)", re.S)
_SIMPLE = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}


def unescape(raw: str) -> str:
    """The value of a Bicep single-quoted string from pycep's raw text."""

    def sub(m: re.Match[str]) -> str:
        if m.group(2):
            return chr(int(m.group(2), 16))
        ch = m.group(1)
        if ch not in _SIMPLE:
            raise ValueError(f"unknown Bicep escape \\{ch}")
        return _SIMPLE[ch]

    return _ESC.sub(sub, raw)


def has_interpolation(raw: str) -> bool:
    """Whether pycep's raw string text holds an unescaped ``${``."""
    i = 0
    while i < len(raw):
        if raw[i] == "\\":
            i += 2
            continue
        if raw.startswith("${", i):
            return True
        i += 1
    return False


def key_of(raw: str) -> str:
    """An object key as pycep returns it (quoted keys keep their quotes)."""
    return unescape(raw[1:-1]) if raw.startswith("'") and raw.endswith("'") else raw


@dataclass
class Literal:
    """A literal leaf value read from Bicep."""

    value: Any


def bicep_leaf(value: Any) -> Literal | None:
    """The literal value of a pycep leaf, or None when it is an expression.

    pycep returns identifiers and literal strings alike as str; a caller that knows the
    position holds a literal (it matched a literal in main.json) still compares it.
    """
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return Literal(value)
    if isinstance(value, LoadedText):
        return Literal(value.text)
    if isinstance(value, str):
        return None if has_interpolation(value) else Literal(unescape(value))
    if isinstance(value, dict) and "operator" in value:
        op = value["operator"]
        if op.get("type") == "minus" and "integer_value" in op.get("operands", {}):
            return Literal(-op["operands"]["integer_value"])
    if isinstance(value, dict) and "function" in value:
        fn = value["function"]
        if fn.get("type") == "json":
            return Literal(json.loads(fn["parameters"]["arg_1"]))
    return None


@dataclass(frozen=True)
class LoadedText:
    """A ``loadTextContent('<path>')`` of a Bicep file, resolved as Bicep does.

    Attributes:
        path: The loaded file below ``out/<env>/`` (relative to the Bicep file it is in).
        text: Its content, UTF-8 (Bicep's default encoding).
    """

    path: str
    text: str


def resolve_loads(value: Any, bicep_file: str, files: dict[str, bytes]) -> Any:
    """pycep's ``loadTextContent`` nodes of ``bicep_file`` as :class:`LoadedText`.

    Raises:
        AssertionError: a loaded file is not among ``files`` (Bicep would refuse it),
            or is loaded with another encoding than the UTF-8 ai4ec writes.
    """
    if isinstance(value, list):
        return [resolve_loads(v, bicep_file, files) for v in value]
    if not isinstance(value, dict):
        return value
    fn = value.get("function")
    if isinstance(fn, dict) and fn.get("type") == "load_text_content":
        params = fn["parameters"]
        assert params.get("encoding") is None, (bicep_file, params)
        rel = unescape(params["file_path"])
        path = posixpath.normpath(posixpath.join(posixpath.dirname(bicep_file), rel))
        assert path in files, f"{bicep_file} loads {rel}, which is not written ({path})"
        return LoadedText(path, files[path].decode("utf-8"))
    return {k: resolve_loads(v, bicep_file, files) for k, v in value.items()}


def is_container(value: Any) -> bool:
    """Objects and arrays (not pycep's expression nodes)."""
    if isinstance(value, list):
        return True
    return isinstance(value, dict) and not ({"operator", "function"} & set(value))


def flatten(
    value: Any, path: tuple[Any, ...] = (), bicep: bool = False
) -> dict[tuple[Any, ...], Any]:
    """Leaves of a JSON/pycep value by path (keys unquoted on the Bicep side)."""
    out: dict[tuple[Any, ...], Any] = {}
    if isinstance(value, dict) and (not bicep or is_container(value)):
        if not value:
            out[path] = {}
        for k, v in value.items():
            out.update(flatten(v, (*path, _leaf_key(k, bicep)), bicep))
    elif isinstance(value, list):
        if not value:
            out[path] = []
        for i, v in enumerate(value):
            out.update(flatten(v, (*path, i), bicep))
    else:
        out[path] = value
    return out


def _leaf_key(key: str, bicep: bool) -> str:
    """Expression keys (a resource id) compare equal whatever their spelling."""
    if bicep:
        return "<expr>" if has_interpolation(key) else key_of(key)
    return "<expr>" if is_arm_expression(key) else arm_literal(key)


def is_arm_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and not value.startswith("[[")


def arm_literal(value: Any) -> Any:
    """The value ARM sees for a literal leaf ([[x] means [x])."""
    if isinstance(value, str) and value.startswith("[["):
        return value[1:]
    return value


# ------------------------------------------------------------------- templates as objects


@dataclass
class BicepResource:
    file: str
    symbol: str
    type: str
    api_version: str
    existing: bool
    config: dict[str, Any]
    condition: Any = None
    full_name: str = ""
    #: Parameters its file declares: pycep writes ``p`` and ``'p'`` alike as ``"p"``.
    params: frozenset[str] = frozenset()


@dataclass
class BicepTemplate:
    """main.bicep and its modules, parsed, with resource names resolved."""

    main: dict[str, Any]
    modules: dict[str, dict[str, Any]]
    resources: list[BicepResource] = field(default_factory=list)

    #: Split templates (azure/<kind>-<n>.bicep, see SPLIT_KINDS), in deployment order.
    split: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, files: dict[str, bytes]) -> BicepTemplate:
        """Parse every Bicep file; each ``loadTextContent`` becomes the :class:`LoadedText`
        of the file it names (which must be in ``files``, as Bicep requires)."""

        def parse(name: str) -> dict[str, Any]:
            return resolve_loads(parse_bicep(files[name].decode()), name, files)

        main = parse("azure/main.bicep")
        mods = {name: parse(name) for name in files if name.startswith("azure/modules/")}
        split = {name: parse(name) for name in split_files(files, ".bicep")}
        tpl = cls(main, mods, split=split)
        for name, parsed in [("azure/main.bicep", main), *mods.items(), *split.items()]:
            tpl.resources.extend(_resources_of(name, parsed))
        return tpl


def _resources_of(file: str, parsed: dict[str, Any]) -> list[BicepResource]:
    out: dict[str, BicepResource] = {}
    params = frozenset(parsed.get("parameters") or {})
    for sym, r in (parsed.get("resources") or {}).items():
        cfg = r["config"]
        cond = None
        if set(cfg) == {"condition", "config"}:
            cond, cfg = cfg["condition"], cfg["config"]
        out[sym] = BicepResource(
            file, sym, r["type"], r["api_version"], r["existing"], cfg, cond, params=params
        )
    for res in out.values():
        res.full_name = _full_name(res, out)
    return list(out.values())


def _full_name(res: BicepResource, table: dict[str, BicepResource]) -> str:
    name = res.config["name"]
    if isinstance(name, str):
        name = unescape(name)
    else:
        name = canonical(name, table, res.params)
    parent = res.config.get("parent")
    return f"{_full_name(table[parent], table)}/{name}" if parent else name


def resource_id(res: BicepResource, table: dict[str, BicepResource]) -> str:
    """``resourceId('type', 'seg', ...)`` of a Bicep resource, as main.json writes it."""
    segs = _full_name(res, table).split("/")
    args = ", ".join([f"'{res.type}'", *(f"'{s}'" for s in segs)])
    return f"resourceId({args})"


def canonical(
    node: Any, table: dict[str, BicepResource], params: frozenset[str] = frozenset()
) -> str:
    """ARM text of the small expressions role assignment names use (guid of ids, params).

    pycep gives a parameter reference and a string literal the same form, so a string
    that names a parameter of the file reads as that parameter; no literal seed of a
    role assignment name is spelled like a parameter.
    """
    if isinstance(node, str) and node in params:
        return f"parameters('{node}')"
    if isinstance(node, str):
        return "'" + unescape(node).replace("'", "''") + "'"
    if "function" in node and node["function"]["type"] == "guid":
        args = [
            canonical(v, table, params)
            for v in node["function"]["parameters"].values()
            if v is not None
        ]
        return f"guid({', '.join(args)})"
    op = node.get("operator", {})
    if op.get("type") == "property_accessor" and op["operands"]["operand_2"] == "id":
        return resource_id(table[op["operands"]["operand_1"]], table)
    raise AssertionError(f"unexpected name expression {node}")


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def symbols_in(value: Any) -> set[str]:
    """Identifiers a pycep value mentions (symbols, also inside interpolations)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for v in value.values():
            out |= symbols_in(v)
    elif isinstance(value, list):
        for v in value:
            out |= symbols_in(v)
    elif isinstance(value, str):
        out |= set(_IDENT.findall(value))
    return out


def scope_path(res: BicepResource) -> str:
    """``Microsoft.KeyVault/vaults/kv``: how main.json's ``scope`` names a resource."""
    ns, *types = res.type.split("/")
    segs = res.full_name.split("/")
    return "/".join([ns, *(f"{t}/{s}" for t, s in zip(types, segs, strict=True))])


def arm_id(res: BicepResource, table: dict[str, BicepResource]) -> str:
    """How main.json's dependsOn names this resource (extension resources included)."""
    scope = res.config.get("scope")
    if scope is None:
        return f"[{resource_id(res, table)}]"
    name = res.config["name"]
    name_text = canonical(name, table, res.params)
    return f"[extensionResourceId({resource_id(table[scope], table)}, '{res.type}', {name_text})]"


@cache
def bicep_template(sample: str, env: str) -> BicepTemplate:
    """A sample environment's Bicep, parsed once per test session."""
    return BicepTemplate.load(rendered(sample, env))


def resolve_table(tpl: BicepTemplate, file: str) -> dict[str, BicepResource]:
    return {r.symbol: r for r in tpl.resources if r.file == file}


def load_arm(files: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(files["azure/main.json"])  # type: ignore[no-any-return]


#: Kinds of split templates (``azure/<kind>-<n>``), in the order ``apply`` deploys them.
SPLIT_KINDS = ("identities", "identity-grants", "apim-apis")


def split_files(files: dict[str, bytes], suffix: str) -> list[str]:
    """azure/<kind>-<n><suffix> of every split kind, in deployment order."""
    found = []
    for name in files:
        m = re.fullmatch(rf"azure/([a-z-]+)-(\d+){re.escape(suffix)}", name)
        if m and m.group(1) in SPLIT_KINDS:
            found.append((SPLIT_KINDS.index(m.group(1)), int(m.group(2)), name))
    return [name for _k, _n, name in sorted(found)]


def all_arm(files: dict[str, bytes]) -> list[tuple[str, dict[str, Any]]]:
    """(file, template) of main.json and every split template, in deploy order."""
    out = [("azure/main.json", load_arm(files))]
    out += [(n, json.loads(files[n])) for n in split_files(files, ".json")]
    return out


def arm_resources(arm: dict[str, Any] | dict[str, bytes]) -> list[dict[str, Any]]:
    """Resources of main.json, or of every ARM template of a rendered tree.

    Given the files of a tree, each resource gets ``_file``: the template deploying it.
    """
    if "azure/main.json" not in arm:
        return list(arm["resources"])
    out = []
    for name, doc in all_arm(arm):  # type: ignore[arg-type]
        for r in doc["resources"]:
            out.append({**r, "_file": name})
    return out


# ---------------------------------------------------------------------- model variations

#: Strings that break naive templating in one of the two languages.
NASTY = {
    "quote": "it's",
    "backslash": "C:\\temp\\new",
    "trailing-backslash": "C:\\temp\\",
    "interp": "${resourceGroup().name}",
    "escaped-interp": "\\${not}",
    "newline": "line one\nline two",
    "brackets": "[concat('a','b')]",
    "double-brackets": "[[x]",
    "unicode": "naïve — ☃ \U0001f600",
    "control": "tab\there\x01",
    "dollar": "$5 {braces} $",
}


@dataclass(frozen=True)
class FakeApim:
    """A stand-in for the APIM target's hand-off (:class:`ApimChildren`).

    Builds its children with the shared expression tree, like the real target, from a
    small description; used to test what the Azure target does with any children
    (placement, Key Vault waits, escaping, chunking) independently of the APIM plan.
    """

    build: Callable[[Resource, str, Sequence[Resource]], list[Resource]]
    parameters: tuple[Parameter, ...] = ()

    def resources(
        self, service: Resource, module: str, key_vault_waits: Sequence[Resource]
    ) -> list[Resource]:
        return self.build(service, module, key_vault_waits)


def _child(kind: str, name: str, parent: Resource, module: str, **kw: Any) -> Resource:
    segments: list[str] = []
    up: Resource | None = parent
    while up is not None and up.parent is not None:  # stop at the service
        segments.insert(0, str(up.name))
        up = up.parent
    return Resource(
        symbol=camel("apim", kind, *segments, name),
        type=f"{parent.type}/{kind}",
        api_version="2024-05-01",
        name=name,
        module=module,
        parent=parent,
        **kw,
    )


def fake_apim_children(service: Resource, module: str, waits: Sequence[Resource]) -> list[Resource]:
    """Children with a Key Vault named value, expressions and strings that need escaping."""
    kv = _camera_trap().azure.key_vault.name
    policy = (
        "<policies>\n  <inbound>\n    <base />\n"
        '    <set-header name="x-note" exists-action="override">'
        '<value>@("it\'s ${not} \\\\ a " + context.RequestId)</value></set-header>\n'
        '    <set-query-parameter name="code" exists-action="override">'
        "<value>{{ai4ec-function-key}}</value></set-query-parameter>\n"
        "  </inbound>\n</policies>"
    )
    named = _child(
        "namedValues",
        "ai4ec-function-key",
        service,
        module,
        body={
            "properties": {
                "displayName": "ai4ec-function-key",
                "secret": True,
                "keyVault": {
                    "secretIdentifier": f"https://{kv}.vault.azure.net/secrets/ai4ec-function-key"
                },
            }
        },
        depends_on=list(waits),
    )
    backend = _child(
        "backends",
        "ai4ec-tasks",
        service,
        module,
        body={
            "properties": {
                "protocol": "http",
                "url": Interp(("https://", Param("location"), ".example.org/api")),
                "description": "[not an expression]",
            }
        },
        depends_on=[named],
    )
    api = _child(
        "apis",
        "detector-v1",
        service,
        module,
        body={
            "properties": {
                "displayName": "Detector's ${v1} \\ API",
                "path": "v1/detector",
                "protocols": ["https"],
                "subscriptionRequired": True,
                "serviceUrl": Cond(
                    Op("==", "equals", (Param("location"), "eastus")), "https://a", "https://b"
                ),
            }
        },
        comment="API detector v1",
    )
    op = _child(
        "operations",
        "detect",
        api,
        module,
        body={"properties": {"displayName": "detect", "method": "POST", "urlTemplate": "/detect"}},
    )
    op_policy = _child(
        "policies",
        "policy",
        op,
        module,
        body={"properties": {"format": "rawxml", "value": policy}},
        depends_on=[named],
    )
    product = _child(
        "products",
        "public",
        service,
        module,
        body={
            "properties": {
                "displayName": "Public",
                "subscriptionRequired": True,
                "state": "published",
            }
        },
    )
    link = _child("apis", "detector-v1", product, module, depends_on=[api])
    return [named, backend, api, op, op_policy, product, link]


def _camera_trap() -> Platform:
    return platforms(str(ROOT / "samples" / "camera-trap" / "platform.yaml"))[0]


def _variant(name: str) -> Platform:
    import dataclasses

    from ai4ec.model.types import CustomDomain

    p = _camera_trap()
    az = p.azure
    if name == "custom-domain":
        cd = CustomDomain(host_name="api.example.org", key_vault_certificate="api-example-org")
        return dataclasses.replace(
            p,
            azure=dataclasses.replace(
                az, api_management=dataclasses.replace(az.api_management, custom_domain=cd)
            ),
        )
    if name == "consumption":
        return dataclasses.replace(
            p,
            azure=dataclasses.replace(
                az,
                functions=dataclasses.replace(az.functions, plan_sku="Y1"),
                api_management=dataclasses.replace(
                    az.api_management, sku="Consumption", capacity=0
                ),
            ),
        )
    if name == "two-clusters":
        second = dataclasses.replace(p.clusters[0], name="eu", aks_name="camtrap-eu-aks")
        return dataclasses.replace(p, clusters=(p.clusters[0], second))
    if name == "nasty-strings":
        return dataclasses.replace(
            p,
            tags=(*p.tags, *sorted(NASTY.items())),
            description="Platform's \\ description ${x}\nsecond line [y]",
        )
    raise KeyError(name)


VARIANTS = (
    "custom-domain",
    "consumption",
    "two-clusters",
    "nasty-strings",
    "apim-children",
    "apim-large",
)


def fake_apim_bulk(
    service: Resource, module: str, waits: Sequence[Resource], apis: int = 200
) -> list[Resource]:
    """Enough APIM children (4 per API) to need chunks and nested deployments."""
    del waits
    product = _child(
        "products",
        "bulk",
        service,
        module,
        body={"properties": {"displayName": "Bulk", "state": "published"}},
    )
    out = [product]
    for i in range(apis):
        api = _child(
            "apis",
            f"api{i}-v1",
            service,
            module,
            body={
                "properties": {
                    "displayName": f"API {i}",
                    "path": f"v1/api{i}",
                    "protocols": ["https"],
                }
            },
        )
        op = _child(
            "operations",
            "run",
            api,
            module,
            body={"properties": {"displayName": "run", "method": "POST", "urlTemplate": "/run"}},
        )
        policy = _child(
            "policies",
            "policy",
            op,
            module,
            body={
                "properties": {
                    "format": "rawxml",
                    "value": "<policies><inbound><base /></inbound></policies>",
                }
            },
        )
        link = _child("apis", f"api{i}-v1", product, module, depends_on=[api])
        out += [api, op, policy, link]
    return out


@cache
def variant_files(name: str) -> dict[str, bytes]:
    """Rendered azure/ files of a camera-trap variation (see VARIANTS)."""
    if name in ("apim-children", "apim-large"):
        fake = FakeApim(fake_apim_children if name == "apim-children" else fake_apim_bulk)
        return render_platform(_camera_trap(), "samples/camera-trap/platform.yaml", apim=fake)
    return render_platform(_variant(name), "samples/camera-trap/platform.yaml")


def all_cases() -> list[str]:
    """Ids of every rendered case: '<sample>/<env>' and 'variant:<name>'."""
    return [f"{s}/{e}" for s, e in sample_envs()] + [f"variant:{v}" for v in VARIANTS]


def case_files(case: str) -> dict[str, bytes]:
    if case.startswith("variant:"):
        return variant_files(case.removeprefix("variant:"))
    sample, env = case.split("/")
    return rendered(sample, env)


@cache
def case_bicep(case: str) -> BicepTemplate:
    return BicepTemplate.load(case_files(case))
