"""Topology planner: parsing real CLUSTER NODES replies, and properties of plans.

The property tests drive the planner against `Sim`, a small model of a Redis
Cluster written for these tests: it renders CLUSTER NODES text (so every plan
goes through the real parser), applies steps with the preconditions Redis
enforces (asserting them, so that a wrong step fails the test), and reproduces
what Redis does on its own: failover of a failed master when a majority of
masters is alive, demotion of a returning master, replicas following a
master that lost its last slot.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachetier.topology import (
    TOTAL_SLOTS,
    AddSlots,
    DesiredLayout,
    Failover,
    Forget,
    Meet,
    MigrateSlots,
    NodeAddress,
    NodeObservation,
    Observed,
    Plan,
    Replicate,
    SlotRange,
    Step,
    parse_cluster_nodes,
    plan_next_steps,
    quotas,
    summarize,
)
from cachetier.topology.slots import (
    Ranges,
    chunks,
    count,
    from_slots,
    iter_slots,
    normalize,
    subtract,
    take_last,
    union,
)

# --- real replies (redis-server 7.0.15), captured from a 3 x 1 cluster -----------------

FRESH = "baf4c2276b02dd0e252be6c1bb023c7cf01696fa :45419@55419 myself,master - 0 0 0 connected\n"

MIGRATING = """\
49244626548e22a684645fd9eb2f8cc359e72a63 127.0.0.1:33481@43481 slave 2865628c3ad44b599063172b7b79cbd71c772f9a 0 1795789777081 3 connected
c528e0573a57fdf8a22791375090dc2a74af85ea 127.0.0.1:40873@50873 slave 8586d46570bbd9a37790836474edc9bc49b66901 0 1795789777000 2 connected
e870de79fb72257c888f4ba8d44a267f3b4e9426 127.0.0.1:49419@59419 slave 1a139d4a9afb4f614f9716049a879b90595706dc 0 1795789777182 1 connected
c73dbfc804299e1f4e0f0a7b7666c56a4603abf2 127.0.0.1:45419@55419 handshake - 0 0 0 disconnected
8586d46570bbd9a37790836474edc9bc49b66901 127.0.0.1:49431@59431 master - 0 1795789776880 2 connected 10923-16383
1a139d4a9afb4f614f9716049a879b90595706dc 127.0.0.1:38165@48165 myself,master - 0 1795789777000 1 connected 0-5461 [100->-2865628c3ad44b599063172b7b79cbd71c772f9a]
2865628c3ad44b599063172b7b79cbd71c772f9a 127.0.0.1:53195@63195 master - 0 1795789777000 3 connected 5462-10922
"""  # noqa: E501

IMPORTING = """\
2865628c3ad44b599063172b7b79cbd71c772f9a 127.0.0.1:53195@63195 myself,master - 0 1795789776000 3 connected 5462-10922 [100-<-1a139d4a9afb4f614f9716049a879b90595706dc]
"""  # noqa: E501

FAILED = """\
49244626548e22a684645fd9eb2f8cc359e72a63 127.0.0.1:33481@43481 slave 2865628c3ad44b599063172b7b79cbd71c772f9a 0 1795789780611 3 connected
8586d46570bbd9a37790836474edc9bc49b66901 127.0.0.1:49431@59431 master,fail - 1795789778794 1795789778000 2 disconnected 10923-16383
baf4c2276b02dd0e252be6c1bb023c7cf01696fa 127.0.0.1:45419@55419 master - 0 1795789780611 0 connected
"""  # noqa: E501


def test_parse_fresh_node_has_no_ip_yet() -> None:
    (node,) = parse_cluster_nodes(FRESH)
    assert node.myself and node.is_master and not node.slots
    assert node.host == "" and node.address is None
    assert (node.port, node.bus_port, node.config_epoch) == (45419, 55419, 0)


def test_parse_migrating_handshake_and_replicas() -> None:
    nodes = {n.node_id: n for n in parse_cluster_nodes(MIGRATING)}
    me = nodes["1a139d4a9afb4f614f9716049a879b90595706dc"]
    assert me.myself and me.slots == (SlotRange(0, 5461),)
    assert me.migrating == ((100, "2865628c3ad44b599063172b7b79cbd71c772f9a"),)
    assert me.address == NodeAddress("127.0.0.1", 38165)
    replica = nodes["49244626548e22a684645fd9eb2f8cc359e72a63"]
    assert replica.is_replica and replica.master_id == "2865628c3ad44b599063172b7b79cbd71c772f9a"
    assert replica.config_epoch == 3 and replica.connected
    shaking = nodes["c73dbfc804299e1f4e0f0a7b7666c56a4603abf2"]
    assert shaking.in_handshake and not shaking.connected


def test_parse_importing_and_failed() -> None:
    (me,) = parse_cluster_nodes(IMPORTING)
    assert me.importing == ((100, "1a139d4a9afb4f614f9716049a879b90595706dc"),)
    assert me.slots == (SlotRange(5462, 10922),)
    failed = parse_cluster_nodes(FAILED)[1]
    assert failed.failed and not failed.suspected and not failed.connected
    assert failed.slots == (SlotRange(10923, 16383),)


def test_parse_pfail_noaddr_hostname_and_ipv6() -> None:
    line = (
        "07c37dfeb235213a872192d90877d0cd55635b91 [::1]:30004@31004,redis-0.ns "
        "slave,fail?,noaddr e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 1426238317239 "
        "1426238316232 1 disconnected"
    )
    (node,) = parse_cluster_nodes(line)
    assert node.host == "::1" and node.port == 30004 and node.hostname == "redis-0.ns"
    assert node.suspected and not node.failed and node.address is None


def test_address_round_trip() -> None:
    assert NodeAddress.parse("10.1.2.3:6379") == NodeAddress("10.1.2.3", 6379)
    assert str(NodeAddress.parse("[fd00::1]:6379")) == "[fd00::1]:6379"
    with pytest.raises(ValueError):
        NodeAddress.parse("nohost")


# --- slot arithmetic ------------------------------------------------------------------

slot_sets = st.sets(st.integers(0, TOTAL_SLOTS - 1), max_size=200)


@settings(deadline=None)
@given(st.integers(1, 500))
def test_quotas_sum_and_balance(masters: int) -> None:
    shares = quotas(masters)
    assert sum(shares) == TOTAL_SLOTS and max(shares) - min(shares) <= 1


@settings(deadline=None)
@given(slot_sets, slot_sets, st.integers(0, 250), st.integers(1, 64))
def test_range_arithmetic_matches_sets(a: set[int], b: set[int], n: int, size: int) -> None:
    ra, rb = from_slots(a), from_slots(b)
    assert set(iter_slots(ra)) == a and count(ra) == len(a)
    assert set(iter_slots(subtract(ra, rb))) == a - b
    assert set(iter_slots(union(ra, rb))) == a | b
    taken, rest = take_last(ra, n)
    assert set(iter_slots(taken)) == set(sorted(a)[len(a) - min(n, len(a)) :])
    assert set(iter_slots(taken)) | set(iter_slots(rest)) == a
    pieces = chunks(ra, size)
    assert all(0 < count(p) <= size for p in pieces)
    assert normalize(r for p in pieces for r in p) == ra


# --- a model of Redis Cluster ---------------------------------------------------------


class Node:
    """One simulated redis-server."""

    def __init__(self, node_id: str, address: NodeAddress) -> None:
        self.id = node_id
        self.address = address
        self.alive = True
        self.knows: set[str] = set()
        self.master: str | None = None
        self.slots: Ranges = ()
        self.epoch = 0
        self.importing: dict[int, str] = {}
        self.migrating: dict[int, str] = {}
        self.data: dict[int, int] = {}  # slot -> keys
        self.lost_to: str | None = None  # failed over while down

    def keys(self) -> int:
        return sum(self.data.values())


class Sim:
    """A whole cluster with perfect gossip; asserts the preconditions Redis enforces."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.at: dict[NodeAddress, str] = {}
        self.epoch = 0
        self.counter = 0
        self.written: dict[int, int] = {}

    # environment
    def add_node(self, address: NodeAddress | None = None) -> NodeAddress:
        self.counter += 1
        if address is None:
            address = NodeAddress(f"10.0.{self.counter // 200}.{self.counter % 200 + 1}", 6379)
        node_id = hashlib.sha1(str(self.counter).encode()).hexdigest()
        self.nodes[node_id] = Node(node_id, address)
        self.at[address] = node_id
        return address

    def node_at(self, address: NodeAddress) -> Node:
        return self.nodes[self.at[address]]

    def owner(self, slot: int) -> Node | None:
        found = [
            n for n in self.nodes.values() if n.master is None and any(slot in r for r in n.slots)
        ]
        assert len(found) <= 1, f"slot {slot} owned twice"
        return found[0] if found else None

    def served(self) -> Ranges:
        return union(*(n.slots for n in self.nodes.values() if n.alive and n.master is None))

    def write_keys(self, keys: dict[int, int]) -> None:
        for slot, n in keys.items():
            owner = self.owner(slot)
            if owner is not None and owner.alive:
                owner.data[slot] = owner.data.get(slot, 0) + n
                self.written[slot] = self.written.get(slot, 0) + n
        self.settle()

    def kill(self, address: NodeAddress) -> None:
        if address in self.at:
            self.node_at(address).alive = False
            self.settle()

    def restart(self, address: NodeAddress, wipe: bool) -> None:
        if address not in self.at:
            return
        n = self.node_at(address)
        if n.alive:
            return
        if wipe and self.can_wipe(n):
            self.add_node(address)  # same address, new id, empty disk
        else:
            n.alive = True
            if n.lost_to is not None:  # its slots were taken over: it comes back as a replica
                self.set_master(n, self.master_of(n.lost_to))
                n.lost_to = None
        self.settle()

    def can_wipe(self, n: Node) -> bool:
        referenced = any(n.id in m.importing.values() or n.id in m.migrating.values()
                         for m in self.nodes.values())  # fmt: skip
        return not n.slots and not referenced

    def remove(self, addresses: tuple[NodeAddress, ...]) -> None:
        for address in addresses:
            if address in self.at:
                self.node_at(address).alive = False
                del self.at[address]
        self.settle()

    # what Redis does by itself
    def master_of(self, node_id: str) -> Node:
        n = self.nodes[node_id]
        return self.nodes[n.master] if n.master else n

    def set_master(self, n: Node, master: Node) -> None:
        n.master, n.slots = master.id, ()
        n.importing.clear()
        n.migrating.clear()
        n.data = dict(master.data)
        n.knows.add(master.id)

    def settle(self) -> None:
        changed = True
        while changed:
            changed = False
            for x in self.nodes.values():
                if not x.alive:
                    continue
                for y in list(x.knows):
                    peer = self.nodes[y]
                    if peer.alive:
                        new = (peer.knows | {peer.id}) - x.knows - {x.id}
                        if new:
                            x.knows |= new
                            changed = True
            holders = [n for n in self.nodes.values() if n.master is None and n.slots]
            voters = sum(1 for n in holders if n.alive)
            for dead in holders:
                heirs = [r for r in self.replicas(dead.id) if r.alive]
                if not dead.alive and heirs and voters * 2 > len(holders):
                    self.promote(heirs[0], dead)
                    dead.lost_to = heirs[0].id
                    dead.data = {}
                    changed = True
        for n in self.nodes.values():
            if n.alive and n.master is not None and self.nodes[n.master].alive:
                n.data = dict(self.nodes[n.master].data)

    def replicas(self, master_id: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.master == master_id]

    def promote(self, replica: Node, old: Node) -> None:
        self.epoch += 1
        replica.master, replica.slots, replica.epoch = None, old.slots, self.epoch
        old.slots = ()
        for other in self.replicas(old.id):
            if other is not replica:
                other.master = replica.id

    # observation
    def render(self, viewer: Node) -> str:
        lines = []
        for k in [viewer.id, *sorted(viewer.knows)]:
            n = self.nodes[k]
            flags = (["myself"] if k == viewer.id else []) + ["slave" if n.master else "master"]
            if not n.alive and k != viewer.id:
                flags.append("fail")
            host = "" if k == viewer.id and not viewer.knows else n.address.host
            epoch = self.nodes[n.master].epoch if n.master else n.epoch
            link = "connected" if n.alive else "disconnected"
            parts = [n.id, f"{host}:{n.address.port}@{n.address.port + 10000}", ",".join(flags)]
            parts += [n.master or "-", "0", "0", str(epoch), link]
            parts += [str(r) for r in n.slots]
            if k == viewer.id:
                parts += [f"[{s}-<-{p}]" for s, p in sorted(n.importing.items())]
                parts += [f"[{s}->-{p}]" for s, p in sorted(n.migrating.items())]
            lines.append(" ".join(parts))
        return "\n".join(lines) + "\n"

    def observe(self, desired: DesiredLayout) -> Observed:
        state = "ok" if count(self.served()) == TOTAL_SLOTS else "fail"
        seen, missing = [], []
        for address in desired.nodes:
            node_id = self.at.get(address)
            n = self.nodes[node_id] if node_id else None
            if n is None or not n.alive:
                missing.append(address)
                continue
            in_sync = self.nodes[n.master].alive if n.master else None
            nodes = parse_cluster_nodes(self.render(n))
            seen.append(NodeObservation(address, n.id, n.keys(), nodes, state, in_sync))
        return Observed(tuple(seen), tuple(missing))

    # steps
    def apply(self, step: Step, partial: bool = False) -> None:
        match step:
            case Meet():
                a, b = self.node_at(step.node), self.node_at(step.peer)
                assert a.alive and a is not b
                if b.alive:
                    a.knows.add(b.id)
                    b.knows.add(a.id)
            case AddSlots():
                n = self.node_at(step.node)
                assert n.alive and n.master is None
                for slot in iter_slots(step.slots):
                    assert self.owner(slot) is None, f"slot {slot} is busy"
                n.slots = union(n.slots, step.slots)
            case Replicate():
                n, master = self.node_at(step.node), self.nodes[step.master_id]
                assert n.id != master.id, "a node cannot replicate itself"
                assert n.alive and master.alive and master.master is None
                assert master.id in n.knows
                if n.master is None:
                    assert not n.slots and n.keys() == 0, "REPLICATE needs an empty master"
                self.set_master(n, master)
            case Failover():
                n = self.node_at(step.node)
                old = self.nodes[step.master_id]
                assert n.alive and n.master == old.id and (step.force or old.alive)
                self.promote(n, old)
                self.set_master(old, n)
            case Forget():
                target = self.nodes[step.node_id]
                assert not target.slots, "forgetting a node that serves slots"
                for address in step.on:
                    x = self.node_at(address)
                    if x.alive and x.id != target.id and x.master != target.id:
                        x.knows.discard(target.id)
                        for marks in (x.importing, x.migrating):
                            for s in [s for s, p in marks.items() if p == target.id]:
                                del marks[s]
            case MigrateSlots():
                self.migrate(step, partial)
        self.settle()

    def migrate(self, step: MigrateSlots, partial: bool) -> None:
        src, dst = self.nodes[step.source_id], self.nodes[step.target_id]
        assert self.at[step.source] == src.id and self.at[step.target] == dst.id
        assert src.alive and dst.alive and dst.master is None and src is not dst
        had_slots = bool(src.slots)
        slots = list(iter_slots(step.slots))
        for i, slot in enumerate(slots):
            owner = self.owner(slot)
            assert owner is not None and owner.alive, f"slot {slot} moved while unserved"
            assert owner in (src, dst), f"slot {slot} moved from a node that does not own it"
            if partial and i == len(slots) // 2:
                if owner is src:
                    dst.importing[slot] = src.id
                    src.migrating[slot] = dst.id
                half = src.data.get(slot, 0) // 2
                if half:
                    src.data[slot] -= half
                    dst.data[slot] = dst.data.get(slot, 0) + half
                return
            moved = src.data.pop(slot, 0)
            if moved:
                dst.data[slot] = dst.data.get(slot, 0) + moved
            if owner is not dst:
                src.slots = subtract(src.slots, (SlotRange(slot, slot),))
                dst.slots = union(dst.slots, (SlotRange(slot, slot),))
                self.epoch += 1
                dst.epoch = self.epoch
            for n in (src, dst):
                n.importing.pop(slot, None)
                n.migrating.pop(slot, None)
        if had_slots and not src.slots:  # cluster-allow-replica-migration
            for r in self.replicas(src.id):
                r.master = dst.id
            self.set_master(src, dst)

    # invariants
    def check_keys(self) -> None:
        held: dict[int, int] = {}
        for n in self.nodes.values():
            if n.master is None:
                for slot, k in n.data.items():
                    held[slot] = held.get(slot, 0) + k
        assert {s: k for s, k in held.items() if k} == self.written, "keys lost or duplicated"

    def check_keys_on_owners(self) -> None:
        for n in self.nodes.values():
            if n.master is None:
                for slot, k in n.data.items():
                    assert not k or self.owner(slot) is n, f"{k} keys of slot {slot} stranded"


