"""One consistent picture of the cluster, merged from every node's own view.

Purely data-manipulative, no I/O. Gossip makes the nodes' CLUSTER NODES
replies disagree for a while; this module decides:

- who the members are: the nodes known, transitively, by a reference node
  (the reachable node whose view holds the most slots and that most others
  know), so a node that only knows us, or a foreign cluster, stays outside;
- who serves each slot: for every slot the claim with the highest config
  epoch wins, as in Redis itself, and a node's claim about itself wins a tie;
- which reachable nodes still hold stale slot claims (gossip not settled).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cachetier.topology.model import DesiredLayout, NodeObservation, Observed
from cachetier.topology.nodes import ClusterNode, NodeAddress
from cachetier.topology.slots import TOTAL_SLOTS, Ranges, SlotRange, count, normalize

Group = Literal["kept", "retiring", "stray"]
"""Where a member stands in the desired layout; `stray` = at no desired address."""


@dataclass(frozen=True)
class Member:
    """A node that belongs to the cluster, reachable or not."""

    node_id: str
    """Node id."""
    address: NodeAddress | None
    """Address it answered at, or the last address the cluster knows for it."""
    bus_port: int
    """Cluster bus port."""
    group: Group
    """Kept, retiring, or stray (an id at no desired address)."""
    order: int
    """Index of its address in the desired node list (for stable choices)."""
    reachable: bool
    """Whether it answered the observer."""
    flagged_failed: bool
    """Whether a reachable member marks it FAIL (or without address)."""
    is_master: bool
    """Role: master (True) or replica (False)."""
    master_id: str | None
    """For a replica, the id of its master."""
    slots: Ranges
    """Slots it serves according to the merged slot table."""
    claimed: Ranges
    """Slots it claims in its own view (equal to `slots` when unreachable)."""
    keys: int | None
    """Number of keys it holds, when reachable."""
    importing: tuple[tuple[int, str], ...]
    """`(slot, source id)` it imports, from its own view."""
    migrating: tuple[tuple[int, str], ...]
    """`(slot, target id)` it migrates, from its own view."""
    cluster_state: str
    """Its `cluster_state`, or `unknown` when unreachable."""
    in_sync: bool
    """A reachable replica whose replication link is up (always False for masters)."""

    @property
    def alive(self) -> bool:
        """Reachable now; planning only ever acts through reachable nodes."""
        return self.reachable

    @property
    def stale(self) -> bool:
        """Its own claim disagrees with the merged slot table (gossip not settled)."""
        return self.reachable and self.claimed != self.slots


@dataclass(frozen=True)
class ClusterView:
    """The merged picture the planner works on."""

    members: Mapping[str, Member]
    """Members by node id."""
    owners: tuple[tuple[SlotRange, str], ...]
    """Assigned slot ranges and the id serving each, sorted."""
    outsiders: tuple[NodeObservation, ...]
    """Reachable nodes that are not members."""
    observations: Mapping[str, NodeObservation]
    """Every reachable member's raw observation, by id."""
    reference: str | None
    """Id of the reference node (None when nothing answered)."""

    @property
    def assigned(self) -> int:
        """Number of slots with an owner."""
        return sum(len(r) for r, _ in self.owners)

    def owner_of(self, slot: int) -> str | None:
        """Id of the member serving `slot`, if any."""
        for r, owner in self.owners:
            if slot in r:
                return owner
        return None

    def unassigned(self) -> Ranges:
        """Slots nobody claims."""
        taken = normalize(r for r, _ in self.owners)
        out: list[SlotRange] = []
        start = 0
        for r in taken:
            if r.start > start:
                out.append(SlotRange(start, r.start - 1))
            start = r.end + 1
        if start < TOTAL_SLOTS:
            out.append(SlotRange(start, TOTAL_SLOTS - 1))
        return tuple(out)

    def replicas_of(self, master_id: str) -> list[Member]:
        """Members that replicate `master_id`, in desired order."""
        found = [m for m in self.members.values() if not m.is_master and m.master_id == master_id]
        return sorted(found, key=lambda m: m.order)


def _view_slots(obs: NodeObservation) -> int:
    return sum(count(n.slots) for n in obs.nodes if not n.in_handshake)


def _pick_reference(reachable: list[NodeObservation], order: dict[NodeAddress, int]) -> str:
    ids = {o.node_id for o in reachable}
    known_by = {i: sum(1 for o in reachable if i in o.known_ids) for i in ids}
    best = max(
        reachable,
        key=lambda o: (_view_slots(o), known_by[o.node_id], -order.get(o.address, 1 << 30)),
    )
    return best.node_id


