"""Generated files -> resources with a stable identity, for both sides at once.

Input: the artifacts of one environment on each side (``{path below out/<env>/:
bytes}``). Output: the resources that may differ, keyed by identity, plus a count of
those that are certainly unchanged.

Identity per layer:

- Azure: ARM resource type + name, whichever template file (``main.json`` or a split
  ``apim-apis-<n>.json``) holds it; template parameters, variables and outputs are one
  resource per file;
- Kubernetes: cluster (``k8s/<cluster>/``) + API group + kind + namespace + name, from
  ``manifests.yaml`` (the values/istio/addons files are parts of it and are skipped);
- API Management: the policy scope, named by its file (``apim/policies/<api>/<op>.xml``,
  ``apim/products/<p>.xml``); the ARM policy resource that embeds the same XML is folded
  into it, so one policy change is one entry;
- Functions: one resource per routing-table entry and per app setting; the bundle zip;
- anything else: the file.

Speed: a 1,000-API build is ~70 MB. Files with equal bytes are never parsed (except
ARM templates, whose priced resources feed the cost totals), and ``manifests.yaml`` is
split into documents whose text is matched before any YAML parsing, so the work is
proportional to what changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..render.artifact import SafeLoader
from .normalize import (
    Leaf,
    Path,
    drop_k8s_defaults,
    flatten,
    normalise_k8s,
)

ARM_TEMPLATE_SCHEMA = "deploymentTemplate.json"
ARM_PARAMETERS_SCHEMA = "deploymentParameters.json"

#: ARM fields that are not state: ``dependsOn`` orders a deployment (and moves when
#: resources are split across templates), ``name``/``type`` are the identity.
_ARM_IGNORED = {"dependsOn", "name", "type"}

APIM_POLICY_TYPES = {
    "microsoft.apimanagement/service/policies",
    "microsoft.apimanagement/service/apis/policies",
    "microsoft.apimanagement/service/apis/operations/policies",
    "microsoft.apimanagement/service/products/policies",
    "microsoft.apimanagement/service/policyfragments",
}


@dataclass(slots=True)
class Comparable:
    """One comparable thing on one side.

    ``content`` is the parsed, not yet normalised, content; :meth:`flat` normalises it
    once, on demand, because only resources that differ are ever normalised.
    """

    key: str
    layer: str
    kind: str
    name: str
    content: Any
    files: tuple[str, ...]
    #: Hints for risk rules, cost and source tracing (ARM type, labels, cluster...).
    meta: dict[str, Any] = field(default_factory=dict)
    #: How content is normalised: "arm", "k8s", "xml", "plain", "opaque", "text".
    style: str = "plain"
    _flat: dict[Path, Leaf] | None = None

    def flat(self) -> dict[Path, Leaf]:
        """Normalised, flattened content (cached)."""
        if self._flat is None:
            self._flat = normalised(self.content, self.style, self.kind)
        return self._flat


def normalised(content: Any, style: str, kind: str) -> dict[Path, Leaf]:
    """Flatten ``content`` with the normalisation of its layer."""
    if style == "k8s":
        return drop_k8s_defaults(kind, flatten(normalise_k8s(content)))
    if style == "arm":
        return flatten({k: v for k, v in content.items() if k not in _ARM_IGNORED})
    return flatten(content)


@dataclass(slots=True)
class Extracted:
    """Both sides' resources that may differ; ``unchanged`` counts those that cannot."""

    base: dict[str, Comparable] = field(default_factory=dict)
    head: dict[str, Comparable] = field(default_factory=dict)
    unchanged: int = 0
    #: Every ARM resource of each side (cost needs unchanged ones too).
    base_arm: list[dict[str, Any]] = field(default_factory=list)
    head_arm: list[dict[str, Any]] = field(default_factory=list)

    def add(self, side: str, res: Comparable) -> None:
        """Record ``res`` on ``side`` ("base" or "head")."""
        target = self.base if side == "base" else self.head
        if res.key in target:
            # The same identity twice on one side (a generator bug or a hand-edited
            # build): keep both visible instead of silently dropping one.
            n = 2
            while f"{res.key}#{n}" in target:
                n += 1
            res.key = f"{res.key}#{n}"
        target[res.key] = res


Files = dict[str, bytes]


