"""The rollout part of a tier's reconcile: effective percent, consumers, status, Events.

A mixin of :class:`cachetier.reconcile.tier.TierReconciler`. The decisions are
the pure ``cachetier.rollout``; the consumer writes are
:class:`cachetier.reconcile.consumers.ConsumerReconciler`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cachetier import metrics, names
from cachetier.api.models import CacheTierSpec
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.consumers import ConsumerReconciler, ConsumerReport
from cachetier.render import TierRef
from cachetier.rollout import StepState, next_effective_percent

log = logging.getLogger("cachetier.reconcile")

EventFn = Callable[[dict[str, Any], str, str, str], None]


class RolloutPass:
    """Rollout steps of the reconcile (needs ``consumers`` and ``_event``)."""

    consumers: ConsumerReconciler
    _event: EventFn

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
    ) -> float | None:
        """Decide the effective percent, run the consumer pass, fill status.rollout/consumers."""
        old = dict(old_status.get("rollout") or {})
        generation = body["metadata"].get("generation")
        serving = bool(old.get("serving")) or phase == "Ready"
        annotations = body["metadata"].get("annotations") or {}
        rearm = annotations.get(names.ANNOTATION_REARM)
        rearmed = bool(rearm) and rearm != old.get("rearm")
        rolled_back = (
            old.get("rolledBackGeneration") is not None
            and old.get("rolledBackGeneration") == generation
            and not rearmed
        )
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
        report = self.consumers.reconcile(
            ref.name,
            ref.namespace,
            spec,
            enabled=spec.rollout.enabled and not rolled_back,
            effective_percent=effective,
            connection_ready=connection_ready,
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
            ("True", "ConsumerConflict", "; ".join(report.conflicts)[:1000])
            if report.conflicts
            else ("False", "NoConflict", "")
        )
        if rolled_back:
            rolled = ("True", "AutoRollback", _condition_message(old_status, cond.ROLLED_BACK))
        elif not spec.rollout.enabled:
            rolled = ("True", "Manual", "spec.rollout.enabled is false: every consumer is off")
        else:
            rolled = ("False", "Enabled", "")
        new["_conditions"] = [(cond.CONSUMER_CONFLICT, *conflict), (cond.ROLLED_BACK, *rolled)]
        _export_rollout(ref, spec, rollout, report)
        self._consumer_events(body, old_status, new, report, spec)
        if spec.rollout.steps and reason in ("Stepping", "HoldingUnhealthy"):
            return 5.0
        if report.errors:
            log.warning("consumer errors for %s/%s: %s", ref.namespace, ref.name, report.errors)
            return 10.0
        return None

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
