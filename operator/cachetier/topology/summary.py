"""A status summary of a cluster (for `status.cluster`), computed from an observation.

Purely data-manipulative, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachetier.topology.model import DesiredLayout, Observed
from cachetier.topology.slots import count, normalize
from cachetier.topology.view import build_view


@dataclass(frozen=True)
class NodeSummary:
    """One member of the cluster, as shown in status."""

    node_id: str
    """Node id."""
    address: str
    """`host:port`, or empty when unknown."""
    role: str
    """`master` or `replica`."""
    master_id: str | None
    """For a replica, its master's id."""
    slots: int
    """Number of slots served."""
    healthy: bool
    """Answers and is not marked failed."""
    k8s_node: str = ""
    """The Kubernetes node its pod runs on (empty when unknown)."""
    zone: str = ""
    """That node's zone (empty when unknown)."""


@dataclass(frozen=True)
class ClusterSummary:
    """What `status.cluster` reports."""

    state: str
    """From every answering node's own `cluster_state`: `ok` when all say ok, `fail`
    when most say fail, `partial` when some do, `unknown` when nothing answered."""
    slots_assigned: int
    """Slots that have an owner."""
    slots_served: int
    """Slots whose owner answers."""
    shards: int
    """Masters that serve at least one slot."""
    nodes: tuple[NodeSummary, ...]
    """Every member, masters first."""
    shared_domains: int = 0
    """Shards with a replica on its master's Kubernetes node (one node loss takes both)."""

    def to_status(self) -> dict[str, object]:
        """The camelCase mapping for `status.cluster`."""
        return {
            "state": self.state,
            "slotsAssigned": self.slots_assigned,
            "slotsServed": self.slots_served,
            "shards": self.shards,
            "nodes": [
                {
                    "id": n.node_id,
                    "address": n.address,
                    "role": n.role,
                    "masterId": n.master_id,
                    "slots": n.slots,
                    "healthy": n.healthy,
                    "node": n.k8s_node,
                    "zone": n.zone,
                }
                for n in self.nodes
            ],
            "sharedDomains": self.shared_domains,
        }


def summarize(observed: Observed, desired: DesiredLayout) -> ClusterSummary:
    """Summarize the cluster the observed nodes belong to."""
    view = build_view(observed, desired)
    members = sorted(
        view.members.values(), key=lambda m: (not m.is_master, m.order, str(m.address))
    )
    states = [m.cluster_state for m in members if m.alive]
    ok = sum(1 for s in states if s == "ok")
    if not states:
        state = "unknown"
    elif ok == len(states):
        state = "ok"
    else:
        state = "partial" if ok * 2 > len(states) else "fail"
    served = normalize(r for r, owner in view.owners if view.members[owner].alive)
    shared = 0
    for m in members:
        if m.is_master and m.slots:
            here = desired.domain(m.address)
            replicas = [r for r in view.replicas_of(m.node_id) if r.alive]
            if any(desired.domain(r.address).conflict(here) == 2 for r in replicas):
                shared += 1
    return ClusterSummary(
        state=state,
        slots_assigned=view.assigned,
        slots_served=count(served),
        shards=sum(1 for m in members if m.is_master and m.slots),
        nodes=tuple(
            NodeSummary(
                node_id=m.node_id,
                address=str(m.address) if m.address else "",
                role="master" if m.is_master else "replica",
                master_id=m.master_id,
                slots=count(m.slots),
                healthy=m.alive and not m.flagged_failed,
                k8s_node=desired.domain(m.address).node,
                zone=desired.domain(m.address).zone,
            )
            for m in members
        ),
        shared_domains=shared,
    )