def classify(path: str, files: Files) -> str:
    """What a generated file is, by its path (and, for JSON, its ``$schema``)."""
    parts = path.split("/")
    if path == "manifest.json":
        return "manifest"
    if parts[0] == "k8s" and len(parts) >= 3:
        if parts[-1] == "manifests.yaml" and len(parts) == 3:
            return "k8s-manifests"
        if f"k8s/{parts[1]}/manifests.yaml" in files:
            return "k8s-part"
        return "k8s-file"
    if parts[0] == "apim" and path.endswith(".xml"):
        return "apim-policy"
    if path == "functions/routing.json":
        return "routing"
    if path == "functions/settings.json":
        return "settings"
    if path.endswith(".zip"):
        return "zip"
    if parts[0] == "azure":
        if path.endswith(".bicep"):
            # The same resources as the ARM JSON next to it: compare them once.
            has_arm = any(p.startswith("azure/") and p.endswith(".json") for p in files)
            return "bicep-dup" if has_arm else "text"
        if path.endswith(".json"):
            head = files[path][:400]
            if ARM_PARAMETERS_SCHEMA.encode() in head:
                return "arm-parameters"
            if ARM_TEMPLATE_SCHEMA.encode() in head:
                return "arm"
    if path.endswith((".yaml", ".yml")):
        return "yaml"
    if path.endswith(".json"):
        return "json"
    if path.endswith(".xml"):
        return "xml"
    return "text"


def extract(base: Files, head: Files) -> Extracted:
    """Resources of both sides that may differ (see the module docstring)."""
    ex = Extracted()
    kinds: dict[str, str] = {}
    for side in (base, head):
        for path in side:
            kinds.setdefault(path, classify(path, side))
    arm_paths = sorted(p for p, k in kinds.items() if k == "arm")
    policy_paths = sorted(p for p, k in kinds.items() if k == "apim-policy")
    _arm(ex, base, head, arm_paths, policy_paths)
    for path in sorted(kinds):
        kind = kinds[path]
        b, h = base.get(path), head.get(path)
        if kind in ("manifest", "k8s-part", "bicep-dup", "arm", "apim-policy"):
            continue
        if b is not None and h is not None and b == h:
            ex.unchanged += 1
            continue
        handler = _HANDLERS[kind]
        handler(ex, path, b, h)
    return ex


# --------------------------------------------------------------------------------- ARM


def _arm_docs(files: Files, paths: list[str]) -> list[tuple[str, dict[str, Any]]]:
    return [(p, json.loads(files[p])) for p in paths if p in files]


def arm_key(res: dict[str, Any]) -> str:
    """Identity of an ARM resource: lower-cased type (ARM ignores case) and name."""
    return f"azure|{str(res.get('type', '')).lower()}|{res.get('name', '')}"


def policy_file(arm_type: str, name: str) -> str | None:
    """The ``apim/`` file of an ARM policy resource (docs/contracts.md layout)."""
    parts = name.split("/")
    t = arm_type.lower()
    if t == "microsoft.apimanagement/service/policies" and len(parts) == 2:
        return "apim/policies/global.xml"
    if t == "microsoft.apimanagement/service/apis/policies" and len(parts) == 3:
        return f"apim/policies/{parts[1]}/api.xml"
    if t == "microsoft.apimanagement/service/apis/operations/policies" and len(parts) == 4:
        return f"apim/policies/{parts[1]}/{parts[2]}.xml"
    if t == "microsoft.apimanagement/service/products/policies" and len(parts) == 3:
        return f"apim/products/{parts[1]}.xml"
    if t == FRAGMENT_TYPE and len(parts) == 2:
        return f"apim/fragments/{parts[1]}.xml"
    return None


def _arm(
    ex: Extracted, base: Files, head: Files, arm_paths: list[str], policies: list[str]
) -> None:
    sides: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {"base": {}, "head": {}}
    pol_arm: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {"base": {}, "head": {}}
    for side, files in (("base", base), ("head", head)):
        all_res = ex.base_arm if side == "base" else ex.head_arm
        for path, doc in _arm_docs(files, arm_paths):
            for section in ("parameters", "variables", "outputs"):
                if doc.get(section):
                    key = f"azure|template|{path}#{section}"
                    sides[side][key] = (path, {"__section": section, section: doc[section]})
            for res in doc.get("resources") or []:
                if not isinstance(res, dict):
                    continue
                all_res.append(res)
                t = str(res.get("type", ""))
                pfile = policy_file(t, str(res.get("name", "")))
                if t.lower() in APIM_POLICY_TYPES and pfile is not None:
                    pol_arm[side][pfile] = (path, res)
                else:
                    sides[side][arm_key(res)] = (path, res)
    b, h = sides["base"], sides["head"]
    for key in sorted(set(b) | set(h)):
        bb, hh = b.get(key), h.get(key)
        if bb is not None and hh is not None and bb[1] == hh[1]:
            ex.unchanged += 1
            continue
        for side, item in (("base", bb), ("head", hh)):
            if item is None:
                continue
            path, res = item
            if "__section" in res:
                section = res["__section"]
                ex.add(
                    side,
                    Comparable(
                        key=key,
                        layer="azure",
                        kind="ARM template",
                        name=f"{path} {section}",
                        content={section: res[section]},
                        files=(path,),
                        meta={"section": section},
                    ),
                )
                continue
            t = str(res.get("type", ""))
            ex.add(
                side,
                Comparable(
                    key=key,
                    layer="azure",
                    kind=t,
                    name=str(res.get("name", "")),
                    content=res,
                    files=(path,),
                    meta={"arm_type": t.lower()},
                    style="arm",
                ),
            )
    _policies(ex, base, head, policies, pol_arm)