SLOTS_PER_STEP = 2048


def drive(
    sim: Sim,
    desired: DesiredLayout,
    *,
    max_steps: int | None = None,
    interrupt: bool = False,
    max_rounds: int = 300,
) -> tuple[Plan, DesiredLayout]:
    """Plan, execute, observe, like `converge`; removable nodes are deleted at once."""
    steps = 0
    for _ in range(max_rounds):
        plan = plan_next_steps(sim.observe(desired), desired, slots_per_step=SLOTS_PER_STEP)
        if plan.removable:
            sim.remove(plan.removable)
            kept = tuple(a for a in desired.nodes if a not in plan.removable)
            desired = DesiredLayout(desired.shards, desired.replicas_per_shard, kept)
        if plan.converged or not plan.steps:
            return plan, desired
        for step in plan.steps:
            if max_steps is not None and steps >= max_steps:
                if interrupt and isinstance(step, MigrateSlots):
                    sim.apply(step, partial=True)
                return plan, desired
            before = sim.served()
            sim.apply(step)
            assert not subtract(before, sim.served()), f"{step} left slots unserved"
            sim.check_keys()
            steps += 1
    raise AssertionError("no convergence")


def new_cluster(shards: int, replicas: int, first: int = 0) -> tuple[Sim, DesiredLayout]:
    sim = Sim()
    sim.counter = first
    addresses = tuple(sim.add_node() for _ in range(shards * (1 + replicas)))
    return sim, DesiredLayout(shards, replicas, addresses)


