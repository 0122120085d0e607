"""Inputs of the planner: what was observed, and the layout that is wanted.

Purely data: frozen dataclasses filled by the I/O layer (`cachetier.redis.cluster`)
or by tests; nothing here talks to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachetier.topology.nodes import ClusterNode, NodeAddress


@dataclass(frozen=True)
class Domain:
    """Where a Redis node runs: its Kubernetes node and zone (empty when unknown)."""

    node: str = ""
    zone: str = ""

    def conflict(self, other: Domain) -> int:
        """2 when both run on one Kubernetes node, 1 in one zone, 0 apart (or unknown)."""
        if self.node and self.node == other.node:
            return 2
        if self.zone and self.zone == other.zone:
            return 1
        return 0


@dataclass(frozen=True)
class NodeObservation:
    """What one reachable node said about itself and the cluster it knows."""

    address: NodeAddress
    """The address the observer connected to."""
    node_id: str
    """The node's own id (CLUSTER MYID)."""
    keys: int
    """Number of keys the node holds (DBSIZE); replicas count their copies."""
    nodes: tuple[ClusterNode, ...]
    """The node's CLUSTER NODES, including its own `myself` line."""
    cluster_state: str = "unknown"
    """`cluster_state` from CLUSTER INFO: `ok` or `fail`."""
    replica_in_sync: bool | None = None
    """For a replica, whether its replication link is up (`master_link_status:up`)."""

    @property
    def myself(self) -> ClusterNode:
        """The node's own line."""
        for n in self.nodes:
            if n.node_id == self.node_id:
                return n
        raise ValueError(f"node {self.node_id} missing from its own CLUSTER NODES")

    def knows(self, node_id: str) -> ClusterNode | None:
        """The line for `node_id` (not a handshake placeholder), if this node knows it."""
        for n in self.nodes:
            if n.node_id == node_id and not n.in_handshake:
                return n
        return None

    @property
    def known_ids(self) -> frozenset[str]:
        """Ids of every other node this node knows (handshakes excluded)."""
        return frozenset(
            n.node_id for n in self.nodes if n.node_id != self.node_id and not n.in_handshake
        )


@dataclass(frozen=True)
class Observed:
    """One observation pass over the desired addresses."""

    nodes: tuple[NodeObservation, ...]
    """Nodes that answered."""
    unreachable: tuple[NodeAddress, ...] = ()
    """Addresses that did not answer (pod down, not yet scheduled, auth failure)."""

    def at(self, address: NodeAddress) -> NodeObservation | None:
        """The observation of the node at `address`, if it answered."""
        for o in self.nodes:
            if o.address == address:
                return o
        return None


@dataclass(frozen=True)
class DesiredLayout:
    """The cluster that is wanted.

    `nodes` lists every running Redis node address in a stable order (e.g. pod
    ordinal). The first `shards * (1 + replicas_per_shard)` of them are kept;
    any further ones are retiring: they are drained, forgotten, and then
    reported as removable. A caller that scales in therefore keeps the
    surplus pods running until the plan lists them as removable.
    """

    shards: int
    """Number of masters that serve slots."""
    replicas_per_shard: int
    """Replicas for each master."""
    nodes: tuple[NodeAddress, ...]
    """Every running node address, in a stable order; surplus ones are retiring."""
    domains: tuple[tuple[NodeAddress, Domain], ...] = ()
    """Failure domain of each address (from its pod's node); the planner keeps a
    shard's copies (and the masters) apart when it can."""
    handover: tuple[NodeAddress, ...] = ()
    """Nodes about to be restarted (a supervised update): a master among them hands its
    role to an in-sync replica first (CLUSTER FAILOVER, no FORCE), and none of them is
    made a master."""

    def domain(self, address: NodeAddress | None) -> Domain:
        """The failure domain of `address` (unknown: `Domain()`)."""
        for a, d in self.domains:
            if a == address:
                return d
        return Domain()

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("shards must be at least 1")
        if self.replicas_per_shard < 0:
            raise ValueError("replicasPerShard must not be negative")
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError("node addresses must be unique")

    @property
    def size(self) -> int:
        """Number of nodes the layout needs."""
        return self.shards * (1 + self.replicas_per_shard)

    @property
    def kept(self) -> tuple[NodeAddress, ...]:
        """Addresses that stay in the cluster."""
        return self.nodes[: self.size]

    @property
    def retiring(self) -> tuple[NodeAddress, ...]:
        """Addresses to drain and remove."""
        return self.nodes[self.size :]
