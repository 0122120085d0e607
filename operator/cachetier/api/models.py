"""Pydantic models of the CacheTier API (``cachetier.io/v1alpha1``): spec and status.

Pure: no I/O. These models are the single source of the CRD schema
(``make crds`` generates ``crds/cachetier.yaml`` from them), so every field
carries a description, and every rule the API server can enforce (enums,
ranges, patterns, CEL) is declared here through ``json_schema_extra``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from cachetier.api import redis_config

# A Redis memory amount: a number with an optional unit b, k, kb, m, mb, g, gb
# (case-insensitive), as redis.conf accepts it.
MEMORY_PATTERN = r"^[0-9]{1,19}([kKmMgG][bB]?|[bB])?$"
# A non-negative Kubernetes quantity: the API server's own grammar without the
# sign (1Gi, 500M, 1.5Gi, 100m, 2, 1e3).
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$"
)
# A Go-style duration limited to s, m, h: 30s, 10m, 1h30m.
DURATION_PATTERN = r"^([0-9]+(s|m|h))+$"
# An RDB snapshot rule "<seconds> <changes>", both at least 1 (redis.conf `save`).
RDB_RULE_PATTERN = r"^[1-9][0-9]{0,9} [1-9][0-9]{0,9}$"
# A Redis command name (letters, digits, '|' for subcommands, '-' and '_').
COMMAND_PATTERN = r"^[A-Za-z][A-Za-z0-9|_-]*$"
# A DNS-1123 subdomain (Secret names).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# A DNS-1123 label (container names).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The longest CacheTier name: StatefulSet pod names add "-<shard>-<ordinal>" and
# the controller-revision-hash label value must stay within 63 characters.
MAX_NAME_LENGTH = 52

Mode = Literal["standalone", "replication", "cluster", "external"]
EvictionPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]
PersistenceMode = Literal["none", "rdb", "aof"]
LogLevel = Literal["debug", "verbose", "notice", "warning"]
Granularity = Literal["workload", "pod"]
ConsumerKind = Literal["Deployment", "StatefulSet"]
Phase = Literal["Pending", "Provisioning", "Ready", "Degraded", "RolledBack", "Failed"]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


def _number_to_str(value: Any) -> Any:
    """Accept ``cpu: 1`` as Kubernetes does: an integer quantity becomes its string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# A Kubernetes quantity: a string in Python, int-or-string on the wire (like
# resource.Quantity in core types, so `cpu: 1` is accepted).
Quantity = Annotated[
    str,
    BeforeValidator(_number_to_str),
    Field(pattern=QUANTITY_PATTERN, max_length=64),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
RdbRule = Annotated[str, Field(pattern=RDB_RULE_PATTERN, max_length=32)]
CommandName = Annotated[str, Field(pattern=COMMAND_PATTERN, max_length=64)]
ContainerName = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]
LabelValue = Annotated[str, Field(max_length=63)]
StepPercent = Annotated[int, Field(ge=0, le=100)]


def _cel(
    rule: str,
    message: str,
    field_path: str | None = None,
    message_expression: str | None = None,
) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression is not None:
        entry["messageExpression"] = message_expression
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class _Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class SecretKeyRef(_Model):
    """A key in a Secret of the tier's namespace."""

    name: str = Field(
        description="Name of the Secret, in the CacheTier's namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    key: str = Field(
        description="Key inside the Secret's data.",
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
    )


