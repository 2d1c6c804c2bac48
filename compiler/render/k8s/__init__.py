"""Kubernetes target: every object a cluster receives.

Helm values per API, Istio routing and security, cluster add-ons, and ``manifests.yaml``.

Per environment and cluster it writes one file, ``k8s/<cluster>/manifests.yaml``: the
chart rendered by the real Helm engine for every release plus the Istio and add-on
objects, in apply order; ``apply`` sends exactly this file and ``diff`` compares it.
The Helm values and the Istio and add-on templates' texts are inputs of that file, not
written beside it: each object was in the output twice (a third of a 1,000-API build's
bytes and files), and nothing reads the copies.

The room, one module per concern (each depends on :mod:`.objects` only, never on a
sibling; this module wires them):

- :mod:`.objects` - typed objects, shared names and helpers;
- :mod:`.istio` - Gateway, VirtualServices, DestinationRules, security policies;
- :mod:`.addons` - namespace, runtime secrets, KEDA auth, GPU device plugin, ingress TLS;
- :mod:`.chart` - Helm values per API and the chart rendered by helm-python-sdk;
- :mod:`.manifests` - manifests.yaml, ordered from the objects.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from ...errors import Ai4ecError
from ...model.types import Platform
from ..artifact import Artifact, RenderContext
from .addons import render_addons
from .chart import render_releases
from .istio import istio_objects
from .manifests import assemble_manifests, manifests_header
from .objects import parse_objects


def render_k8s(platform: Platform, context: RenderContext) -> list[Artifact]:
    """All Kubernetes artifacts of one environment."""
    source = context.source_name
    artifacts: list[Artifact] = []
    for cluster in platform.clusters:
        apis = [a for a in platform.apis if a.cluster == cluster.name]
        files = render_addons(platform, cluster, apis, source)
        objects = [obj for f in files for obj in parse_objects(f.path, f.text)]
        # The Istio objects (Python, GIL-bound) render on a thread of their own while the
        # releases' threads mostly wait on Helm's engine (Go, GIL released); the thread
        # runs in this context, so --no-cache holds there too.
        with ThreadPoolExecutor(1, thread_name_prefix="ai4ec-istio") as pool:
            run = contextvars.copy_context().run
            istio = pool.submit(run, istio_objects, platform, cluster, apis, source)
            try:
                releases = render_releases(platform, cluster, apis)
            except Ai4ecError:
                istio.result()  # an Istio error comes first, as when they ran in turn
                raise
            objects += istio.result()
        base = f"k8s/{cluster.name}"
        objects += [obj for r in releases for obj in r.objects]
        header = manifests_header(source, cluster.name, platform.environment)
        manifests = assemble_manifests(objects, header)
        # Every object parsed back on its own (parse_objects): the write stage checks joints.
        path = PurePosixPath(f"{base}/manifests.yaml")
        artifacts.append(Artifact(path, manifests.encode(), checked_documents=len(objects)))
    return artifacts


__all__ = ["render_k8s"]
