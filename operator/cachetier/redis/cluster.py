"""Redis Cluster I/O: observe the nodes, execute planned steps, converge.

The only module that talks to Redis for cluster work (through redis-py). The
decisions live in the pure `cachetier.topology` package; this module only
gathers observations and carries out `Step`s, each of them idempotent:
resending a step after a crash finishes it instead of repeating damage.

It never sends FLUSHALL, FLUSHDB or CLUSTER RESET: slots move only with
their keys (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachetier.ports import ConvergeResult, TlsOptions
from cachetier.redis.options import quiet_handshake
from cachetier.topology import (
    AddSlots,
    ClusterSummary,
    DesiredLayout,
    Domain,
    Failover,
    Forget,
    Meet,
    MigrateSlots,
    NodeAddress,
    NodeObservation,
    Observed,
    Plan,
    Replicate,
    Step,
    parse_cluster_nodes,
    plan_next_steps,
    summarize,
)
from cachetier.topology.nodes import ClusterNode
from cachetier.topology.slots import chunks, iter_slots

log = logging.getLogger(__name__)

MAX_ERRORS = 20
"""Step failures kept in a ConvergeResult (the most recent ones)."""

_IGNORED_FORGET_ERRORS = ("unknown node", "can't forget my master", "i tried hard but i can't")


@dataclass(frozen=True)
class Connection:
    """How to reach and authenticate to every node."""

    password: str | None = None
    """`requirepass` (or the ACL user's password)."""
    username: str | None = None
    """ACL user; None means `default`."""
    tls: TlsOptions | None = None
    """TLS settings, or None for plain TCP."""
    socket_timeout: float = 5.0
    """Seconds to wait for a reply."""
    connect_timeout: float = 2.0
    """Seconds to wait for a connection."""


@dataclass(frozen=True)
class Progress:
    """Where an executor stands; handed to the `stop` callback."""

    steps_done: int
    """Steps finished so far."""
    keys_migrated: int
    """Keys moved by MIGRATE so far."""
    slot: int | None
    """Slot whose keys are being moved right now, if any."""


class Interrupted(Exception):
    """The `stop` callback asked to stop (possibly in the middle of a slot)."""


class StepFailed(Exception):
    """A step could not be completed; the next observation decides what to do."""


def _send(target: Any, *args: Any) -> Any:
    """`execute_command` on a client or pipeline (redis-py leaves it untyped)."""
    return target.execute_command(*args)


def _info_field(info: Any, name: str) -> str | None:
    """A field of an INFO-style reply (redis-py parses INFO into a dict, not CLUSTER INFO)."""
    if isinstance(info, dict):
        return None if name not in info else _text(info[name])
    for line in _text(info).splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterExecutor:
    """Observes nodes and executes steps, with one client per node address."""

    def __init__(
        self,
        connection: Connection,
        *,
        keys_per_batch: int = 100,
        migrate_timeout_ms: int = 10_000,
        wait_seconds: float = 10.0,
        stop: Callable[[Progress], bool] | None = None,
    ) -> None:
        self.connection = connection
        self.keys_per_batch = keys_per_batch
        self.migrate_timeout_ms = migrate_timeout_ms
        self.wait_seconds = wait_seconds
        self.stop = stop
        self.steps_done = 0
        self.keys_migrated = 0
        self._clients: dict[NodeAddress, redis.Redis] = {}

    def __enter__(self) -> ClusterExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def client(self, address: NodeAddress) -> redis.Redis:
        """The (cached) client for a node; replies are bytes, keys may be binary."""
        if address not in self._clients:
            c, tls = self.connection, self.connection.tls
            self._clients[address] = redis.Redis(
                host=address.host,
                port=address.port,
                username=c.username,
                password=c.password,
                socket_timeout=c.socket_timeout,
                socket_connect_timeout=c.connect_timeout,
                retry=Retry(NoBackoff(), 0),
                ssl=tls is not None,
                ssl_ca_certs=tls.ca_file if tls else None,
                ssl_ca_data=tls.ca_data if tls else None,
                ssl_certfile=tls.cert_file if tls else None,
                ssl_keyfile=tls.key_file if tls else None,
                ssl_check_hostname=tls.check_hostname if tls else False,
                **quiet_handshake(),
            )
        return self._clients[address]

    def cmd(self, address: NodeAddress, *args: Any) -> Any:
        """Run one command on a node."""
        return _send(self.client(address), *args)

    def _cluster_ok(self, address: NodeAddress) -> bool:
        return _info_field(self.cmd(address, "CLUSTER", "INFO"), "cluster_state") == "ok"

    def nodes_of(self, address: NodeAddress) -> tuple[ClusterNode, ...]:
        """CLUSTER NODES of a node, parsed."""
        return parse_cluster_nodes(_text(self.cmd(address, "CLUSTER", "NODES")))

    # -- observation ---------------------------------------------------------

    def observe_node(self, address: NodeAddress) -> NodeObservation:
        """MYID, NODES, DBSIZE and cluster_state of one node."""
        pipe = self.client(address).pipeline(transaction=False)
        _send(pipe, "CLUSTER", "MYID")
        _send(pipe, "CLUSTER", "NODES")
        _send(pipe, "DBSIZE")
        _send(pipe, "CLUSTER", "INFO")
        _send(pipe, "INFO", "replication")
        myid, nodes, keys, info, replication = pipe.execute()
        state = _info_field(info, "cluster_state") or "unknown"
        role = _info_field(replication, "role")
        link = _info_field(replication, "master_link_status")
        return NodeObservation(
            address=address,
            node_id=_text(myid),
            keys=int(keys),
            nodes=parse_cluster_nodes(_text(nodes)),
            cluster_state=state,
            replica_in_sync=(link == "up") if role == "slave" else None,
        )

    def observe(self, addresses: Sequence[NodeAddress]) -> Observed:
        """Observe every address; the ones that fail to answer are `unreachable`."""
        seen: list[NodeObservation] = []
        missing: list[NodeAddress] = []
        for address in addresses:
            try:
                seen.append(self.observe_node(address))
            except redis.RedisError as e:
                log.debug("node %s unreachable: %s", address, e)
                missing.append(address)
        return Observed(tuple(seen), tuple(missing))

    # -- steps ---------------------------------------------------------------

    def execute(self, step: Step) -> None:
        """Carry out one step; raises StepFailed or Interrupted."""
        log.info("cluster step: %s", step)
        try:
            match step:
                case Meet():
                    self._meet(step)
                case AddSlots():
                    args = [n for r in step.slots for n in (r.start, r.end)]
                    self.cmd(step.node, "CLUSTER", "ADDSLOTSRANGE", *args)
                case Replicate():
                    self._retry(lambda: self.cmd(step.node, "CLUSTER", "REPLICATE", step.master_id))
                case Failover():
                    self._failover(step)
                case Forget():
                    self._forget(step)
                case MigrateSlots():
                    self._migrate(step)
        except redis.RedisError as e:
            raise StepFailed(f"{step}: {e}") from e
        self.steps_done += 1

    def _until(self, check: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return False

    def _retry(self, action: Callable[[], object]) -> None:
        """Retry while gossip has not yet told the node about an id."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                action()
                return
            except redis.ResponseError as e:
                if "unknown node" not in str(e).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _meet(self, step: Meet) -> None:
        """Send the MEET; `await_meets` waits for the handshakes, all at once."""
        peer = step.peer
        self.cmd(step.node, "CLUSTER", "MEET", peer.host, peer.port, step.peer_bus_port)

    def await_meets(self, steps: Sequence[Meet]) -> None:
        """Wait (bounded) until every MEET's handshake finished; gossip does the rest."""
        pending = list(steps)

        def met(step: Meet) -> bool:
            try:
                return any(
                    n.address == step.peer and not n.in_handshake for n in self.nodes_of(step.node)
                )
            except redis.RedisError:
                return True  # the next observation will tell

        def all_met() -> bool:
            pending[:] = [s for s in pending if not met(s)]
            return not pending

        if not self._until(all_met):
            log.info("%d MEET handshake(s) not finished yet", len(pending))

    def _failover(self, step: Failover) -> None:
        args = ("CLUSTER", "FAILOVER", "FORCE") if step.force else ("CLUSTER", "FAILOVER")
        try:
            self.cmd(step.node, *args)
        except redis.ResponseError as e:
            if "replica" not in str(e).lower():  # "already a master" needs no failover
                raise

        def promoted() -> bool:
            return any(n.myself and n.is_master for n in self.nodes_of(step.node))

        if not self._until(promoted):
            raise StepFailed(f"{step}: replica not promoted in time")

    def _forget(self, step: Forget) -> None:
        for address in step.on:
            try:
                self.cmd(address, "CLUSTER", "FORGET", step.node_id)
            except redis.ResponseError as e:
                if not any(s in str(e).lower() for s in _IGNORED_FORGET_ERRORS):
                    raise
            except redis.ConnectionError as e:
                log.info("forget on %s skipped: %s", address, e)

    def _check_stop(self, slot: int | None) -> None:
        if self.stop is not None and self.stop(Progress(self.steps_done, self.keys_migrated, slot)):
            raise Interrupted(f"stopped at slot {slot}")

    def _migrate(self, step: MigrateSlots) -> None:
        for piece in chunks(step.slots, 256):
            slots = list(iter_slots(piece))
            self._open_slots(step, slots)
            self._move_keys(step, slots)
            self._close_slots(step, slots)
            self._check_stop(None)

    def _open_slots(self, step: MigrateSlots, slots: list[int]) -> None:
        """IMPORTING on the target, then MIGRATING on the source (order matters).

        The target must first know who owns each slot: Redis never learns the
        owner of a slot it is already importing, and then refuses the keys
        (CLUSTERDOWN Hash slot not served). So wait for gossip, and if it
        does not come, tell the target explicitly (SETSLOT NODE <source>).
        """
        unknown: list[int] = []

        def ready() -> bool:
            unknown.clear()
            target_view, source_view = self.nodes_of(step.target), self.nodes_of(step.source)
            if not _knows(target_view, step.source_id) or not _knows(source_view, step.target_id):
                return False
            if not (self._cluster_ok(step.target) and self._cluster_ok(step.source)):
                return False  # MIGRATE would meet CLUSTERDOWN
            claimed = _myself(source_view).slots
            pair = (step.source_id, step.target_id)
            unknown[:] = [
                s
                for s in slots
                if any(s in r for r in claimed) and _owner(target_view, s) not in pair
            ]
            return not unknown

        if not self._until(ready):
            if not unknown:
                raise StepFailed(f"{step}: nodes do not know each other or are not ok yet")
            pipe = self.client(step.target).pipeline(transaction=False)
            for s in unknown:
                _send(pipe, "CLUSTER", "SETSLOT", s, "NODE", step.source_id)
            pipe.execute()
        target = _myself(self.nodes_of(step.target))
        source = _myself(self.nodes_of(step.source))
        importing, migrating = dict(target.importing), dict(source.migrating)
        pipe = self.client(step.target).pipeline(transaction=False)
        for s in slots:
            if not any(s in r for r in target.slots) and importing.get(s) != step.source_id:
                _send(pipe, "CLUSTER", "SETSLOT", s, "IMPORTING", step.source_id)
        pipe.execute()
        pipe = self.client(step.source).pipeline(transaction=False)
        for s in slots:
            if any(s in r for r in source.slots) and migrating.get(s) != step.target_id:
                _send(pipe, "CLUSTER", "SETSLOT", s, "MIGRATING", step.target_id)
        pipe.execute()

    def _move_keys(self, step: MigrateSlots, slots: list[int]) -> None:
        """MIGRATE every key of the slots, in rounds of one batch per slot.

        Each round is two pipelines: GETKEYSINSLOT for every pending slot,
        then one MIGRATE per slot (MIGRATE takes keys of a single slot).
        """
        c = self.connection
        auth: list[Any] = []
        if c.password is not None:
            auth = ["AUTH2", c.username or "default", c.password]
        pending = slots
        while pending:
            pipe = self.client(step.source).pipeline(transaction=False)
            for slot in pending:
                _send(pipe, "CLUSTER", "GETKEYSINSLOT", slot, self.keys_per_batch)
            found = [(s, k) for s, k in zip(pending, pipe.execute(), strict=True) if k]
            if not found:
                return
            pipe = self.client(step.source).pipeline(transaction=False)
            target = step.target
            for _, keys in found:
                _send(pipe, "MIGRATE", target.host, target.port, "", 0, self.migrate_timeout_ms,
                      "REPLACE", *auth, "KEYS", *keys)  # fmt: skip
            pipe.execute()
            self.keys_migrated += sum(len(k) for _, k in found)
            pending = [s for s, k in found if len(k) == self.keys_per_batch]
            self._check_stop(pending[0] if pending else None)

    def _close_slots(self, step: MigrateSlots, slots: list[int]) -> None:
        """SETSLOT NODE on the target first (it bumps its epoch), then the source, then others."""
        target = _myself(self.nodes_of(step.target))
        pipe = self.client(step.target).pipeline(transaction=False)
        for s in slots:
            if not any(s in r for r in target.slots):
                _send(pipe, "CLUSTER", "SETSLOT", s, "NODE", step.target_id)
        pipe.execute()
        view = self.nodes_of(step.source)
        pipe = self.client(step.source).pipeline(transaction=False)
        for s in slots:
            _send(pipe, "CLUSTER", "SETSLOT", s, "NODE", step.target_id)
        for reply in pipe.execute(raise_on_error=False):
            # A source that just lost its last slot already follows the target as a replica.
            if isinstance(reply, Exception) and "only with masters" not in str(reply):
                raise reply
        others = [
            n.address
            for n in view
            if n.is_master and not n.failed and not n.myself and n.node_id != step.target_id
        ]
        for address in others:
            if address is None:
                continue
            try:
                pipe = self.client(address).pipeline(transaction=False)
                for s in slots:
                    _send(pipe, "CLUSTER", "SETSLOT", s, "NODE", step.target_id)
                pipe.execute(raise_on_error=False)
            except redis.RedisError as e:  # gossip will tell it anyway
                log.debug("SETSLOT NODE on %s skipped: %s", address, e)


def _knows(view: tuple[ClusterNode, ...], node_id: str) -> bool:
    return any(n.node_id == node_id and not n.in_handshake for n in view)


def _owner(view: tuple[ClusterNode, ...], slot: int) -> str | None:
    """Id of the owner of `slot`, as one node sees it."""
    for n in view:
        if n.is_master and any(slot in r for r in n.slots):
            return n.node_id
    return None


def _myself(nodes: tuple[ClusterNode, ...]) -> ClusterNode:
    for n in nodes:
        if n.myself:
            return n
    raise StepFailed("CLUSTER NODES without a myself line")


@contextmanager
def _executor(connection: Connection, **kwargs: Any) -> Iterator[ClusterExecutor]:
    ex = ClusterExecutor(connection, **kwargs)
    try:
        yield ex
    finally:
        ex.close()


def converge(
    nodes: Sequence[NodeAddress],
    password: str | None,
    shards: int,
    replicas_per_shard: int,
    *,
    username: str | None = None,
    tls: TlsOptions | None = None,
    timeout: float = 60.0,
    max_steps: int | None = None,
    stop: Callable[[Progress], bool] | None = None,
    keys_per_batch: int = 100,
    slots_per_step: int = 512,
    poll_interval: float = 0.2,
    domains: tuple[tuple[NodeAddress, Domain], ...] = (),
    handover: tuple[NodeAddress, ...] = (),
) -> ConvergeResult:
    """Observe, plan and execute until the cluster matches the layout.

    `nodes` are every running node's address (IPs, in a stable order); the
    first `shards * (1 + replicas_per_shard)` are kept, the rest drained and
    then listed in `result.plan.removable`. Returns when converged, after
    `timeout` seconds, after `max_steps` steps, or when `stop` returns True
    (checked between steps and between MIGRATE batches). Safe to call again
    at any time: a half-done migration is detected and finished.
    """
    desired = DesiredLayout(shards, replicas_per_shard, tuple(nodes), domains, handover)
    connection = Connection(password=password, username=username, tls=tls)
    deadline = time.monotonic() + timeout
    errors: list[str] = []

    def expired(_: Progress) -> bool:
        return time.monotonic() > deadline or (stop is not None and stop(_))

    with _executor(connection, keys_per_batch=keys_per_batch, stop=expired) as ex:

        def result(plan: Plan, observed: Observed, stopped: str | None) -> ConvergeResult:
            return ConvergeResult(
                converged=plan.converged,
                summary=summarize(observed, desired),
                plan=plan,
                steps_done=ex.steps_done,
                keys_migrated=ex.keys_migrated,
                stopped=stopped,
                errors=tuple(errors),
            )

        while True:
            observed = ex.observe(desired.nodes)
            plan = plan_next_steps(observed, desired, slots_per_step=slots_per_step)
            if plan.converged:
                return result(plan, observed, None)
            failed = False
            for step in plan.steps:
                if max_steps is not None and ex.steps_done >= max_steps:
                    return result(plan, observed, "budget")
                if time.monotonic() > deadline:
                    return result(plan, observed, "timeout")
                try:
                    ex.execute(step)
                except Interrupted:
                    why = "timeout" if time.monotonic() > deadline else "stopped"
                    return result(plan, ex.observe(desired.nodes), why)
                except StepFailed as e:
                    log.warning("cluster step failed: %s", e)
                    errors[:] = [*errors[-(MAX_ERRORS - 1) :], str(e)]
                    failed = True
                    break
            ex.await_meets([s for s in plan.steps if isinstance(s, Meet)])
            if not plan.steps or failed:
                if time.monotonic() > deadline:
                    return result(plan, observed, "timeout")
                if stop is not None and stop(Progress(ex.steps_done, ex.keys_migrated, None)):
                    return result(plan, observed, "stopped")
                time.sleep(poll_interval)


def cluster_summary(
    nodes: Sequence[NodeAddress],
    password: str | None,
    *,
    username: str | None = None,
    tls: TlsOptions | None = None,
) -> ClusterSummary:
    """Observe the nodes once and summarize the cluster for `status.cluster`."""
    desired = DesiredLayout(max(1, len(nodes)), 0, tuple(nodes))
    with _executor(Connection(password=password, username=username, tls=tls)) as ex:
        return summarize(ex.observe(desired.nodes), desired)
