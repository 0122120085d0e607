"""Replication mode I/O: what the Redis pods and the Sentinels say, and the few
commands the operator sends them (through redis-py).

The decisions are the pure ``cachetier.reconcile.modes.replication``; this module
observes (``INFO replication``, ``SENTINEL MASTER``) and carries out
``REPLICAOF`` (a pod that is not the Sentinels' primary's replica) and
``SENTINEL MONITOR``/``SET``/``RESET``, for a scale-in that removes the primary's
pod ``CONFIG SET replica-priority`` and one ``SENTINEL FAILOVER``, and for a
supervised update's switchover ``CLIENT PAUSE ... WRITE`` on the primary, a wait for
its replicas' offsets, then ``SENTINEL FAILOVER``. It never
sends ``FLUSHALL`` or ``REPLICAOF NO ONE``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachetier.ports import (
    Monitor,
    NodeState,
    Priority,
    RedisUnavailable,
    ReplicaOf,
    ReplicationAction,
    ReplicationObservation,
    Reset,
    SentinelState,
    Switchover,
)
from cachetier.redis.options import quiet_handshake

__all__ = ["RedisReplicationAdmin"]

TIMEOUT = 1.0
CATCH_UP_SECONDS = 2.0
"""How long a paused primary's replicas have to reach its offset before a switchover."""


def _send(target: Any, *args: Any) -> Any:
    """``execute_command`` (redis-py leaves it untyped)."""
    return target.execute_command(*args)


def _client(host: str, port: int, username: str | None, password: str | None) -> redis.Redis:
    return redis.Redis(
        host=host,
        port=port,
        username=username,
        password=password,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        # No retries: a frozen node must cost one timeout, not redis-py's default
        # retries with back-off (14 s measured), while the tier waits for its pass.
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        **quiet_handshake(),
    )


