"""``apply --plan``'s live catalog checks: validate's catalog rules, asked of the region now.

``validate`` holds platform.yaml against the catalog in ``compiler/data`` (taken on a
known day, with no quota in it). Just before a deployment the subscription itself can
say more: a VM size restricted for this subscription, a Kubernetes minor or Istio
revision AKS no longer offers in the region, GPU family vCPU quota that cannot hold the
pools at their maxima. Each would fail the deployment minutes in; ``--plan`` reports
them first, and an error makes ``--plan`` exit non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ApplyError
from .builddir import load_build
from .options import ApplyOptions


def _platform(options: ApplyOptions, build: Any) -> Any:
    """The validated model of the build's environment (the file apply already checked)."""
    from ..errors import Ai4ecError
    from ..load import environment_names
    from ..pipeline import check_platform, require_ok

    path = options.platform_file or (Path(build.source_file) if build.source_file else None)
    if path is None or not path.is_file():
        raise ApplyError(f"live checks: cannot find the platform file of {build.root}")
    result = check_platform(path, [build.environment])
    if result.document is not None and build.environment == "default":
        if not environment_names(result.document):
            result = check_platform(path, None)
    try:
        return require_ok(result)[0]
    except Ai4ecError as exc:
        raise ApplyError(f"{path} is not valid: {exc}", exc.diagnostics) from None


def live_ask(platform: Any) -> Any:
    """What the platform needs from its region (sizes, versions, revisions, quota)."""
    from ..catalog.capacity import PoolDemand
    from ..catalog.live import LiveAsk

    sizes: list[tuple[str, str]] = []
    pools: list[PoolDemand] = []
    kube: list[tuple[str, str]] = []
    mesh: list[tuple[str, str]] = []
    for c in platform.clusters:
        kube.append((f"cluster {c.name}", c.kubernetes_version))
        if c.istio_revision:
            mesh.append((f"cluster {c.name}", c.istio_revision))
        for p in (c.system_pool, *c.pools):
            sizes.append((f"cluster {c.name}, pool {p.name}", p.vm_size))
            most = p.max_count or p.count or p.min_count or 0
            if p.gpu and most:
                pools.append(PoolDemand(c.name, p.name, p.vm_size, most))
    return LiveAsk(tuple(sizes), tuple(kube), tuple(mesh), tuple(pools))


def live_plan_findings(options: ApplyOptions) -> list[Any]:
    """Findings of the live checks for the build at ``options.build_dir``.

    Raises:
        ApplyError: the platform file is unusable, or Azure refused a read.
    """
    from ..catalog.data import CatalogError
    from ..catalog.live import check_live
    from .azure import Azure
    from .target import load_target

    build = load_build(options.build_dir)
    target = load_target(build, options.platform_file, options.subscription)
    platform = _platform(options, build)
    az = Azure(
        target.subscription_id,
        cloud=options.cloud,
        arm_endpoint=options.arm_endpoint,
        credential=options.credential,
        connection_verify=options.connection_verify,
        retry=options.retry,
        poll_interval=options.poll_interval,
    )
    try:
        return check_live(
            az.credential,
            target.subscription_id,
            target.location,
            live_ask(platform),
            **az.client_options(),
        )
    except CatalogError as exc:
        raise ApplyError(f"live checks: {exc}") from None
    finally:
        az.close()
