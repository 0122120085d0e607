"""The example PrometheusRule alerts on series the operator really exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from cachetier import metrics

RULE = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "prometheusrule.yaml"


def test_every_alert_uses_an_exported_metric() -> None:
    metrics.REDIS_UP.labels("ns", "t").set(1)
    metrics.PROBE_LATENCY_MS.labels("ns", "t").set(0.5)
    metrics.HIT_RATE.labels("ns", "t").set(0.9)
    metrics.ERROR_RATE.labels("ns", "t").set(0.0)
    exported = set(
        re.findall(r"^(cachetier_\w+)\{", generate_latest(metrics.REGISTRY).decode(), re.M)
    )
    rules = yaml.safe_load(RULE.read_text())["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "CacheTierRedisDisconnected",
        "CacheTierLowHitRate",
        "CacheTierHighLatency",
        "CacheTierHighErrorRate",
    }
    for rule in rules:
        names = set(re.findall(r"cachetier_\w+", rule["expr"]))
        assert names and names <= exported, (rule["alert"], names - exported)
    metrics.forget_tier("ns", "t")


def test_forget_tier_drops_every_per_tier_series() -> None:
    for gauge in metrics.TIER_GAUGES:
        gauge.labels("gone", "t").set(1)
    metrics.set_error_classes("gone", "t", {"NOPERM": 3, "OOM": 1})
    metrics.FAILOVERS.labels("gone", "t").inc()
    assert 'class="NOPERM"' in generate_latest(metrics.REGISTRY).decode()
    metrics.forget_tier("gone", "t")
    assert 'namespace="gone"' not in generate_latest(metrics.REGISTRY).decode()
    assert len(metrics.TIER_GAUGES) == 13


DASHBOARD = RULE.with_name("grafana-dashboard.json")


def test_the_grafana_dashboard_queries_exported_series_and_covers_the_sre_view() -> None:
    import json

    for gauge in metrics.TIER_GAUGES:
        gauge.labels("dash", "t").set(1)
    metrics.set_error_classes("dash", "t", {"NOPERM": 1})
    metrics.FAILOVERS.labels("dash", "t").inc()
    metrics.ROLLBACKS.labels("dash", "t", "Manual").inc()
    metrics.RECONCILES.labels("ok").inc()
    metrics.RECONCILE_SECONDS.observe(0.1)
    metrics.API_WRITES.inc()
    exported = set(
        re.findall(r"^(cachetier_\w+)[{ ]", generate_latest(metrics.REGISTRY).decode(), re.M)
    )
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found = set(re.findall(r"cachetier_\w+", target["expr"]))
            assert found and found <= exported, (panel["title"], found - exported)
            used |= found
    for variable in dashboard["templating"]["list"]:
        assert set(re.findall(r"cachetier_\w+", variable.get("query", ""))) <= exported
    # What the SRE view shows (issue: rollout percent, consumers, latency, hit rate,
    # error rate, rollbacks, failovers).
    for needed in (
        "cachetier_rollout_effective_percent", "cachetier_consumers_enabled",
        "cachetier_probe_latency_ms", "cachetier_redis_hit_rate", "cachetier_redis_error_rate",
        "cachetier_rollbacks_total", "cachetier_failovers_total",
    ):  # fmt: skip
        assert needed in used, needed
    metrics.forget_tier("dash", "t")
