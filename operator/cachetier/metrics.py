"""Prometheus metrics of the operator (prometheus-client), served on an HTTP port."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

TIER_GAUGES: list[Gauge] = []
"""Every per-tier gauge, so a deleted tier's series are all forgotten."""


def _tier_gauge(name: str, documentation: str) -> Gauge:
    gauge = Gauge(name, documentation, ["namespace", "tier"], registry=REGISTRY)
    TIER_GAUGES.append(gauge)
    return gauge


RECONCILES = Counter(
    "cachetier_reconciles_total", "Reconciles run, by result.", ["result"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "cachetier_reconcile_duration_seconds", "Duration of one reconcile.", registry=REGISTRY
)
API_WRITES = Counter(
    "cachetier_api_writes_total", "Write requests sent to the API server.", registry=REGISTRY
)
API_WRITES_BY = Counter(
    "cachetier_api_writes_by_resource_total",
    "Write requests sent to the API server, by verb and resource (plural).",
    ["verb", "resource"],
    registry=REGISTRY,
)
API_READS = Counter(
    "cachetier_api_reads_total",
    "Read requests sent to the API server (GET and LIST; watch caches answer the rest).",
    registry=REGISTRY,
)
EFFECTIVE_PERCENT = _tier_gauge(
    "cachetier_rollout_effective_percent",
    "Percent of consumers switched to Redis now.",
)
TARGET_PERCENT = _tier_gauge(
    "cachetier_rollout_target_percent",
    "spec.rollout.percent.",
)
CONSUMERS_SELECTED = _tier_gauge(
    "cachetier_consumers_selected",
    "Consumer workloads selected.",
)
CONSUMERS_ENABLED = _tier_gauge(
    "cachetier_consumers_enabled",
    "Consumers (workloads, or pods at pod granularity) using Redis.",
)
REDIS_UP = _tier_gauge(
    "cachetier_redis_up",
    "1 when the last probe reached Redis.",
)
PROBE_LATENCY_MS = _tier_gauge(
    "cachetier_probe_latency_ms",
    "PING latency of the last probe (ms).",
)
HIT_RATE = _tier_gauge(
    "cachetier_redis_hit_rate",
    "keyspace hit rate between the last two probes.",
)
ERROR_RATE = _tier_gauge(
    "cachetier_redis_error_rate",
    "Error replies per command between the last two probes.",
)
SLOW = _tier_gauge(
    "cachetier_redis_slow",
    "1 while PING latency has stayed above autoRollback.maxLatencyMs (a warning).",
)
ERROR_REPLIES = Gauge(
    "cachetier_redis_error_replies",
    "Error replies between the last two probes, by class (INFO errorstats: NOPERM, OOM, ...).",
    ["namespace", "tier", "class"],
    registry=REGISTRY,
)
_ERROR_CLASSES: dict[tuple[str, str], set[str]] = {}


def set_error_classes(namespace: str, tier: str, classes: dict[str, int]) -> None:
    """Export the per-class error counts of the last probe window (absent classes: 0)."""
    known = _ERROR_CLASSES.setdefault((namespace, tier), set())
    known.update(classes)
    for name in known:
        ERROR_REPLIES.labels(namespace, tier, name).set(classes.get(name, 0))


ROLLBACKS = Counter(
    "cachetier_rollbacks_total",
    "Rollbacks, by reason (Manual, AutoRollback).",
    ["namespace", "tier", "reason"],
    registry=REGISTRY,
)


FAILOVERS = Counter(
    "cachetier_failovers_total",
    "Primary changes of a replication tier (Sentinel's failovers), as the operator saw them.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
REPLICA_LAG_BYTES = _tier_gauge(
    "cachetier_replica_lag_bytes",
    "Replication mode: the largest lag of a replica behind the primary, in bytes of offset.",
)
REPLICAS_LINKED = _tier_gauge(
    "cachetier_replicas_linked",
    "Replication mode: replicas whose link to the primary is up.",
)
SENTINELS_MONITORING = _tier_gauge(
    "cachetier_sentinels_monitoring",
    "Replication mode: Sentinels that watch the agreed primary.",
)
SHARED_DOMAINS = _tier_gauge(
    "cachetier_placement_shared_domains",
    "Cluster mode: shards with a replica on its master's Kubernetes node; replication "
    "mode: replicas on the primary's node (0 when spread).",
)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on ``addr:port`` in a daemon thread."""
    start_http_server(port, addr=addr, registry=REGISTRY)


def forget_tier(namespace: str, tier: str) -> None:
    """Drop a deleted tier's series (every per-tier gauge)."""
    for gauge in TIER_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, tier)
    with contextlib.suppress(KeyError):
        FAILOVERS.remove(namespace, tier)
    for name in _ERROR_CLASSES.pop((namespace, tier), set()):
        with contextlib.suppress(KeyError):
            ERROR_REPLIES.remove(namespace, tier, name)