def assert_converged(sim: Sim, plan: Plan, desired: DesiredLayout) -> None:
    assert plan.converged, (plan.waiting, plan.blocked, plan.steps)
    owners = [sim.owner(s) for s in range(TOTAL_SLOTS)]  # asserts "at most once"
    assert all(o is not None and o.alive for o in owners), "every slot assigned and served"
    masters = {o.id for o in owners if o is not None}
    shares = [count(sim.nodes[m].slots) for m in masters]
    assert len(masters) == desired.shards and max(shares) - min(shares) <= 1
    for m in masters:
        reps = [r for r in sim.replicas(m) if r.alive and r.address in desired.nodes]
        assert len(reps) == desired.replicas_per_shard
    alive = {sim.at[a] for a in desired.nodes}
    assert all(not n.knows - alive for n in sim.nodes.values() if n.id in alive), "ids to forget"
    sim.check_keys_on_owners()


# --- properties -------------------------------------------------------------------------


@settings(deadline=None)
@given(st.integers(1, 5), st.integers(0, 2))
def test_bootstrap_from_empty_nodes(shards: int, replicas: int) -> None:
    sim, desired = new_cluster(shards, replicas)
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)
    again = plan_next_steps(sim.observe(desired), desired)
    assert again.converged and not again.steps


