"""Prometheus metrics of the operator (prometheus-client), served on an HTTP port."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "cachetier_reconciles_total", "Reconciles run, by result.", ["result"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "cachetier_reconcile_duration_seconds", "Duration of one reconcile.", registry=REGISTRY
)
API_WRITES = Counter(
    "cachetier_api_writes_total", "Write requests sent to the API server.", registry=REGISTRY
)
EFFECTIVE_PERCENT = Gauge(
    "cachetier_rollout_effective_percent",
    "Percent of consumers switched to Redis now.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
TARGET_PERCENT = Gauge(
    "cachetier_rollout_target_percent",
    "spec.rollout.percent.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
CONSUMERS_SELECTED = Gauge(
    "cachetier_consumers_selected",
    "Consumer workloads selected.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
CONSUMERS_ENABLED = Gauge(
    "cachetier_consumers_enabled",
    "Consumers (workloads, or pods at pod granularity) using Redis.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
REDIS_UP = Gauge(
    "cachetier_redis_up",
    "1 when the last probe reached Redis.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
PROBE_LATENCY_MS = Gauge(
    "cachetier_probe_latency_ms",
    "PING latency of the last probe (ms).",
    ["namespace", "tier"],
    registry=REGISTRY,
)
HIT_RATE = Gauge(
    "cachetier_redis_hit_rate",
    "keyspace hit rate between the last two probes.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
ERROR_RATE = Gauge(
    "cachetier_redis_error_rate",
    "Error replies per command between the last two probes.",
    ["namespace", "tier"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "cachetier_rollbacks_total",
    "Rollbacks, by reason (Manual, AutoRollback).",
    ["namespace", "tier", "reason"],
    registry=REGISTRY,
)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on ``addr:port`` in a daemon thread."""
    start_http_server(port, addr=addr, registry=REGISTRY)


def forget_tier(namespace: str, tier: str) -> None:
    """Drop a deleted tier's series."""
    for gauge in (
        EFFECTIVE_PERCENT,
        TARGET_PERCENT,
        CONSUMERS_SELECTED,
        CONSUMERS_ENABLED,
        REDIS_UP,
        PROBE_LATENCY_MS,
        HIT_RATE,
        ERROR_RATE,
    ):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, tier)
