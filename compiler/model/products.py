"""APIM products: which APIs and pipelines each publishes, with limits and quotas."""

from __future__ import annotations

from ..load import format_path
from .context import ModelContext
from .defaults import (
    read_auth,
    read_limit,
)
from .refs import (
    find_api,
    pipeline_index,
    unknown_product,
)
from .rules import unique
from .types import (
    Api,
    Pipeline,
    Product,
)


def read_products(
    ctx: ModelContext, apis: list[Api], pipelines: list[Pipeline]
) -> tuple[Product, ...]:
    """Every APIM product, plus warnings for APIs no product publishes."""
    raw = ctx.data.get("products", [])
    unique(ctx, [p["name"] for p in raw], ("products",), "product")
    names = {p["name"] for p in raw}
    members_api: dict[str, set[str]] = {n: set() for n in names}
    members_pipe: dict[str, set[str]] = {n: set() for n in names}
    for i, a in enumerate(apis):
        for j, prod in enumerate(a.products):
            if prod not in names:
                unknown_product(ctx, prod, ("apis", i, "products", j), names)
            else:
                members_api[prod].add(a.id)
    raw_pipes = ctx.data.get("pipelines", [])
    raw_index = pipeline_index(ctx)
    for p in pipelines:
        idx = raw_index[p.id]
        for j, prod in enumerate(p.products):
            if prod not in names:
                unknown_product(ctx, prod, ("pipelines", idx, "products", j), names)
            else:
                members_pipe[prod].add(p.id)
    pipe_objs = [(p.name, p.version, p.id) for p in pipelines]
    for i, prod in enumerate(raw):
        for j, ref in enumerate(prod.get("apis", [])):
            name, _, version = ref.partition("@")
            if version:
                api = find_api(
                    ctx,
                    name,
                    version,
                    apis,
                    ("products", i, "apis", j),
                    f"product {prod['name']!r}",
                )
                if api:
                    members_api[prod["name"]].add(api.id)
                continue
            matched = [a.id for a in apis if a.name == name]
            if not matched:
                find_api(
                    ctx, name, None, apis, ("products", i, "apis", j), f"product {prod['name']!r}"
                )
            members_api[prod["name"]].update(matched)
        for j, ref in enumerate(prod.get("pipelines", [])):
            name, _, version = ref.partition("@")
            matched = [
                pid for n, v, pid in pipe_objs if n == name and (not version or v == version)
            ]
            if (
                not matched
                and not any(r["name"] == name for r in raw_pipes)
                and not ctx.is_broken("pipelines", name)
            ):
                ctx.report(
                    "E-REF-PIPELINE",
                    f"product {prod['name']!r} references unknown pipeline {ref!r}",
                    ("products", i, "pipelines", j),
                    "defined pipelines: "
                    + (", ".join(sorted({r["name"] for r in raw_pipes})) or "none"),
                )
            members_pipe[prod["name"]].update(matched)
    out = []
    for i, prod in enumerate(raw):
        n = prod["name"]
        if not members_api[n] and not members_pipe[n]:
            ctx.report(
                "W-PRODUCT-EMPTY",
                f"product {n!r} contains no API or pipeline",
                ("products", i),
                warning=True,
            )
        out.append(
            Product(
                name=n,
                display_name=prod.get("displayName", n),
                description=prod.get("description", ""),
                subscription_required=prod.get("subscriptionRequired", True),
                approval_required=prod.get("approvalRequired", False),
                subscriptions_limit=prod.get("subscriptionsLimit"),
                published=prod.get("published", True),
                rate_limit=read_limit(prod.get("rateLimit")),
                quota=read_limit(prod.get("quota")),
                apis=tuple(sorted(members_api[n])),
                pipelines=tuple(sorted(members_pipe[n])),
                # Published products are visible to signed-in developers by default;
                # without a group no one could see or subscribe to them in the portal.
                groups=tuple(
                    sorted(
                        set(
                            prod.get(
                                "groups", ["developers"] if prod.get("published", True) else []
                            )
                        )
                    )
                ),
                entra_id=read_auth({"entraId": prod.get("entraId")}).entra_id,
                json_path=format_path(("products", i)),
            )
        )
    in_product = {m for p in out for m in (*p.apis, *p.pipelines)}
    for i, a in enumerate(apis):
        if a.auth.subscription_key and a.id not in in_product:
            ctx.report(
                "W-API-NO-PRODUCT",
                f"API {a.id!r} requires a subscription key but is in no product, so no "
                "caller can get one",
                ("apis", i),
                "add it to a product, or set auth.subscriptionKey: false",
                warning=True,
            )
    return tuple(out)
