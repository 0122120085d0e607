"""Redis Cluster tiers: form, heal and scale the cluster in the background.

The reconcile pass must stay quick, so :class:`ClusterManager` runs
``cachetier.redis.cluster.converge`` (observe -> plan -> execute, idempotent,
never FLUSHALL or CLUSTER RESET on a node with keys) in one worker thread per
tier and hands the last result back to the next reconcile, which turns it
into ``status.cluster`` and the Ready/Degraded conditions.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from cachetier.redis.cluster import ConvergeResult, converge
from cachetier.topology.nodes import NodeAddress

log = logging.getLogger("cachetier.cluster")

CONVERGE_TIMEOUT = 60.0


@dataclass(frozen=True)
class ClusterView:
    """What the reconcile pass learns about a tier's cluster."""

    converged: bool
    status: dict[str, Any]
    message: str
    drained_beyond: int | None
    """When set, nodes past this many have been drained and may be removed."""


@dataclass
class _Job:
    thread: threading.Thread | None = None
    result: ConvergeResult | None = None
    addresses: tuple[NodeAddress, ...] = ()
    error: str = ""
    view: ClusterView | None = None


class ClusterManager:
    """One background converge per tier at a time."""

    def __init__(self) -> None:
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
        on_done: Any = None,
    ) -> ClusterView:
        """Start a converge unless one runs; return what the last one found."""
        with self._lock:
            job = self._jobs.setdefault(key, _Job())
            running = job.thread is not None and job.thread.is_alive()
            if not running:
                job.addresses = tuple(addresses)

                def work() -> None:
                    try:
                        job.result = converge(
                            job.addresses,
                            password,
                            shards,
                            replicas_per_shard,
                            username=username,
                            timeout=CONVERGE_TIMEOUT,
                        )
                        job.error = ""
                    except Exception as exc:  # a node vanished mid-way: report, retry later
                        log.warning("converge %s/%s failed: %s", *key, exc)
                        job.error = f"{type(exc).__name__}: {exc}"
                    if on_done is not None:
                        on_done()

                job.thread = threading.Thread(
                    target=work, name=f"converge-{key[0]}-{key[1]}", daemon=True
                )
                job.thread.start()
            result, error = job.result, job.error
            job.view = _view(result, error, shards * (1 + replicas_per_shard), len(addresses))
            return job.view

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
        return ClusterView(False, {"state": "unknown", "message": message[:500]}, message, None)
    summary = result.summary
    findings = [str(b) for b in result.plan.blocked] + list(result.plan.waiting)
    message = "; ".join(findings) or (error or ("ok" if result.converged else "converging"))
    status = {
        "state": summary.state,
        "slotsAssigned": summary.slots_assigned,
        "shards": summary.shards,
        "nodes": len(summary.nodes),
        "message": message[:500],
    }
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
    return ClusterView(converged, status, message, drained)