# -------------------------------------------------------------------------- APIM policies


def xml_content(text: str) -> dict[str, Any]:
    """An XML document as nested data: ``{tag: {"@attr": v, "#text": t, child...}}``.

    Comments and whitespace between elements are dropped; repeated children are keyed
    by their ``name``/``id`` attribute when they have one (``set-variable[name=x]``),
    else by position, so inserting one named policy does not shift the others.
    """
    root = ET.fromstring(text)
    return {root.tag: _xml_element(root)}


def _xml_element(el: ET.Element) -> dict[str, Any]:
    out: dict[str, Any] = {f"@{k}": v for k, v in sorted(el.attrib.items())}
    text = (el.text or "").strip()
    if text:
        out["#text"] = text
    children = list(el)
    counts = Counter(c.tag for c in children)
    seen: Counter[str] = Counter()
    for child in children:
        seen[child.tag] += 1
        if counts[child.tag] == 1:
            label = child.tag
        else:
            ident = child.attrib.get("name") or child.attrib.get("id")
            label = f"{child.tag}[{ident}]" if ident else f"{child.tag}[{seen[child.tag]}]"
        body = _xml_element(child)
        out[label] = body if body else True
        tail = (child.tail or "").strip()
        if tail:
            out[f"{label}#tail"] = tail
    return out


def _policy_name(path: str) -> str:
    return path.removeprefix("apim/").removesuffix(".xml")


#: ARM type of a policy fragment (``apim/fragments/<id>.xml``), lower-cased.
FRAGMENT_TYPE = "microsoft.apimanagement/service/policyfragments"


def fragment_users(files: Files, fragment_id: str) -> int:
    """How many policy files of one side include the fragment ``fragment_id``."""
    needle = f'<include-fragment fragment-id="{fragment_id}"'.encode()
    return sum(1 for p, c in files.items() if p.startswith("apim/policies/") and needle in c)


def _policies(
    ex: Extracted,
    base: Files,
    head: Files,
    paths: list[str],
    arm: dict[str, dict[str, tuple[str, dict[str, Any]]]],
) -> None:
    keys = sorted(set(paths) | set(arm["base"]) | set(arm["head"]))
    for pfile in keys:
        bf, hf = base.get(pfile), head.get(pfile)
        ba, ha = arm["base"].get(pfile), arm["head"].get(pfile)
        if bf == hf and (ba[1] if ba else None) == (ha[1] if ha else None):
            ex.unchanged += 1
            continue
        for side, raw, arm_item in (("base", bf, ba), ("head", hf, ha)):
            if raw is None and arm_item is None:
                continue
            content: dict[str, Any] = {}
            files: list[str] = []
            text = raw.decode("utf-8") if raw is not None else None
            if arm_item is not None:
                path, res = arm_item
                files.append(path)
                props = dict(res.get("properties") or {})
                value = props.pop("value", None)
                if text is None and isinstance(value, str):
                    text = value
                rest = {k: v for k, v in res.items() if k not in _ARM_IGNORED | {"properties"}}
                if props:
                    rest["properties"] = props
                content["arm"] = rest
            if raw is not None:
                files.insert(0, pfile)
            if text is not None:
                try:
                    content["policy"] = xml_content(text)
                except ET.ParseError:
                    content["policy"] = {"#text": text}
            meta: dict[str, Any] = {"policy_file": pfile}
            kind = "policy"
            if pfile.startswith("apim/fragments/"):
                # One change here changes every operation that includes it: say how many.
                fragment_id = pfile.removeprefix("apim/fragments/").removesuffix(".xml")
                kind = "policy fragment"
                meta["arm_type"] = FRAGMENT_TYPE
                meta["included_by"] = fragment_users(base if side == "base" else head, fragment_id)
            ex.add(
                side,
                Comparable(
                    key=f"apim|{pfile}",
                    layer="apim",
                    kind=kind,
                    name=_policy_name(pfile),
                    content=content,
                    files=tuple(files),
                    meta=meta,
                ),
            )