events = st.one_of(
    st.tuples(st.just("scale"), st.integers(1, 4), st.integers(0, 2)),
    st.tuples(st.just("kill"), st.integers(0, 20)),
    st.tuples(st.just("restart"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("run"), st.integers(0, 12), st.booleans()),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 4),
    st.integers(0, 2),
    st.dictionaries(st.integers(0, TOTAL_SLOTS - 1), st.integers(1, 9), max_size=40),
    st.lists(events, max_size=8),
    st.booleans(),
)
def test_any_reachable_state_converges_without_losing_keys(
    shards: int,
    replicas: int,
    keys: dict[int, int],
    history: list[tuple[object, ...]],
    wipe_at_end: bool,
) -> None:
    sim, desired = new_cluster(shards, replicas)
    _, desired = drive(sim, desired)
    sim.write_keys(keys)
    for event in history:
        running = list(desired.nodes)
        match event:
            case ("scale", int(s), int(r)):
                # A replica never becomes an extra master (that would need a reset), so
                # the new layout lists enough fresh nodes first; the rest may retire.
                wanted = s * (1 + r)
                fresh = max(0, wanted - len(running)) + s
                extra = tuple(sim.add_node() for _ in range(fresh))
                desired = DesiredLayout(s, r, extra + desired.nodes)
            case ("kill", int(i)):
                sim.kill(running[i % len(running)])
            case ("restart", int(i), bool(wipe)):
                dead = [a for a in running if a in sim.at and not sim.node_at(a).alive]
                if dead:
                    sim.restart(dead[i % len(dead)], wipe)
            case ("run", int(n), bool(interrupt)):
                _, desired = drive(sim, desired, max_steps=n, interrupt=interrupt)
        sim.check_keys()
    for address in desired.nodes:
        sim.restart(address, wipe=wipe_at_end)
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 1), st.integers(0, 40))
def test_scaling_interrupted_anywhere_resumes(
    before: int, after: int, replicas: int, stop_after: int
) -> None:
    sim, desired = new_cluster(before, replicas)
    _, desired = drive(sim, desired)
    sim.write_keys({s: 3 for s in range(0, TOTAL_SLOTS, 97)})
    wanted = after * (1 + replicas)
    extra = tuple(sim.add_node() for _ in range(wanted - len(desired.nodes)))
    desired = DesiredLayout(after, replicas, desired.nodes + extra)
    _, desired = drive(sim, desired, max_steps=stop_after, interrupt=True)
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)
    assert len(desired.nodes) == wanted


