"""What one reconcile sees (``Observed``) and what it must remember (``Remembered``).

Pure data, built by the gather step of ``cachetier.reconcile.tier`` and read by the
pure ``cachetier.reconcile.decide``. Everything here is a copy of what the API
server (or the cluster converge worker) reported at the start of the pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.ports import ReplicationObservation
from cachetier.reconcile.rotation import Server
from cachetier.render import TierRef

Key = tuple[str, str]
"""(kind, name) of an object in the tier's namespace."""


class DependencyMissing(Exception):
    """A referenced object is missing or incomplete: try again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 15.0) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class ClusterView:
    """What the reconcile learns of a tier's Redis Cluster from the converge worker."""

    converged: bool
    status: dict[str, Any]
    message: str
    drained_beyond: int | None
    """When set, nodes past this many have been drained and may be removed."""
    pending: bool = False
    """No converge has finished in this process yet (a new operator has not looked)."""
    placement: tuple[str, ...] = ()
    """What could not be spread over failure domains (empty: spread, or unknown)."""


@dataclass(frozen=True)
class Remembered:
    """What cannot be observed and must be remembered, all of it, with why.

    It lives in the tier's own status (written by the previous pass, or by the health
    prober) so that a restarted operator resumes where the last one stopped:

    - ``rolled_back_generation``: an automatic rollback is a decision, not a fact of
      the world; it holds for the generation it was taken at until a spec change or a
      new ``cachetier.io/rearm`` value.
    - ``rearm``: the last re-arm annotation value honoured (a new value re-arms once).
    - ``step`` / ``last_step_time``: the rollout's step clock (``spec.rollout.steps``
      climb one step per ``stepInterval`` of health).
    - ``serving``: the tier has been Ready once; until then consumers stay off.
    - ``failures`` / ``slow``: the prober's last verdict (bad probes in a row, latency
      warning); steps do not climb on a bad or slow tier.
    - ``consumers_enabled``: workloads status last named enabled (the rollback lane
      switches exactly these off without a LIST).
    """

    rolled_back_generation: int | None = None
    rearm: str | None = None
    step: int | None = None
    last_step_time: datetime | None = None
    serving: bool = False
    failures: int = 0
    slow: bool = False
    consumers_enabled: frozenset[str] = frozenset()

    @staticmethod
    def of(tier: dict[str, Any]) -> Remembered:
        status = tier.get("status") or {}
        rollout = status.get("rollout") or {}
        health = status.get("health") or {}
        enabled = frozenset(
            f"{w.get('kind')}/{w.get('name')}"
            for w in (status.get("consumers") or {}).get("workloads") or []
            if w.get("enabled")
        )
        return Remembered(
            rolled_back_generation=rollout.get("rolledBackGeneration"),
            rearm=rollout.get("rearm"),
            step=rollout.get("step"),
            last_step_time=parse_time(rollout.get("lastStepTime")),
            serving=bool(rollout.get("serving")),
            failures=int(health.get("consecutiveFailures") or 0),
            slow=bool(health.get("slow")),
            consumers_enabled=enabled,
        )


@dataclass(frozen=True)
class Observed:
    """One snapshot of a tier's world, gathered before anything is decided."""

    tier: dict[str, Any]
    """The CacheTier as the API returned it (metadata, spec, status)."""
    ref: TierRef
    spec: CacheTierSpec | None
    """The validated spec (None when it does not parse)."""
    problems: tuple[str, ...]
    """Validation problems of the spec (empty: valid)."""
    children: dict[Key, dict[str, Any] | None] = field(default_factory=dict)
    """Live copy of every child object the mode renders (None: missing)."""
    secrets: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """Secrets the tier reads, by name: auth, its recovery copy, connection, the user's."""
    pods: tuple[dict[str, Any], ...] | None = None
    node_zones: tuple[tuple[str, str], ...] = ()
    """``(Kubernetes node, zone)`` of the nodes the tier's pods run on (zone "" when
    the node has no zone label or cannot be read)."""
    """The tier's Redis pods (None: not listed, because nothing needed them)."""
    workloads: tuple[dict[str, Any], ...] = ()
    """Deployments and StatefulSets of the namespace (consumer candidates)."""
    consumer_pods: tuple[dict[str, Any], ...] | None = None
    """The namespace's pods, at pod granularity only."""
    cluster: ClusterView | None = None
    """The converge worker's last view (cluster mode)."""
    replication: ReplicationObservation | None = None
    """What the Redis pods and the Sentinels said (replication mode)."""
    claims: tuple[dict[str, Any], ...] = ()
    """The tier's PersistentVolumeClaims (persistence rdb/aof)."""
    storage_classes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """The StorageClasses of claims smaller than the spec asks (None: missing)."""
    acl: tuple[Server, ...] | None = None
    """During a password rotation: the application user's password hashes on every Redis
    pod and Sentinel (None: not asked -- no rotation runs)."""
    rotation_pods: tuple[dict[str, Any], ...] | None = None
    """During an application password rotation: the namespace's pods (is any consumer
    pod still running, or shutting down, with the old password?)."""
    fresh_passwords: tuple[str, str, str] = ("", "", "")
    """Entropy for passwords (operator, application, probe user): used when every copy
    of the auth Secret is gone, or a rotation starts."""
    operator_namespace: str = names.OPERATOR_NAMESPACE
    """The operator's own namespace (admitted by the tier's NetworkPolicy)."""

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.tier["metadata"])

    @property
    def generation(self) -> int | None:
        value = self.tier["metadata"].get("generation")
        return None if value is None else int(value)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.tier.get("status") or {})

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.tier["metadata"].get("annotations") or {})

    @property
    def remembered(self) -> Remembered:
        return Remembered.of(self.tier)

    def child(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.children.get((kind, name))


# -- the rollback request, read from the tier ------------------------------------------


def auto_rolled_back(tier: dict[str, Any]) -> bool:
    """An automatic rollback was recorded for this generation and not re-armed since."""
    old = (tier.get("status") or {}).get("rollout") or {}
    rearm = (tier["metadata"].get("annotations") or {}).get(names.ANNOTATION_REARM)
    rearmed = bool(rearm) and rearm != old.get("rearm")
    generation = tier["metadata"].get("generation")
    return (
        old.get("rolledBackGeneration") is not None
        and old.get("rolledBackGeneration") == generation
        and not rearmed
    )


def rollback_requested(tier: dict[str, Any], spec: CacheTierSpec) -> bool:
    """The tier asks for every consumer off (instant rollback), whatever else it asks.

    Off when ``spec.rollout.enabled`` is false, ``percent`` is 0, or an automatic
    rollback was recorded for this generation and not re-armed since.
    """
    if not spec.rollout.enabled or spec.rollout.percent == 0:
        return True
    return auto_rolled_back(tier)


def may_request_rollback(tier: dict[str, Any]) -> bool:
    """:func:`rollback_requested` read from the raw object (the API server has applied
    the schema's defaults), without validating the spec: the watch handler's cheap
    filter for the rollback lane, which validates before acting."""
    rollout = (tier.get("spec") or {}).get("rollout") or {}
    return rollout.get("enabled") is False or rollout.get("percent") == 0 or auto_rolled_back(tier)


# -- time as status writes it ------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