def _membership(reference: str, by_id: dict[str, NodeObservation]) -> set[str]:
    members = {reference}
    queue = [reference]
    while queue:
        obs = by_id.get(queue.pop())
        if obs is None:
            continue
        for other in obs.known_ids:
            if other not in members:
                members.add(other)
                queue.append(other)
    return members


def _merge_slots(
    views: list[NodeObservation], members: set[str]
) -> tuple[tuple[SlotRange, str], ...]:
    """Per slot, the claim with the highest (epoch, self-claim) wins."""
    claims: list[tuple[int, int, int, int, str]] = []  # start, end, epoch, is_self, owner
    for obs in views:
        for n in obs.nodes:
            if n.in_handshake or n.node_id not in members:
                continue
            rank = 1 if n.node_id == obs.node_id else 0
            for r in n.slots:
                claims.append((r.start, r.end, n.config_epoch, rank, n.node_id))
    if not claims:
        return ()
    bounds = sorted({c[0] for c in claims} | {c[1] + 1 for c in claims})
    claims.sort()
    out: list[tuple[SlotRange, str]] = []
    active: list[tuple[int, int, int, int, str]] = []
    i = 0
    for lo, hi in itertools.pairwise(bounds):
        while i < len(claims) and claims[i][0] <= lo:
            active.append(claims[i])
            i += 1
        active = [c for c in active if c[1] >= lo]
        if not active:
            continue
        owner = max(active, key=lambda c: (c[2], c[3], c[4]))[4]
        seg = SlotRange(lo, hi - 1)
        if out and out[-1][1] == owner and out[-1][0].end + 1 == seg.start:
            out[-1] = (SlotRange(out[-1][0].start, seg.end), owner)
        else:
            out.append((seg, owner))
    return tuple(out)


def _entry(node_id: str, views: list[NodeObservation]) -> ClusterNode | None:
    for obs in views:
        line = obs.knows(node_id)
        if line is not None:
            return line
    return None


def build_view(observed: Observed, desired: DesiredLayout) -> ClusterView:
    """Merge every reachable node's view into one `ClusterView`."""
    order = {a: i for i, a in enumerate(desired.nodes)}
    kept = set(desired.kept)
    reachable = sorted(observed.nodes, key=lambda o: order.get(o.address, 1 << 30))
    by_id: dict[str, NodeObservation] = {}
    for o in reachable:
        by_id.setdefault(o.node_id, o)
    if not by_id:
        return ClusterView({}, (), (), {}, None)
    reference = _pick_reference(list(by_id.values()), order)
    member_ids = _membership(reference, by_id)
    # The reference's view first: it decides ties about unreachable nodes.
    views = [by_id[reference]] + [o for i, o in by_id.items() if i in member_ids and i != reference]
    owners = _merge_slots(views, member_ids)
    effective: dict[str, list[SlotRange]] = {}
    for r, owner in owners:
        effective.setdefault(owner, []).append(r)
    occupied = {o.address for o in by_id.values()}
    members: dict[str, Member] = {}
    for node_id in member_ids:
        obs = by_id.get(node_id)
        line = obs.myself if obs is not None else _entry(node_id, views)
        if line is None:
            continue
        failed = any(
            (e := v.knows(node_id)) is not None and (e.failed or e.address is None)
            for v in views
            if v.node_id != node_id
        )
        address = obs.address if obs is not None else line.address
        if (
            address is not None
            and address in order
            and (obs is not None or address not in occupied)
        ):
            group: Group = "kept" if address in kept else "retiring"
            position = order[address]
        else:
            group, position = "stray", len(order)
        slots = normalize(effective.get(node_id, ()))
        members[node_id] = Member(
            node_id=node_id,
            address=address,
            bus_port=line.bus_port,
            group=group,
            order=position,
            reachable=obs is not None,
            flagged_failed=failed,
            is_master=not line.is_replica,
            master_id=line.master_id if line.is_replica else None,
            slots=slots,
            claimed=line.slots if obs is not None else slots,
            keys=obs.keys if obs is not None else None,
            importing=line.importing if obs is not None else (),
            migrating=line.migrating if obs is not None else (),
            cluster_state=obs.cluster_state if obs is not None else "unknown",
            in_sync=obs is not None and bool(obs.replica_in_sync) and line.is_replica,
        )
    outsiders = tuple(o for i, o in by_id.items() if i not in member_ids)
    return ClusterView(
        members=members,
        owners=owners,
        outsiders=outsiders,
        observations={i: o for i, o in by_id.items() if i in member_ids},
        reference=reference,
    )