class PersistenceSpec(_Model):
    """How Redis keeps data across restarts, and the volume it keeps it on."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.mode != 'rdb' || size(self.rdbSchedule) > 0",
                    "persistence.rdbSchedule must not be empty when persistence.mode is rdb",
                    ".rdbSchedule",
                ),
                _cel(
                    "(oldSelf.mode == 'none') == (self.mode == 'none')",
                    "persistence.mode cannot change between none (no volume) and rdb/aof "
                    "(a volume per pod) on an existing tier: the StatefulSet's volumes are "
                    "fixed when it is created; create a new CacheTier instead",
                    ".mode",
                ),
                _cel(
                    "!quantity(self.size).isLessThan(quantity(oldSelf.size))",
                    "persistence.size cannot shrink: a volume cannot be made smaller "
                    "(it can grow: the operator expands the volumes in place)",
                    ".size",
                ),
            ]
        }
    )

    mode: PersistenceMode = Field(
        default="aof",
        description=(
            "none: memory only, no volume; rdb: periodic snapshots per rdbSchedule; "
            "aof: append-only file (fsync every second) plus the snapshots."
        ),
    )
    rdb_schedule: list[RdbRule] = Field(
        default_factory=lambda: ["900 1", "300 10", "60 10000"],
        description=(
            'RDB snapshot rules, each "<seconds> <changes>" (redis.conf `save`): '
            "snapshot after <seconds> if at least <changes> keys changed."
        ),
        max_length=16,
    )
    size: Quantity = Field(
        default="1Gi",
        description="Size of each Redis pod's PersistentVolumeClaim (a Kubernetes quantity).",
    )
    storage_class_name: str | None = Field(
        default=None,
        description="StorageClass of the claims; null uses the cluster's default class.",
        max_length=253,
    )
    retain_on_delete: bool = Field(
        default=True,
        description=(
            "Keep the PersistentVolumeClaims when the CacheTier (or a scaled-down pod) "
            "is deleted. Set false to let Kubernetes delete them with the StatefulSet."
        ),
    )


ConfigValue = Annotated[str, Field(max_length=1024, pattern=r"^[^\r\n]*$")]


class RedisSpec(_Model):
    """redis.conf settings rendered into the `<tier>-config` ConfigMap."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *(
                    _cel(
                        f"!has(self.config) || !('{n}' in self.config)",
                        f"redis.config: {n} is set by the operator, not by redis.config",
                        ".config",
                    )
                    for n in redis_config.owned_names()
                ),
            ]
        }
    )

    maxmemory: str = Field(
        default="2gb",
        description=(
            "Memory limit of the data set, in Redis units: a number with an optional "
            "b, k, kb, m, mb, g or gb (e.g. 512mb, 2gb). Must fit inside the container's "
            "memory limit when one is set."
        ),
        pattern=MEMORY_PATTERN,
        max_length=24,
    )
    maxmemory_policy: EvictionPolicy = Field(
        default="allkeys-lru",
        description="Eviction policy when maxmemory is reached (one of the 8 Redis policies).",
    )
    persistence: PersistenceSpec = Field(
        default_factory=PersistenceSpec,
        description="Persistence mode and volume.",
    )
    disabled_commands: list[CommandName] = Field(
        default_factory=lambda: ["FLUSHDB", "FLUSHALL", "KEYS"],
        description=(
            "Commands the application user may not run, denied through an ACL rule "
            "(not rename-command). Whatever this list says, the application user can "
            "never run administrative commands: the ACL categories @admin and @dangerous "
            "are denied, except INFO, SORT, SORT_RO and the KEYS, FLUSHDB and FLUSHALL "
            "that this list denies by default. The operator's own user is not restricted."
        ),
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    log_level: LogLevel = Field(default="notice", description="Redis loglevel.")
    config: dict[str, ConfigValue] = Field(
        default_factory=dict,
        description=(
            "Extra redis.conf directives, {name: value} (e.g. timeout: '300', "
            "notify-keyspace-events: Ex, slowlog-log-slower-than: '5000'). Directives the "
            "operator sets (port, bind, dir, passwords and users, persistence, logging, "
            "maxmemory, replication roles, cluster-*, tls-* ...) are refused. Settings Redis "
            "can change at runtime are applied live with CONFIG SET, no restart; the few it "
            "reads only at start (databases, io-threads, tcp-backlog ...) restart the pods."
        ),
        max_length=64,
    )


class AuthSpec(_Model):
    """Client authentication."""

    enabled: bool = Field(
        default=True,
        description=(
            "Require a password. The operator generates a strong one once into "
            "`<tier>-auth` and never changes an existing one."
        ),
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Bring your own password: a key of an existing Secret. Null = generate.",
    )


class TLSSpec(_Model):
    """TLS for client connections."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!self.enabled || has(self.secretName)",
                    "tls.secretName is required when tls.enabled is true",
                    ".secretName",
                )
            ]
        }
    )

    enabled: bool = Field(
        default=False,
        description="Serve TLS only; the connection URL becomes rediss://.",
    )
    secret_name: str | None = Field(
        default=None,
        description="A kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt.",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )


class ClusterSpec(_Model):
    """Redis Cluster layout (mode: cluster)."""

    shards: int = Field(
        default=3,
        ge=3,
        le=100,
        description="Number of master shards (Redis Cluster needs at least 3).",
    )
    replicas_per_shard: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Replicas of each master.",
    )


class ReplicationSpec(_Model):
    """A primary with replicas, failover by Redis Sentinel (mode: replication)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.sentinels % 2 == 1",
                    "replication.sentinels must be odd (3, 5 or 7): an even count adds no "
                    "failure tolerance and can split its vote",
                    ".sentinels",
                ),
                _cel(
                    "!has(self.quorum) || self.quorum <= self.sentinels",
                    "replication.quorum must be at most replication.sentinels",
                    ".quorum",
                ),
                _cel(
                    "self.minReplicasToWrite <= self.replicas",
                    "replication.minReplicasToWrite must be at most replication.replicas",
                    ".minReplicasToWrite",
                ),
            ]
        }
    )

    replicas: int = Field(
        default=2, ge=1, le=5, description="Replicas of the primary (pods: 1 + replicas)."
    )
    sentinels: int = Field(
        default=3,
        ge=3,
        le=7,
        description="Redis Sentinel processes that watch the primary and fail over (odd).",
    )
    quorum: int | None = Field(
        default=None,
        ge=1,
        le=7,
        description=(
            "Sentinels that must agree the primary is down before a failover "
            "(default: a majority of sentinels)."
        ),
    )
    down_after_milliseconds: int = Field(
        default=5000,
        ge=1000,
        le=600000,
        description="How long the primary may not answer before a Sentinel considers it down.",
    )
    failover_timeout: int = Field(
        default=60000,
        ge=1000,
        le=3600000,
        description="Sentinel's failover-timeout in milliseconds.",
    )
    min_replicas_to_write: int = Field(
        default=0,
        ge=0,
        le=5,
        description=(
            "The primary refuses writes unless this many replicas are connected and "
            "in sync (redis.conf min-replicas-to-write; 0 = always accept)."
        ),
    )

    def effective_quorum(self) -> int:
        """``quorum``, or a majority of the sentinels."""
        return self.quorum if self.quorum is not None else self.sentinels // 2 + 1


