"""The rollout part of a tier's reconcile: effective percent, consumers, status, Events.

A mixin of :class:`cachetier.reconcile.tier.TierReconciler`. The decisions are
the pure ``cachetier.rollout``; the consumer writes are
:class:`cachetier.reconcile.consumers.ConsumerReconciler`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cachetier import metrics, names
from cachetier.api.models import CacheTierSpec
from cachetier.kube.client import Kube
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.consumers import PARALLEL_WRITES, ConsumerReconciler, ConsumerReport
from cachetier.render import TierRef
from cachetier.rollout import StepState, next_effective_percent

log = logging.getLogger("cachetier.reconcile")

EventFn = Callable[[dict[str, Any], str, str, str], None]


@dataclass(frozen=True)
class RolloutOutcome:
    """What the rollout step decided besides status: when to look again, its conditions."""

    requeue: float | None
    conditions: list[cond.Condition]


class StaleRollout(Exception):
    """A rollback for a newer view of the tier already ran: re-read the tier and retry."""


def rollback_requested(body: dict[str, Any], spec: CacheTierSpec) -> bool:
    """The tier asks for every consumer off (instant rollback), whatever else it asks.

    Off when ``spec.rollout.enabled`` is false, ``percent`` is 0, or an automatic
    rollback was recorded for this generation and not re-armed since.
    """
    if not spec.rollout.enabled or spec.rollout.percent == 0:
        return True
    return _auto_rolled_back(body)


def may_request_rollback(body: dict[str, Any]) -> bool:
    """:func:`rollback_requested` read from the raw object (the API server has applied
    the schema's defaults), without validating the spec: the watch handler's cheap
    filter for the rollback lane, which validates before acting."""
    rollout = (body.get("spec") or {}).get("rollout") or {}
    return rollout.get("enabled") is False or rollout.get("percent") == 0 or _auto_rolled_back(body)


def _auto_rolled_back(body: dict[str, Any]) -> bool:
    old = (body.get("status") or {}).get("rollout") or {}
    rearm = (body["metadata"].get("annotations") or {}).get(names.ANNOTATION_REARM)
    rearmed = bool(rearm) and rearm != old.get("rearm")
    generation = body["metadata"].get("generation")
    return (
        old.get("rolledBackGeneration") is not None
        and old.get("rolledBackGeneration") == generation
        and not rearmed
    )


@dataclass
class _Fence:
    """The view of the tier (generation, re-arm mark) the last fast-lane rollback acted on."""

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


class RolloutPass:
    """Rollout steps of the reconcile (needs ``consumers``, ``lane_consumers`` and ``_event``).

    Consumer passes of one tier take turns (``_turn``). A rollback has a fast lane
    (:meth:`rollback_now`, its own threads and its own write pool), which nothing
    queued for other tiers can delay; a full reconcile that read the tier before
    such a rollback is refused by the fence (:class:`StaleRollout`) instead of
    switching consumers back on from its outdated view.
    """

    kube: Kube
    consumers: ConsumerReconciler
    lane_consumers: ConsumerReconciler
    _event: EventFn
    _turns: dict[tuple[str, str], threading.Lock]
    _fences: dict[tuple[str, str], _Fence]
    _turns_guard: threading.Lock

    def _turn(self, key: tuple[str, str]) -> threading.Lock:
        with self._turns_guard:
            return self._turns.setdefault(key, threading.Lock())

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
        known = [
            (str(w.get("kind")), str(w.get("name")))
            for w in (status.get("consumers") or {}).get("workloads") or []
            if w.get("enabled") and w.get("kind") in ("Deployment", "StatefulSet")
        ]
        # Past one round of parallel writes, one LIST is cheaper than a GET each.
        complete = spec.rollout.granularity == "pod" or not current or len(known) > PARALLEL_WRITES
        connection = (
            self.kube.get("Secret", key[0], names.connection_secret(key[1])) if complete else None
        )
        with self._turn(key):
            fence = self._fences.get(key)
            if fence is not None and fence.uid == meta["uid"]:
                if (fence.generation, fence.rearm) == (generation, rearm):
                    return None  # this view's rollback is done already
                if fence.generation > generation:
                    return None  # a newer view was acted on
            if complete:
                report = self.lane_consumers.reconcile(
                    key[1],
                    key[0],
                    spec,
                    enabled=False,
                    effective_percent=0,
                    connection_ready=connection is not None,
                )
            else:
                report = self.lane_consumers.switch_off(key[1], key[0], spec, known)
            self._fences[key] = _Fence(meta["uid"], generation, rearm, list(report.changed))
        return report

    def _consumer_pass(
        self,
        body: dict[str, Any],
        ref: TierRef,
        spec: CacheTierSpec,
        *,
        enabled: bool,
        effective_percent: int,
        connection_ready: bool,
        off: bool,
    ) -> ConsumerReport:
        key = (ref.namespace, ref.name)
        generation, rearm = _mark(body)
        with self._turn(key):
            fence = self._fences.get(key)
            if fence is not None and fence.uid != ref.uid:
                fence = None  # a predecessor of the same name
            same = fence is not None and (fence.generation, fence.rearm) == (generation, rearm)
            if fence is not None and (generation < fence.generation or (same and not off)):
                raise StaleRollout(
                    f"a rollback of generation {fence.generation} ran after this view"
                    f" (generation {generation}) was read"
                )
            report = self.consumers.reconcile(
                ref.name,
                ref.namespace,
                spec,
                enabled=enabled,
                effective_percent=effective_percent,
                connection_ready=connection_ready,
            )
            if same and fence is not None:
                # The lane made these writes for this view: they are this pass's too.
                report.changed = [*fence.changed, *report.changed]
            if off:
                self._fences[key] = _Fence(ref.uid, generation, rearm, [])
            return report

    def _rollout(
        self,
        body: dict[str, Any],
        ref: TierRef,
        spec: CacheTierSpec,
        old_status: dict[str, Any],
        new: dict[str, Any],
        phase: str,
        *,
        connection_ready: bool,
    ) -> RolloutOutcome:
        """Decide the effective percent, run the consumer pass, fill status.rollout/consumers."""
        old = dict(old_status.get("rollout") or {})
        generation = body["metadata"].get("generation")
        serving = bool(old.get("serving")) or phase == "Ready"
        annotations = body["metadata"].get("annotations") or {}
        rearm = annotations.get(names.ANNOTATION_REARM)
        rearmed = bool(rearm) and rearm != old.get("rearm")
        rolled_back = _auto_rolled_back(body)
        paused = annotations.get(names.ANNOTATION_ROLLOUT_PAUSED) == "true"
        state = StepState(
            index=old.get("step"),
            last_step_time=_parse_time(old.get("lastStepTime")),
        )
        now = datetime.now(UTC).replace(microsecond=0)
        health = old_status.get("health") or {}
        failures = int(health.get("consecutiveFailures") or 0)
        if health.get("slow"):  # a warning does not roll back, but steps do not climb on it
            failures = max(failures, 1)
        step = next_effective_percent(
            spec.rollout,
            state,
            now,
            healthy=phase == "Ready" and failures == 0,
            paused=paused,
            rolled_back=rolled_back,
        )
        effective, reason = step.effective_percent, str(step.reason)
        step_state = step.state
        if not serving and effective > 0:
            # The step clock starts when the tier first serves, not before.
            effective, reason = 0, "WaitingForTier"
            step_state = StepState(index=None, last_step_time=None)
        report = self._consumer_pass(
            body,
            ref,
            spec,
            enabled=spec.rollout.enabled and not rolled_back,
            effective_percent=effective,
            connection_ready=connection_ready,
            off=rollback_requested(body, spec),
        )
        rollout: dict[str, Any] = {
            "enabled": spec.rollout.enabled and not rolled_back,
            "targetPercent": spec.rollout.percent,
            "effectivePercent": effective,
            "step": step_state.index,
            "reason": reason,
            "lastStepTime": _format_time(step_state.last_step_time),
            "serving": serving,
        }
        if rolled_back:
            rollout["rolledBackGeneration"] = generation
        if rearm:
            rollout["rearm"] = rearm
        if rearmed:
            self._event(body, "Normal", "Rearmed", f"rollout re-armed ({names.ANNOTATION_REARM})")
        new["rollout"] = rollout
        new["consumers"] = {
            "selected": report.selected,
            "enabled": report.enabled,
            "summary": f"{report.enabled}/{report.selected}",
            "workloads": sorted(report.workloads, key=lambda w: (w["kind"], w["name"])),
        }
        conflict = (
            cond.Condition(
                cond.CONSUMER_CONFLICT,
                "True",
                "ConsumerConflict",
                "; ".join(report.conflicts)[:1000],
            )
            if report.conflicts
            else cond.Condition(cond.CONSUMER_CONFLICT, "False", "NoConflict")
        )
        if rolled_back:
            rolled = cond.Condition(
                cond.ROLLED_BACK,
                "True",
                "AutoRollback",
                _condition_message(old_status, cond.ROLLED_BACK),
            )
        elif not spec.rollout.enabled:
            rolled = cond.Condition(
                cond.ROLLED_BACK,
                "True",
                "Manual",
                "spec.rollout.enabled is false: every consumer is off",
            )
        else:
            rolled = cond.Condition(cond.ROLLED_BACK, "False", "Enabled")
        conditions = [conflict, rolled]
        _export_rollout(ref, spec, rollout, report)
        self._consumer_events(body, old_status, new, report, spec)
        if spec.rollout.steps and reason in ("Stepping", "HoldingUnhealthy"):
            return RolloutOutcome(5.0, conditions)
        if report.errors:
            log.warning("consumer errors for %s/%s: %s", ref.namespace, ref.name, report.errors)
            return RolloutOutcome(10.0, conditions)
        return RolloutOutcome(None, conditions)

    def _consumer_events(
        self,
        body: dict[str, Any],
        old_status: dict[str, Any],
        new: dict[str, Any],
        report: ConsumerReport,
        spec: CacheTierSpec,
    ) -> None:
        before = {
            f"{w['kind']}/{w['name']}"
            for w in (old_status.get("consumers") or {}).get("workloads") or []
            if w.get("enabled")
        }
        after = report.enabled_set
        if report.changed and (before != after or not spec.rollout.enabled):
            on, off = sorted(after - before), sorted(before - after)
            if not spec.rollout.enabled or new["rollout"]["effectivePercent"] == 0:
                reason = "AutoRollback" if new["rollout"].get("rolledBackGeneration") else "Manual"
                metrics.ROLLBACKS.labels(
                    body["metadata"]["namespace"], body["metadata"]["name"], reason
                ).inc()
                self._event(
                    body,
                    "Warning",
                    "RolledBack",
                    f"rollback: REDIS_ENABLED=false on {len(report.changed)} consumer(s)",
                )
            else:
                parts = []
                if on:
                    parts.append("enabled " + ", ".join(on[:20]))
                if off:
                    parts.append("disabled " + ", ".join(off[:20]))
                self._event(
                    body,
                    "Normal",
                    "RolloutChanged",
                    f"{new['rollout']['effectivePercent']}%: " + "; ".join(parts or ["updated"]),
                )
        for conflict in report.conflicts:
            if conflict not in str(old_status.get("conditions")):
                self._event(body, "Warning", "ConsumerConflict", conflict)


def _condition_message(status: dict[str, Any], ctype: str) -> str:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return str(c.get("message") or "")
    return ""


def _export_rollout(
    ref: TierRef, spec: CacheTierSpec, rollout: dict[str, Any], report: ConsumerReport
) -> None:
    metrics.EFFECTIVE_PERCENT.labels(ref.namespace, ref.name).set(rollout["effectivePercent"])
    metrics.TARGET_PERCENT.labels(ref.namespace, ref.name).set(spec.rollout.percent)
    metrics.CONSUMERS_SELECTED.labels(ref.namespace, ref.name).set(report.selected)
    metrics.CONSUMERS_ENABLED.labels(ref.namespace, ref.name).set(report.enabled)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _format_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
