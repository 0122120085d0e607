"""The common path of the modes whose Redis the operator runs (standalone, cluster)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cachetier import names
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.modes.base import Outcome, TierContext, Workbench
from cachetier.render import TierSecrets, render_tier

OPERATOR_NAMESPACE = os.environ.get("CACHETIER_OPERATOR_NAMESPACE") or names.OPERATOR_NAMESPACE
"""The operator's own namespace (downward API in manifests/), admitted by NetworkPolicies."""

NOT_READY_RECHECK = 10.0
"""A tier that is not Ready yet is reconciled again this often (besides its events)."""

Adjust = Callable[[TierContext, list[dict[str, Any]]], None]
Judge = Callable[[TierContext, TierSecrets, cond.WorkloadObservation, cond.Verdict], cond.Verdict]


def reconcile_operated(
    bench: Workbench,
    ctx: TierContext,
    *,
    adjust: Adjust | None = None,
    judge: Judge | None = None,
) -> Outcome:
    """Secrets, render, apply, observe; ``adjust`` edits the rendered objects before
    they are applied, ``judge`` refines the workload verdict (cluster state)."""
    ref, spec = ctx.ref, ctx.spec
    ctx.tls_ca = bench.require_tls_secret(ref, spec)
    secrets = bench.tier_secrets(ref, spec, ctx.body)
    desired = render_tier(ref, spec, secrets, OPERATOR_NAMESPACE)
    if adjust is not None:
        adjust(ctx, desired)
    bench.apply_children(ctx.body, desired)
    obs = bench.observe_statefulset(ref, _replicas_of(desired))
    verdict = cond.workload_verdict(obs, ctx.previous_phase)
    if judge is not None:
        verdict = judge(ctx, secrets, obs, verdict)
    ctx.status["endpoint"] = {
        "host": names.service_host(ref.name, ref.namespace),
        "port": names.REDIS_PORT,
    }
    ctx.status["connectionSecret"] = names.connection_secret(ref.name)
    return Outcome(verdict, None if verdict.phase == "Ready" else NOT_READY_RECHECK)


def _replicas_of(desired: list[dict[str, Any]]) -> int:
    """The pod count the rendered (and, in cluster mode, scale-in-held) StatefulSet asks."""
    for obj in desired:
        if obj.get("kind") == "StatefulSet":
            return int((obj.get("spec") or {}).get("replicas", 1))
    return 1
