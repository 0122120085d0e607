"""Conditions and phase from observations: a chain of small pure checks.

Pure: no I/O, no clock (``now`` is passed in). kstatus-compatible: ``Ready``
is the summary condition, ``Progressing`` is True while the operator is still
driving toward the spec, ``Degraded`` is True when a tier that was serving
has lost capacity. Every condition carries ``observedGeneration``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
ROLLED_BACK = "RolledBack"
CONSUMER_CONFLICT = "ConsumerConflict"
HIGH_LATENCY = "HighLatency"
# The two conditions kstatus (Flux, kpt, cli-utils) reads: Reconciling=True is
# InProgress, Stalled=True is Failed, neither is Current.
RECONCILING = "Reconciling"
STALLED = "Stalled"

STALLED_REASONS = frozenset({"InvalidSpec", "DependencyMissing", "ExternalSecretInvalid"})
"""Ready reasons that need a person (a spec change or a missing object): Stalled."""


@dataclass(frozen=True)
class WorkloadObservation:
    """What the gatherer saw of the tier's Redis workload (StatefulSet and its pods)."""

    exists: bool
    desired_replicas: int = 0
    ready_replicas: int = 0
    updated: bool = True
    """The controller has observed the latest template and rolled every pod to it."""
    unschedulable: str = ""
    """Scheduler message when a pod cannot be placed (no node, no fit), else empty."""
    restarts: int = 0
    asked_replicas: int | None = None
    """``spec.replicas`` of the live StatefulSet (None: same as ``desired_replicas``)."""
    current_replicas: int | None = None
    """Pods the StatefulSet has now (``status.replicas``; None: not known)."""


class Condition(NamedTuple):
    """One status condition the reconcile sets (time and generation are stamped later)."""

    type: str
    status: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Verdict:
    """Phase plus the three kstatus conditions, before timestamps are merged in."""

    phase: str
    ready: tuple[str, str, str]
    progressing: tuple[str, str, str]
    degraded: tuple[str, str, str]
    extra: list[Condition] = field(default_factory=list)


def invalid_spec(message: str) -> Verdict:
    """The spec cannot be acted on: Ready=False/InvalidSpec, nothing progresses."""
    return Verdict(
        phase="Failed",
        ready=("False", "InvalidSpec", message),
        progressing=("False", "InvalidSpec", "waiting for a valid spec"),
        degraded=("False", "InvalidSpec", ""),
    )


def blocked(reason: str, message: str) -> Verdict:
    """A dependency (a referenced Secret, say) is missing; retried with back-off."""
    return Verdict(
        phase="Pending",
        ready=("False", reason, message),
        progressing=("True", reason, message),
        degraded=("False", reason, ""),
    )


def workload_verdict(obs: WorkloadObservation, previous_phase: str | None) -> Verdict:
    """Readiness of a tier whose Redis runs in a StatefulSet."""
    if not obs.exists:
        return Verdict(
            phase="Provisioning",
            ready=("False", "Provisioning", "creating the Redis StatefulSet"),
            progressing=("True", "Provisioning", "creating the Redis StatefulSet"),
            degraded=("False", "Provisioning", ""),
        )
    counts = f"{obs.ready_replicas}/{obs.desired_replicas} Redis pods ready"
    asked = obs.desired_replicas if obs.asked_replicas is None else obs.asked_replicas
    extra = (obs.current_replicas or 0) > obs.desired_replicas
    if asked != obs.desired_replicas or extra:
        # Scaled by hand: never Ready — for standalone, more than one pod is more than
        # one master behind one Service. The reconcile restores the count.
        message = (
            f"the StatefulSet runs {obs.current_replicas} and asks for {asked} Redis pods, "
            f"the spec needs {obs.desired_replicas}: restoring"
        )
        return Verdict(
            phase="Provisioning",
            ready=("False", "ReplicasDrift", message),
            progressing=("True", "ReplicasDrift", message),
            degraded=("False", "ReplicasDrift", ""),
        )
    if obs.ready_replicas >= obs.desired_replicas and obs.updated:
        return Verdict(
            phase="Ready",
            ready=("True", "Ready", counts),
            progressing=("False", "Ready", "the tier matches its spec"),
            degraded=("False", "Ready", ""),
        )
    if obs.unschedulable:
        message = f"{counts}; pods are not scheduled: {obs.unschedulable}"
        return Verdict(
            phase="Pending",
            ready=("False", "Unschedulable", message),
            progressing=("True", "Unschedulable", message),
            degraded=("False", "Unschedulable", ""),
        )
    was_serving = previous_phase in ("Ready", "Degraded", "RolledBack")
    if was_serving and obs.updated:
        message = f"{counts}; a Redis pod lost readiness (restarts: {obs.restarts})"
        return Verdict(
            phase="Degraded",
            ready=("False", "Degraded", message),
            progressing=("False", "Degraded", "waiting for Redis to recover"),
            degraded=("True", "PodNotReady", message),
        )
    reason = "RollingUpdate" if not obs.updated else "Provisioning"
    return Verdict(
        phase="Provisioning",
        ready=("False", reason, counts),
        progressing=("True", reason, counts),
        degraded=("False", reason, ""),
    )


