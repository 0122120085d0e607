"""Redis Cluster tiers: form, heal and scale the cluster in the background.

The reconcile pass must stay quick, so :class:`ClusterManager` runs a
:class:`cachetier.ports.ClusterAdmin` (``cachetier.redis.cluster.converge``:
observe -> plan -> execute, idempotent, never FLUSHALL or CLUSTER RESET on a node
with keys) in one worker thread per tier and hands the last result back to the
next reconcile, which turns it into ``status.cluster`` and the Ready/Degraded
conditions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetier.ports import ClusterAdmin, ConvergeResult, TlsOptions
from cachetier.reconcile.observed import ClusterView
from cachetier.topology.model import Domain
from cachetier.topology.nodes import NodeAddress

log = logging.getLogger("cachetier.cluster")

CONVERGE_TIMEOUT = 60.0
RECHECK_SECONDS = 30.0
"""A converged cluster is observed again this often (failures between are seen then)."""
RETRY_SECONDS = 2.0
"""Minimum pause between two converge runs of an unconverged cluster."""


@dataclass
class _Job:
    thread: threading.Thread | None = None
    result: ConvergeResult | None = None
    addresses: tuple[NodeAddress, ...] = ()
    domains: tuple[tuple[NodeAddress, Domain], ...] = ()
    handover: tuple[NodeAddress, ...] = ()
    error: str = ""
    view: ClusterView | None = None
    inputs: tuple[object, ...] = ()
    finished: float = float("-inf")


class ClusterManager:
    """One background converge per tier at a time."""

    def __init__(self, converge: ClusterAdmin) -> None:
        self.converge = converge
        """The Redis side (``cachetier.redis.cluster.converge``, or a fake)."""
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._lock = threading.Lock()

    def ensure(
        self,
        key: tuple[str, str],
        addresses: list[NodeAddress],
        *,
        username: str,
        password: str | None,
        shards: int,
        replicas_per_shard: int,
        on_done: Callable[[], None] | None = None,
        tls: TlsOptions | None = None,
        domains: tuple[tuple[NodeAddress, Domain], ...] = (),
        handover: tuple[NodeAddress, ...] = (),
    ) -> ClusterView:
        """Start a converge unless one runs or a recent one found nothing to do.

        A converged cluster is re-checked every ``RECHECK_SECONDS`` (or at once
        when the pods' addresses or the layout change); an unconverged one after
        ``RETRY_SECONDS``. ``on_done`` is called only when the verdict changed,
        so a healthy cluster costs one observation per re-check, not a loop.
        """
        desired = shards * (1 + replicas_per_shard)
        inputs = (tuple(addresses), shards, replicas_per_shard, tls, domains, handover)
        with self._lock:
            job = self._jobs.setdefault(key, _Job())
            running = job.thread is not None and job.thread.is_alive()
            age = time.monotonic() - job.finished
            converged = job.view is not None and job.view.converged
            due = inputs != job.inputs or age >= (RECHECK_SECONDS if converged else RETRY_SECONDS)
            if not running and due:
                job.inputs = inputs
                job.addresses = tuple(addresses)
                job.domains = domains
                job.handover = handover
                job.thread = threading.Thread(
                    target=self._work,
                    args=(key, job, password, username, shards, replicas_per_shard, on_done, tls),
                    name=f"converge-{key[0]}-{key[1]}",
                    daemon=True,
                )
                job.thread.start()
            if job.view is None or not running:
                job.view = _view(job.result, job.error, desired, len(addresses))
            return job.view

    def _work(
        self,
        key: tuple[str, str],
        job: _Job,
        password: str | None,
        username: str,
        shards: int,
        replicas_per_shard: int,
        on_done: Callable[[], None] | None,
        tls: TlsOptions | None = None,
    ) -> None:
        before = job.view
        try:
            job.result = self.converge(
                job.addresses,
                password,
                shards,
                replicas_per_shard,
                username=username,
                tls=tls,
                timeout=CONVERGE_TIMEOUT,
                domains=job.domains,
                handover=job.handover,
            )
            job.error = ""
        except Exception as exc:  # a node vanished mid-way: report, retry later
            log.warning("converge %s/%s failed: %s", *key, exc)
            job.error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            job.finished = time.monotonic()
            job.view = _view(
                job.result, job.error, shards * (1 + replicas_per_shard), len(job.addresses)
            )
            changed = before is None or (before.converged, before.status) != (
                job.view.converged,
                job.view.status,
            )
        if on_done is not None and changed:
            on_done()

    def view(self, key: tuple[str, str], desired_nodes: int, live_nodes: int) -> ClusterView:
        """The last converge's view (or "forming", pending, before the first one)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.view is not None:
                return job.view
        return _view(None, "", desired_nodes, live_nodes)

    def drained_beyond(self, key: tuple[str, str]) -> int | None:
        """Node count the last converge allows the StatefulSet to shrink to, if any."""
        with self._lock:
            job = self._jobs.get(key)
            return job.view.drained_beyond if job is not None and job.view is not None else None

    def forget(self, key: tuple[str, str]) -> None:
        """Drop a deleted tier's state."""
        with self._lock:
            self._jobs.pop(key, None)


def _view(
    result: ConvergeResult | None, error: str, desired_nodes: int, live_nodes: int
) -> ClusterView:
    if result is None:
        message = error or "forming the cluster"
        unknown: dict[str, Any] = {"state": "unknown", "message": message[:500]}
        return ClusterView(False, unknown, message, None, pending=not error)
    summary = result.summary
    findings = [str(b) for b in result.plan.blocked] + list(result.plan.waiting)
    message = "; ".join(findings) or (error or ("ok" if result.converged else "converging"))
    placement = result.plan.placement if result.converged else ()
    status = {
        "state": summary.state,
        "slotsAssigned": summary.slots_assigned,
        "shards": summary.shards,
        "nodes": len(summary.nodes),
        "message": message[:500],
        "members": [
            {
                "address": n.address,
                "role": n.role,
                "masterId": n.master_id,
                "id": n.node_id,
                "node": n.k8s_node,
                "zone": n.zone,
                "healthy": n.healthy,
            }
            for n in summary.nodes
        ],
        "sharedDomains": summary.shared_domains,
    }
    if result.converged:
        known = any(n.k8s_node for n in summary.nodes)
        status["placement"] = "Degraded" if placement else ("Spread" if known else "Unknown")
    drained = None
    if result.converged and live_nodes > desired_nodes:
        removable = {str(a) for a in result.plan.removable}
        if len(removable) >= live_nodes - desired_nodes:
            drained = desired_nodes
    converged = (
        result.converged
        and summary.state == "ok"
        and summary.slots_assigned == 16384
        and summary.slots_served == 16384
    )
    return ClusterView(converged, status, message, drained, placement=placement)