class ExternalSpec(_Model):
    """A Redis the operator does not run (Redis Cloud, ElastiCache, ...)."""

    url_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "The key of a Secret holding the full URL (redis:// or rediss://, with "
            "credentials). Required when mode is external."
        ),
    )


class ResourcesSpec(_Model):
    """Requests and limits of the redis container."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Resource requests, e.g. {cpu: 100m, memory: 256Mi}.",
        max_length=16,
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description=(
            "Resource limits, e.g. {memory: 3Gi}. maxmemory must fit under the memory limit."
        ),
        max_length=16,
    )


class SelectorRequirement(_Model):
    """One label selector requirement."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 "
                    ": size(self.values) == 0",
                    "values must be non-empty for In and NotIn, and empty for Exists "
                    "and DoesNotExist",
                    ".values",
                )
            ]
        }
    )

    key: str = Field(description="The label key.", min_length=1, max_length=317)
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list,
        description="Values for In and NotIn; empty for Exists and DoesNotExist.",
        max_length=64,
    )


class LabelSelector(_Model):
    """A Kubernetes label selector."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="Labels a workload must carry, all of them.",
        max_length=64,
    )
    match_expressions: list[SelectorRequirement] = Field(
        default_factory=list,
        description="Set-based requirements, all of which must match.",
        max_length=64,
    )


class Toleration(_Model):
    """A Kubernetes toleration (core/v1 Toleration)."""

    key: str | None = Field(default=None, description="The taint key (empty: every key).")
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Exists or Equal (the value)."
    )
    value: str | None = Field(default=None, description="The taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="NoSchedule, PreferNoSchedule or NoExecute (empty: all)."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated (seconds)."
    )


class TopologySpread(_Model):
    """A topology spread constraint (core/v1 TopologySpreadConstraint)."""

    max_skew: int = Field(
        default=1, ge=1, description="Most pods one domain may hold above another."
    )
    topology_key: str = Field(
        description="Node label of the domain, e.g. topology.kubernetes.io/zone.",
        min_length=1,
        max_length=317,
    )
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        default="ScheduleAnyway", description="DoNotSchedule or ScheduleAnyway."
    )
    label_selector: LabelSelector | None = Field(
        default=None,
        description="Pods counted in a domain. Empty: this tier's pods of the same kind.",
    )
    min_domains: int | None = Field(
        default=None, ge=1, description="Minimum number of eligible domains (DoNotSchedule)."
    )


class SchedulingSpec(_Model):
    """Where the tier's pods (Redis and Sentinel) may run."""

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="Node labels the pods require.", max_length=32
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pods tolerate.", max_length=32
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description=(
            "A core/v1 Affinity, as in a pod spec. Unset: the Redis pods prefer not to "
            "share a node (pod anti-affinity, preferred)."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    topology_spread_constraints: list[TopologySpread] | None = Field(
        default=None,
        description=(
            "Spreading of the Redis pods. Unset: across kubernetes.io/hostname and "
            "topology.kubernetes.io/zone, maxSkew 1, ScheduleAnyway (modes with more "
            "than one pod); [] turns spreading off."
        ),
        max_length=8,
    )
    priority_class_name: str | None = Field(
        default=None, description="The pods' PriorityClass.", max_length=253
    )


class PodMetadataSpec(_Model):
    """Extra labels and annotations of the tier's pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.labels) || self.labels.all(k, !k.startsWith('cachetier.io/') "
                    "&& !k.startsWith('app.kubernetes.io/'))",
                    "podMetadata.labels may not use the cachetier.io/ or app.kubernetes.io/ "
                    "prefixes: the operator's selectors and roles use them",
                    ".labels",
                ),
                _cel(
                    "!has(self.annotations) || "
                    "self.annotations.all(k, !k.startsWith('cachetier.io/'))",
                    "podMetadata.annotations may not use the cachetier.io/ prefix",
                    ".annotations",
                ),
            ]
        }
    )

    labels: dict[str, LabelValue] = Field(
        default_factory=dict, description="Added to the pods' labels.", max_length=64
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Added to the pods' annotations.", max_length=64
    )


_ALL_KINDS: tuple[ConsumerKind, ...] = ("Deployment", "StatefulSet")


class ConsumersSpec(_Model):
    """Which workloads receive REDIS_URL / REDIS_ENABLED."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "size(self.selector.matchLabels) > 0 || "
                    "size(self.selector.matchExpressions) > 0",
                    "consumers.selector must not be empty: it would select every workload",
                    ".selector",
                )
            ]
        }
    )

    selector: LabelSelector = Field(
        description="Label selector over Deployments/StatefulSets in the tier's namespace.",
    )
    kinds: list[ConsumerKind] = Field(
        default_factory=lambda: list(_ALL_KINDS),
        description="Workload kinds considered.",
        min_length=1,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    containers: list[ContainerName] = Field(
        default_factory=list,
        description="Names of the containers to inject into; empty = every container.",
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class AutoRollbackSpec(_Model):
    """Automatic rollback when the tier's health probes go bad."""

    enabled: bool = Field(default=True, description="Roll back automatically.")
    max_latency_ms: float = Field(
        default=10,
        gt=0,
        le=60000,
        description=(
            "A probe whose median PING takes longer than this (ms) is slow. Slow is a "
            "warning (condition HighLatency, an Event, a metric) once it lasts "
            "failureThreshold probes; it rolls back only with rollbackOnLatency."
        ),
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A probe whose error rate (error replies / commands) exceeds this is bad.",
    )
    failure_threshold: int = Field(
        default=3,
        ge=1,
        le=100,
        description=(
            "Consecutive bad probes (unreachable, error rate above maxErrorRate; slow "
            "too with rollbackOnLatency) before rolling back; also how many slow or fast "
            "probes in a row raise or clear the HighLatency warning."
        ),
    )
    rollback_on_latency: bool = Field(
        default=False,
        description=(
            "Also roll back when PING latency stays above maxLatencyMs for "
            "failureThreshold probes in a row. Off by default: the seed guide grades "
            "latency as a warning, disconnection and errors as critical."
        ),
    )


class RolloutSpec(_Model):
    """How many consumers use Redis: the feature flag."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "size(self.steps) == 0 || self.steps[size(self.steps) - 1] <= self.percent",
                    "rollout.steps must not go past rollout.percent (the target)",
                    ".steps",
                )
            ]
        }
    )

    enabled: bool = Field(
        default=True,
        description=(
            "false = instant rollback: every consumer gets REDIS_ENABLED=false at once; "
            "percent is kept, so setting true again restores the rollout."
        ),
    )
    percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Target percentage (0-100) of consumers (workloads or pods) using Redis.",
    )
    granularity: Granularity = Field(
        default="workload",
        description=(
            "workload: whole workloads are switched (template env, a rolling restart); "
            "pod: pods are switched live through a flag file, no restart."
        ),
    )
    steps: list[StepPercent] = Field(
        default_factory=list,
        description=(
            "Automatic progression, e.g. [10, 25, 50, 100]: the effective percent "
            "advances one step per stepInterval while the tier is healthy, and holds "
            "while it is not. Strictly increasing, the last at most percent; "
            "empty = go straight to percent."
        ),
        max_length=20,
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubernetes-validations": [
                _cel("self.isSorted()", "rollout.steps must be in increasing order")
            ],
        },
    )
    step_interval: str = Field(
        default="10m",
        description="Time between steps: a duration in h, m and s, e.g. 30s, 10m, 1h30m.",
        pattern=DURATION_PATTERN,
        max_length=16,
    )
    auto_rollback: AutoRollbackSpec = Field(
        default_factory=AutoRollbackSpec,
        description="Automatic rollback on bad health probes.",
    )


class CacheTierSpec(_Model):
    """Desired state of a CacheTier."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.mode != 'external' || "
                    "(has(self.external) && has(self.external.urlSecretRef))",
                    "external.urlSecretRef is required when mode is external",
                    ".external",
                ),
                _cel(
                    "self.mode == 'external' || !has(self.external) || "
                    "!has(self.external.urlSecretRef)",
                    "external.urlSecretRef is only valid when mode is external",
                    ".external",
                ),
                _cel(
                    "!has(self.auth) || self.auth.enabled || !has(self.auth.passwordSecretRef)",
                    "auth.passwordSecretRef needs auth.enabled: true",
                    ".auth",
                ),
                _cel(
                    "self.mode != 'external' || !has(self.tls) || !self.tls.enabled",
                    "tls.enabled must be false when mode is external: the URL's scheme "
                    "(rediss://) decides TLS",
                    ".tls",
                ),
                _cel(
                    "oldSelf.mode == self.mode",
                    "mode is immutable: create a new CacheTier to change it",
                    ".mode",
                ),
                # The defaults fill spec.cluster on every tier, so only settings that
                # differ from them can be told apart from "not set".
                _cel(
                    "self.mode != 'replication' || !has(self.redis) || "
                    "!has(self.redis.persistence) || self.redis.persistence.mode != 'none'",
                    "mode replication needs redis.persistence aof or rdb: a primary that "
                    "restarts empty would otherwise empty its replicas when they resync",
                    ".redis.persistence.mode",
                ),
                _cel(
                    "self.mode == 'replication' || !has(self.replication) || "
                    "(self.replication.replicas == 2 && self.replication.sentinels == 3 && "
                    "!has(self.replication.quorum) && "
                    "self.replication.downAfterMilliseconds == 5000 && "
                    "self.replication.failoverTimeout == 60000 && "
                    "self.replication.minReplicasToWrite == 0)",
                    "replication settings apply only to mode: replication (this tier's mode "
                    "would ignore them)",
                    ".replication",
                ),
                _cel(
                    "self.mode == 'cluster' || !has(self.cluster) || "
                    "(self.cluster.shards == 3 && self.cluster.replicasPerShard == 1)",
                    "cluster settings apply only to mode: cluster (this tier's mode would "
                    "ignore them)",
                    ".cluster",
                ),
            ]
        }
    )

    mode: Mode = Field(
        default="standalone",
        description=(
            "standalone: one Redis pod; replication: a primary and replicas behind one "
            "URL, failover by Redis Sentinel; cluster: a Redis Cluster of shards x "
            "(1 + replicas); external: a Redis the operator does not run. Immutable."
        ),
    )
    image: str = Field(
        default="redis:7.2-alpine",
        description="Redis (>= 7) or Valkey image of the redis container.",
        min_length=1,
        max_length=512,
    )
    redis: RedisSpec = Field(default_factory=RedisSpec, description="redis.conf settings.")
    auth: AuthSpec = Field(default_factory=AuthSpec, description="Password authentication.")
    tls: TLSSpec = Field(default_factory=TLSSpec, description="TLS for clients.")
    replication: ReplicationSpec = Field(
        default_factory=ReplicationSpec,
        description="Primary, replicas and Sentinels (mode: replication).",
    )
    cluster: ClusterSpec = Field(
        default_factory=ClusterSpec, description="Cluster layout (mode: cluster)."
    )
    external: ExternalSpec = Field(
        default_factory=ExternalSpec, description="The external Redis (mode: external)."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Requests and limits of the redis container."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec,
        description="Node selection, tolerations, affinity and spreading of the pods.",
    )
    pod_metadata: PodMetadataSpec = Field(
        default_factory=PodMetadataSpec, description="Extra labels and annotations of the pods."
    )
    consumers: ConsumersSpec | None = Field(
        default=None,
        description="Workloads that receive REDIS_URL and REDIS_ENABLED. Null = none.",
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="The feature flag: percentage and rollback."
    )


