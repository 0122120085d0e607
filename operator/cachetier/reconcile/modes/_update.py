"""The supervised rolling update of a tier's Redis pods (pure, every multi-pod mode).

The Redis StatefulSet of a cluster or replication tier has ``updateStrategy:
OnDelete``: the controller re-creates a pod from the new template only once the
operator deletes it. The operator deletes one pod at a time, replicas first, each
only once the tier is whole again (``settled``: every pod ready and in sync); a
primary/master only after it has handed its role to an in-sync replica (the mode
says how: ``CLUSTER FAILOVER`` on the replica, ``SENTINEL FAILOVER``), and a pod that
does not come back in ``UPDATE_STALL_SECONDS`` halts the update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cachetier import names
from cachetier.reconcile.observed import Observed

UPDATE_STALL_SECONDS = 300.0
"""A pod of a supervised update not back (ready, in sync) after this long halts the
update: Degraded, reason UpdateStalled; nothing else is replaced meanwhile."""

REVISION_LABEL = "controller-revision-hash"

REPLICA = "replica"
PRIMARY = "primary"


@dataclass(frozen=True)
class UpdatePlan:
    """The supervised update's state and its next step."""

    status: dict[str, Any] | None = None
    """``status.update`` (None: no update has ever been seen)."""
    delete: str | None = None
    """The pod to delete now (a replica, or a primary that has handed over)."""
    handover: str | None = None
    """A primary pod to switch over first (to an in-sync replica)."""
    stalled: str = ""
    """Why the update halted (the pod that did not come back), for Degraded."""


def seconds_between(earlier: str, later: str) -> float:
    try:
        a = datetime.fromisoformat(earlier.replace("Z", "+00:00"))
        b = datetime.fromisoformat(later.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (b - a).total_seconds()


def _ordinal(pod: dict[str, Any]) -> int:
    return int(str(pod["metadata"]["name"]).rsplit("-", 1)[-1])


def supervise(
    obs: Observed,
    role_of: Callable[[dict[str, Any]], str],
    can_hand_over: Callable[[dict[str, Any]], bool],
    *,
    settled: bool,
    want: int,
    now: str,
    handed_over: Callable[[dict[str, Any]], bool] = lambda pod: False,
) -> UpdatePlan:
    """The next step of the supervised update of the Redis StatefulSet's pods.

    ``role_of(pod)``: ``replica``, ``primary`` or ``""`` (not in the topology yet);
    ``can_hand_over(pod)``: a primary has an in-sync replica to hand over to (else
    it is simply restarted: nobody could take over); ``handed_over(pod)``: the pod
    was the primary this update switched over and is no longer (it goes at once,
    without waiting for ``settled``: its clients reconnect to the new primary).
    """
    sts = obs.child("StatefulSet", names.statefulset(obs.ref.name))
    st = (sts or {}).get("status") or {}
    revision = st.get("updateRevision")
    strategy = (((sts or {}).get("spec") or {}).get("updateStrategy") or {}).get("type")
    if not revision or strategy != "OnDelete":
        return UpdatePlan()
    previous = dict(obs.status.get("update") or {})
    pods = [p for p in obs.pods or () if str(p["metadata"]["name"]).rsplit("-", 1)[-1].isdigit()]
    pods.sort(key=_ordinal)
    stale = [
        p for p in pods
        if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) != revision
    ]  # fmt: skip
    deleting = [p["metadata"]["name"] for p in pods if p["metadata"].get("deletionTimestamp")]
    status: dict[str, Any] = {
        "revision": revision,
        "updated": max(0, min(want, len(pods)) - len(stale)),
        "total": want,
    }
    if not stale and not deleting and len(pods) >= want:
        if not previous:
            return UpdatePlan()  # nothing was ever rolled: no status.update to show
        return UpdatePlan(status=status)
    current = str(previous.get("current") or "")
    since = str(previous.get("since") or now)
    if previous.get("revision") != revision:
        current, since = "", now
    if not deleting:
        for pod in stale:
            name = pod["metadata"]["name"]
            if name == current and handed_over(pod):
                return UpdatePlan(status={**status, "current": name, "since": now}, delete=name)
    if not settled or deleting:
        # A step is under way (a pod coming back, the topology healing): wait, and halt
        # the update if it does not settle in time.
        if current:
            status.update(current=current, since=since)
            if seconds_between(since, now) > UPDATE_STALL_SECONDS:
                return UpdatePlan(status=status, stalled=f"{current} not back after update")
        return UpdatePlan(status=status)
    replicas = [p for p in stale if role_of(p) == REPLICA]
    primaries = [p for p in stale if role_of(p) == PRIMARY]
    others = [p for p in stale if p not in replicas and p not in primaries]
    for pod in [*replicas, *others]:
        name = pod["metadata"]["name"]
        return UpdatePlan(status={**status, "current": name, "since": now}, delete=name)
    for pod in primaries:
        name = pod["metadata"]["name"]
        step = {**status, "current": name, "since": since if current == name else now}
        if current == name and seconds_between(since, now) > UPDATE_STALL_SECONDS:
            return UpdatePlan(status=step, stalled=f"{name} did not hand over its role")
        if not can_hand_over(pod):  # nobody to hand over to: restart it
            return UpdatePlan(status=step, delete=name)
        return UpdatePlan(status=step, handover=name)
    return UpdatePlan(status=status)
