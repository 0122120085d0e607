"""What a mode strategy is given and returns (the Protocol of the mode modules).

A strategy is pure: from the snapshot (:class:`cachetier.reconcile.observed.Observed`)
it says which children the mode needs, what the tier's readiness is, where clients
connect and which Redis actions to take. It never does I/O; the pipeline in
``cachetier.reconcile.tier`` gathers for it and carries its answers out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cachetier.api.models import CacheTierSpec
from cachetier.ports import ReplicationAction
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.observed import Key, Observed
from cachetier.render import TierRef, TierSecrets
from cachetier.topology import Domain, NodeAddress


@dataclass(frozen=True)
class ConvergeRequest:
    """Form, heal or rescale a tier's Redis Cluster with these nodes (in the background)."""

    addresses: tuple[NodeAddress, ...]
    shards: int
    replicas_per_shard: int
    password: str | None
    tls: bool
    ca_data: str | None
    domains: tuple[tuple[NodeAddress, Domain], ...] = ()
    """Each address's Kubernetes node and zone (for the placement planner)."""
    handover: tuple[NodeAddress, ...] = ()
    """Addresses whose pod is replaced next (supervised update): masters hand over."""

    def __repr__(self) -> str:  # never print a password
        return (
            f"ConvergeRequest({len(self.addresses)} nodes, {self.shards}x"
            f"{self.replicas_per_shard}, tls={self.tls})"
        )


@dataclass(frozen=True)
class LabelChange:
    """Set a Redis pod's ``cachetier.io/role`` label (replication mode)."""

    pod: str
    role: str


@dataclass(frozen=True)
class Judgement:
    """A strategy's verdict on the observed tier."""

    verdict: cond.Verdict
    endpoint: dict[str, Any] | None = None
    """``status.endpoint`` (None: not known; status keeps what it says)."""
    connection_secret: str | None = None
    cluster: dict[str, Any] | None = None
    """``status.cluster`` (None: keep what status says, or no cluster)."""
    requeue: float | None = None
    """Look again after this many seconds besides events (None: on the next event)."""
    converge: ConvergeRequest | None = None
    """A Redis action: hand the cluster's nodes to the converge worker."""
    replication: dict[str, Any] | None = None
    """``status.replication`` (replication mode)."""
    replication_actions: tuple[ReplicationAction, ...] = ()
    """Redis actions of replication mode (REPLICAOF, SENTINEL MONITOR), in order."""
    labels: tuple[LabelChange, ...] = ()
    """Pod role labels to set, demotions first (replication mode)."""
    failover: tuple[str, str] | None = None
    """(old, new) primary pod when the Sentinels moved the primary since the last pass."""
    pod_deletes: tuple[str, ...] = ()
    """Pods to delete (a supervised update replaces them one at a time)."""
    update: dict[str, Any] | None = None
    """``status.update`` (a supervised update's progress)."""
    notices: tuple[tuple[str, str, str], ...] = ()
    """Events to post: (type, reason, message)."""


@dataclass(frozen=True)
class Inputs:
    """What the shared part of the decision hands a strategy."""

    obs: Observed
    spec: CacheTierSpec
    secrets: TierSecrets | None
    """The tier's passwords (None for a mode that runs no Redis)."""
    tls_ca: str | None
    """A TLS tier's CA (PEM), for the operator's own Redis connections."""
    now_text: str = ""
    """The pass's time as status writes it (RFC 3339)."""


class Mode(Protocol):
    """One ``spec.mode``: the children it needs and how to judge them."""

    def child_keys(self, ref: TierRef, spec: CacheTierSpec) -> list[Key]:
        """(kind, name) of every child the mode may render (the gather step reads them)."""
        ...

    def wants_pods(self, obs: Observed, spec: CacheTierSpec) -> bool:
        """Whether ``judge`` needs the tier's Redis pods listed (a LIST per pass)."""
        ...

    def desired(self, inputs: Inputs) -> list[dict[str, Any]]:
        """The children to hold, in apply order. Raises ``SpecError`` for a spec the
        mode cannot serve and ``DependencyMissing`` for a missing referenced object."""
        ...

    def judge(self, inputs: Inputs, desired: list[dict[str, Any]], written: set[Key]) -> Judgement:
        """Readiness from the snapshot; ``written``: children this pass applies (their
        live copies are about to change, so they are not judged as converged)."""
        ...
