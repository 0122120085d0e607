"""The planner's output: steps to execute, findings to report, as plain data.

Purely data, no I/O. Each step names the node it is sent to by address (the
executor connects there) and the cluster nodes it concerns by id. Every step
is idempotent when re-sent after a partial execution.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachetier.topology.nodes import NodeAddress
from cachetier.topology.slots import Ranges, count, format_ranges


@dataclass(frozen=True)
class Meet:
    """`CLUSTER MEET` sent to `node`, introducing `peer` into the cluster."""

    node: NodeAddress
    """A member that sends the MEET."""
    peer: NodeAddress
    """The node to introduce (or whose new address to teach)."""
    peer_bus_port: int
    """Cluster bus port of `peer`."""

    def __str__(self) -> str:
        return f"meet {self.peer} via {self.node}"


@dataclass(frozen=True)
class AddSlots:
    """`CLUSTER ADDSLOTSRANGE` of slots nobody serves, on master `node`."""

    node: NodeAddress
    """The master that takes the slots."""
    slots: Ranges
    """Unassigned slots to add."""

    def __str__(self) -> str:
        return f"add slots {format_ranges(self.slots)} to {self.node}"


@dataclass(frozen=True)
class Replicate:
    """`CLUSTER REPLICATE master_id` on `node` (an empty master or a replica)."""

    node: NodeAddress
    """The node that becomes (or moves as) a replica."""
    master_id: str
    """Id of its new master."""

    def __str__(self) -> str:
        return f"{self.node} replicates {self.master_id[:8]}"


@dataclass(frozen=True)
class MigrateSlots:
    """Move slots, with their keys, from one master to another.

    Per slot: IMPORTING on the target, MIGRATING on the source, MIGRATE the
    keys in batches, then SETSLOT NODE on target, source and the other
    masters. Resending it finishes a half-done migration.
    """

    source: NodeAddress
    """Master that serves the slots now."""
    source_id: str
    """Its id."""
    target: NodeAddress
    """Master that receives them."""
    target_id: str
    """Its id."""
    slots: Ranges
    """Slots to move."""

    def __str__(self) -> str:
        return (
            f"migrate {count(self.slots)} slots ({format_ranges(self.slots)}) "
            f"{self.source} -> {self.target}"
        )


@dataclass(frozen=True)
class Failover:
    """`CLUSTER FAILOVER [FORCE]` on replica `node`, which becomes master."""

    node: NodeAddress
    """The replica to promote."""
    master_id: str
    """Id of the master it replaces."""
    force: bool
    """FORCE (no handshake with the master). The planner only plans graceful ones:
    a forced failover skips Redis's check that the replica's data is recent."""

    def __str__(self) -> str:
        mode = "forced " if self.force else ""
        return f"{mode}failover of {self.master_id[:8]} to {self.node}"


@dataclass(frozen=True)
class Forget:
    """`CLUSTER FORGET node_id` on every node in `on`."""

    node_id: str
    """The node to remove from the cluster's memory."""
    on: tuple[NodeAddress, ...]
    """Every reachable member except the forgotten node."""
    reason: str
    """Why it goes: `dead` (replaced) or `retired` (drained by scale-in)."""

    def __str__(self) -> str:
        return f"forget {self.node_id[:8]} ({self.reason})"


Step = Meet | AddSlots | Replicate | MigrateSlots | Failover | Forget
"""Anything the executor can do."""


@dataclass(frozen=True)
class Blocked:
    """A node that cannot be joined safely; reported, never wiped."""

    address: NodeAddress
    """Where it answered."""
    node_id: str
    """Its id."""
    reason: str
    """Human-readable reason, for a condition and an Event."""

    def __str__(self) -> str:
        return f"{self.address} ({self.node_id[:8]}): {self.reason}"


@dataclass(frozen=True)
class Plan:
    """The next safe steps, and what stands in the way of convergence."""

    steps: tuple[Step, ...] = ()
    """Steps to execute now, in order; then observe and plan again."""
    blocked: tuple[Blocked, ...] = ()
    """Nodes left alone because joining them could lose data."""
    waiting: tuple[str, ...] = ()
    """Conditions only time (gossip, failover, pods starting) resolves."""
    removable: tuple[NodeAddress, ...] = ()
    """Retiring addresses that hold no slots and the cluster has forgotten."""
    converged: bool = False
    """True when the cluster matches the desired layout and reports ok."""
    placement: tuple[str, ...] = ()
    """What the planner could not spread over failure domains (shards whose copies
    share a node or zone, masters crowded on a node); reported, never blocking."""