# ---------------------------------------------------------------------------
# Status


class _Status(BaseModel):
    """Base of status models: camelCase, tolerant of fields written by newer versions."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(_Status):
    """A kstatus-compatible condition."""

    type: str = Field(description="Ready, Progressing, Degraded, RolledBack, ...")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(
        default=None, description="When status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The generation this condition was computed from."
    )


class Endpoint(_Status):
    """Where clients connect."""

    host: str = Field(description="Host name of the client Service (or the external host).")
    port: int = Field(description="TCP port.")


class RolloutStatus(_Status):
    """Observed state of the flag."""

    enabled: bool = Field(default=True, description="Whether the rollout is enabled.")
    target_percent: int = Field(default=0, description="spec.rollout.percent.")
    effective_percent: int = Field(default=0, description="The percent in force now.")
    step: int | None = Field(default=None, description="Index into spec.rollout.steps.")
    reason: str = Field(default="", description="Why the effective percent is what it is.")
    last_step_time: str | None = Field(default=None, description="When the last step was taken.")
    serving: bool = Field(
        default=False,
        description=(
            "The tier has been Ready at least once; until then consumers stay on "
            "REDIS_ENABLED=false whatever the percent."
        ),
    )
    rolled_back_generation: int | None = Field(
        default=None,
        description=(
            "Generation at which an automatic rollback happened; cleared by a spec change "
            "or a new cachetier.io/rearm annotation."
        ),
    )
    rearm: str | None = Field(
        default=None,
        description="The last cachetier.io/rearm annotation value the operator honoured.",
    )


class WorkloadStatus(_Status):
    """One consumer workload."""

    kind: str = Field(description="Deployment or StatefulSet.")
    name: str = Field(description="Workload name.")
    enabled: bool = Field(description="Whether it is switched to Redis.")
    pinned: bool = Field(default=False, description="Whether a pin annotation decided it.")


class ConsumersStatus(_Status):
    """Observed consumers."""

    selected: int = Field(default=0, description="Workloads matching the selector.")
    enabled: int = Field(default=0, description="Workloads (or pods) using Redis.")
    summary: str = Field(default="0/0", description="enabled/selected, for kubectl get.")
    workloads: list[WorkloadStatus] = Field(default_factory=list, description="Each consumer.")


class HealthStatus(_Status):
    """Result of the last health probe."""

    up: bool = Field(default=False, description="Redis answered PING.")
    latency_ms: float | None = Field(default=None, description="PING round trip in ms.")
    hit_rate: float | None = Field(default=None, description="keyspace hits / (hits + misses).")
    error_rate: float | None = Field(
        default=None, description="Error replies / commands processed since the last probe."
    )
    connected_clients: int | None = Field(default=None, description="INFO connected_clients.")
    evicted_keys: int | None = Field(default=None, description="INFO evicted_keys.")
    consecutive_failures: int = Field(
        default=0, description="Bad probes in a row when the verdict last changed."
    )
    slow: bool = Field(
        default=False, description="PING latency has stayed above maxLatencyMs (a warning)."
    )
    error_classes: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Error replies by class (NOPERM, WRONGPASS, OOM, ...) between the last two "
            "probes, from INFO errorstats, when the verdict last changed."
        ),
    )
    denied_commands: list[str] = Field(
        default_factory=list,
        description="Commands the ACL refused to the application user lately (ACL LOG).",
    )
    message: str = Field(default="", description="Why the last probe was bad, if it was.")
    checked_at: str | None = Field(default=None, description="When the probe ran (RFC 3339).")


class ReplicaStatus(_Status):
    """One replica of a replication tier."""

    pod: str = Field(description="Pod name.")
    link_up: bool = Field(default=False, description="master_link_status is up.")
    lag_bytes: int = Field(default=0, description="Replication offset behind the primary.")
    node: str = Field(default="", description="The Kubernetes node its pod runs on.")
    zone: str = Field(default="", description="That node's topology.kubernetes.io/zone.")


class SentinelsStatus(_Status):
    """The Sentinels of a replication tier."""

    ready: int = Field(default=0, description="Sentinel pods ready.")
    monitoring: int = Field(default=0, description="Sentinels that watch the current primary.")
    quorum: int = Field(default=0, description="Sentinels needed to agree on a failover.")


class ReplicationStatus(_Status):
    """Observed primary, replicas and Sentinels (mode: replication)."""

    primary: str = Field(default="", description="The pod a quorum of Sentinels names primary.")
    primary_node: str = Field(default="", description="The Kubernetes node the primary runs on.")
    primary_zone: str = Field(default="", description="That node's topology.kubernetes.io/zone.")
    placement: str = Field(
        default="",
        description=(
            "Spread when no replica shares the primary's Kubernetes node; Degraded when "
            "scheduling put one there (losing that node would cost both copies)."
        ),
    )
    shared_domains: int = Field(default=0, description="Replicas on the primary's Kubernetes node.")
    replicas: list[ReplicaStatus] = Field(default_factory=list, description="Each replica.")
    sentinels: SentinelsStatus = Field(
        default_factory=SentinelsStatus, description="The Sentinels."
    )
    last_failover: str | None = Field(
        default=None, description="When the primary last changed (RFC 3339)."
    )


class ClusterMemberStatus(_Status):
    """One Redis node of a cluster tier, and where it runs."""

    address: str = Field(default="", description="host:port.")
    role: str = Field(default="", description="master or replica.")
    master_id: str | None = Field(default=None, description="A replica's master (node id).")
    id: str = Field(default="", description="The Redis node id.")
    node: str = Field(default="", description="The Kubernetes node its pod runs on.")
    zone: str = Field(default="", description="That node's topology.kubernetes.io/zone.")
    healthy: bool = Field(
        default=True, description="It answered the last look and no node marks it failed."
    )


class ClusterStatus(_Status):
    """Observed Redis Cluster state."""

    state: str = Field(
        default="unknown",
        description=(
            "From every node's own cluster_state: ok when all answering nodes say ok, "
            "partial when some say fail, fail when most do, unknown when none answers."
        ),
    )
    slots_assigned: int = Field(default=0, description="Slots assigned to a master.")
    shards: int = Field(default=0, description="Masters owning slots.")
    nodes: int = Field(default=0, description="Nodes known to the cluster.")
    message: str = Field(default="", description="What the operator is doing or waiting for.")
    members: list[ClusterMemberStatus] = Field(
        default_factory=list, description="Each Redis node, its role, Kubernetes node and zone."
    )
    placement: str = Field(
        default="",
        description=(
            "Spread when no shard's copies share a Kubernetes node (or, zones allowing, a "
            "zone) and no node holds most masters; Degraded when that cannot be arranged."
        ),
    )
    shared_domains: int = Field(
        default=0, description="Shards with a replica on its master's Kubernetes node."
    )


class UpdateStatus(_Status):
    """A supervised rolling update of the Redis pods (cluster and replication mode)."""

    revision: str = Field(default="", description="The StatefulSet revision being rolled out.")
    updated: int = Field(default=0, description="Redis pods running that revision.")
    total: int = Field(default=0, description="Redis pods the tier has.")
    current: str | None = Field(
        default=None, description="The pod being replaced (or switched over) now."
    )
    since: str | None = Field(default=None, description="When that step began (RFC 3339).")


class OperatorAuthStatus(_Status):
    """The operator's own password's rotation (cachetier.io/rotate-operator-password)."""

    rotation: Literal["InProgress", "Done"] | None = Field(
        default=None, description="InProgress while a rotation runs, Done after the last one."
    )
    stage: str | None = Field(
        default=None,
        description=(
            "Adding (servers get the new operator password beside the old), Switching (the "
            "operator, the replicas and the Sentinels log in with the new one), Removing "
            "(the old one is removed from every server), Done."
        ),
    )
    since: str | None = Field(
        default=None, description="When the rotation started, or finished (RFC 3339)."
    )
    requested: str | None = Field(
        default=None,
        description="The cachetier.io/rotate-operator-password value last handled.",
    )


class AuthStatus(_Status):
    """The application password's rotation (no password, no hash of one)."""

    rotation: Literal["InProgress", "Done"] | None = Field(
        default=None, description="InProgress while a rotation runs, Done after the last one."
    )
    stage: str | None = Field(
        default=None,
        description=(
            "Adding (servers get the new password beside the old), Consumers (the "
            "connection Secret has the new one; consumer workloads roll), Removing (the old "
            "one is removed from every server), Done."
        ),
    )
    since: str | None = Field(
        default=None, description="When the rotation started, or finished (RFC 3339)."
    )
    requested: str | None = Field(
        default=None, description="The cachetier.io/rotate-password value last handled."
    )
    revision: str | None = Field(
        default=None,
        description="The cachetier.io/auth-revision the consumers' pod templates carry.",
    )
    operator: OperatorAuthStatus | None = Field(
        default=None, description="The rotation of the operator's own password."
    )