# --------------------------------------------------------------------------- Kubernetes


_SEPARATOR = re.compile(r"(?m)^---[ \t]*\n")
_CONTENT = re.compile(r"(?m)^[ \t]*[^#\s]")


def split_documents(text: str) -> list[str]:
    """A multi-document YAML stream cut at its ``---`` lines, without parsing it.

    Only a line that is exactly ``---`` separates documents (ai4ec's emitter writes
    nothing else on it, and block scalars are indented, so they cannot contain one).
    Chunks without content, such as the header comment, are dropped.
    """
    if not text.endswith("\n"):
        text += "\n"
    return [d for d in _SEPARATOR.split(text) if _CONTENT.search(d)]


def k8s_key(cluster: str, obj: dict[str, Any]) -> tuple[str, str, str]:
    """(key, kind label, name label) of a Kubernetes object in ``cluster``."""
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    kind = str(obj.get("kind", ""))
    meta = obj.get("metadata") or {}
    ns = str(meta.get("namespace") or "")
    name = str(meta.get("name") or "")
    kind_label = f"{group}/{kind}" if group else kind
    name_label = f"{ns}/{name}" if ns else name
    return f"k8s|{cluster}|{group}|{kind}|{ns}|{name}", kind_label, name_label


def _k8s_resource(cluster: str, path: str, obj: dict[str, Any]) -> Comparable:
    key, kind_label, name_label = k8s_key(cluster, obj)
    labels = ((obj.get("metadata") or {}).get("labels")) or {}
    return Comparable(
        key=key,
        layer="kubernetes",
        kind=kind_label,
        name=f"{name_label} ({cluster})",
        content=obj,
        files=(path,),
        meta={"cluster": cluster, "labels": labels, "k8s_kind": str(obj.get("kind", ""))},
        style="k8s",
    )