def serving_or_forming(
    previous_phase: str | None, message: str, *, degraded: str, healing: str, forming: str
) -> Verdict:
    """A workload that is up but whose Redis topology is not right yet: Degraded (and
    healing) for a tier that was serving, Provisioning (forming) for a new one."""
    if previous_phase in ("Ready", "Degraded", "RolledBack"):
        return Verdict(
            phase="Degraded",
            ready=("False", degraded, message),
            progressing=("True", healing, message),
            degraded=("True", degraded, message),
        )
    return Verdict(
        phase="Provisioning",
        ready=("False", forming, message),
        progressing=("True", forming, message),
        degraded=("False", forming, ""),
    )


def external_verdict(ok: bool, message: str) -> Verdict:
    """An external tier is ready once its connection Secret is built."""
    if ok:
        return Verdict(
            phase="Ready",
            ready=("True", "Ready", message),
            progressing=("False", "Ready", "the tier matches its spec"),
            degraded=("False", "Ready", ""),
        )
    return blocked("ExternalSecretInvalid", message)


def merge_conditions(
    existing: list[dict[str, Any]],
    updates: list[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """New conditions list: ``updates`` (type, status, reason, message) over ``existing``.

    ``lastTransitionTime`` changes only when a condition's status changes, and the
    list keeps its order, so a reconcile that observes nothing new produces an
    identical list (no write).
    Conditions not named in ``updates`` are kept, stamped with ``generation``: the
    whole status is written for that generation, and kstatus readers compare each
    condition's ``observedGeneration`` with ``metadata.generation``.
    """
    by_type = {c.get("type"): c for c in existing}
    fresh: dict[str, dict[str, Any]] = {}
    for ctype, status, reason, message in updates:
        old = by_type.get(ctype)
        transition = now
        if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
            transition = str(old["lastTransitionTime"])
        fresh[ctype] = {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    # The existing order is kept (new types go last), so two writers that each own
    # some conditions (the reconcile, the health prober) never reorder the list.
    out: list[dict[str, Any]] = []
    for c in existing:
        ctype = str(c.get("type"))
        out.append(fresh.pop(ctype) if ctype in fresh else {**c, "observedGeneration": generation})
    out.extend(fresh.values())
    return out


def kstatus_conditions(verdict: Verdict) -> list[Condition]:
    """``Stalled`` and ``Reconciling`` for kstatus, from the verdict (and its extras).

    Stalled (kstatus: Failed) when the operator refuses the spec or a dependency is
    missing, and when an automatic rollback holds the consumers off until a person
    re-arms it (the spec's percent cannot be reached on its own); Reconciling
    (InProgress) while the operator is still converging; neither once Ready (Current).
    A manual rollback (``enabled: false``) is the spec, so it is Current.
    """
    _, reason, message = verdict.ready
    auto = [c for c in verdict.extra if c.type == ROLLED_BACK and c.status == "True"]
    auto = [c for c in auto if c.reason == "AutoRollback"]
    if reason in STALLED_REASONS:
        return [
            Condition(STALLED, "True", reason, message),
            Condition(RECONCILING, "False", reason),
        ]
    if auto:
        text = f"automatic rollback holds every consumer off: {auto[0].message}".strip()
        stalled = Condition(STALLED, "True", "AutoRollback", text[:1000])
    else:
        stalled = Condition(STALLED, "False", reason)
    if verdict.progressing[0] == "True":
        return [stalled, Condition(RECONCILING, "True", *verdict.progressing[1:])]
    if verdict.phase == "Degraded":  # converging back to the spec on its own
        return [stalled, Condition(RECONCILING, "True", "Degraded", verdict.ready[2])]
    return [stalled, Condition(RECONCILING, "False", reason)]


def verdict_conditions(verdict: Verdict) -> list[Condition]:
    """The verdict as ``merge_conditions`` updates (kstatus's two included)."""
    return [
        Condition(READY, *verdict.ready),
        Condition(PROGRESSING, *verdict.progressing),
        Condition(DEGRADED, *verdict.degraded),
        *verdict.extra,
        *kstatus_conditions(verdict),
    ]
