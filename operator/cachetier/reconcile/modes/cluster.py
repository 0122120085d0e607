"""``mode: cluster``: a Redis Cluster of shards x (1 + replicas) pods.

The strategy holds scale-in until the nodes it would remove hold no slots, and
judges readiness by the cluster (every slot served, every node ``ok``); the
background converge itself (form, heal, rebalance) is
:class:`cachetier.reconcile.cluster.ClusterManager`, one worker per tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cachetier import names
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.cluster import ClusterManager
from cachetier.reconcile.modes._operated import reconcile_operated
from cachetier.reconcile.modes.base import Outcome, TierContext, Workbench
from cachetier.redis.cluster import TlsOptions
from cachetier.render import TierSecrets, spec_hash
from cachetier.topology.nodes import NodeAddress


class ClusterMode:
    """Redis Cluster: the operated path plus scale-in hold and the cluster's verdict."""

    def __init__(self, wake: Callable[[str, str], None]) -> None:
        self.clusters = ClusterManager()
        self.wake = wake

    def reconcile(self, bench: Workbench, ctx: TierContext) -> Outcome:
        def adjust(ctx: TierContext, desired: list[dict[str, Any]]) -> None:
            self._hold_scale_in(bench, ctx, desired)

        def judge(
            ctx: TierContext,
            secrets: TierSecrets,
            obs: cond.WorkloadObservation,
            verdict: cond.Verdict,
        ) -> cond.Verdict:
            return self._judge(bench, ctx, secrets, obs, verdict)

        return reconcile_operated(bench, ctx, adjust=adjust, judge=judge)

    def forget(self, namespace: str, name: str) -> None:
        self.clusters.forget((namespace, name))

    def _hold_scale_in(
        self, bench: Workbench, ctx: TierContext, desired: list[dict[str, Any]]
    ) -> None:
        """Keep the StatefulSet's size until the nodes it would remove hold no slots."""
        ref = ctx.ref
        live = bench.kube.get("StatefulSet", ref.namespace, names.statefulset(ref.name))
        if live is None:
            return
        live_replicas = int((live.get("spec") or {}).get("replicas") or 0)
        for obj in desired:
            if obj["kind"] != "StatefulSet":
                continue
            want = int(obj["spec"]["replicas"])
            drained = self.clusters.drained_beyond((ref.namespace, ref.name))
            if want < live_replicas and drained != want:
                obj["spec"]["replicas"] = live_replicas
                annotations = obj["metadata"].setdefault("annotations", {})
                annotations.pop(names.ANNOTATION_SPEC_HASH, None)
                annotations[names.ANNOTATION_SPEC_HASH] = spec_hash(obj)

    def _judge(
        self,
        bench: Workbench,
        ctx: TierContext,
        secrets: TierSecrets,
        obs: cond.WorkloadObservation,
        verdict: cond.Verdict,
    ) -> cond.Verdict:
        """Drive cluster formation in the background; judge readiness by the cluster."""
        ref, spec, previous_phase = ctx.ref, ctx.spec, ctx.previous_phase
        selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(ref.name).items())
        pods = bench.kube.list_objects("Pod", ref.namespace, selector)
        by_ordinal: dict[int, str] = {}
        for pod in pods:
            pst = pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in pst.get("conditions") or []
            )
            ordinal = pod["metadata"]["name"].rsplit("-", 1)[-1]
            if ready and pst.get("podIP") and ordinal.isdigit():
                by_ordinal[int(ordinal)] = pst["podIP"]
        if not obs.exists or len(by_ordinal) < obs.desired_replicas:
            ctx.status["cluster"] = {
                "state": "unknown",
                "message": f"waiting for Redis pods: {len(by_ordinal)}/{obs.desired_replicas}",
            }
            return verdict
        addresses = [NodeAddress(by_ordinal[i], names.REDIS_PORT) for i in sorted(by_ordinal)]
        key = (ref.namespace, ref.name)
        view = self.clusters.ensure(
            key,
            addresses,
            username=names.OPERATOR_USER,
            password=secrets.operator_password,
            shards=spec.cluster.shards,
            replicas_per_shard=spec.cluster.replicas_per_shard,
            on_done=lambda: self.wake(*key),
            tls=TlsOptions(ca_data=ctx.tls_ca) if spec.tls.enabled else None,
        )
        if view.pending and previous_phase in ("Ready", "RolledBack"):
            # A restarted operator has not looked at the cluster yet: what status says
            # stands until it has (no Ready -> "forming" -> Ready flap, no write).
            return verdict
        ctx.status["cluster"] = view.status
        if view.converged:
            return verdict
        message = f"Redis Cluster: {view.message}"
        if previous_phase in ("Ready", "Degraded", "RolledBack"):
            return cond.Verdict(
                phase="Degraded",
                ready=("False", "ClusterNotOk", message),
                progressing=("True", "ClusterConverging", message),
                degraded=("True", "ClusterNotOk", message),
            )
        return cond.Verdict(
            phase="Provisioning",
            ready=("False", "ClusterForming", message),
            progressing=("True", "ClusterForming", message),
            degraded=("False", "ClusterForming", ""),
        )