def _k8s_manifests(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
    cluster = path.split("/")[1]
    bdocs = split_documents(b.decode("utf-8")) if b is not None else []
    hdocs = split_documents(h.decode("utf-8")) if h is not None else []
    common = Counter(bdocs) & Counter(hdocs)
    ex.unchanged += sum(common.values())
    for side, docs in (("base", bdocs), ("head", hdocs)):
        left = Counter(common)
        for doc in docs:
            if left[doc] > 0:
                left[doc] -= 1
                continue
            obj = yaml.load(doc, Loader=SafeLoader)
            if isinstance(obj, dict) and "kind" in obj:
                ex.add(side, _k8s_resource(cluster, path, obj))


def _k8s_file(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
    """A Kubernetes YAML file of a build without manifests.yaml: objects or plain data."""
    cluster = path.split("/")[1]
    for side, raw in (("base", b), ("head", h)):
        if raw is None:
            continue
        docs = [d for d in yaml.load_all(raw.decode("utf-8"), Loader=SafeLoader) if d]
        if docs and all(isinstance(d, dict) and "kind" in d for d in docs):
            for d in docs:
                ex.add(side, _k8s_resource(cluster, path, d))
        else:
            ex.add(side, _file_resource(path, docs[0] if len(docs) == 1 else docs))


# ---------------------------------------------------------------------------- Functions


def _routing(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
    sides = {"base": json.loads(b) if b else {}, "head": json.loads(h) if h else {}}
    for section in ("apis", "pipelines"):
        bs = sides["base"].get(section) or {}
        hs = sides["head"].get(section) or {}
        for ident in sorted(set(bs) | set(hs)):
            if ident in bs and ident in hs and bs[ident] == hs[ident]:
                ex.unchanged += 1
                continue
            for side, entries in (("base", bs), ("head", hs)):
                if ident in entries:
                    ex.add(
                        side,
                        Comparable(
                            key=f"functions|routing|{section}|{ident}",
                            layer="functions",
                            kind=f"routing {section[:-1]}",
                            name=ident,
                            content=entries[ident],
                            files=(path,),
                            meta={"routing": section, "id": ident},
                        ),
                    )
    rest = {
        side: {k: v for k, v in sides[side].items() if k not in ("apis", "pipelines")}
        for side, raw in (("base", b), ("head", h))
        if raw is not None
    }
    if len(rest) == 2 and rest["base"] == rest["head"]:
        return
    for side, value in rest.items():
        ex.add(side, _file_resource(path, value, kind="routing table", name="(top level)"))


def _settings(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
    bs: dict[str, Any] = json.loads(b) if b else {}
    hs: dict[str, Any] = json.loads(h) if h else {}
    for name in sorted(set(bs) | set(hs)):
        if name in bs and name in hs and bs[name] == hs[name]:
            ex.unchanged += 1
            continue
        for side, values in (("base", bs), ("head", hs)):
            if name in values:
                ex.add(
                    side,
                    Comparable(
                        key=f"functions|setting|{name}",
                        layer="functions",
                        kind="app setting",
                        name=name,
                        content={"value": values[name]},
                        files=(path,),
                        meta={"setting": name},
                    ),
                )


def zip_members(raw: bytes) -> dict[str, str]:
    """``{member name: sha256 of its content}``: zip timestamps and order do not count."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        return {
            i.filename: hashlib.sha256(zf.read(i)).hexdigest()
            for i in zf.infolist()
            if not i.is_dir()
        }


def _zip(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
    members = {
        side: zip_members(raw) for side, raw in (("base", b), ("head", h)) if raw is not None
    }
    if len(members) == 2 and members["base"] == members["head"]:
        ex.unchanged += 1
        return
    layer = "functions" if path.startswith("functions/") else "files"
    for side, content in members.items():
        ex.add(
            side,
            Comparable(
                key=f"{layer}|{path}",
                layer=layer,
                kind="package",
                name=path,
                content=content,
                files=(path,),
                meta={"zip": True},
                style="opaque",
            ),
        )


# ------------------------------------------------------------------------------ generic


def _layer_of(path: str) -> str:
    top = path.split("/", 1)[0]
    return {"azure": "azure", "k8s": "kubernetes", "apim": "apim", "functions": "functions"}.get(
        top, "files"
    )


def _file_resource(
    path: str, content: Any, kind: str = "file", name: str | None = None
) -> Comparable:
    return Comparable(
        key=f"{_layer_of(path)}|file|{path}|{name or ''}",
        layer=_layer_of(path),
        kind=kind,
        name=name or path,
        content=content,
        files=(path,),
        meta={"file": path},
    )


def _structured(
    loader: Callable[[bytes], Any],
) -> Callable[[Extracted, str, bytes | None, bytes | None], None]:
    def handler(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
        values = {}
        for side, raw in (("base", b), ("head", h)):
            if raw is not None:
                try:
                    values[side] = loader(raw)
                except Exception:  # noqa: BLE001 - unparsable: compare as text
                    values[side] = {"text": raw.decode("utf-8", "replace").splitlines()}
        if len(values) == 2 and values["base"] == values["head"]:
            ex.unchanged += 1
            return
        for side, value in values.items():
            ex.add(side, _file_resource(path, value))

    return handler


def _yaml_load(raw: bytes) -> Any:
    docs = [d for d in yaml.load_all(raw.decode("utf-8"), Loader=SafeLoader) if d is not None]
    return docs[0] if len(docs) == 1 else docs


def _arm_parameters(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
    values = {
        side: (json.loads(raw).get("parameters") or {})
        for side, raw in (("base", b), ("head", h))
        if raw is not None
    }
    if len(values) == 2 and values["base"] == values["head"]:
        ex.unchanged += 1
        return
    for side, value in values.items():
        ex.add(side, _file_resource(path, {"parameters": value}, kind="ARM parameters"))


def _text(ex: Extracted, path: str, b: bytes | None, h: bytes | None) -> None:
    for side, raw in (("base", b), ("head", h)):
        if raw is None:
            continue
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            content: Any = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
            ex.add(side, _file_resource(path, content))
            continue
        ex.add(side, _file_resource(path, {"text": "\n".join(lines)}))


def _xml_file(raw: bytes) -> Any:
    return xml_content(raw.decode("utf-8"))


_HANDLERS: dict[str, Callable[[Extracted, str, bytes | None, bytes | None], None]] = {
    "k8s-manifests": _k8s_manifests,
    "k8s-file": _k8s_file,
    "routing": _routing,
    "settings": _settings,
    "zip": _zip,
    "arm-parameters": _arm_parameters,
    "yaml": _structured(_yaml_load),
    "json": _structured(json.loads),
    "xml": _structured(_xml_file),
    "text": _text,
}
