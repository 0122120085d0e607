"""Conditions: kstatus's Stalled/Reconciling, generation stamping, stable order (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from cachetier.reconcile import conditions as cond

NOW, LATER = "2026-12-01T00:00:00Z", "2026-12-01T00:05:00Z"


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


def kstatus_of(verdict: cond.Verdict) -> dict[str, str]:
    return {c[0]: c[1] for c in cond.kstatus_conditions(verdict)}


READY = cond.workload_verdict(cond.WorkloadObservation(True, 1, 1), None)
PROVISIONING = cond.workload_verdict(cond.WorkloadObservation(True, 1, 0), None)
DEGRADED = cond.workload_verdict(cond.WorkloadObservation(True, 1, 0), "Ready")


@pytest.mark.parametrize(
    ("verdict", "stalled", "reconciling"),
    [
        (READY, "False", "False"),
        (PROVISIONING, "False", "True"),
        (DEGRADED, "False", "True"),
        (cond.workload_verdict(cond.WorkloadObservation(False), None), "False", "True"),
        (cond.invalid_spec("spec.redis.maxmemory: too big"), "True", "False"),
        (cond.blocked("DependencyMissing", "Secret x not found"), "True", "False"),
        (cond.external_verdict(False, "bad URL"), "True", "False"),
    ],
)
def test_kstatus_conditions(verdict: cond.Verdict, stalled: str, reconciling: str) -> None:
    assert kstatus_of(verdict) == {cond.STALLED: stalled, cond.RECONCILING: reconciling}


def with_rollback(reason: str, message: str) -> cond.Verdict:
    extra = [cond.Condition(cond.ROLLED_BACK, "True", reason, message)]
    return cond.Verdict(READY.phase, READY.ready, READY.progressing, READY.degraded, extra)


def test_automatic_rollback_is_stalled_a_manual_one_is_not() -> None:
    auto = with_rollback("AutoRollback", "error rate 9 % > 1 %")
    stalled = {c[0]: c for c in cond.kstatus_conditions(auto)}[cond.STALLED]
    assert stalled[1:3] == ("True", "AutoRollback")
    assert "error rate 9 %" in stalled[3]
    manual = with_rollback("Manual", "spec.rollout.enabled is false")
    assert kstatus_of(manual)[cond.STALLED] == "False"


def test_every_condition_carries_the_current_generation() -> None:
    first = cond.merge_conditions([], cond.verdict_conditions(READY), 1, NOW)
    latency_ok = cond.Condition(cond.HIGH_LATENCY, "False", "LatencyOk")
    first = cond.merge_conditions(first, [latency_ok], 1, NOW)
    # Generation 2 refused early: only the verdict's conditions are recomputed.
    second = cond.merge_conditions(
        first, cond.verdict_conditions(cond.invalid_spec("bad")), 2, LATER
    )
    assert {c["observedGeneration"] for c in second} == {2}
    assert by_type(second)[cond.HIGH_LATENCY]["reason"] == "LatencyOk"


def test_order_is_stable_across_writers_and_transitions_only_move_on_change() -> None:
    reconciled = cond.merge_conditions([], cond.verdict_conditions(READY), 1, NOW)
    probed = cond.merge_conditions(
        reconciled,
        [cond.Condition(cond.HIGH_LATENCY, "True", "LatencyAboveThreshold", "slow")],
        1,
        LATER,
    )
    assert [c["type"] for c in probed][:-1] == [c["type"] for c in reconciled]
    assert probed[-1]["type"] == cond.HIGH_LATENCY
    again = cond.merge_conditions(probed, cond.verdict_conditions(READY), 1, LATER)
    assert again == probed  # nothing new observed: identical, so no status write
    degraded = cond.merge_conditions(again, cond.verdict_conditions(DEGRADED), 1, LATER)
    ready = by_type(degraded)[cond.READY]
    assert (ready["status"], ready["lastTransitionTime"]) == ("False", LATER)
    assert by_type(degraded)[cond.STALLED]["lastTransitionTime"] == NOW
