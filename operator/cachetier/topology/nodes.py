"""CLUSTER NODES as data: node addresses, one node's line, and the parser.

Purely data-manipulative: this module turns the text a Redis node returns for
`CLUSTER NODES` into frozen dataclasses; it performs no I/O.

Line format (Redis 7):
`<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv>
<config-epoch> <link-state> <slot> <slot> ...`, where a slot is `N`, `N-M`,
`[N->-target-id]` (migrating, only on the `myself` line) or
`[N-<-source-id]` (importing, only on the `myself` line).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cachetier.topology.slots import Ranges, SlotRange, normalize, parse_slot_token


@dataclass(frozen=True, order=True)
class NodeAddress:
    """Where the operator (and the cluster) reaches a Redis node."""

    host: str
    """IP address (Redis Cluster gossips IPs, so MEET needs one)."""
    port: int
    """Client port; the cluster bus is on `port + 10000` unless told otherwise."""

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> NodeAddress:
        """Parse `host:port` or `[v6]:port`."""
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected host:port, got {text!r}")
        return cls(host.strip("[]"), int(port))


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES: a node as seen by the node that answered."""

    node_id: str
    """40-character node id."""
    host: str
    """IP the viewer knows for the node; empty when unknown (a fresh node's own line)."""
    port: int
    """Client port."""
    bus_port: int
    """Cluster bus port."""
    flags: frozenset[str]
    """Flags such as `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`."""
    master_id: str | None
    """For a replica, the id of its master; None for masters."""
    config_epoch: int
    """Configuration epoch of the node (of its master, for a replica)."""
    connected: bool
    """Whether the viewer's cluster-bus link to the node is up."""
    slots: Ranges = ()
    """Slots the viewer believes the node serves."""
    importing: tuple[tuple[int, str], ...] = ()
    """`(slot, source id)` pairs this node imports (only on the `myself` line)."""
    migrating: tuple[tuple[int, str], ...] = ()
    """`(slot, target id)` pairs this node migrates (only on the `myself` line)."""
    hostname: str = ""
    """Announced hostname, if any."""
    ping_sent: int = 0
    """Milliseconds timestamp of the last unanswered PING, 0 if none."""
    pong_received: int = 0
    """Milliseconds timestamp of the last PONG."""
    extra: tuple[str, ...] = field(default=(), compare=False)
    """Tokens the parser did not understand (kept for diagnostics)."""

    @property
    def myself(self) -> bool:
        """True on the line describing the node that answered."""
        return "myself" in self.flags

    @property
    def is_master(self) -> bool:
        """True if the viewer believes the node is a master."""
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        """True if the viewer believes the node is a replica."""
        return "slave" in self.flags

    @property
    def failed(self) -> bool:
        """True if the cluster agreed the node has failed (FAIL)."""
        return "fail" in self.flags

    @property
    def suspected(self) -> bool:
        """True if the viewer alone suspects a failure (PFAIL, shown as `fail?`)."""
        return "fail?" in self.flags

    @property
    def in_handshake(self) -> bool:
        """True while a MEET is still in progress (the id is a placeholder)."""
        return "handshake" in self.flags

    @property
    def address(self) -> NodeAddress | None:
        """The node's address, or None when the viewer does not know it."""
        if not self.host or "noaddr" in self.flags:
            return None
        return NodeAddress(self.host, self.port)


def _parse_address(token: str) -> tuple[str, int, int, str]:
    addr, _, hostname = token.partition(",")
    hostport, _, bus = addr.partition("@")
    host, _, port = hostport.rpartition(":")
    port_number = int(port) if port else 0
    bus_port = int(bus) if bus else (port_number + 10000 if port_number else 0)
    return host.strip("[]"), port_number, bus_port, hostname


def parse_node_line(line: str) -> ClusterNode:
    """Parse one line of CLUSTER NODES."""
    parts = line.split()
    if len(parts) < 8:
        raise ValueError(f"malformed CLUSTER NODES line: {line!r}")
    node_id, address, flags, master, ping, pong, epoch, link = parts[:8]
    host, port, bus_port, hostname = _parse_address(address)
    slots: list[SlotRange] = []
    importing: list[tuple[int, str]] = []
    migrating: list[tuple[int, str]] = []
    extra: list[str] = []
    for token in parts[8:]:
        if token.startswith("["):
            body = token.strip("[]")
            if "->-" in body:
                slot, _, peer = body.partition("->-")
                migrating.append((int(slot), peer))
            elif "-<-" in body:
                slot, _, peer = body.partition("-<-")
                importing.append((int(slot), peer))
            else:
                extra.append(token)
        else:
            try:
                slots.append(parse_slot_token(token))
            except ValueError:
                extra.append(token)
    return ClusterNode(
        node_id=node_id,
        host=host,
        port=port,
        bus_port=bus_port,
        flags=frozenset(f for f in flags.split(",") if f and f != "noflags"),
        master_id=None if master == "-" else master,
        config_epoch=int(epoch),
        connected=link == "connected",
        slots=normalize(slots),
        importing=tuple(sorted(importing)),
        migrating=tuple(sorted(migrating)),
        hostname=hostname,
        ping_sent=int(ping),
        pong_received=int(pong),
        extra=tuple(extra),
    )


def parse_cluster_nodes(text: str) -> tuple[ClusterNode, ...]:
    """Parse the whole CLUSTER NODES reply; blank lines are ignored."""
    return tuple(parse_node_line(line) for line in text.splitlines() if line.strip())
