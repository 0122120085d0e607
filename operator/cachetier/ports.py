"""The ports: what the operator's middle layer needs from the outside world.

Small Protocols for the Kubernetes API, Redis administration (cluster converge,
health probes), a clock and an event sink, and the plain data types that cross
them. ``cachetier.kube`` and ``cachetier.redis`` implement them; ``tests/fakes``
implements them in memory. ``cachetier.reconcile`` imports only this module,
never the adapters (``hack/check_layers.py`` enforces it), so every reconcile
step can run against a fake in a unit test.

Pure: standard library and ``cachetier.topology`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cachetier.topology import ClusterSummary, Domain, NodeAddress, Plan

# -- the Kubernetes API ---------------------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, body: dict[str, Any] | None) -> None:
        self.status = status
        self.reason = reason
        self.body = body or {}
        message = self.body.get("message") or reason
        super().__init__(f"{status} {reason}: {message}")

    @property
    def message(self) -> str:
        """The API server's own message."""
        return str(self.body.get("message") or self.reason)


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409: an apply conflict or a resourceVersion race."""


class KubeApi(Protocol):
    """The verbs of the Kubernetes API the operator uses, on plain JSON dicts."""

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        ...

    def list_objects(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` (matching the selector)."""
        ...

    def apply(
        self,
        obj: dict[str, Any],
        *,
        field_manager: str = ...,
        force: bool = True,
        subresource: str = "",
    ) -> dict[str, Any]:
        """Server-side apply of ``obj`` (the operator's field manager)."""
        ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create-only (raises :class:`Conflict` when it exists)."""
        ...

    def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str = "",
    ) -> dict[str, Any]:
        """An RFC 7386 merge patch (``subresource="status"`` for status)."""
        ...

    def json_patch(
        self, kind: str, namespace: str | None, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """An RFC 6902 JSON patch."""
        ...

    def delete(
        self, kind: str, namespace: str | None, name: str, *, propagation: str | None = None
    ) -> None:
        """Delete (a missing object is fine); ``propagation``: e.g. ``Orphan``."""
        ...

    def scoped(self, name: str) -> AbstractContextManager[None]:
        """Attribute the writes of this thread to ``name`` (a tier) while inside."""
        ...

    @property
    def scope(self) -> str:
        """The name writes of this thread are attributed to."""
        ...


EventSink = Callable[[dict[str, Any], str, str, str], None]
"""Post an Event about an object: (object, type, reason, message)."""

Clock = Callable[[], datetime]
"""The current time (UTC)."""


# -- Redis: health probes -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and how to connect."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    ca_data: str | None = None
    """The CA (PEM) that signed the server's certificate (a TLS tier's ``ca.crt``)."""
    check_hostname: bool = False
    """Pods are reached by IP, which certificates rarely name (the chain is still
    checked); an external URL's host name is checked."""


@dataclass(frozen=True)
class Counters:
    """Cumulative INFO counters, kept between probes."""

    commands: int
    errors: int
    hits: int
    misses: int
    error_classes: tuple[tuple[str, int], ...] = ()
    """INFO errorstats: (class, count) — NOPERM, WRONGPASS, OOM, ERR, ..."""
    denials: tuple[tuple[str, int], ...] = ()
    """ACL LOG command denials of the application user: (command, count)."""


@dataclass(frozen=True)
class ProbeResult:
    """One probe."""

    up: bool
    latency_ms: float | None = None
    hit_rate: float | None = None
    error_rate: float | None = None
    connected_clients: int | None = None
    evicted_keys: int | None = None
    counters: Counters | None = None
    error: str = ""
    error_classes: dict[str, int] | None = None
    """Error replies by class since the previous probe (or since start-up); None when down."""
    denied_commands: dict[str, int] | None = None
    """Commands refused by the ACL to the application user since the previous probe."""


class Prober(Protocol):
    """Talks to one Redis for the health prober."""

    def probe(self, target: Target, previous: Counters | None) -> ProbeResult:
        """PING and INFO; counters are cumulative, so the previous ones are passed in."""
        ...

    def enforce_config(self, target: Target, wanted: dict[str, str]) -> dict[str, tuple[str, str]]:
        """CONFIG SET what differs from ``wanted``; {directive: (live, wanted)} repaired."""
        ...


