"""Which consumers get what, from one listing of the namespace (pure).

The decision half of the consumer pass: from the namespace's Deployments and
StatefulSets (and, at pod granularity, its pods) and the rollout's effective
percent, which workloads are selected and enabled, which need an apply
(``injects``), which carry a stale injection to remove (``releases``), which pods
need their annotation flipped, and which cannot be touched because another field
manager owns the variables (``conflicts``). The writes are
:class:`cachetier.reconcile.consumers.ConsumerReconciler`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.reconcile import injection as inj
from cachetier.rollout import Decision as WorkloadDecision
from cachetier.rollout import Workload, parse_pin, plan_workloads, select_pods

CONSUMER_KINDS = ("Deployment", "StatefulSet")


@dataclass
class ConsumerPlan:
    """What the consumer pass will write, and what status says of the consumers."""

    selected: int = 0
    enabled: int = 0
    """Workloads (or, at pod granularity, pods) switched to Redis."""
    workloads: list[dict[str, Any]] = field(default_factory=list)
    """``status.consumers.workloads`` entries."""
    enabled_set: set[str] = field(default_factory=set)
    """``Kind/name`` of every enabled workload."""
    conflicts: list[str] = field(default_factory=list)
    """Workloads whose variables another field manager owns (left alone)."""
    injects: list[tuple[dict[str, Any], inj.Injection]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    pod_patches: list[tuple[str, str]] = field(default_factory=list)
    """(pod name, "true"|"false") annotations to set."""


def is_ours(obj: dict[str, Any]) -> bool:
    """The operator's own workloads (a tier's Redis StatefulSet) are never consumers."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY


def _matches(spec: CacheTierSpec, obj: dict[str, Any]) -> bool:
    consumers = spec.consumers
    if not consumers or obj["kind"] not in list(consumers.kinds):
        return False
    selector = consumers.selector.model_dump(by_alias=True)
    return inj.selector_matches(obj["metadata"].get("labels") or {}, selector)


def matching_workloads(
    spec: CacheTierSpec, workloads: tuple[dict[str, Any], ...] | list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The workloads ``spec.consumers`` selects (the operator's own excluded)."""
    return [o for o in workloads if not is_ours(o) and _matches(spec, o)]


def plan_consumers(
    tier: str,
    namespace: str,
    spec: CacheTierSpec,
    workloads: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    pods: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None,
    *,
    enabled: bool,
    effective_percent: int,
    connection_ready: bool,
    auth_revision: str = "",
) -> ConsumerPlan:
    """Every matching workload with its decision, the rest released.

    ``connection_ready`` False (the connection Secret does not exist yet) means
    nothing is injected yet: a secretKeyRef to a missing Secret would stop the
    consumer's new pods from starting.
    """
    plan = ConsumerPlan()
    consumers = spec.consumers
    wanted = list(consumers.containers) if consumers else []
    granularity_pod = spec.rollout.granularity == "pod"

    selected: list[dict[str, Any]] = []
    for obj in workloads:
        if is_ours(obj):
            continue
        matches = _matches(spec, obj)
        if matches and connection_ready:
            selected.append(obj)
        elif matches:
            # No connection Secret yet: a secretKeyRef to it would stop new pods
            # from starting, so matching workloads wait as they are.
            continue
        elif inj.has_any_injection(obj, tier):
            plan.releases.append(obj)

    decisions = plan_workloads(
        namespace,
        tier,
        [
            Workload(
                o["kind"],
                o["metadata"]["name"],
                parse_pin(
                    (o["metadata"].get("annotations") or {}).get(names.ANNOTATION_REDIS_ENABLED)
                ),
            )
            for o in selected
        ],
        enabled=enabled,
        effective_percent=effective_percent,
    )
    for obj in selected:
        key = (obj["kind"], obj["metadata"]["name"])
        decision = decisions[key]
        containers = inj.target_containers(obj, wanted)
        desired = inj.Injection(
            tier, containers, decision.enabled, granularity_pod, auth_revision=auth_revision
        )
        plan.workloads.append(
            {"kind": key[0], "name": key[1], "enabled": decision.enabled, "pinned": decision.pinned}
        )
        if decision.enabled:
            plan.enabled_set.add(f"{key[0]}/{key[1]}")
        owners = inj.env_owners(obj, containers)
        if owners:
            who = ", ".join(f"{env} by {'/'.join(sorted(m))}" for env, m in owners.items())
            plan.conflicts.append(f"{key[0]} {key[1]}: {who}")
            continue
        if not inj.is_injected(obj, desired):
            plan.injects.append((obj, desired))
    plan.workloads.sort(key=lambda w: (w["kind"], w["name"]))
    plan.selected = len(selected)
    plan.enabled = len(plan.enabled_set)
    if granularity_pod and connection_ready:
        plan.enabled = _pod_flags(plan, selected, decisions, pods or (), enabled, effective_percent)
    return plan


def _pod_flags(
    plan: ConsumerPlan,
    selected: list[dict[str, Any]],
    decisions: dict[tuple[str, str], WorkloadDecision],
    pods: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    enabled: bool,
    percent: int,
) -> int:
    """Pod granularity: annotate exactly the SPEC count of each workload's running pods."""
    total_enabled = 0
    for obj in selected:
        selector = (obj.get("spec") or {}).get("selector") or {}
        decision = decisions[(obj["kind"], obj["metadata"]["name"])]
        mine = [
            p
            for p in pods
            if not (p["metadata"].get("deletionTimestamp"))
            and (p.get("status") or {}).get("phase") in ("Running", "Pending")
            and owned_by(p, obj)
            and inj.selector_matches(p["metadata"].get("labels") or {}, selector)
        ]
        # A pin decides the whole workload; otherwise the exact per-pod count.
        if decision.pinned or not enabled:
            on = {p["metadata"]["name"] for p in mine} if decision.enabled else set()
        else:
            on = select_pods([p["metadata"]["name"] for p in mine], percent, enabled)
        total_enabled += len(on)
        for p in mine:
            pname = p["metadata"]["name"]
            want = "true" if pname in on else "false"
            have = (p["metadata"].get("annotations") or {}).get(names.ANNOTATION_REDIS_ENABLED)
            if have != want:
                plan.pod_patches.append((pname, want))
    return total_enabled


def owned_by(pod: dict[str, Any], workload: dict[str, Any]) -> bool:
    """A Deployment's pods belong to its ReplicaSets (named <deployment>-<hash>)."""
    name = str(workload["metadata"]["name"])
    for ref in pod["metadata"].get("ownerReferences") or []:
        if workload["kind"] == "StatefulSet" and ref.get("kind") == "StatefulSet":
            return str(ref.get("name")) == name
        if workload["kind"] == "Deployment" and ref.get("kind") == "ReplicaSet":
            rs = str(ref.get("name", ""))
            return rs.rsplit("-", 1)[0] == name
    return False
