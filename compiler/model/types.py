"""The internal model: one immutable, typed view of a validated platform.

Every default is already resolved here (by the readers of :mod:`ai4ec.model`), every reference
is already checked, and every derived name is already computed, so renderers only read
fields. Collections are tuples; mappings are tuples of pairs in a fixed order, so the
model (and everything rendered from it) is deterministic and hashable.

Each entity keeps ``json_path``, the path of the entity in the merged document, so
``diff`` can trace generated resources back to ``platform.yaml`` lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    """How API Management handles an endpoint."""

    #: API Management proxies the request to the cluster and waits for the answer.
    SYNC = "sync"
    #: API Management creates a task and answers 202; the task manager dispatches it.
    ASYNC = "async"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """A Key Vault secret, by name (and optionally version). Never a value."""

    key_vault_secret: str
    version: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Registry:
    """Azure Container Registry."""

    name: str
    sku: str

    @property
    def login_server(self) -> str:
        """Host name images are pulled from."""
        return f"{self.name}.azurecr.io"


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomDomain:
    """Gateway host name with its Key Vault certificate."""

    host_name: str
    key_vault_certificate: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiManagement:
    """The API Management service."""

    name: str
    sku: str
    capacity: int
    publisher_name: str
    publisher_email: str
    custom_domain: CustomDomain | None


#: ``azure.cache.kind``: Azure Managed Redis (default) or the retiring Azure Cache for Redis.
CACHE_MANAGED = "managed"
CACHE_LEGACY = "legacy"
#: Index shards of the runtime's keys on a Redis Cluster (``AI4EC_REDIS_SHARDS``). Fixed
#: here because the Function App and every KEDA trigger must agree on it.
CACHE_CLUSTER_SHARDS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Cache:
    """The task store's Redis.

    ``managed`` is Azure Managed Redis (``Microsoft.Cache/redisEnterprise``) with the
    OSS cluster policy, which the runtime serves with ``AI4EC_REDIS_MODE=cluster``;
    ``legacy`` is Azure Cache for Redis (``Microsoft.Cache/redis``), one node.

    Attributes:
        name: The cache resource name.
        kind: :data:`CACHE_MANAGED` or :data:`CACHE_LEGACY`.
        sku: ``Balanced_B1`` and the like (managed) or ``Basic``/``Standard``/``Premium``.
        family: ``C`` or ``P`` (legacy only; ``""`` for managed).
        capacity: Size within the family (legacy only; 0 for managed).
        location: Azure region (part of a managed cache's host name).
    """

    name: str
    kind: str
    sku: str
    family: str
    capacity: int
    location: str

    @property
    def managed(self) -> bool:
        """Whether this is Azure Managed Redis (a cluster with the OSS policy)."""
        return self.kind == CACHE_MANAGED

    @property
    def host(self) -> str:
        """The host name clients connect to (known before the cache exists)."""
        if self.managed:
            return f"{self.name}.{self.location}.redis.azure.net"
        return f"{self.name}.redis.cache.windows.net"

    @property
    def port(self) -> int:
        """The TLS port: 10000 on Azure Managed Redis, 6380 on Azure Cache for Redis."""
        return 10000 if self.managed else 6380

    @property
    def shards(self) -> int:
        """Index shards of the runtime's keys; 0 = one Redis, upstream's key names."""
        return CACHE_CLUSTER_SHARDS if self.managed else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Functions:
    """The task-manager Function App and its plan."""

    app_name: str
    plan_name: str
    plan_sku: str
    minimum_instances: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventGrid:
    """The dispatch topic and its subscription policy."""

    topic_name: str
    max_delivery_attempts: int
    event_ttl_minutes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Monitoring:
    """Log Analytics workspace and Application Insights."""

    workspace_name: str
    app_insights_name: str
    retention_days: int
    daily_cap_gb: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyVault:
    """The platform Key Vault."""

    name: str
    sku: str
    soft_delete_retention_days: int
    purge_protection: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Storage:
    """Storage account for the Function App and API results."""

    name: str
    sku: str
    #: Prefix of the per-API results containers (``<prefix>-<api id>``, see
    #: :func:`~ai4ec.model.naming.results_container`); no container has this name itself.
    results_container: str

    @property
    def blob_endpoint(self) -> str:
        """The account's blob endpoint (public cloud, like every endpoint ai4ec derives)."""
        return f"https://{self.name}.blob.core.windows.net"


@dataclass(frozen=True, slots=True, kw_only=True)
class Azure:
    """Everything about where the platform lives in Azure."""

    subscription_id: str
    tenant_id: str | None
    resource_group: str
    location: str
    name_prefix: str
    registry: Registry
    api_management: ApiManagement
    cache: Cache
    functions: Functions
    event_grid: EventGrid
    monitoring: Monitoring
    key_vault: KeyVault
    storage: Storage


@dataclass(frozen=True, slots=True, kw_only=True)
class Taint:
    """A node taint; APIs placed on the pool tolerate it."""

    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return (
            f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Spot:
    """Spot settings of a pool."""

    max_price: float
    eviction_policy: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    """A node pool (user pools run APIs, the system pool runs add-ons)."""

    name: str
    vm_size: str
    count: int | None
    min_count: int | None
    max_count: int | None
    spot: Spot | None
    gpu: bool
    gpus_per_node: int | None
    vcpus: int | None
    memory_gib: float | None
    #: User taints plus the automatic GPU and spot taints, in that order.
    taints: tuple[Taint, ...]
    labels: tuple[tuple[str, str], ...]
    zones: tuple[str, ...]
    os_disk_size_gb: int
    max_pods: int
    system: bool = False
    json_path: str = ""

    @property
    def autoscaled(self) -> bool:
        """Whether the cluster autoscaler manages the pool."""
        return self.min_count is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingress:
    """The Istio ingress gateway API Management calls."""

    protocol: str
    external: bool
    hosts: tuple[str, ...]
    certificate: str | None
    allowed_source_ranges: tuple[str, ...]
    #: Mutual TLS at the gateway: callers must present the ``ai4ec-gateway-client``
    #: certificate (API Management and the task manager's dispatch do).
    client_certificate: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """An AKS cluster."""

    name: str
    aks_name: str
    kubernetes_version: str
    namespace: str
    system_pool: Pool
    pools: tuple[Pool, ...]
    istio_revision: str
    ingress: Ingress
    keda: bool
    nvidia_device_plugin: bool
    #: Entra ID groups granted AKS RBAC Cluster Admin on the cluster (lowercase ids).
    admin_groups: tuple[str, ...] = ()
    json_path: str = ""

    def pool(self, name: str) -> Pool:
        """The user pool called ``name`` (the builder guarantees it exists)."""
        return next(p for p in self.pools if p.name == name)

    @property
    def gpu_pools(self) -> tuple[Pool, ...]:
        """User pools with GPUs."""
        return tuple(p for p in self.pools if p.gpu)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One operation of an API."""

    name: str
    path: str
    #: ``api.base_path + path``: what Istio matches and the task manager stores.
    backend_path: str
    methods: tuple[str, ...]
    mode: Mode
    timeout_seconds: int
    max_body_bytes: int
    description: str
    json_path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """An HTTP probe."""

    path: str
    initial_delay_seconds: int
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Probes:
    """Readiness, liveness and startup probes of an API."""

    readiness: Probe
    liveness: Probe
    startup: Probe


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """Per-replica requests (memory is also the limit)."""

    cpu: str
    memory: str
    gpu: int
    cpu_limit: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityContext:
    """Who an API's container runs as (``apis[].securityContext``); non-root by default."""

    run_as_non_root: bool = True
    run_as_user: int = 1000
    run_as_group: int = 1000
    fs_group: int = 1000
    read_only_root_filesystem: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A recurring window with a replica floor."""

    name: str
    start: str
    end: str
    timezone: str
    min_replicas: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Scaling:
    """Replica autoscaling rules."""

    min_replicas: int
    max_replicas: int
    pending_tasks_per_replica: int | None
    cpu_utilization: int | None
    memory_utilization: int | None
    requests_per_second: float | None
    schedules: tuple[Schedule, ...]
    cooldown_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskPolicy:
    """Task-manager policy for async work."""

    ttl_seconds: int
    max_attempts: int
    backoff_seconds: int
    #: How long a task may wait undelivered (``created``) before it is retried or failed.
    queue_timeout_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EntraAuth:
    """Entra ID JWT validation."""

    tenant_id: str
    audiences: tuple[str, ...]
    required_roles: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    """Caller authentication at API Management."""

    subscription_key: bool
    entra_id: EntraAuth | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cors:
    """Cross-origin policy."""

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...]
    allow_credentials: bool
    max_age_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Api:
    """One version of a model API."""

    id: str
    name: str
    version: str
    display_name: str
    description: str
    base_path: str
    api_prefix: str
    image: str
    cluster: str
    pool: str
    port: int
    endpoints: tuple[Endpoint, ...]
    openapi: str | None
    probes: Probes
    resources: Resources
    env: tuple[tuple[str, str], ...]
    secrets: tuple[tuple[str, SecretRef], ...]
    scaling: Scaling
    concurrency: int
    tasks: TaskPolicy
    products: tuple[str, ...]
    auth: Auth
    cors: Cors | None
    upstream_status_codes: bool
    #: Pipeline steps that follow this API's endpoints: (endpoint backend path, next api id).
    next_in_pipeline: tuple[tuple[str, str], ...] = ()
    security_context: SecurityContext = field(default_factory=SecurityContext)
    json_path: str = ""

    @property
    def has_async(self) -> bool:
        """Whether any endpoint is async (the API needs the task manager)."""
        return any(e.mode is Mode.ASYNC for e in self.endpoints)

    @property
    def all_async(self) -> bool:
        """Whether every endpoint is async (only then may it scale to zero)."""
        return all(e.mode is Mode.ASYNC for e in self.endpoints)

    @property
    def longest_timeout_seconds(self) -> int:
        """The longest endpoint timeout (drives graceful shutdown)."""
        return max(e.timeout_seconds for e in self.endpoints)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineStep:
    """One resolved stage of a pipeline."""

    api: str
    endpoint_path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    """Several async endpoints exposed as one new async API."""

    id: str
    name: str
    version: str
    display_name: str
    description: str
    path: str
    steps: tuple[PipelineStep, ...]
    max_body_bytes: int
    tasks: TaskPolicy
    products: tuple[str, ...]
    auth: Auth
    cors: Cors | None
    upstream_status_codes: bool
    json_path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """Calls per period."""

    calls: int
    period_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Product:
    """An API Management product with its resolved members."""

    name: str
    display_name: str
    description: str
    subscription_required: bool
    approval_required: bool
    subscriptions_limit: int | None
    published: bool
    rate_limit: Limit | None
    quota: Limit | None
    apis: tuple[str, ...]
    pipelines: tuple[str, ...]
    #: Developer-portal groups that see the product and may subscribe to it.
    groups: tuple[str, ...] = ()
    #: Callers must also present this Entra ID token (``products[].entraId``).
    entra_id: EntraAuth | None = None
    json_path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    """The whole validated platform for one environment."""

    name: str
    description: str
    environment: str
    tags: tuple[tuple[str, str], ...]
    azure: Azure
    clusters: tuple[Cluster, ...]
    apis: tuple[Api, ...]
    pipelines: tuple[Pipeline, ...]
    products: tuple[Product, ...]
    #: The environment declares itself for development (``environments.<env>.development``).
    development: bool = False
    source_file: str = ""
    _index: dict[str, Api] = field(default_factory=dict, compare=False, repr=False)
    _member_of: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    def api(self, api_id: str) -> Api:
        """The API with id ``api_id`` (the builder guarantees it exists)."""
        if not self._index:
            self._index.update({a.id: a for a in self.apis})
        return self._index[api_id]

    def pipelines_of(self, api_id: str) -> tuple[str, ...]:
        """Ids of the pipelines with a step on ``api_id``, sorted.

        Built once for all APIs: asking every pipeline per API made the Kubernetes
        values quadratic in the platform's size.
        """
        if not self._member_of and self.pipelines:
            member: dict[str, set[str]] = {}
            for p in self.pipelines:
                for s in p.steps:
                    member.setdefault(s.api, set()).add(p.id)
            self._member_of.update({a: tuple(sorted(ids)) for a, ids in member.items()})
        return self._member_of.get(api_id, ())

    def cluster(self, name: str) -> Cluster:
        """The cluster called ``name``."""
        return next(c for c in self.clusters if c.name == name)
