"""Leader election on a ``coordination.k8s.io/v1`` Lease: one active operator replica.

Every replica runs :class:`LeaderElector` before it starts kopf. The holder renews
the Lease every ``renew_seconds``; a standby takes it over only once the holder has
not renewed for ``duration_seconds`` (or released it at shutdown), and then with an
optimistic update (a JSON patch that tests ``resourceVersion``): of two standbys racing,
one wins and the other waits again. A holder that cannot renew within its own
``duration_seconds`` stops working (``on_lost``): by then a standby may have taken
over, and two active replicas must never reconcile at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cachetier import names
from cachetier.ports import ApiError, KubeApi

log = logging.getLogger("cachetier.leader")

LEASE_NAME = "cachetier-operator"


def _micro(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def verdict(lease: dict[str, Any] | None, me: str, now: datetime) -> str:
    """What a replica may do with the Lease (pure): ``create`` (none exists), ``renew``
    (it is ours), ``take`` (free: released, or not renewed in time) or ``wait``."""
    if lease is None:
        return "create"
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    if holder == me:
        return "renew"
    if not holder:
        return "take"
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 15)
    if renewed is None or now - renewed > timedelta(seconds=duration):
        return "take"
    return "wait"


class LeaderElector:
    """Acquire, keep and release the operator's Lease."""

    def __init__(
        self,
        kube: KubeApi,
        namespace: str,
        identity: str,
        *,
        duration_seconds: int = 15,
        renew_seconds: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.duration = duration_seconds
        self.renew_every = renew_seconds
        self.clock = clock
        self.transitions = 0
        self._stop = threading.Event()

    def _spec(self, now: datetime, acquired: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "renewTime": _micro(now),
        }
        if acquired:
            spec["acquireTime"] = _micro(now)
        return spec

    def try_acquire(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        now = self.clock()
        lease = self.kube.get("Lease", self.namespace, LEASE_NAME)
        what = verdict(lease, self.identity, now)
        try:
            if what == "create":
                self.kube.create(
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {
                            "name": LEASE_NAME,
                            "namespace": self.namespace,
                            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
                        },
                        "spec": self._spec(now, acquired=True),
                    }
                )
                return True
            if what == "wait" or lease is None:
                return False
            version = str(lease["metadata"].get("resourceVersion") or "")
            spec = self._spec(now, acquired=what == "take")
            if what == "take":
                spec["leaseTransitions"] = int(lease["spec"].get("leaseTransitions") or 0) + 1
            self.kube.json_patch(
                "Lease",
                self.namespace,
                LEASE_NAME,
                [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                    *({"op": "add", "path": f"/spec/{k}", "value": v} for k, v in spec.items()),
                ],
            )
            return True
        except ApiError as exc:  # someone else won the race (409/422), or the API is away
            log.debug("lease %s: %s %s", what, exc.status, exc.reason)
            return False

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> None:
        """Block until this replica holds the Lease."""
        announced = False
        while not self._stop.is_set():
            if self.try_acquire():
                log.info("leader election: %s holds lease %s/%s", self.identity,
                         self.namespace, LEASE_NAME)  # fmt: skip
                return
            if not announced:
                lease = self.kube.get("Lease", self.namespace, LEASE_NAME) or {}
                holder = (lease.get("spec") or {}).get("holderIdentity") or "?"
                log.info("leader election: standby; lease %s/%s is held by %s",
                         self.namespace, LEASE_NAME, holder)  # fmt: skip
                if on_wait is not None:
                    on_wait(holder)
                announced = True
            self._stop.wait(self.renew_every)

    def keep(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew in a thread; ``on_lost`` once the Lease could not be renewed in time
        (or another replica holds it)."""

        def loop() -> None:
            last = time.monotonic()
            while not self._stop.wait(self.renew_every):
                if self.try_acquire():
                    last = time.monotonic()
                    continue
                lease = self.kube.get("Lease", self.namespace, LEASE_NAME) or {}
                holder = (lease.get("spec") or {}).get("holderIdentity")
                if (holder and holder != self.identity) or (
                    time.monotonic() - last > self.duration - self.renew_every
                ):
                    log.warning("leader election: lost lease %s/%s (holder now %s)",
                                self.namespace, LEASE_NAME, holder)  # fmt: skip
                    on_lost()
                    return

        thread = threading.Thread(target=loop, name="lease-renew", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """At shutdown: give the Lease up so a standby takes over at once."""
        self._stop.set()
        lease = self.kube.get("Lease", self.namespace, LEASE_NAME)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        version = str(lease["metadata"].get("resourceVersion") or "")
        try:
            self.kube.json_patch(
                "Lease",
                self.namespace,
                LEASE_NAME,
                [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                    {"op": "add", "path": "/spec/holderIdentity", "value": ""},
                ],
            )
            log.info("leader election: released lease %s/%s", self.namespace, LEASE_NAME)
        except ApiError as exc:
            log.warning("leader election: could not release the lease: %s", exc.status)
