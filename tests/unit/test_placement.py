"""Placement over failure domains: the planner keeps a shard's copies (and the masters)
on distinct Kubernetes nodes, repairs placement with safe steps, and reports what it
cannot spread. Driven against the Redis Cluster model of ``test_topology``."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachetier.topology import DesiredLayout, Domain, Failover, Plan, plan_next_steps
from cachetier.topology.nodes import NodeAddress
from cachetier.topology.slots import subtract
from cachetier.topology.summary import summarize
from tests.unit.test_topology import Sim, assert_converged, drive


def _cluster(
    shards: int, replicas: int, placement: list[tuple[str, str]]
) -> tuple[Sim, DesiredLayout]:
    """A fresh cluster whose pod ``i`` runs on Kubernetes node/zone ``placement[i]``."""
    sim = Sim()
    addresses = tuple(sim.add_node() for _ in range(shards * (1 + replicas)))
    domains = tuple((a, Domain(*placement[i])) for i, a in enumerate(addresses))
    return sim, DesiredLayout(shards, replicas, addresses, domains)


def _masters(sim: Sim, desired: DesiredLayout) -> list[str]:
    return [sim.at[a] for a in desired.nodes if sim.node_at(a).alive and sim.node_at(a).slots]


def _co_located(sim: Sim, desired: DesiredLayout) -> list[str]:
    """Shards with a replica on its master's Kubernetes node."""
    out = []
    for mid in _masters(sim, desired):
        node = desired.domain(sim.nodes[mid].address).node
        for r in sim.replicas(mid):
            if r.alive and desired.domain(r.address).node == node:
                out.append(mid)
    return out


def _node_of(sim: Sim, desired: DesiredLayout, node_id: str) -> str:
    return desired.domain(sim.nodes[node_id].address).node


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 4),
    st.integers(0, 2),
    st.integers(1, 5),
    st.integers(1, 3),
    st.data(),
)
def test_copies_are_never_co_located_when_a_spread_layout_exists(
    shards: int, replicas: int, kube_nodes: int, zones: int, data: st.DataObject
) -> None:
    size = shards * (1 + replicas)
    where = data.draw(st.lists(st.integers(0, kube_nodes - 1), min_size=size, max_size=size))
    placement = [(f"node-{n}", f"zone-{n % zones}") for n in where]
    sim, desired = _cluster(shards, replicas, placement)
    plan, desired = drive(sim, desired)  # asserts every step keeps every slot served
    assert_converged(sim, plan, desired)
    # A spread layout exists iff no Kubernetes node holds more pods than there are
    # shards (deal the pods, sorted by node, round-robin into the shards).
    spreadable = max(where.count(n) for n in set(where)) <= shards
    if spreadable:
        assert _co_located(sim, desired) == [], (placement, plan.placement)
        assert summarize(sim.observe(desired), desired).shared_domains == 0
        assert not [p for p in plan.placement if "replica(s) on node" in p]
    if _co_located(sim, desired):
        assert [p for p in plan.placement if "replica(s) on node" in p], "reported"
    # Converged means quiet: no placement step keeps coming back.
    again = plan_next_steps(sim.observe(desired), desired)
    assert again.converged and not again.steps


def test_three_by_one_on_three_nodes_spreads_masters_and_replicas() -> None:
    placement = [(f"n{i % 3}", f"z{i % 3}") for i in range(6)]
    sim, desired = _cluster(3, 1, placement)
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)
    masters = _masters(sim, desired)
    assert sorted(_node_of(sim, desired, m) for m in masters) == ["n0", "n1", "n2"]
    assert _co_located(sim, desired) == []
    assert plan.placement == ()


def test_a_lost_node_then_back_is_repaired_by_a_coordinated_failover() -> None:
    placement = [(f"n{i % 3}", f"z{i % 3}") for i in range(6)]
    sim, desired = _cluster(3, 1, placement)
    plan, desired = drive(sim, desired)
    sim.write_keys({s: 1 for s in range(0, 16384, 97)})
    on_n0 = [a for a in desired.nodes if desired.domain(a).node == "n0"]
    for a in on_n0:  # the machine dies: its master and its replica at once
        sim.kill(a)
    # Redis promotes the dead master's replica (on another node): two masters share it.
    masters = _masters(sim, desired)
    nodes = [_node_of(sim, desired, m) for m in masters]
    assert len(masters) == 3 and len(set(nodes)) == 2
    for a in on_n0:  # the machine is back (same disks): its nodes rejoin as replicas
        sim.restart(a, wipe=False)
    steps: list[object] = []
    for _ in range(50):
        plan = plan_next_steps(sim.observe(desired), desired)
        if plan.converged:
            break
        for step in plan.steps:
            steps.append(step)
            sim.apply(step)
            sim.check_keys()
    assert plan.converged and plan.placement == ()
    assert any(isinstance(s, Failover) and not s.force for s in steps)
    assert sorted(_node_of(sim, desired, m) for m in _masters(sim, desired)) == ["n0", "n1", "n2"]
    assert _co_located(sim, desired) == []


def test_one_node_for_everything_converges_and_reports_degraded_placement() -> None:
    sim, desired = _cluster(3, 1, [("only", "z")] * 6)
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)
    assert any("replica(s) on node only" in p for p in plan.placement)
    assert any("3 of 3 masters on node only" in p for p in plan.placement)
    assert summarize(sim.observe(desired), desired).shared_domains == 3


def test_unknown_domains_change_nothing() -> None:
    sim, desired = _cluster(3, 1, [("", "")] * 6)
    plan: Plan
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)
    assert plan.placement == ()
    assert desired.domain(NodeAddress("10.9.9.9", 6379)) == Domain()


def test_a_master_about_to_restart_hands_over_to_an_in_sync_replica_first() -> None:
    """The supervised update names the master whose pod is replaced next (handover):
    one coordinated CLUSTER FAILOVER (no FORCE) to its replica, every slot served
    throughout, and the departing node is never made master again meanwhile."""
    placement = [(f"n{i % 3}", f"z{i % 3}") for i in range(6)]
    sim, desired = _cluster(3, 1, placement)
    plan, desired = drive(sim, desired)
    sim.write_keys({s: 1 for s in range(0, 16384, 97)})
    leaving = sim.nodes[_masters(sim, desired)[0]].address
    desired = replace(desired, handover=(leaving,))
    steps: list[object] = []
    for _ in range(20):
        plan = plan_next_steps(sim.observe(desired), desired)
        if plan.converged:
            break
        for step in plan.steps:
            steps.append(step)
            before = sim.served()
            sim.apply(step)
            assert not subtract(before, sim.served()), f"{step} left slots unserved"
            sim.check_keys()
    assert plan.converged
    assert [type(s).__name__ for s in steps] == ["Failover"]
    assert all(isinstance(s, Failover) and not s.force for s in steps)
    assert not sim.node_at(leaving).slots  # a replica now: safe to restart
    assert len(_masters(sim, desired)) == 3


def test_a_replica_trade_is_one_plan_and_never_flips_back() -> None:
    """Found by Hypothesis: 3 shards x 2 replicas on nodes holding 4, 1 and 4 pods (one
    zone). Trading two replicas one REPLICATE at a time let the replica assignment send
    the first back, for ever; the trade is now both REPLICATEs in one plan."""
    where = [0, 0, 0, 0, 2, 1, 1, 1, 1]
    sim, desired = _cluster(3, 2, [(f"node-{n}", "zone-0") for n in where])
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)
    again = plan_next_steps(sim.observe(desired), desired)
    assert again.converged and not again.steps
