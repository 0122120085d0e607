"""Plan the next safe steps from an observed cluster towards a desired layout.

Purely data-manipulative: `plan_next_steps` reads an `Observed` snapshot and a
`DesiredLayout` and returns a `Plan`; it never talks to Redis. The executor
runs the steps, observes again, and asks for the next plan, so every plan only
has to be safe from the state it was made for.

Phases, in order; the first phase that has work returns it:

1. MEET joinable nodes (and teach changed addresses);
2. finish slot migrations left half-done (IMPORTING/MIGRATING markers);
3. wait while a failed master's replica is promoted (by Redis itself);
4. wait while gossip settles (stale slot claims);
5. FORGET dead ids, once every kept address answers as a member (never one
   that an unfinished migration names);
6. pick the masters; fail over retiring masters to kept replicas;
7. ADDSLOTS for slots nobody serves, only when every node answers;
8. migrate slots until the masters are balanced and non-masters are empty
   (when the masters involved report cluster_state ok);
9. REPLICATE so that each master has its replicas;
10. FORGET drained retiring nodes, which then become removable;
11. repair placement: masters that share a failure domain hand over to an in-sync
    replica elsewhere (CLUSTER FAILOVER, never FORCE/TAKEOVER, on a healthy cluster);
    a replica on its master's node trades places with another shard's in-sync replica
    (REPLICATE, then phase 9 moves the displaced one).

Failure domains (`DesiredLayout.domains`: each address's Kubernetes node and zone):
phases 6 and 9 pick masters and assign replicas to keep a shard's copies, and the
masters, on distinct nodes and then zones; what cannot be spread is reported in
`Plan.placement` (fewer nodes than copies, or scheduling that pins pods together).

Safety rules: slots only ever move with their keys (MigrateSlots); a node is
never reset or flushed, so a replica is never turned back into a master (a
new master must be an empty node); a node that holds keys or slots and is not
a member is reported as blocked and left alone; failed masters are promoted by
Redis's own election (which checks the replica's data is recent), never by a
forced failover; dead ids are forgotten only when they serve no slot and their
replacement has joined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cachetier.topology.model import DesiredLayout, Domain, NodeObservation, Observed
from cachetier.topology.nodes import NodeAddress
from cachetier.topology.slots import (
    TOTAL_SLOTS,
    Ranges,
    chunks,
    count,
    format_ranges,
    from_slots,
    quotas,
    take_first,
    take_last,
)
from cachetier.topology.steps import (
    AddSlots,
    Blocked,
    Failover,
    Forget,
    Meet,
    MigrateSlots,
    Plan,
    Replicate,
    Step,
)
from cachetier.topology.view import ClusterView, Member, build_view

DEFAULT_SLOTS_PER_STEP = 512
"""Slots per MigrateSlots step: small enough that a step budget can stop mid-way."""


@dataclass
class _Planning:
    """Scratch state of one planning pass."""

    view: ClusterView
    desired: DesiredLayout
    observed: Observed
    slots_per_step: int
    blocked: list[Blocked] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    joinable: list[NodeObservation] = field(default_factory=list)

    def alive(self) -> list[Member]:
        return sorted((m for m in self.view.members.values() if m.alive), key=lambda m: m.order)

    def kept_alive(self) -> list[Member]:
        return [m for m in self.alive() if m.group == "kept"]

    def addresses(self, exclude: str | None = None) -> tuple[NodeAddress, ...]:
        return tuple(m.address for m in self.alive() if m.address and m.node_id != exclude)

    def domain(self, m: Member) -> Domain:
        return self.desired.domain(m.address)

    def conflict(self, a: Member, b: Member) -> int:
        return self.domain(a).conflict(self.domain(b))


def _classify_outsiders(p: _Planning) -> None:
    members = p.view.members
    kept = set(p.desired.kept)
    for o in p.view.outsiders:
        if o.address not in kept:
            continue  # retiring or unknown addresses are never joined
        me = o.myself
        reason = None
        if me.slots:
            reason = f"claims {count(me.slots)} slots but is not a member of this cluster"
        elif o.keys > 0 and not (me.is_replica and me.master_id in members):
            reason = f"holds {o.keys} keys but is not a member of this cluster"
        else:
            # Meeting a node merges every node it knows: fine for empty nodes,
            # not for another cluster's masters.
            foreign = [
                n
                for n in o.nodes
                if n.node_id != o.node_id and n.node_id not in members and n.slots
            ]
            if foreign:
                reason = f"knows {len(foreign)} masters of another cluster"
        if reason:
            p.blocked.append(Blocked(o.address, o.node_id, reason))
        else:
            p.joinable.append(o)
    for m in p.kept_alive():
        if m.is_master and not m.slots and not m.stale and (m.keys or 0) > 0 and m.address:
            reason = f"master without slots holds {m.keys} keys"
            p.blocked.append(Blocked(m.address, m.node_id, reason))


def _meets(p: _Planning) -> list[Step]:
    ref = p.view.observations.get(p.view.reference or "")
    if ref is None:
        return []
    steps: list[Step] = [Meet(ref.address, o.address, o.myself.bus_port) for o in p.joinable]
    for m in p.alive():
        if m.address is None:
            continue
        for viewer in p.view.observations.values():
            if viewer.node_id == m.node_id:
                continue
            # A member known at another address (or none) moved: teach the new one.
            # One merely unknown to some viewer is left to gossip.
            line = viewer.knows(m.node_id)
            if line is not None and line.address != m.address:
                steps.append(Meet(viewer.address, m.address, m.bus_port))
    return list(dict.fromkeys(steps))


def _resolve(p: _Planning, node_id: str) -> Member | None:
    """The alive master standing for `node_id` (itself, or its master if a replica)."""
    m = p.view.members.get(node_id)
    if m is not None and not m.is_master and m.master_id:
        m = p.view.members.get(m.master_id)
    if m is None or not m.alive or not m.is_master:
        return None
    return m


def _in_flight(p: _Planning) -> list[Step]:
    markers: dict[int, list[tuple[Member, str, bool]]] = {}
    for m in p.alive():
        if not m.is_master:
            continue
        for slot, peer in m.importing:
            markers.setdefault(slot, []).append((m, peer, True))
        for slot, peer in m.migrating:
            markers.setdefault(slot, []).append((m, peer, False))
    moves: dict[tuple[str, str], list[int]] = {}
    for slot, marks in sorted(markers.items()):
        owner = _resolve(p, p.view.owner_of(slot) or "")
        if owner is None:
            p.waiting.append(f"slot {slot} is mid-migration but its owner is not available")
            continue
        pairs: list[tuple[Member, Member]] = []
        for m, peer, importing in marks:
            other = _resolve(p, peer)
            if m.node_id != owner.node_id:
                # An importer gets the slot; a stray MIGRATING marker settles on the owner.
                pairs.append((owner, m) if importing else (m, owner))
            elif other is not None and other.node_id != owner.node_id:
                # The owner migrates: carry on; the owner imports: finish on the owner.
                pairs.append((other, owner) if importing else (owner, other))
        if not pairs:
            p.waiting.append(f"slot {slot} is mid-migration with a node that is down")
            continue
        pairs.sort(key=lambda pair: pair[0].node_id != owner.node_id)
        src, dst = pairs[0]
        moves.setdefault((src.node_id, dst.node_id), []).append(slot)
    steps: list[Step] = []
    for (src_id, dst_id), slots in moves.items():
        s, t = p.view.members[src_id], p.view.members[dst_id]
        assert s.address is not None and t.address is not None
        steps.append(MigrateSlots(s.address, src_id, t.address, dst_id, from_slots(slots)))
    return steps


def _failed_masters(p: _Planning) -> None:
    """Report masters that serve slots but do not answer.

    Promotion is left to Redis: its election refuses replicas whose data is
    too old (`cluster-replica-validity-factor`), which a forced failover
    would skip, losing writes. So the planner only waits.
    """
    for m in p.view.members.values():
        if not m.is_master or not m.slots or m.alive:
            continue
        replicas = [r for r in p.view.replicas_of(m.node_id) if r.alive]
        if not m.flagged_failed:
            p.waiting.append(f"master {m.node_id[:8]} ({m.address}) does not answer")
        elif replicas:
            p.waiting.append(f"master {m.node_id[:8]} failed; Redis is promoting a replica")
        else:
            p.waiting.append(
                f"slots {format_ranges(m.slots)} of failed master {m.node_id[:8]} "
                "have no replica; waiting for the node to come back"
            )


def _all_kept_joined(p: _Planning) -> bool:
    if len(p.desired.kept) < p.desired.size:
        return False
    joined = {m.address for m in p.kept_alive()}
    return all(a in joined for a in p.desired.kept)


def _forget_dead(p: _Planning) -> list[Step]:
    dead = [m for m in p.view.members.values() if not m.alive and m.group != "retiring"]
    if not dead:
        return []
    if not _all_kept_joined(p):
        p.waiting.append(f"{len(dead)} node(s) down; waiting for every kept node to answer")
        return []
    # A node named by an unfinished migration may hold the keys moved so far
    # (or its promoted replica does, and nothing says which): forgetting it
    # would clear the markers and strand them. Keep it, and say so.
    referenced = {peer for m in p.alive() for _, peer in (*m.importing, *m.migrating)}
    steps: list[Step] = []
    for m in dead:
        if m.node_id in referenced:
            p.waiting.append(
                f"down node {m.node_id[:8]} is part of an unfinished slot migration; "
                "it must come back (with its data) for the migration to finish"
            )
        elif not m.slots and not any(r.alive for r in p.view.replicas_of(m.node_id)):
            steps.append(Forget(m.node_id, p.addresses(), "dead"))
    return steps


def _choose_masters(p: _Planning) -> tuple[list[Member], list[Step]]:
    shards = p.desired.shards
    kept = p.kept_alive()
    holders = sorted(
        (m for m in kept if m.is_master and m.slots), key=lambda m: (-count(m.slots), m.order)
    )
    masters = holders[:shards]
    if len(masters) < shards:
        failovers: list[Step] = []
        leaving = sorted(
            (m for m in p.alive() if m.group != "kept" and m.is_master and m.slots),
            key=lambda m: (-count(m.slots), m.order),
        )
        for m in leaving:
            heirs = [r for r in p.view.replicas_of(m.node_id) if r.alive and r.group == "kept"]
            if heirs and heirs[0].address and len(masters) + len(failovers) < shards:
                failovers.append(Failover(heirs[0].address, m.node_id, force=False))
        if failovers:
            return masters, failovers
        empty = [m for m in kept if m.is_master and not m.slots and (m.keys or 0) == 0]
        while empty and len(masters) < shards:
            # Spread the masters: a node holding most of them takes the cluster's
            # failover quorum with it.
            best = min(empty, key=lambda e: (sum(p.conflict(e, x) for x in masters), e.order))
            masters.append(best)
            empty.remove(best)
    return masters, []


def _quota_order(masters: list[Member]) -> list[tuple[Member, int]]:
    ranked = sorted(masters, key=lambda m: (-count(m.slots), m.order))
    return list(zip(ranked, quotas(len(ranked)), strict=True))


def _add_slots(p: _Planning, masters: list[Member]) -> list[Step]:
    free = p.view.unassigned()
    if not free:
        return []
    if p.observed.unreachable:
        # A node that does not answer may hold these slots (and their keys).
        p.waiting.append(
            f"{count(free)} slots unassigned; waiting for every node to answer before adding them"
        )
        return []
    steps: list[Step] = []
    for m, quota in _quota_order(masters):
        take, free = take_first(free, max(0, quota - count(m.slots)))
        if take and m.address:
            steps.append(AddSlots(m.address, take))
    if free and masters[0].address:
        steps.append(AddSlots(masters[0].address, free))
    return steps


def _balance(p: _Planning, masters: list[Member]) -> list[Step]:
    chosen = {m.node_id for m in masters}
    sources: list[tuple[Member, Ranges]] = [
        (m, m.slots) for m in p.alive() if m.is_master and m.slots and m.node_id not in chosen
    ]
    sinks: list[tuple[Member, int]] = []
    for m, quota in _quota_order(masters):
        have = count(m.slots)
        if have > quota:
            sources.append((m, take_last(m.slots, have - quota)[0]))
        elif have < quota:
            sinks.append((m, quota - have))
    # A master whose cluster_state is not ok yet (a new one waits a rejoin delay)
    # refuses MIGRATE with CLUSTERDOWN: wait for it.
    not_ready = [m for m, _ in sources + sinks if m.cluster_state != "ok"]
    if sources and sinks and not_ready:
        p.waiting.append(f"{len(not_ready)} master(s) not ready to migrate (cluster_state)")
        return []
    steps: list[Step] = []
    for src, slots in sources:
        rest = slots
        while rest and sinks:
            dst, want = sinks[0]
            moved, rest = take_last(rest, want)
            moved_count = count(moved)
            sinks[0] = (dst, want - moved_count)
            if sinks[0][1] == 0:
                sinks.pop(0)
            assert src.address is not None and dst.address is not None
            for piece in chunks(moved, p.slots_per_step):
                steps.append(
                    MigrateSlots(src.address, src.node_id, dst.address, dst.node_id, piece)
                )
    return steps


def _is_heir(p: _Planning, replica: Member) -> bool:
    """A replica of a master that still owns slots but is down: Redis will promote it.

    Re-pointing it elsewhere would make it drop the only live copy of those
    slots' keys (a replica resyncs from its new master), so it stays put.
    """
    master = p.view.members.get(replica.master_id or "")
    return master is not None and bool(master.slots) and not master.alive


def _replicas(p: _Planning, masters: list[Member]) -> list[Step]:
    per_shard = p.desired.replicas_per_shard
    chosen = {m.node_id for m in masters}
    load: dict[str, list[Member]] = {
        m.node_id: [r for r in p.view.replicas_of(m.node_id) if r.alive and r.group == "kept"]
        for m in masters
    }
    movable: list[Member] = []
    for m in p.kept_alive():
        if m.node_id in chosen:
            continue
        if m.is_master:
            if not m.slots and (m.keys or 0) == 0:
                movable.append(m)
        elif m.master_id not in chosen and not _is_heir(p, m):
            movable.append(m)
    by_id = {m.node_id: m for m in masters}
    for mid, reps in load.items():
        if len(reps) > per_shard:
            # Keep the best-placed (then in-sync) replicas; move the others.
            reps.sort(key=lambda r: (p.conflict(r, by_id[mid]), not r.in_sync, r.order))
            movable.extend(reps[per_shard:])
            load[mid] = reps[:per_shard]
    order = {m.node_id: i for i, m in enumerate(masters)}

    def cost(r: Member, mid: str) -> int:
        return p.conflict(r, by_id[mid]) + sum(p.conflict(r, o) for o in load[mid] if o is not r)

    assigned: list[tuple[Member, str]] = []
    for m in sorted(movable, key=lambda m: m.order):
        open_masters = [mid for mid, reps in load.items() if len(reps) < per_shard]
        if not open_masters or m.address is None:
            continue
        target = min(open_masters, key=lambda mid: (cost(m, mid), len(load[mid]), order[mid]))
        load[target].append(m)
        assigned.append((m, target))
    _improve(assigned, load, cost)
    return [Replicate(m.address, t) for m, t in assigned if m.address and m.master_id != t]


def _improve(
    assigned: list[tuple[Member, str]],
    load: dict[str, list[Member]],
    cost: Callable[[Member, str], int],
) -> None:
    """Swap the targets of two planned replicas while that lowers the placement cost
    (a greedy assignment can leave the last replica on its master's node)."""
    improved = True
    while improved:
        improved = False
        for i, (a, ta) in enumerate(assigned):
            for j in range(i + 1, len(assigned)):
                b, tb = assigned[j]
                if ta == tb:
                    continue
                before = cost(a, ta) + cost(b, tb)
                load[ta].remove(a)
                load[tb].remove(b)
                load[ta].append(b)
                load[tb].append(a)
                if cost(a, tb) + cost(b, ta) < before:
                    assigned[i], assigned[j] = (a, tb), (b, ta)
                    ta = tb
                    improved = True
                else:
                    load[ta].remove(b)
                    load[tb].remove(a)
                    load[ta].append(a)
                    load[tb].append(b)


def _placement(p: _Planning, masters: list[Member]) -> list[Step]:
    """One safe step that spreads the cluster over failure domains, if one helps.

    Only on a healthy cluster (every node ok, no migration, replicas in sync): a
    CLUSTER FAILOVER (coordinated, no FORCE) hands a master that shares a domain with
    another master to its in-sync replica elsewhere; a replica that shares its
    master's domain trades places with another shard's in-sync replica (two REPLICATEs
    in one plan, so the replica counts stay right and nothing else re-decides them).
    Each plan strictly lowers the sum of replica-to-master conflicts, so repairs end.
    """
    if any(m.cluster_state != "ok" or m.importing or m.migrating for m in p.alive()):
        return []
    shards = [
        (m, [r for r in p.view.replicas_of(m.node_id) if r.alive and r.group == "kept"])
        for m in masters
    ]
    if any(not r.in_sync for _, reps in shards for r in reps):
        return []
    leaving = set(p.desired.handover)
    for m, reps in shards:
        # A supervised update: the master about to restart hands over first.
        if m.address in leaving:
            for r in reps:
                if r.address is not None and r.address not in leaving:
                    return [Failover(r.address, m.node_id, force=False)]
    for m, reps in shards:
        reps = [r for r in reps if r.address not in leaving]
        others = [x for x in masters if x is not m]
        here = sum(p.conflict(m, x) for x in others)
        if here == 0:
            continue
        for r in reps:
            there = sum(p.conflict(r, x) for x in others)
            if there < here and r.address is not None:
                return [Failover(r.address, m.node_id, force=False)]
    for m, reps in shards:
        for r in reps:
            if p.conflict(r, m) == 0:
                continue
            for m2, reps2 in shards:
                if m2 is m:
                    continue
                for r2 in reps2:
                    before = p.conflict(r, m) + p.conflict(r2, m2)
                    after = p.conflict(r, m2) + p.conflict(r2, m)
                    if after < before and r2.address is not None and r.address is not None:
                        # Both halves of the trade in one plan: were the displaced
                        # replica left to `_replicas`, its own (sibling-aware) choice
                        # could send the other one back, and the two would flip for ever.
                        return [Replicate(r2.address, m.node_id), Replicate(r.address, m2.node_id)]
    return []


def placement_report(p: _Planning, masters: list[Member]) -> tuple[str, ...]:
    """Shards whose copies share a failure domain, and masters that share a node."""
    zones = {p.domain(m).zone for m in p.kept_alive()} - {""}
    copies = 1 + p.desired.replicas_per_shard
    out: list[str] = []
    for m in masters:
        reps = [r for r in p.view.replicas_of(m.node_id) if r.alive and r.group == "kept"]
        node = p.domain(m).node
        together = [r for r in reps if p.conflict(r, m) == 2]
        same_zone = [r for r in reps if p.conflict(r, m) == 1]
        label = f"shard {format_ranges(m.slots) or m.node_id[:8]}"
        if together:
            out.append(f"{label}: master and {len(together)} replica(s) on node {node}")
        elif same_zone and len(zones) >= copies:
            zone = p.domain(m).zone
            out.append(f"{label}: master and {len(same_zone)} replica(s) in zone {zone}")
    crowded: dict[str, int] = {}
    for m in masters:
        if p.domain(m).node:
            crowded[p.domain(m).node] = crowded.get(p.domain(m).node, 0) + 1
    for node, n in sorted(crowded.items()):
        if n > 1 and n * 2 >= len(masters):
            out.append(f"{n} of {len(masters)} masters on node {node}")
    return tuple(out)


def _retire(p: _Planning) -> list[Step]:
    leaving = [m for m in p.view.members.values() if m.group == "retiring"]
    if any(m.slots for m in leaving):
        p.waiting.append("retiring masters still serve slots")
        return []
    return [Forget(m.node_id, p.addresses(exclude=m.node_id), "retired") for m in leaving]


def _removable(p: _Planning) -> tuple[NodeAddress, ...]:
    """Retiring addresses that hold nothing the cluster needs.

    A retiring node that answers is removable once it is no longer a member
    and claims no slot. One that does not answer is removable only when it is
    not a member and every slot is served by a member that answers; otherwise
    it may be the only holder of some data.
    """
    still = {m.address for m in p.view.members.values() if m.group == "retiring"}
    served = p.view.assigned == TOTAL_SLOTS and all(
        p.view.members[owner].alive for _, owner in p.view.owners
    )
    out = []
    for address in p.desired.retiring:
        if address in still:
            continue
        obs = p.observed.at(address)
        if obs is None and not served:
            continue
        if obs is not None and obs.myself.slots:
            continue
        out.append(address)
    return tuple(out)


def _check_converged(p: _Planning, masters: list[Member]) -> bool:
    problems: list[str] = []
    if len(p.desired.kept) < p.desired.size:
        problems.append(f"{p.desired.size - len(p.desired.kept)} node(s) missing")
    joined = {m.address for m in p.kept_alive()}
    absent = [a for a in p.desired.kept if a not in joined]
    if absent:
        problems.append("not joined: " + ", ".join(str(a) for a in absent))
    holders = [m for m in p.view.members.values() if m.is_master and m.slots]
    shares = sorted(count(m.slots) for m in holders)
    if p.view.assigned != TOTAL_SLOTS:
        problems.append(f"{TOTAL_SLOTS - p.view.assigned} slots unassigned")
    if len(holders) != p.desired.shards or (shares and shares[-1] - shares[0] > 1):
        problems.append(f"slots on {len(holders)} masters, want {p.desired.shards} balanced")
    for m in masters:
        reps = [r for r in p.view.replicas_of(m.node_id) if r.alive and r.group == "kept"]
        if len(reps) != p.desired.replicas_per_shard:
            problems.append(f"master {m.node_id[:8]} has {len(reps)} replica(s)")
        syncing = [r for r in reps if not r.in_sync]
        if syncing:
            problems.append(f"{len(syncing)} replica(s) of {m.node_id[:8]} not in sync yet")
    extra = [m for m in p.view.members.values() if not m.alive or m.group != "kept"]
    if extra:
        problems.append(f"{len(extra)} node(s) to forget")
    if any(m.importing or m.migrating for m in p.alive()):
        problems.append("slot migrations in flight")
    not_ok = [m for m in p.alive() if m.cluster_state != "ok"]
    if not_ok and not problems:
        problems.append(f"cluster_state not ok on {len(not_ok)} node(s)")
    p.waiting.extend(problems)
    return not problems and not p.blocked


def plan_next_steps(
    observed: Observed, desired: DesiredLayout, *, slots_per_step: int = DEFAULT_SLOTS_PER_STEP
) -> Plan:
    """Return the next safe steps from `observed` towards `desired`.

    An empty `steps` with `converged=False` means: wait and observe again
    (see `waiting` and `blocked`).
    """
    view = build_view(observed, desired)
    p = _Planning(view, desired, observed, slots_per_step)
    _classify_outsiders(p)

    placement: tuple[str, ...] = ()

    def done(steps: Iterable[Step] = (), converged: bool = False) -> Plan:
        return Plan(
            placement=placement,
            steps=tuple(steps),
            blocked=tuple(p.blocked),
            waiting=tuple(dict.fromkeys(p.waiting)),
            removable=_removable(p),
            converged=converged,
        )

    if view.reference is None:
        p.waiting.append("no node answered")
        return done()
    for phase in (_meets, _in_flight):
        steps = phase(p)
        if steps:
            return done(steps)
    _failed_masters(p)
    stale = [m for m in p.alive() if m.stale]
    if stale:
        p.waiting.append(f"gossip settling on {len(stale)} node(s)")
        return done()
    steps = _forget_dead(p)
    if steps:
        return done(steps)
    slots_settled = not p.waiting  # no unserved, stuck or unreachable slot owners
    masters, failovers = _choose_masters(p)
    if failovers:
        return done(failovers)
    if len(masters) < desired.shards:
        p.waiting.append(
            f"{desired.shards - len(masters)} more empty node(s) needed as masters "
            "(a replica is never reset into a master)"
        )
        return done()
    if slots_settled:
        for phase_with_masters in (_add_slots, _balance):
            steps = phase_with_masters(p, masters)
            if steps:
                return done(steps)
    if slots_settled:
        # While a failed master's slots wait for Redis to promote a replica, no
        # replica is re-pointed: the heir must keep its data (see _is_heir).
        steps = _replicas(p, masters)
        if steps:
            return done(steps)
        steps = _retire(p)
        if steps:
            return done(steps)
        steps = _placement(p, masters)
        if steps:
            return done(steps)
    placement = placement_report(p, masters)
    return done(converged=_check_converged(p, masters))