def _node(pod: str, host: str, port: int, username: str, password: str | None) -> NodeState:
    client = _client(host, port, username, password)
    try:
        info: dict[str, Any] = client.info("replication")
    except redis.RedisError as exc:
        return NodeState(pod=pod, host=host, up=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    role = str(info.get("role") or "")
    return NodeState(
        pod=pod,
        host=host,
        up=True,
        role="primary" if role == "master" else "replica",
        master_host=str(info.get("master_host") or "") or None,
        link_up=info.get("master_link_status") == "up",
        offset=int(info.get("master_repl_offset") or 0),
        connected_replicas=int(info.get("connected_slaves") or 0),
        priority=int(info.get("slave_priority", 100)),
    )


def _offset(host: str, port: int, username: str, password: str | None) -> int:
    """A replica's replication offset (-1: it does not answer)."""
    client = _client(host, port, username, password)
    try:
        return int(client.info("replication").get("master_repl_offset") or 0)
    except redis.RedisError:
        return -1
    finally:
        client.close()


def _sentinel(
    pod: str, host: str, port: int, master: str, username: str, password: str | None
) -> SentinelState:
    client = _client(host, port, username, password)
    try:
        try:
            state: dict[str, Any] = _send(client, "SENTINEL", "MASTER", master)
        except redis.ResponseError:
            return SentinelState(pod=pod, host=host, up=True, monitoring=False)
        if isinstance(state, list):  # RESP2: a flat key/value list
            state = dict(zip(state[::2], state[1::2], strict=False))
        flags = str(state.get("flags") or "")
        replicas = _send(client, "SENTINEL", "REPLICAS", master)
        priorities = []
        for entry in replicas or ():
            if isinstance(entry, list):
                entry = dict(zip(entry[::2], entry[1::2], strict=False))
            priorities.append((str(entry.get("ip")), int(entry.get("slave-priority") or 0)))
        return SentinelState(
            pod=pod,
            host=host,
            up=True,
            monitoring=True,
            master_host=str(state.get("ip") or "") or None,
            master_down="s_down" in flags or "o_down" in flags,
            failover="failover_in_progress" in flags,
            sentinels=int(state.get("num-other-sentinels") or 0) + 1,
            replicas=int(state.get("num-slaves") or 0),
            quorum=int(state.get("quorum") or 0),
            priorities=tuple(sorted(priorities)),
        )
    except redis.RedisError as exc:
        return SentinelState(pod=pod, host=host, up=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        client.close()


class RedisReplicationAdmin:
    """:class:`cachetier.ports.ReplicationAdmin` over redis-py."""

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
        jobs = len(nodes) + len(sentinels)
        if not jobs:
            return ReplicationObservation()
        with ThreadPoolExecutor(min(jobs, 8)) as pool:
            node_futures = [
                pool.submit(_node, pod, host, redis_port, username, password) for pod, host in nodes
            ]
            sentinel_futures = [
                pool.submit(_sentinel, pod, host, sentinel_port, master, username, password)
                for pod, host in sentinels
            ]
            return ReplicationObservation(
                nodes=tuple(f.result() for f in node_futures),
                sentinels=tuple(f.result() for f in sentinel_futures),
            )

    def execute(
        self,
        action: ReplicationAction,
        *,
        username: str,
        password: str | None,
        redis_port: int,
        sentinel_port: int,
    ) -> None:
        try:
            self._execute(action, username, password, redis_port, sentinel_port)
        except redis.RedisError as exc:
            raise RedisUnavailable(f"{action}: {type(exc).__name__}: {exc}") from exc

    def _paused_switchover(
        self,
        action: Switchover,
        username: str,
        password: str | None,
        redis_port: int,
        sentinel_port: int,
    ) -> None:
        """Writes paused on the primary, its replicas caught up, then ``SENTINEL
        FAILOVER``; the pause is lifted at once if the switchover is not sent."""
        primary = _client(action.pause_host, redis_port, username, password)
        sent = False
        try:
            _send(primary, "CLIENT", "PAUSE", str(action.pause_ms), "WRITE")
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while True:
                target = int(primary.info("replication").get("master_repl_offset") or 0)
                behind = [
                    h
                    for h in action.replicas
                    if _offset(h, redis_port, username, password) < target
                ]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"replicas {behind} did not catch up in {CATCH_UP_SECONDS}s"
                    )
                time.sleep(0.02)
            sentinel = _client(action.host, sentinel_port, username, password)
            try:
                _send(sentinel, "SENTINEL", "FAILOVER", action.master)
                sent = True
            finally:
                sentinel.close()
        finally:
            if not sent:
                with contextlib.suppress(redis.RedisError):
                    _send(primary, "CLIENT", "UNPAUSE")
            primary.close()

    def _execute(
        self,
        action: ReplicationAction,
        username: str,
        password: str | None,
        redis_port: int,
        sentinel_port: int,
    ) -> None:
        one: tuple[int, tuple[str, ...]] | None = None
        if isinstance(action, ReplicaOf):
            one = redis_port, ("REPLICAOF", action.primary_host, str(redis_port))
        elif isinstance(action, Priority):
            one = redis_port, ("CONFIG", "SET", "replica-priority", str(action.priority))
        elif isinstance(action, Switchover) and action.pause_host:
            self._paused_switchover(action, username, password, redis_port, sentinel_port)
        elif isinstance(action, Switchover):
            one = sentinel_port, ("SENTINEL", "FAILOVER", action.master)
        elif isinstance(action, Reset):
            one = sentinel_port, ("SENTINEL", "RESET", action.master)
        if one is not None:  # one command on one server
            client = _client(action.host, one[0], username, password)
            try:
                _send(client, *one[1])
            finally:
                client.close()
        elif isinstance(action, Monitor):
            client = _client(action.host, sentinel_port, username, password)
            try:
                with contextlib.suppress(redis.ResponseError):  # not monitored yet
                    _send(client, "SENTINEL", "REMOVE", action.master)
                _send(client,
                    "SENTINEL", "MONITOR", action.master, action.primary_host, str(redis_port),
                    str(action.quorum),
                )  # fmt: skip
                settings = {
                    "auth-user": username,
                    "auth-pass": password or "",
                    "down-after-milliseconds": str(action.down_after_ms),
                    "failover-timeout": str(action.failover_timeout_ms),
                    "parallel-syncs": "1",
                }
                for key, value in settings.items():
                    if key == "auth-pass" and not password:
                        continue
                    _send(client, "SENTINEL", "SET", action.master, key, value)
            finally:
                client.close()
