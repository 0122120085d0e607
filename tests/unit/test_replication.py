"""mode replication as data: what is rendered, and how the decision follows Sentinel.

The snapshot is gathered from the in-memory API (tests/fakes) by the real gather step,
with the Redis side (what the pods and Sentinels say) given as data; the real thing
runs in tests/e2e/test_replication.py.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from cachetier import metrics, names
from cachetier.api import validate
from cachetier.ports import (
    Monitor,
    NodeState,
    Priority,
    ReplicaOf,
    ReplicationObservation,
    Reset,
    SentinelState,
    Switchover,
)
from cachetier.reconcile.decide import Decision, decide
from cachetier.reconcile.modes.replication import (
    SWITCHOVER_PAUSE_MS,
    bootstrap_primary,
    scale_in_steps,
    sentinel_primary,
)
from cachetier.reconcile.tier import status_dict
from tests.unit.test_decide import NS, World

SPEC: dict[str, Any] = {
    "mode": "replication",
    "replication": {"replicas": 2, "sentinels": 3},
    "redis": {"maxmemory": "32mb", "persistence": {"mode": "aof", "size": "64Mi"}},
    "consumers": {"selector": {"matchLabels": {"cache": "on"}}},
    "rollout": {"enabled": True, "percent": 100},
}
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
SENTINEL_IPS = ["10.0.1.1", "10.0.1.2", "10.0.1.3"]


def pod(i: int) -> str:
    return f"{names.statefulset('cache')}-{i}"


def node(i: int, role: str, master: int | None = None, offset: int = 100) -> NodeState:
    return NodeState(
        pod=pod(i),
        host=IPS[i],
        up=True,
        role=role,
        master_host=IPS[master] if master is not None else None,
        link_up=master is not None,
        offset=offset,
        connected_replicas=0 if role == "replica" else 2,
    )


def sentinel(i: int, master: int | None, *, failover: bool = False) -> SentinelState:
    return SentinelState(
        pod=f"cache-sentinel-{i}",
        host=SENTINEL_IPS[i],
        up=True,
        monitoring=master is not None,
        master_host=IPS[master] if master is not None else None,
        failover=failover,
        sentinels=3,
        replicas=2 if master is not None else 0,
        quorum=2,
    )


class ReplWorld(World):
    def __init__(self) -> None:
        super().__init__("standalone", copy.deepcopy(SPEC))
        self.mode = "replication"
        self.observation = ReplicationObservation()

    def ready(self) -> None:
        self.pods_ready()
        sts = self.kube.objects[("StatefulSet", NS, names.sentinel_statefulset("cache"))]
        sts["status"] = {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3}

    def decide_with(self, observation: ReplicationObservation) -> Decision:
        self.observation = observation
        return decide(replace(self.observe(), replication=observation), self.now)

    def act_with(self, observation: ReplicationObservation) -> Decision:
        obs = replace(self.observe(), replication=observation)
        decision = decide(obs, self.now)
        self.reconciler.act(obs, decision)
        return decision

    def roles(self) -> dict[str, str | None]:
        return {
            p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get(names.LABEL_ROLE)
            for p in self.kube.of_kind("Pod")
            if p["metadata"]["name"].startswith(names.statefulset("cache") + "-")
        }


FRESH = ReplicationObservation(
    nodes=tuple(node(i, "primary", offset=0) for i in range(3)),
    sentinels=tuple(sentinel(i, None) for i in range(3)),
)
FORMED = ReplicationObservation(
    nodes=(node(0, "primary"), node(1, "replica", 0), node(2, "replica", 0)),
    sentinels=tuple(sentinel(i, 0) for i in range(3)),
)


def formed_world() -> ReplWorld:
    w = ReplWorld()
    w.step()
    w.ready()
    w.act_with(FRESH)
    for _ in range(3):
        w.act_with(FORMED)
    return w


def test_renders_redis_pods_sentinels_and_role_selecting_services() -> None:
    w = ReplWorld()
    d = w.decide()
    kinds = {(o["kind"], o["metadata"]["name"]) for o in d.applies}
    assert ("StatefulSet", "cache") in kinds and ("StatefulSet", "cache-sentinel") in kinds
    by = {(o["kind"], o["metadata"]["name"]): o for o in d.applies}
    assert by[("StatefulSet", "cache")]["spec"]["replicas"] == 3
    assert by[("StatefulSet", "cache-sentinel")]["spec"]["replicas"] == 3
    sentinel_labels = by[("StatefulSet", "cache-sentinel")]["spec"]["template"]["metadata"][
        "labels"
    ]
    redis_selector = by[("StatefulSet", "cache")]["spec"]["selector"]["matchLabels"]
    assert not all(sentinel_labels.get(k) == v for k, v in redis_selector.items())
    assert by[("Service", "cache")]["spec"]["selector"][names.LABEL_ROLE] == "primary"
    assert by[("Service", "cache-replicas")]["spec"]["selector"][names.LABEL_ROLE] == "replica"
    assert by[("Service", "cache-sentinel")]["spec"]["ports"][0]["port"] == 26379
    data = by[("Secret", names.connection_secret("cache"))]["data"]
    decoded = {k: base64.b64decode(v).decode() for k, v in data.items()}
    assert decoded["mode"] == "replication"
    assert decoded["sentinels"] == f"cache-sentinel.{NS}.svc:26379"
    assert decoded["masterName"] == "cache"
    assert decoded["url"].endswith(f"@cache.{NS}.svc:6379/0")
    auth = by[("Secret", names.auth_secret("cache"))]["data"]
    assert "sentinel.conf" in auth  # the Sentinels' passwords live in the Secret only
    policies = {o["metadata"]["name"] for o in d.applies if o["kind"] == "NetworkPolicy"}
    assert policies == {"cache", "cache-sentinel"}


def test_bootstrap_makes_pod_0_primary_replicas_follow_sentinels_monitor() -> None:
    w = ReplWorld()
    w.step()
    w.ready()
    d = w.decide_with(FRESH)
    replica_of = [a for a in d.redis_actions if isinstance(a, ReplicaOf)]
    monitors = [a for a in d.redis_actions if isinstance(a, Monitor)]
    assert {(a.host, a.primary_host) for a in replica_of} == {(IPS[1], IPS[0]), (IPS[2], IPS[0])}
    assert {a.host for a in monitors} == set(SENTINEL_IPS)
    assert all(a.primary_host == IPS[0] and a.quorum == 2 for a in monitors)
    assert [(c.pod, c.role) for c in d.labels][-1] == (pod(0), "primary")
    assert d.status.phase != "Ready"  # the Sentinels do not watch it yet


def test_a_formed_topology_is_ready_and_costs_no_action() -> None:
    w = formed_world()
    assert w.roles() == {pod(0): "primary", pod(1): "replica", pod(2): "replica"}
    d = w.decide_with(FORMED)
    assert d.acts_nothing, (d.redis_actions, d.labels, d.applies)
    assert d.status.phase == "Ready", d.status.conditions
    assert d.status.replication is not None
    assert d.status.replication.primary == pod(0)
    assert d.status.replication.sentinels.monitoring == 3
    assert [r.pod for r in d.status.replication.replicas] == [pod(1), pod(2)]


def test_after_sentinels_fail_over_the_labels_follow_demotion_first() -> None:
    w = formed_world()
    moved = ReplicationObservation(
        nodes=(node(0, "replica", 1), node(1, "primary"), node(2, "replica", 1)),
        sentinels=tuple(sentinel(i, 1) for i in range(3)),
    )
    counted = (
        metrics.REGISTRY.get_sample_value(
            "cachetier_failovers_total", {"namespace": NS, "tier": "cache"}
        )
        or 0
    )
    d = w.act_with(moved)
    assert (
        metrics.REGISTRY.get_sample_value(
            "cachetier_failovers_total", {"namespace": NS, "tier": "cache"}
        )
        == counted + 1
    )
    assert (
        metrics.REGISTRY.get_sample_value(
            "cachetier_replicas_linked", {"namespace": NS, "tier": "cache"}
        )
        == 2
    )
    assert [(c.pod, c.role) for c in d.labels] == [(pod(0), "replica"), (pod(1), "primary")]
    assert d.redis_actions == ()  # Sentinel did the work; the operator does not fight it
    assert any(e.reason == "Failover" and pod(0) in e.message for e in d.events)
    assert w.roles() == {pod(0): "replica", pod(1): "primary", pod(2): "replica"}
    assert d.status.replication is not None and d.status.replication.last_failover


def test_a_failover_seen_through_a_moment_without_agreement_is_still_reported() -> None:
    w = formed_world()
    split = ReplicationObservation(
        nodes=FORMED.nodes, sentinels=(sentinel(0, 1), sentinel(1, None), sentinel(2, None))
    )
    d = w.act_with(split)  # no quorum for a moment: the last primary stands
    assert d.status.replication is not None and d.status.replication.primary == pod(0)
    moved = ReplicationObservation(
        nodes=(node(0, "replica", 1), node(1, "primary"), node(2, "replica", 1)),
        sentinels=tuple(sentinel(i, 1) for i in range(3)),
    )
    d = w.act_with(moved)
    assert any(e.reason == "Failover" and pod(0) in e.message for e in d.events)


def test_a_pod_back_alone_as_primary_is_made_a_replica_of_sentinels_primary() -> None:
    w = formed_world()
    # pod 0 was replaced: empty, standing alone as a primary at the same address,
    # while the Sentinels elected pod 1.
    alone = ReplicationObservation(
        nodes=(node(0, "primary", offset=0), node(1, "primary"), node(2, "replica", 1)),
        sentinels=tuple(sentinel(i, 1) for i in range(3)),
    )
    d = w.decide_with(alone)
    assert ReplicaOf(host=IPS[0], primary_host=IPS[1]) in d.redis_actions
    assert not any(isinstance(a, ReplicaOf) and a.host == IPS[1] for a in d.redis_actions)


@pytest.mark.parametrize(
    "observation",
    [
        # Sentinels disagree, no quorum: wait.
        ReplicationObservation(
            nodes=FORMED.nodes, sentinels=(sentinel(0, 0), sentinel(1, 1), sentinel(2, None))
        ),
        # A failover is under way: wait.
        ReplicationObservation(
            nodes=FORMED.nodes,
            sentinels=tuple(sentinel(i, 0, failover=i == 0) for i in range(3)),
        ),
    ],
)
def test_without_a_quorum_or_during_a_failover_nothing_is_done(
    observation: ReplicationObservation,
) -> None:
    w = formed_world()
    d = w.decide_with(observation)
    assert not any(isinstance(a, ReplicaOf) for a in d.redis_actions)
    assert not any(c.role == "primary" and c.pod != pod(0) for c in d.labels)


def test_not_ready_until_a_quorum_of_sentinels_knows_every_replica() -> None:
    w = formed_world()
    blind = ReplicationObservation(
        nodes=FORMED.nodes, sentinels=tuple(replace(sentinel(i, 0), replicas=1) for i in range(3))
    )
    d = w.decide_with(blind)
    assert d.status.phase == "Degraded"
    assert "Sentinels know every replica" in d.status.conditions[0].message


def test_a_replaced_sentinel_is_given_the_primary_again() -> None:
    w = formed_world()
    observation = ReplicationObservation(
        nodes=FORMED.nodes, sentinels=(sentinel(0, 0), sentinel(1, 0), sentinel(2, None))
    )
    d = w.decide_with(observation)
    assert d.redis_actions == (Monitor(SENTINEL_IPS[2], "cache", IPS[0], 2, 5000, 60000),)


def test_sentinels_remembering_dead_addresses_are_reset_one_at_a_time() -> None:
    w = formed_world()
    # pod 2 was replaced (new address): every Sentinel still lists the old one.
    stale = ReplicationObservation(
        nodes=FORMED.nodes,
        sentinels=tuple(replace(sentinel(i, 0), replicas=3) for i in range(3)),
    )
    d = w.decide_with(stale)
    assert d.redis_actions == (Reset(SENTINEL_IPS[0], "cache"),)
    # Sentinel 0 re-learns (knows 1 of 2 replicas for now): nobody else is reset yet.
    relearning = replace(
        stale, sentinels=(replace(sentinel(0, 0), replicas=1), *stale.sentinels[1:])
    )
    assert w.decide_with(relearning).redis_actions == ()
    # Re-learned: the next one.
    d = w.decide_with(replace(stale, sentinels=(sentinel(0, 0), *stale.sentinels[1:])))
    assert d.redis_actions == (Reset(SENTINEL_IPS[1], "cache"),)
    # A dead Sentinel remembered (5 known for 3 pods) is a reason too.
    ghosts = replace(
        FORMED, sentinels=(replace(sentinel(0, 0), sentinels=5), *FORMED.sentinels[1:])
    )
    assert w.decide_with(ghosts).redis_actions == (Reset(SENTINEL_IPS[0], "cache"),)


@pytest.mark.parametrize(
    "change",
    [
        # a replica's link is down: a pod may still be joining
        lambda o: replace(o, nodes=(o.nodes[0], replace(o.nodes[1], link_up=False), o.nodes[2])),
        # a Sentinel judges the primary down: a failover may be near
        lambda o: replace(
            o, sentinels=(replace(o.sentinels[0], master_down=True), *o.sentinels[1:])
        ),
        # a Sentinel does not answer
        lambda o: replace(o, sentinels=(replace(o.sentinels[0], up=False), *o.sentinels[1:])),
    ],
)
def test_no_reset_unless_the_topology_is_whole_and_healthy(change: Any) -> None:
    w = formed_world()
    stale = ReplicationObservation(
        nodes=FORMED.nodes,
        sentinels=tuple(replace(sentinel(i, 0), replicas=3) for i in range(3)),
    )
    d = w.decide_with(change(stale))
    assert not any(isinstance(a, Reset) for a in d.redis_actions), d.redis_actions


def _shrink_to_one_replica(w: ReplWorld) -> None:
    body = w.tier
    body["spec"]["replication"]["replicas"] = 1
    body["metadata"]["generation"] = body["metadata"].get("generation", 1) + 1
    w.kube.put(body)


def _sts_replicas(d: Decision) -> int:
    for obj in d.applies:
        if obj["kind"] == "StatefulSet" and obj["metadata"]["name"] == names.statefulset("cache"):
            return int(obj["spec"]["replicas"])
    raise AssertionError("the Redis StatefulSet is not applied")


def test_a_scale_in_that_keeps_the_primary_shrinks_at_once_and_demotes_nobody() -> None:
    w = formed_world()
    _shrink_to_one_replica(w)
    d = w.decide_with(FORMED)  # primary is pod 0: kept
    assert _sts_replicas(d) == 2
    assert d.redis_actions == (Priority(IPS[2], 0),)  # the pod to go is never promoted
    assert not any(isinstance(a, Switchover) for a in d.redis_actions)


def test_a_scale_in_that_removes_the_primary_switches_over_first() -> None:
    w = formed_world()
    on_2 = ReplicationObservation(
        nodes=(node(0, "replica", 2), node(1, "replica", 2), node(2, "primary")),
        sentinels=tuple(sentinel(i, 2) for i in range(3)),
    )
    for _ in range(2):
        w.act_with(on_2)  # Sentinel moved the primary to pod 2 earlier
    _shrink_to_one_replica(w)
    d = w.decide_with(on_2)
    assert _sts_replicas(d) == 3, "the StatefulSet must wait: pod 2 is the primary"
    assert d.redis_actions == (Switchover(SENTINEL_IPS[0], "cache"),)
    # While it runs: nothing more, still held.
    running = replace(on_2, sentinels=tuple(sentinel(i, 2, failover=True) for i in range(3)))
    d = w.decide_with(running)
    assert d.redis_actions == () and _sts_replicas(d) == 3
    # Done (Sentinel promoted pod 0): the StatefulSet shrinks to 2.
    moved = ReplicationObservation(
        nodes=(node(0, "primary"), node(1, "replica", 0), node(2, "replica", 0)),
        sentinels=tuple(sentinel(i, 0) for i in range(3)),
    )
    d = w.decide_with(moved)
    assert _sts_replicas(d) == 2
    assert d.redis_actions == (Priority(IPS[2], 0),)


def test_the_switchover_waits_until_every_sentinel_sees_the_doomed_replicas_at_priority_0() -> None:
    ips = [f"10.0.0.{i + 1}" for i in range(4)]
    ordinals = {ip: i for i, ip in enumerate(ips)}

    def n(i: int, role: str, priority: int = 100) -> NodeState:
        master = None if role == "primary" else ips[3]
        return NodeState(
            pod=pod(i), host=ips[i], up=True, role=role, master_host=master,
            link_up=master is not None, priority=priority,
        )  # fmt: skip

    def s(i: int, doomed_priority: int) -> SentinelState:
        return SentinelState(
            pod=f"s{i}", host=SENTINEL_IPS[i], up=True, monitoring=True, master_host=ips[3],
            sentinels=3, replicas=3,
            priorities=((ips[0], 100), (ips[1], 100), (ips[2], doomed_priority)),
        )  # fmt: skip

    def steps(nodes: tuple[NodeState, ...], sentinels: tuple[SentinelState, ...]) -> list[Any]:
        return scale_in_steps(
            ReplicationObservation(nodes=nodes, sentinels=sentinels), list(nodes), ips[3],
            ordinals, keep=2, master="cache",
        )  # fmt: skip

    # 4 pods -> 2: pod 3 (the primary) and pod 2 go. Pod 2 first loses its priority.
    nodes = (n(0, "replica"), n(1, "replica"), n(2, "replica"), n(3, "primary"))
    assert steps(nodes, tuple(s(i, 100) for i in range(3))) == [Priority(ips[2], 0)]
    lowered = (*nodes[:2], n(2, "replica", 0), nodes[3])
    assert steps(lowered, (s(0, 0), s(1, 100), s(2, 0))) == []  # one Sentinel has not seen it
    assert steps(lowered, tuple(s(i, 0) for i in range(3))) == [
        Switchover(SENTINEL_IPS[0], "cache")
    ]


def test_a_kept_replica_gets_its_priority_back() -> None:
    w = formed_world()
    low = replace(
        FORMED, nodes=(FORMED.nodes[0], replace(FORMED.nodes[1], priority=0), FORMED.nodes[2])
    )
    assert w.decide_with(low).redis_actions == (Priority(IPS[1], 100),)


def test_bootstrap_never_picks_an_empty_pod_over_one_with_data() -> None:
    nodes = [node(0, "primary", offset=0), node(1, "primary", offset=500), node(2, "primary", 0)]
    nodes = [replace(n, connected_replicas=0) for n in nodes]
    chosen = bootstrap_primary(nodes)
    assert chosen is not None and chosen.pod == pod(1)
    fresh = [replace(n, connected_replicas=0) for n in FRESH.nodes]
    assert (bootstrap_primary(fresh) or fresh[1]).pod == pod(0)


def test_quorum_counts_agreeing_sentinels() -> None:
    assert sentinel_primary(FORMED, 2) == IPS[0]
    split = ReplicationObservation(sentinels=(sentinel(0, 0), sentinel(1, 1), sentinel(2, None)))
    assert sentinel_primary(split, 2) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"replication": {"sentinels": 4}}, "spec.replication.sentinels"),
        ({"replication": {"sentinels": 3, "quorum": 5}}, "spec.replication.quorum"),
        ({"replication": {"replicas": 1, "minReplicasToWrite": 2}}, "minReplicasToWrite"),
    ],
)
def test_bad_replication_settings_are_refused_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    spec = {**copy.deepcopy(SPEC), **change}
    _, problems = validate.check_spec(spec)
    assert any(field in str(p) for p in problems), problems


def test_replication_without_persistence_is_refused() -> None:
    spec = copy.deepcopy(SPEC)
    spec["redis"]["persistence"] = {"mode": "none"}
    _, problems = validate.check_spec(spec)
    assert any("spec.redis.persistence.mode" in str(p) for p in problems), problems


def test_replication_settings_on_another_mode_are_refused() -> None:
    _, problems = validate.check_spec({"replication": {"replicas": 3}})
    assert any("spec.replication" in str(p) for p in problems), problems


def _place(w: ReplWorld, nodes: list[str], zones: dict[str, str]) -> None:
    """Put pod i on Kubernetes node nodes[i] (and give the nodes zones)."""
    for i, node_name in enumerate(nodes):
        w.kube.objects[("Pod", NS, pod(i))].setdefault("spec", {})["nodeName"] = node_name
    for node_name, zone in zones.items():
        w.kube.put({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name, "labels": {"topology.kubernetes.io/zone": zone}},
        })  # fmt: skip


def test_status_says_where_the_primary_and_each_replica_run() -> None:
    w = formed_world()
    _place(w, ["n1", "n2", "n3"], {"n1": "a", "n2": "b", "n3": "c"})
    d = w.decide_with(FORMED)
    rs = d.status.replication
    assert rs is not None
    assert (rs.primary_node, rs.primary_zone) == ("n1", "a")
    assert [(r.node, r.zone) for r in rs.replicas] == [("n2", "b"), ("n3", "c")]
    assert (rs.placement, rs.shared_domains, d.status.placement) == ("Spread", 0, "Spread")
    conditions = {c.type: c for c in d.status.conditions}
    assert conditions["Degraded"].status == "False"


def test_a_replica_on_the_primarys_node_is_reported_and_ready_stays_true() -> None:
    w = formed_world()
    _place(w, ["n1", "n1", "n2"], {})
    d = w.act_with(FORMED)
    shared = {"namespace": NS, "tier": "cache"}
    assert metrics.REGISTRY.get_sample_value("cachetier_placement_shared_domains", shared) == 1
    rs = d.status.replication
    assert rs is not None
    assert (rs.placement, rs.shared_domains, d.status.placement) == ("Degraded", 1, "Degraded")
    conditions = {c.type: c for c in d.status.conditions}
    assert conditions["Ready"].status == "True"
    assert conditions["Degraded"].status == "True"
    assert conditions["Degraded"].reason == "PlacementDegraded"
    assert pod(1) in conditions["Degraded"].message and "n1" in conditions["Degraded"].message
    assert not d.redis_actions  # reported: the operator does not move pods
    _place(w, ["n1", "n2", "n3"], {})
    w.act_with(FORMED)
    assert metrics.REGISTRY.get_sample_value("cachetier_placement_shared_domains", shared) == 0


def _roll_world() -> ReplWorld:
    """A formed tier whose Redis StatefulSet has a new revision no pod runs yet."""
    w = formed_world()
    sts = w.kube.objects[("StatefulSet", NS, names.statefulset("cache"))]
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    sts["status"].update(updateRevision="new", currentRevision="old", updatedReplicas=0)
    for i in range(3):
        _revision(w, i, "old")
    return w


def _revision(w: ReplWorld, i: int, revision: str) -> None:
    p = w.kube.objects[("Pod", NS, pod(i))]
    p["metadata"].setdefault("labels", {})["controller-revision-hash"] = revision


def test_a_supervised_update_replaces_replicas_one_at_a_time_then_switches_over() -> None:
    w = _roll_world()
    d = w.decide_with(FORMED)
    assert d.pod_deletes == (pod(1),) and not d.redis_actions
    assert status_dict(d)["update"] == {
        "revision": "new", "updated": 0, "total": 3, "current": pod(1),
        "since": "2026-12-02T06:00:00Z",
    }  # fmt: skip
    # pod 1 back on the new revision but not yet in sync: nothing else goes.
    _revision(w, 1, "new")
    syncing = replace(FORMED, nodes=(node(0, "primary"), node(1, "replica"), node(2, "replica", 0)))
    d = w.decide_with(syncing)
    assert d.pod_deletes == () and status_dict(d)["update"]["updated"] == 1
    behind = (node(0, "primary", offset=10**7), node(1, "replica", 0), node(2, "replica", 0))
    lagging = replace(FORMED, nodes=behind)
    assert w.decide_with(lagging).pod_deletes == ()
    assert w.decide_with(FORMED).pod_deletes == (pod(2),)
    _revision(w, 2, "new")
    # Only the primary is left: a switchover first, its writes paused until the
    # replicas have its offset; the pod is not deleted yet.
    d = w.decide_with(FORMED)
    assert d.pod_deletes == ()
    assert d.redis_actions == (
        Switchover(
            SENTINEL_IPS[0], "cache", pause_host=IPS[0], replicas=(IPS[1], IPS[2]),
            pause_ms=SWITCHOVER_PAUSE_MS,
        ),
    )  # fmt: skip
    w.act_with(FORMED)
    assert w.tier["status"]["update"]["current"] == pod(0)
    # The Sentinels agree on pod 1: its label moves and the old primary goes at once,
    # before its (demoted or not) pod is in sync -- its clients reconnect.
    on_1 = ReplicationObservation(
        nodes=(node(0, "primary"), node(1, "primary"), node(2, "replica", 1)),
        sentinels=tuple(sentinel(i, 1) for i in range(3)),
    )
    d = w.decide_with(on_1)
    assert d.pod_deletes == (pod(0),)
    assert [(c.pod, c.role) for c in d.labels] == [(pod(0), "replica"), (pod(1), "primary")]
    assert not any(isinstance(a, Switchover) for a in d.redis_actions)


def test_a_supervised_update_waits_while_the_sentinels_disagree_or_fail_over() -> None:
    w = _roll_world()
    for i in (1, 2):
        _revision(w, i, "new")
    running = replace(FORMED, sentinels=tuple(sentinel(i, 0, failover=True) for i in range(3)))
    d = w.decide_with(running)
    assert d.pod_deletes == () and not d.redis_actions
    split = replace(FORMED, sentinels=(sentinel(0, 0), sentinel(1, 1), sentinel(2, None)))
    d = w.decide_with(split)
    assert d.pod_deletes == () and not any(isinstance(a, Switchover) for a in d.redis_actions)


def test_a_replica_that_does_not_come_back_halts_the_update() -> None:
    w = _roll_world()
    w.act_with(FORMED)
    assert w.tier["status"]["update"]["current"] == pod(1)
    w.now = w.now + timedelta(seconds=301)
    gone = replace(FORMED, nodes=(node(0, "primary"), node(2, "replica", 0)))
    d = w.decide_with(gone)
    assert d.pod_deletes == ()
    degraded = {c["type"]: c for c in status_dict(d)["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "UpdateStalled"
    assert pod(1) in degraded["message"]


def test_a_whole_restart_with_new_addresses_is_reformed_on_the_last_primary() -> None:
    """Every Redis pod restarted at once with new addresses: the Sentinels' primary is an
    address no pod has, they judge it down and know no replica to promote. The last
    primary's pod (pod 1 here, after a failover) leads again; the others follow it; every
    Sentinel is pointed at it. Not while any pod is still a replica (Sentinel's case)."""
    w = formed_world()
    moved = ReplicationObservation(
        nodes=(node(0, "replica", 1), node(1, "primary"), node(2, "replica", 1)),
        sentinels=tuple(sentinel(i, 1) for i in range(3)),
    )
    for _ in range(2):
        w.act_with(moved)
    assert w.tier["status"]["replication"]["primary"] == pod(1)
    gone = "10.0.9.9"  # pod 1's address before the restart
    restarted = [node(i, "primary", offset=0) for i in range(3)]
    restarted = [replace(n, connected_replicas=0) for n in restarted]
    stuck = ReplicationObservation(
        nodes=tuple(restarted),
        sentinels=tuple(
            replace(sentinel(i, None), monitoring=True, master_host=gone, master_down=True)
            for i in range(3)
        ),
    )
    d = w.decide_with(stuck)
    monitors = [a for a in d.redis_actions if isinstance(a, Monitor)]
    assert sorted(a.host for a in monitors) == SENTINEL_IPS
    assert {a.primary_host for a in monitors} == {IPS[1]}
    follows = {a.host for a in d.redis_actions if isinstance(a, ReplicaOf)}
    assert follows == {IPS[0], IPS[2]}
    assert all(a.primary_host == IPS[1] for a in d.redis_actions if isinstance(a, ReplicaOf))
    assert "PrimaryReformed" in [e.reason for e in d.events]
    # Pods made replicas of the old primary just before it restarted too (its address
    # is gone, their links down) and unknown to the Sentinels: the same.
    lost = replace(node(2, "replica", 0), master_host=gone, link_up=False)
    d = w.decide_with(replace(stuck, nodes=(restarted[0], restarted[1], lost)))
    assert {a.host for a in d.redis_actions if isinstance(a, ReplicaOf)} == {IPS[0], IPS[2]}
    # A replica the Sentinels know: they can promote it; wait.
    known = tuple(replace(s, priorities=((IPS[2], 100),)) for s in stuck.sentinels)
    d = w.decide_with(replace(stuck, nodes=(restarted[0], restarted[1], lost), sentinels=known))
    assert not [a for a in d.redis_actions if isinstance(a, Monitor | ReplicaOf)]
    # A known address given again to a pod that is a primary of its own: no candidate.
    reused = tuple(replace(s, priorities=((IPS[0], 100),)) for s in stuck.sentinels)
    d = w.decide_with(replace(stuck, nodes=(restarted[0], restarted[1], lost), sentinels=reused))
    assert {a.host for a in d.redis_actions if isinstance(a, ReplicaOf)} == {IPS[0], IPS[2]}
    # Not judged down by a quorum: wait too.
    lively = replace(stuck, sentinels=tuple(replace(s, master_down=False) for s in stuck.sentinels))
    assert not [a for a in w.decide_with(lively).redis_actions if isinstance(a, Monitor)]