@dataclass(frozen=True)
class AclUpdate:
    """``ACL SETUSER user >add... <remove...`` on one Redis or Sentinel (a password
    rotation: the new password is added beside the old one, the old removed last)."""

    target: Target
    user: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    sentinel: bool = False
    """A Sentinel: its config file is flushed after (it runs from a copy it rewrites)."""
    rules: tuple[str, ...] = ()
    """Further ACL rules (no password in them), e.g. those of a user being created."""

    def __repr__(self) -> str:
        return f"AclUpdate({self.target.host}:{self.target.port}, {self.user}, <redacted>)"


@dataclass(frozen=True)
class OperatorSwitch:
    """An operator password rotation: a server starts logging in to the others with
    the operator password in use -- a Redis pod to its primary (``CONFIG SET
    masterauth``), a Sentinel to the Redis pods and its peers (``SENTINEL SET <master>
    auth-pass``, ``SENTINEL CONFIG SET sentinel-pass``)."""

    target: Target
    sentinel: bool
    master: str
    """The name the Sentinels monitor the primary under (replication mode)."""

    def __repr__(self) -> str:
        return f"OperatorSwitch({self.target.host}:{self.target.port})"


class AclAdmin(Protocol):
    """The ACL side of password rotation."""

    def password_hashes(self, target: Target, user: str) -> frozenset[str] | None:
        """The SHA-256 (hex) of each password ``user`` has (``ACL GETUSER``); None: the
        server did not answer."""
        ...

    def update(self, update: AclUpdate) -> None:
        """Carry out one ``AclUpdate`` (raises RedisUnavailable when it cannot)."""
        ...

    def switched(self, target: Target, sentinel: bool) -> bool | None:
        """The server logs in to the others with ``target.password`` (``masterauth``, a
        Sentinel's ``sentinel-pass``); None: no answer."""
        ...

    def switch(self, switch: OperatorSwitch) -> None:
        """Carry out one ``OperatorSwitch`` (raises RedisUnavailable when it cannot)."""
        ...


# -- Redis: cluster administration ----------------------------------------------------


@dataclass(frozen=True)
class TlsOptions:
    """TLS client settings for reaching the nodes."""

    ca_file: str | None = None
    """CA bundle that signed the server certificates (None: system store)."""
    cert_file: str | None = None
    """Client certificate, when the servers require one."""
    key_file: str | None = None
    """Key of the client certificate."""
    check_hostname: bool = False
    """Off by default: nodes are reached by pod IP, which certificates rarely name."""
    ca_data: str | None = None
    """The CA bundle itself (PEM), e.g. a tier Secret's ``ca.crt``; beside or instead
    of ``ca_file``."""


@dataclass(frozen=True)
class ConvergeResult:
    """Outcome of `converge`."""

    converged: bool
    """The cluster matches the desired layout and reports ok."""
    summary: ClusterSummary
    """Status summary from the last observation."""
    plan: Plan
    """The last plan: `blocked`, `waiting` and `removable` are the findings to report."""
    steps_done: int
    """Steps executed."""
    keys_migrated: int
    """Keys moved by MIGRATE."""
    stopped: str | None
    """Why it returned unconverged: `timeout`, `budget` or `stopped`; None if converged."""
    errors: tuple[str, ...]
    """Step failures met on the way (each was followed by a fresh observation)."""


class ClusterAdmin(Protocol):
    """Forms, heals and rescales one Redis Cluster (idempotent; never FLUSHALL)."""

    def __call__(
        self,
        nodes: Sequence[NodeAddress],
        password: str | None,
        shards: int,
        replicas_per_shard: int,
        *,
        username: str | None = None,
        tls: TlsOptions | None = None,
        timeout: float = 60.0,
        domains: tuple[tuple[NodeAddress, Domain], ...] = (),
        handover: tuple[NodeAddress, ...] = (),
    ) -> ConvergeResult:
        """Observe, plan and execute until converged, blocked or out of time."""
        ...


# -- Redis: replication with Sentinel -------------------------------------------------


@dataclass(frozen=True)
class NodeState:
    """What one Redis pod of a replication tier says (``INFO replication``)."""

    pod: str
    host: str
    up: bool
    role: str = ""
    """``primary`` or ``replica`` (Redis says master/slave)."""
    master_host: str | None = None
    link_up: bool = False
    offset: int = 0
    connected_replicas: int = 0
    priority: int = 100
    """``replica-priority`` (0: Sentinel never promotes it)."""
    error: str = ""


