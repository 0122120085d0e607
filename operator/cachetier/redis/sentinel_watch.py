"""Following Sentinel's pub/sub: a failover wakes its tier at once, not at the next poll.

One thread per (tier, Sentinel address) holds a subscription to the Sentinel's
``+switch-master`` channel (Sentinel publishes there when it adopts a new primary:
the failover leader at once, the others as its new configuration reaches them) and
``+sdown``/``-sdown`` of the primary (so the tier's status shows the trouble early).
Each message calls ``on_event`` — the runtime's wake of the tier, whose reconcile
asks the Sentinels and moves the labels. A lost subscription is re-made after a
second; the 2 s poll of the tier stays the safety net for a message never received.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import redis

from cachetier.redis.options import quiet_handshake

__all__ = ["SentinelWatch"]

log = logging.getLogger("cachetier.redis")

CHANNELS = ("+switch-master", "+sdown", "-sdown", "+odown")
RETRY_SECONDS = 1.0


class _Subscription(threading.Thread):
    def __init__(
        self,
        host: str,
        port: int,
        master: str,
        username: str,
        password: str | None,
        on_event: Callable[[], None],
    ) -> None:
        super().__init__(daemon=True, name=f"sentinel-watch-{host}")
        self.host, self.port, self.master = host, port, master
        self.username, self.password = username, password
        self.on_event = on_event
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            client = redis.Redis(
                host=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                socket_connect_timeout=1.0,
                socket_timeout=5.0,
                decode_responses=True,
                **quiet_handshake(),
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(*CHANNELS)
                while not self.stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    data = str(message.get("data") or "")
                    # "+switch-master <name> <old ip> <port> <new ip> <port>";
                    # "+sdown master <name> <ip> <port>" (replicas' too: not ours).
                    words = data.split()
                    if self.master in words[:2]:
                        log.info("sentinel %s: %s %s", self.host, message.get("channel"), data)
                        self.on_event()
            except (redis.RedisError, OSError, ValueError):
                pass  # down, restarting or replaced: subscribe again shortly
            finally:
                try:
                    pubsub.close()
                    client.close()
                except (redis.RedisError, OSError):
                    pass
            self.stopped.wait(RETRY_SECONDS)


class SentinelWatch:
    """Subscriptions per tier, kept in step with the tier's Sentinel addresses."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._subs: dict[tuple[str, str], dict[str, _Subscription]] = {}

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
        """Subscribe to every Sentinel in ``hosts``; drop subscriptions to others."""
        with self._guard:
            subs = self._subs.setdefault(key, {})
            for host in list(subs):
                sub = subs[host]
                if host not in hosts or sub.password != password:
                    sub.stopped.set()
                    del subs[host]
            for host in hosts:
                if host not in subs:
                    sub = _Subscription(host, port, master, username, password, on_event)
                    subs[host] = sub
                    sub.start()

    def forget(self, key: tuple[str, str]) -> None:
        """The tier is gone (or left replication mode): stop its subscriptions."""
        with self._guard:
            for sub in (self._subs.pop(key, None) or {}).values():
                sub.stopped.set()

    def close(self) -> None:
        """Stop every subscription (the operator stops)."""
        with self._guard:
            keys = list(self._subs)
        for key in keys:
            self.forget(key)

    def following(self, key: tuple[str, str]) -> list[str]:
        """The Sentinel addresses ``key`` is subscribed to (tests, diagnostics)."""
        with self._guard:
            return sorted(self._subs.get(key, {}))
