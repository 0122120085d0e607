"""``mode: cluster``: a Redis Cluster of shards x (1 + replicas) pods.

The strategy holds scale-in until the nodes it would remove hold no slots, judges
readiness by the cluster (every slot served, every node ``ok``) and asks for the
background converge (form, heal, rebalance) once every pod is ready; the converge
itself is :class:`cachetier.reconcile.cluster.ClusterManager`, one worker per tier.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.modes import _operated, _update
from cachetier.reconcile.modes.base import ConvergeRequest, Inputs, Judgement
from cachetier.reconcile.observed import Key, Observed
from cachetier.render import TierRef, spec_hash
from cachetier.topology.model import Domain
from cachetier.topology.nodes import NodeAddress


@dataclass(frozen=True)
class UpdateStep:
    """The supervised rolling update's state and its next step (pure)."""

    status: dict[str, Any] | None = None
    """``status.update`` (None: no update has ever been seen)."""
    delete: str | None = None
    """The pod to delete now (a replica, or a master that has handed over)."""
    handover: NodeAddress | None = None
    """A master to switch over first (CLUSTER FAILOVER on its in-sync replica)."""
    stalled: str = ""
    """Why the update halted (the pod that did not come back), for Degraded."""


def supervise_update(
    obs: Observed, view_members: list[dict[str, Any]], settled: bool, want: int, now: str
) -> UpdateStep:
    """The next step of a supervised update of a cluster's pods (see ``_update``):
    a master hands over by ``CLUSTER FAILOVER`` on its in-sync replica, then goes as
    a replica.

    ``settled``: every pod ready, the cluster converged and every member healthy.
    """
    members = {str(m.get("address", "")): m for m in view_members}

    def member(pod: dict[str, Any]) -> dict[str, Any]:
        ip = (pod.get("status") or {}).get("podIP") or ""
        return dict(members.get(f"{ip}:{names.REDIS_PORT}") or {})

    def role_of(pod: dict[str, Any]) -> str:
        role = member(pod).get("role")
        return _update.PRIMARY if role == "master" else _update.REPLICA if role else ""

    def can_hand_over(pod: dict[str, Any]) -> bool:
        node_id = member(pod).get("id")
        return any(m.get("masterId") == node_id for m in view_members)

    plan = _update.supervise(obs, role_of, can_hand_over, settled=settled, want=want, now=now)
    handover = None
    for pod in obs.pods or ():
        if plan.handover and pod["metadata"]["name"] == plan.handover:
            handover = NodeAddress((pod.get("status") or {}).get("podIP") or "", names.REDIS_PORT)
    return UpdateStep(
        status=plan.status, delete=plan.delete, handover=handover, stalled=plan.stalled
    )