class CacheTierStatus(_Status):
    """Observed state of a CacheTier."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation last reconciled."
    )
    phase: Phase | None = Field(default=None, description="Summary of the conditions.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded and RolledBack (kstatus-compatible).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    endpoint: Endpoint | None = Field(default=None, description="Client endpoint.")
    connection_secret: str | None = Field(
        default=None, description="Secret holding url, host, port, password."
    )
    rollout: RolloutStatus | None = Field(default=None, description="Flag state.")
    consumers: ConsumersStatus | None = Field(default=None, description="Consumer workloads.")
    health: HealthStatus | None = Field(default=None, description="Last health probe.")
    cluster: ClusterStatus | None = Field(default=None, description="Redis Cluster state.")
    replication: ReplicationStatus | None = Field(
        default=None, description="Primary, replicas and Sentinels (mode: replication)."
    )
    auth: AuthStatus | None = Field(
        default=None, description="Password rotation (the application user's password)."
    )
    update: UpdateStatus | None = Field(
        default=None,
        description="Progress of a supervised rolling update (cluster, replication: OnDelete).",
    )
    placement: str | None = Field(
        default=None,
        description=(
            "cluster and replication modes: Spread when one Kubernetes node's loss cannot "
            "take a shard's (or the primary's) every copy, Degraded when scheduling made "
            "that impossible (details in status.cluster / status.replication)."
        ),
    )


def parse_spec(raw: dict[str, Any]) -> CacheTierSpec:
    """Validate a spec dict as the API server stored it (raises pydantic.ValidationError)."""
    return CacheTierSpec.model_validate(raw)
