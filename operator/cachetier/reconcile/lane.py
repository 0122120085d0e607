"""Consumer passes of a tier, in turn: the rollback fast lane and the fence.

Consumer passes of one tier take turns (a lock per tier). A rollback has a fast
lane (:meth:`ConsumerLanes.rollback_now`, its own threads and its own write pool),
which nothing queued for other tiers can delay; a full reconcile that read the tier
before such a rollback is refused by the fence (:class:`StaleRollout`) instead of
switching consumers back on from its outdated view.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.ports import KubeApi
from cachetier.reconcile.consumer_plan import ConsumerPlan
from cachetier.reconcile.consumers import PARALLEL_WRITES, ConsumerReconciler, ConsumerReport
from cachetier.reconcile.decide import ConsumerStep
from cachetier.reconcile.observed import auto_rolled_back, rollback_requested
from cachetier.render import TierRef


class StaleRollout(Exception):
    """A rollback for a newer view of the tier already ran: re-read the tier and retry."""


@dataclass
class Fence:
    """The view of the tier (generation, re-arm mark) the last rollback acted on."""

    uid: str
    generation: int
    rearm: str | None
    changed: list[str]
    """What the lane switched, for the full reconcile's Event and metric."""


def _mark(body: dict[str, Any]) -> tuple[int, str | None]:
    meta = body["metadata"]
    return int(meta.get("generation") or 0), (meta.get("annotations") or {}).get(
        names.ANNOTATION_REARM
    )


class ConsumerLanes:
    """The consumer writes of every tier: the full passes and the rollback lane."""

    def __init__(
        self, kube: KubeApi, consumers: ConsumerReconciler, lane: ConsumerReconciler
    ) -> None:
        self.kube = kube
        self.consumers = consumers
        """Write pool of the full passes (shared by every tier)."""
        self.lane = lane
        """Writes of the rollback lane: threads of its own per pass."""
        self.turns: dict[tuple[str, str], threading.Lock] = {}
        self.fences: dict[tuple[str, str], Fence] = {}
        self.guard = threading.Lock()

    def turn(self, key: tuple[str, str]) -> threading.Lock:
        with self.guard:
            return self.turns.setdefault(key, threading.Lock())

    def forget(self, key: tuple[str, str]) -> None:
        with self.guard:
            self.fences.pop(key, None)
            self.turns.pop(key, None)

    def gather(
        self, key: tuple[str, str], spec: CacheTierSpec
    ) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...] | None]:
        """The consumers' listing for a full pass, read in the tier's turn: a rollback
        the lane is writing finishes first, so the pass plans from what it left (and
        its LIST does not compete with the lane's writes)."""
        with self.turn(key):
            return self.consumers.gather(key[0], spec)

    def rollback_now(self, body: dict[str, Any], spec: CacheTierSpec) -> ConsumerReport | None:
        """The fast lane: if the tier asks for a rollback, switch its consumers off now.

        Only the consumer writes, to the workloads status last reported enabled (a
        GET and an apply each, no LIST); no children, no status: the full reconcile
        that follows does its complete pass and records it. At pod granularity (the
        pods' annotations are the switch), when status is older than the previous
        generation, or for more workloads than one round of parallel writes (a LIST
        is then cheaper than a GET each), the lane runs the complete pass itself.
        None when the tier does not ask for a rollback.
        """
        if not rollback_requested(body, spec):
            return None
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        generation, rearm = _mark(body)
        status = body.get("status") or {}
        # Status names the enabled workloads only if it saw the generation before
        # this one (a rollback spec change is one generation): else the whole pass.
        current = int(status.get("observedGeneration") or 0) >= generation - 1
        # ``percent: 0`` is a percent: a workload pinned "true" stays on (README "Pins");
        # ``enabled: false`` and an automatic rollback switch every consumer off.
        total = not spec.rollout.enabled or auto_rolled_back(body)
        known = [
            (str(w.get("kind")), str(w.get("name")))
            for w in (status.get("consumers") or {}).get("workloads") or []
            if w.get("enabled")
            and w.get("kind") in ("Deployment", "StatefulSet")
            and (total or not w.get("pinned"))
        ]
        complete = spec.rollout.granularity == "pod" or not current or len(known) > PARALLEL_WRITES
        connection = (
            self.kube.get("Secret", key[0], names.connection_secret(key[1])) if complete else None
        )
        with self.turn(key):
            fence = self.fences.get(key)
            if fence is not None and fence.uid == meta["uid"]:
                if (fence.generation, fence.rearm) == (generation, rearm):
                    return None  # this view's rollback is done already
                if fence.generation > generation:
                    return None  # a newer view was acted on
            if complete:
                report = self.lane.reconcile(
                    key[1],
                    key[0],
                    spec,
                    enabled=not total,
                    effective_percent=0,
                    connection_ready=connection is not None,
                )
            else:
                report = self.lane.switch_off(key[1], key[0], spec, known)
            self.fences[key] = Fence(meta["uid"], generation, rearm, list(report.changed))
        return report

    def run(
        self,
        body: dict[str, Any],
        ref: TierRef,
        step: ConsumerStep,
        refresh: Callable[[ConsumerPlan], ConsumerPlan] | None = None,
    ) -> ConsumerReport:
        """A full pass's consumer writes, fenced against a newer rollback.

        ``refresh`` (pod granularity) re-plans under the tier's turn, right before the
        writes, from pods listed then: pods come and go by the second during a rollout,
        and flags planned from the pass's first listing could switch on one pod too many.
        """
        key = (ref.namespace, ref.name)
        generation, rearm = _mark(body)
        with self.turn(key):
            fence = self.fences.get(key)
            if fence is not None and fence.uid != ref.uid:
                fence = None  # a predecessor of the same name
            same = fence is not None and (fence.generation, fence.rearm) == (generation, rearm)
            if fence is not None and (generation < fence.generation or (same and not step.off)):
                raise StaleRollout(
                    f"a rollback of generation {fence.generation} ran after this view"
                    f" (generation {generation}) was read"
                )
            plan = step.plan if refresh is None else refresh(step.plan)
            if same and fence is not None and fence.changed:
                # The plan was made from a listing read before the lane's writes:
                # what the lane already switched is not written twice.
                done = set(fence.changed)
                plan = replace(
                    plan,
                    injects=[
                        (o, i)
                        for o, i in plan.injects
                        if f"{o['kind']}/{o['metadata']['name']} REDIS_ENABLED="
                        f"{str(i.redis_enabled).lower()}" not in done
                    ],
                )
            report = self.consumers.execute(ref.namespace, ref.name, plan)
            if same and fence is not None:
                # The lane made these writes for this view: they are this pass's too.
                report.changed = [*fence.changed, *report.changed]
            if step.off:
                self.fences[key] = Fence(ref.uid, generation, rearm, [])
            return report