# --- specific situations ------------------------------------------------------------------


def test_bootstrap_plan_meets_then_assigns_balanced_ranges() -> None:
    sim, desired = new_cluster(3, 1)
    first = plan_next_steps(sim.observe(desired), desired)
    assert [type(s) for s in first.steps] == [Meet] * 5
    for step in first.steps:
        sim.apply(step)
    second = plan_next_steps(sim.observe(desired), desired)
    assert all(isinstance(s, AddSlots) for s in second.steps)
    shares = sorted(count(s.slots) for s in second.steps if isinstance(s, AddSlots))
    assert shares == [5461, 5461, 5462]


def test_replicas_are_not_reset_into_masters() -> None:
    sim, desired = new_cluster(1, 1)
    _, desired = drive(sim, desired)
    wider = DesiredLayout(2, 0, desired.nodes)  # same two nodes: one is a replica
    plan, _ = drive(sim, wider)
    assert not plan.converged and not plan.steps
    assert any("empty node" in w for w in plan.waiting)
    assert sim.node_at(desired.nodes[1]).master is not None


def test_foreign_node_with_keys_is_blocked_not_joined() -> None:
    sim, desired = new_cluster(1, 1)
    _, desired = drive(sim, desired)
    other, other_desired = new_cluster(1, 0, first=100)
    _, other_desired = drive(other, other_desired)
    other.write_keys({5: 10})
    foreign_address = other_desired.nodes[0]
    foreign = other.observe(other_desired).nodes[0]
    mine = sim.observe(desired)
    desired2 = DesiredLayout(1, 2, (*desired.nodes, foreign_address))
    observed = Observed((*mine.nodes, foreign), ())
    plan = plan_next_steps(observed, desired2)
    assert [b.address for b in plan.blocked] == [foreign_address]
    assert "slots" in plan.blocked[0].reason
    assert not any(isinstance(s, Meet) and s.peer == foreign_address for s in plan.steps)
    assert not plan.converged