@dataclass(frozen=True)
class SentinelState:
    """What one Sentinel says of the tier's primary (``SENTINEL MASTER``)."""

    pod: str
    host: str
    up: bool
    monitoring: bool = False
    master_host: str | None = None
    master_down: bool = False
    failover: bool = False
    sentinels: int = 0
    """Sentinels it knows, itself included."""
    replicas: int = 0
    """Replicas of the primary it knows (``num-slaves``): it can fail over only to these."""
    quorum: int = 0
    priorities: tuple[tuple[str, int], ...] = ()
    """(address, replica-priority) of each replica as this Sentinel last saw it."""
    error: str = ""


@dataclass(frozen=True)
class ReplicationObservation:
    """Every Redis pod and every Sentinel of a replication tier."""

    nodes: tuple[NodeState, ...] = ()
    sentinels: tuple[SentinelState, ...] = ()


@dataclass(frozen=True)
class ReplicaOf:
    """``REPLICAOF primary`` on the pod at ``host`` (a pod Sentinel cannot reach)."""

    host: str
    primary_host: str


@dataclass(frozen=True)
class Monitor:
    """``SENTINEL MONITOR`` (with its settings) on the Sentinel at ``host``."""

    host: str
    master: str
    primary_host: str
    quorum: int
    down_after_ms: int
    failover_timeout_ms: int


@dataclass(frozen=True)
class Reset:
    """``SENTINEL RESET master`` on the Sentinel at ``host``: it forgets the replicas
    and Sentinels it knows (dead addresses among them) and rediscovers the live ones
    from the primary and the hello channel within seconds."""

    host: str
    master: str


@dataclass(frozen=True)
class Priority:
    """``CONFIG SET replica-priority`` on the replica at ``host`` (0: never promoted —
    a pod a scale-in is about to remove)."""

    host: str
    priority: int


@dataclass(frozen=True)
class Switchover:
    """``SENTINEL FAILOVER master`` on the Sentinel at ``host``: to move the primary off
    a pod a scale-in removes (once every such pod has priority 0), or off a pod a
    supervised update replaces next.

    ``pause_host``: the primary, whose writes are paused (``CLIENT PAUSE ... WRITE``,
    ``pause_ms`` at most) until every replica in ``replicas`` has its replication
    offset, and then through the switchover: no acknowledged write is left behind on
    the old primary. Its clients see a wait, then (the pod replaced) a reconnect.
    """

    host: str
    master: str
    pause_host: str = ""
    replicas: tuple[str, ...] = ()
    pause_ms: int = 0


class RedisUnavailable(Exception):
    """A Redis or Sentinel did not answer an action (down, frozen, restarting): the
    next pass looks again."""


ReplicationAction = ReplicaOf | Monitor | Reset | Priority | Switchover
"""What the operator may send a replication tier (never FLUSHALL or REPLICAOF NO ONE;
SENTINEL FAILOVER only as a scale-in's supervised switchover)."""


class ReplicationAdmin(Protocol):
    """Observes and instructs the Redis pods and Sentinels of a replication tier."""

    def observe(
        self,
        nodes: Sequence[tuple[str, str]],
        sentinels: Sequence[tuple[str, str]],
        *,
        master: str,
        username: str,
        password: str | None,
        redis_port: int,
        sentinel_port: int,
    ) -> ReplicationObservation:
        """(pod, host) of every Redis pod and every Sentinel, asked in parallel."""
        ...

    def execute(
        self,
        action: ReplicationAction,
        *,
        username: str,
        password: str | None,
        redis_port: int,
        sentinel_port: int,
    ) -> None:
        """Carry out one action; raises :class:`RedisUnavailable` when it cannot."""
        ...


class SentinelFollower(Protocol):
    """Subscriptions to a replication tier's Sentinels: a failover wakes the tier."""

    def follow(
        self,
        key: tuple[str, str],
        hosts: Sequence[str],
        *,
        master: str,
        username: str,
        password: str | None,
        port: int,
        on_event: Callable[[], None],
    ) -> None:
        """Be subscribed to exactly the Sentinels at ``hosts`` (idempotent)."""
        ...

    def forget(self, key: tuple[str, str]) -> None:
        """The tier is gone: stop its subscriptions."""
        ...
