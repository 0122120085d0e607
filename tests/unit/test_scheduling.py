"""spec.scheduling and spec.podMetadata: what reaches the pod templates, and the defaults."""

from __future__ import annotations

from typing import Any

from cachetier import names
from cachetier.api.models import parse_spec
from cachetier.render import render_tier
from tests.unit.test_render_tier import REF, SECRETS

REPLICATION = {
    "mode": "replication",
    "redis": {"persistence": {"mode": "aof", "size": "1Gi"}},
}


def _pods(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """StatefulSet name -> its pod template."""
    return {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in render_tier(REF, parse_spec(raw), SECRETS)
        if o["kind"] == "StatefulSet"
    }


def test_defaults_spread_the_redis_pods_of_multi_pod_modes_across_nodes_and_zones() -> None:
    for raw in (REPLICATION, {"mode": "cluster"}):
        pod = _pods(raw)["tasks-cache"]["spec"]
        keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
        assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        assert {c["whenUnsatisfiable"] for c in pod["topologySpreadConstraints"]} == {
            "ScheduleAnyway"
        }
        assert all(
            c["labelSelector"]["matchLabels"] == names.selector_labels("tasks-cache")
            for c in pod["topologySpreadConstraints"]
        )
        term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    sentinels = _pods(REPLICATION)["tasks-cache-sentinel"]["spec"]
    term = sentinels["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == (
        names.sentinel_selector_labels("tasks-cache")
    )
    # One pod has nothing to spread.
    standalone = _pods({})["tasks-cache"]["spec"]
    assert "topologySpreadConstraints" not in standalone and "affinity" not in standalone


def test_user_scheduling_reaches_every_pod_and_replaces_the_defaults() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cache"]}]}
                ]
            }
        }
    }
    raw = {
        **REPLICATION,
        "scheduling": {
            "nodeSelector": {"topology.kubernetes.io/zone": "a"},
            "tolerations": [{"key": "dedicated", "value": "cache", "effect": "NoSchedule"}],
            "affinity": affinity,
            "topologySpreadConstraints": [{"topologyKey": "kubernetes.io/hostname"}],
            "priorityClassName": "cache-critical",
        },
        "podMetadata": {"labels": {"team": "checkout"}, "annotations": {"owner": "sre"}},
    }
    for name, template in _pods(raw).items():
        pod = template["spec"]
        assert pod["nodeSelector"] == {"topology.kubernetes.io/zone": "a"}, name
        assert pod["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "cache", "effect": "NoSchedule"}
        ]
        assert pod["priorityClassName"] == "cache-critical"
        # The user's nodeAffinity is added to the default anti-affinity, not instead of it.
        assert pod["affinity"]["nodeAffinity"] == affinity["nodeAffinity"]
        assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert template["metadata"]["labels"]["team"] == "checkout"
        assert template["metadata"]["annotations"]["owner"] == "sre"
        assert names.ANNOTATION_CONFIG_HASH in template["metadata"]["annotations"]
    redis = _pods(raw)["tasks-cache"]["spec"]
    assert redis["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": names.selector_labels("tasks-cache")},
        }
    ]


def test_a_users_pod_anti_affinity_replaces_the_default_and_empty_turns_it_off() -> None:
    own = {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"a": "b"}}}
        ]
    }
    raw = {**REPLICATION, "scheduling": {"affinity": {"podAntiAffinity": own}}}
    assert _pods(raw)["tasks-cache"]["spec"]["affinity"] == {"podAntiAffinity": own}
    raw = {**REPLICATION, "scheduling": {"affinity": {"podAntiAffinity": {}}}}
    assert "affinity" not in _pods(raw)["tasks-cache"]["spec"]


def test_an_empty_spread_list_turns_spreading_off() -> None:
    raw = {**REPLICATION, "scheduling": {"topologySpreadConstraints": []}}
    assert "topologySpreadConstraints" not in _pods(raw)["tasks-cache"]["spec"]
