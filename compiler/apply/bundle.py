"""What the Functions bundle declares, read without importing it.

``apply`` waits until the Functions host lists every function of the bundle before it
lets Event Grid validate the webhook. The list comes from the bundle's own source: each
``@app.function_name("Name")`` decorator of the v2 Python programming model. Parsing
(not importing) keeps ``apply`` free of the runtime's dependencies and of running code
from the build.
"""

from __future__ import annotations

import ast
import io
import zipfile

from ..errors import ApplyError


def function_names(bundle: bytes) -> list[str]:
    """Sorted names of the functions the bundle declares (empty: not a v2 Python app).

    Raises:
        ApplyError: the bundle is not a zip, or one of its Python files does not parse.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(bundle))
    except zipfile.BadZipFile:
        raise ApplyError("functions/bundle.zip is not a zip archive") from None
    names: set[str] = set()
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".py") or info.filename.startswith(".python_packages/"):
                continue
            source = archive.read(info).decode("utf-8", errors="replace")
            try:
                tree = ast.parse(source, filename=info.filename)
            except SyntaxError as exc:
                raise ApplyError(
                    f"functions/bundle.zip: {info.filename}, line {exc.lineno}: {exc.msg}"
                ) from None
            names.update(_declared(tree))
    return sorted(names)


def _declared(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for deco in node.decorator_list:
            if not (
                isinstance(deco, ast.Call)
                and isinstance(deco.func, ast.Attribute)
                and deco.func.attr == "function_name"
            ):
                continue
            args = [*deco.args[:1], *(k.value for k in deco.keywords if k.arg == "name")]
            out.update(
                a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)
            )
    return out