def test_dead_master_without_replica_waits_and_forgets_nothing() -> None:
    sim, desired = new_cluster(3, 0)
    _, desired = drive(sim, desired)
    sim.kill(desired.nodes[1])
    plan = plan_next_steps(sim.observe(desired), desired)
    assert not plan.steps and not plan.converged
    assert any("no replica" in w for w in plan.waiting)


def test_replaced_node_is_forgotten_only_after_its_replacement_joined() -> None:
    sim, desired = new_cluster(3, 1)
    _, desired = drive(sim, desired)
    replica = next(a for a in desired.nodes if sim.node_at(a).master)
    old_id = sim.at[replica]
    sim.kill(replica)
    plan = plan_next_steps(sim.observe(desired), desired)
    assert not any(isinstance(s, Forget) for s in plan.steps)
    sim.restart(replica, wipe=True)
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)
    assert all(old_id not in n.knows for n in sim.nodes.values() if n.alive)


def test_scale_in_drains_before_listing_removable() -> None:
    sim, desired = new_cluster(4, 1)
    _, desired = drive(sim, desired)
    sim.write_keys({s: 1 for s in range(0, TOTAL_SLOTS, 7)})
    shrunk = DesiredLayout(3, 1, desired.nodes)
    seen_removable = False
    for _ in range(100):
        plan = plan_next_steps(sim.observe(shrunk), shrunk)
        if plan.removable:
            seen_removable = True
            for address in plan.removable:  # nothing may be removed while it serves slots
                assert not sim.node_at(address).slots
                assert all(sim.node_at(address).id not in n.knows for n in sim.nodes.values()
                           if n.alive and n.address in shrunk.kept)  # fmt: skip
        if not plan.steps:
            break
        for step in plan.steps:
            sim.apply(step)
    assert seen_removable and set(plan.removable) == set(shrunk.retiring)


