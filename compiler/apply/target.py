"""Where a build goes: subscription, resource group and the Azure names ``apply`` needs.

A build directory holds what to deploy but not where: the subscription and resource
group (which differ per environment) live in platform.yaml. ``apply`` therefore reads the
platform file the build was made from (``manifest.json`` names it and records its
SHA-256) and refuses a file that changed since: applying an old build over a newer
platform file would deploy something nobody is looking at. ``--subscription`` and
``--resource-group`` override the file (e.g. a disposable test resource group).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ApplyError
from .builddir import Build


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """One AKS cluster: its platform name, Azure name and ingress gateway."""

    name: str
    aks_name: str
    protocol: str
    #: The AKS Istio add-on's external gateway (else the internal one).
    external: bool
    #: Namespace of the platform's objects.
    namespace: str


@dataclass(frozen=True, slots=True)
class Target:
    """Azure coordinates of one environment."""

    subscription_id: str
    resource_group: str
    location: str
    function_app: str
    #: Y1 (Consumption) plans run their package from a blob URL instead of zip deploy.
    functions_consumption: bool
    storage_account: str
    clusters: dict[str, ClusterTarget]
    #: Cluster whose ingress dispatch posts tasks to (``backendBaseUrl``).
    dispatch_cluster: str | None


def _platform_path(build: Build, explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if not build.source_file:
        raise ApplyError(
            f"{build.root}/manifest.json does not name its platform file; pass --platform FILE"
        )
    return Path(build.source_file)


def load_target(
    build: Build,
    platform_file: Path | None,
    subscription: str | None = None,
    resource_group: str | None = None,
) -> Target:
    """The target of ``build``, read from its (unchanged) platform file.

    Raises:
        ApplyError: the file is missing, changed since the build, or invalid.
    """
    from ..errors import Ai4ecError
    from ..pipeline import check_platform, require_ok

    path = _platform_path(build, platform_file)
    if not path.is_file():
        raise ApplyError(
            f"cannot find {path}, the platform file {build.root} was built from "
            "(run apply where you ran build, or pass --platform FILE)"
        )
    env = build.environment
    result = check_platform(path, [env])
    if result.document is not None and env == "default":
        from ..load import environment_names

        if not environment_names(result.document):
            result = check_platform(path, None)
    doc = result.document
    if doc is not None and build.source_sha256:
        sha = hashlib.sha256("\n".join(doc.lines).encode()).hexdigest()
        if sha != build.source_sha256:
            raise ApplyError(
                f"{path} changed since {build.root} was built; run `ai4ec build` again "
                "and apply the new output"
            )
    try:
        platform = require_ok(result)[0]
    except Ai4ecError as exc:
        raise ApplyError(f"{path} is not valid: {exc}", exc.diagnostics) from None
    az = platform.azure
    clusters = {
        c.name: ClusterTarget(
            name=c.name,
            aks_name=c.aks_name,
            protocol=c.ingress.protocol,
            external=c.ingress.external,
            namespace=c.namespace,
        )
        for c in platform.clusters
    }
    from ..model.types import Mode

    async_clusters = [
        c.name
        for c in platform.clusters
        if any(
            a.cluster == c.name and any(e.mode is Mode.ASYNC for e in a.endpoints)
            for a in platform.apis
        )
    ]
    candidates = async_clusters or list(clusters)
    dispatch = candidates[0] if candidates else None
    return Target(
        subscription_id=subscription or az.subscription_id,
        resource_group=resource_group or az.resource_group,
        location=az.location,
        function_app=az.functions.app_name,
        functions_consumption=az.functions.plan_sku == "Y1",
        storage_account=az.storage.name,
        clusters=clusters,
        dispatch_cluster=dispatch,
    )