class ClusterMode:
    """Redis Cluster: the operated path plus scale-in hold and the cluster's verdict."""

    def child_keys(self, ref: TierRef, spec: CacheTierSpec) -> list[Key]:
        return _operated.operated_keys(ref, spec)

    def wants_pods(self, obs: Observed, spec: CacheTierSpec) -> bool:
        return obs.child("StatefulSet", names.statefulset(obs.ref.name)) is not None

    def desired(self, inputs: Inputs) -> list[dict[str, Any]]:
        desired = _operated.operated_desired(inputs)
        self._hold_scale_in(inputs.obs, desired)
        return desired

    def _hold_scale_in(self, obs: Observed, desired: list[dict[str, Any]]) -> None:
        """Keep the StatefulSet's size until the nodes it would remove hold no slots."""
        live = obs.child("StatefulSet", names.statefulset(obs.ref.name))
        if live is None:
            return
        live_replicas = int((live.get("spec") or {}).get("replicas") or 0)
        drained = obs.cluster.drained_beyond if obs.cluster is not None else None
        for obj in desired:
            if obj["kind"] != "StatefulSet":
                continue
            want = int(obj["spec"]["replicas"])
            if want < live_replicas and drained != want:
                obj["spec"]["replicas"] = live_replicas
                annotations = obj["metadata"].setdefault("annotations", {})
                annotations.pop(names.ANNOTATION_SPEC_HASH, None)
                annotations[names.ANNOTATION_SPEC_HASH] = spec_hash(obj)

    def judge(self, inputs: Inputs, desired: list[dict[str, Any]], written: set[Key]) -> Judgement:
        """Ask for the converge once every pod is ready; judge readiness by the cluster."""
        workload, base = _operated.operated_judge(inputs, desired, written)
        obs, spec = inputs.obs, inputs.spec
        previous_phase = obs.status.get("phase")
        by_ordinal: dict[int, str] = {}
        zones = dict(obs.node_zones)
        domains: list[tuple[NodeAddress, Domain]] = []
        for pod in obs.pods or ():
            pst = pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in pst.get("conditions") or []
            )
            ordinal = pod["metadata"]["name"].rsplit("-", 1)[-1]
            if ready and pst.get("podIP") and ordinal.isdigit():
                by_ordinal[int(ordinal)] = pst["podIP"]
                node = str((pod.get("spec") or {}).get("nodeName") or "")
                address = NodeAddress(pst["podIP"], names.REDIS_PORT)
                domains.append((address, Domain(node, zones.get(node, ""))))
        want = _operated.replicas_of(desired)
        last_view = obs.cluster
        members = list(((last_view.status if last_view else {}) or {}).get("members") or [])
        # Settled: the converge worker has seen every pod as it is now (a replaced pod
        # has a new address: until the worker has met it, the view is of before).
        settled = (
            len(by_ordinal) >= want
            and last_view is not None
            and last_view.converged
            and len(members) == want
            and all(m.get("healthy") for m in members)
            and {str(m.get("address")) for m in members}
            == {f"{ip}:{names.REDIS_PORT}" for ip in by_ordinal.values()}
        )
        step = supervise_update(obs, members, settled, want, inputs.now_text)
        base = replace(
            base,
            update=step.status,
            pod_deletes=(step.delete,) if step.delete else (),
        )
        if step.stalled:
            message = f"supervised update halted: {step.stalled}"
            stalled = ("True", "UpdateStalled", message)
            base = replace(base, verdict=replace(base.verdict, degraded=stalled))
        if not workload.exists or len(by_ordinal) < want:
            message = f"waiting for Redis pods: {len(by_ordinal)}/{want}"
            waiting: dict[str, Any] = {"state": "unknown", "message": message}
            last = obs.cluster
            if workload.exists and last is not None and not last.pending:
                # A pod is gone or not ready (its node lost, say): the members, roles and
                # health of the last look stand beside what is awaited.
                kept = {k: v for k, v in last.status.items() if k != "placement"}
                ready_ips = set(by_ordinal.values())
                kept["members"] = [
                    {**m, "healthy": bool(m.get("healthy"))
                     and str(m.get("address", "")).rsplit(":", 1)[0] in ready_ips}
                    for m in kept.get("members") or []
                ]  # fmt: skip
                waiting = {**kept, "message": f"{message}; {last.message}"[:500]}
            return replace(base, cluster=waiting)
        request = ConvergeRequest(
            addresses=tuple(
                NodeAddress(by_ordinal[i], names.REDIS_PORT) for i in sorted(by_ordinal)
            ),
            shards=spec.cluster.shards,
            replicas_per_shard=spec.cluster.replicas_per_shard,
            password=inputs.secrets.operator_password if inputs.secrets else None,
            tls=spec.tls.enabled,
            ca_data=inputs.tls_ca,
            domains=tuple(sorted(domains)),
            handover=(step.handover,) if step.handover else (),
        )
        view = obs.cluster
        base = replace(base, converge=request)
        if view is None or (view.pending and previous_phase in ("Ready", "RolledBack")):
            # A restarted operator has not looked at the cluster yet: what status says
            # stands until it has (no Ready -> "forming" -> Ready flap, no write) --
            # a placement warning included.
            said = {c.get("type"): c for c in obs.status.get("conditions") or []}
            warned = said.get(cond.DEGRADED) or {}
            if warned.get("reason") == "PlacementDegraded" and base.verdict.ready[0] == "True":
                held = ("True", "PlacementDegraded", str(warned.get("message") or ""))
                return replace(base, verdict=replace(base.verdict, degraded=held))
            return base
        base = replace(base, cluster=view.status)
        if view.converged and view.placement and base.verdict.ready[0] == "True":
            # Serving, but one node's loss would take a shard's every copy (or most
            # masters): say so, with the shards concerned; Ready stays True.
            message = "placement: " + "; ".join(view.placement)
            degraded = ("True", "PlacementDegraded", message[:1000])
            return replace(base, verdict=replace(base.verdict, degraded=degraded))
        if view.converged:
            return base
        message = f"Redis Cluster: {view.message}"
        verdict = cond.serving_or_forming(
            previous_phase,
            message,
            degraded="ClusterNotOk",
            healing="ClusterConverging",
            forming="ClusterForming",
        )
        return replace(base, verdict=verdict, requeue=_operated.NOT_READY_RECHECK)