def test_half_done_migration_is_finished_first() -> None:
    sim, desired = new_cluster(2, 0)
    _, desired = drive(sim, desired)
    sim.write_keys({0: 8})
    src, dst = sim.node_at(desired.nodes[0]), sim.node_at(desired.nodes[1])
    assert sim.owner(0) is src
    sim.apply(MigrateSlots(src.address, src.id, dst.address, dst.id, from_slots([0, 1])), True)
    assert src.migrating == {1: dst.id} or dst.importing  # stopped mid-way
    plan = plan_next_steps(sim.observe(desired), desired)
    assert all(isinstance(s, MigrateSlots) for s in plan.steps)
    for step in plan.steps:
        sim.apply(step)
    assert not src.migrating and not dst.importing
    sim.check_keys()


def test_node_down_mid_migration_is_not_forgotten() -> None:
    sim, desired = new_cluster(2, 1)
    _, desired = drive(sim, desired)
    sim.write_keys({s: 2 for s in range(0, 40)})
    src = sim.owner(0)
    assert src is not None
    dst = next(n for n in sim.nodes.values() if n.master is None and n is not src)
    sim.apply(MigrateSlots(src.address, src.id, dst.address, dst.id, from_slots(range(0, 4))), True)
    sim.kill(dst.address)  # its replica is promoted; the keys moved so far live there
    plan = plan_next_steps(sim.observe(desired), desired)
    assert not any(isinstance(s, Forget) and s.node_id == dst.id for s in plan.steps)
    sim.restart(dst.address, wipe=False)
    plan, desired = drive(sim, desired)
    assert_converged(sim, plan, desired)


def test_down_migration_peer_is_kept_even_after_a_replacement_joined() -> None:
    sim, desired = new_cluster(3, 1)
    _, desired = drive(sim, desired)
    sim.write_keys({0: 6})
    src = sim.owner(0)
    assert src is not None
    dst = next(n for n in sim.nodes.values() if n.master is None and n is not src)
    sim.apply(MigrateSlots(src.address, src.id, dst.address, dst.id, from_slots([0])), True)
    sim.kill(dst.address)  # its replica takes over its slots (and the keys moved so far)
    assert not dst.slots and src.migrating == {0: dst.id}
    sim.add_node(dst.address)  # a replacement with an empty disk at the same address
    plan, desired = drive(sim, desired)
    assert not plan.converged and not plan.steps
    assert any("unfinished slot migration" in w for w in plan.waiting)
    assert all(dst.id in n.knows for n in sim.nodes.values() if n.alive and n is not dst)
    sim.check_keys()


def test_summary_for_status() -> None:
    sim, desired = new_cluster(3, 1)
    _, desired = drive(sim, desired)
    summary = summarize(sim.observe(desired), desired)
    status = summary.to_status()
    assert status["state"] == "ok" and status["slotsAssigned"] == TOTAL_SLOTS
    assert status["shards"] == 3 and len(summary.nodes) == 6
    assert [n.role for n in summary.nodes].count("replica") == 3


def test_summary_state_is_every_nodes_view_not_the_majority() -> None:
    """One node still reporting fail keeps status.cluster from saying ok."""
    import dataclasses

    sim, desired = new_cluster(3, 1)
    _, desired = drive(sim, desired)
    observed = sim.observe(desired)
    lagging = dataclasses.replace(observed.nodes[0], cluster_state="fail")
    one_fails = dataclasses.replace(observed, nodes=(lagging, *observed.nodes[1:]))
    assert summarize(one_fails, desired).state == "partial"
    all_fail = dataclasses.replace(
        observed,
        nodes=tuple(dataclasses.replace(n, cluster_state="fail") for n in observed.nodes),
    )
    assert summarize(all_fail, desired).state == "fail"
    assert summarize(observed, desired).state == "ok"
