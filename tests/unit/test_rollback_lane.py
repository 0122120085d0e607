"""The rollback fast lane and the fence that keeps a stale reconcile from undoing it.

The consumer passes are recorded by a fake (the real pass is proven on a control
plane in tests/e2e); what is tested here is the ordering logic of
``ConsumerLanes.run`` (a full pass's consumer writes) and ``ConsumerLanes.rollback_now``.
"""

from __future__ import annotations

from typing import Any

import pytest

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.reconcile.consumer_plan import ConsumerPlan
from cachetier.reconcile.consumers import ConsumerReport
from cachetier.reconcile.decide import ConsumerStep
from cachetier.reconcile.lane import ConsumerLanes, StaleRollout
from cachetier.reconcile.observed import may_request_rollback, rollback_requested
from cachetier.render import TierRef


class FakeConsumers:
    def __init__(self, label: str, log: list[tuple[str, bool]]) -> None:
        self.label, self.log = label, log

    def execute(self, namespace: str, tier: str, plan: ConsumerPlan) -> ConsumerReport:
        self.log.append((self.label, bool(plan.enabled)))
        return ConsumerReport(selected=2, enabled=plan.enabled)

    def reconcile(self, tier: str, namespace: str, spec: Any, **kw: Any) -> ConsumerReport:
        self.log.append((self.label, bool(kw["enabled"])))
        return ConsumerReport(selected=2, enabled=2 if kw["enabled"] else 0)

    def switch_off(
        self, tier: str, namespace: str, spec: Any, workloads: list[tuple[str, str]]
    ) -> ConsumerReport:
        self.log.append((f"{self.label}-off {sorted(workloads)}", False))
        return ConsumerReport(changed=[f"{k}/{n} REDIS_ENABLED=false" for k, n in workloads])


class FakeKube:
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return {"kind": kind}


class Lane(ConsumerLanes):
    def __init__(self) -> None:
        self.log: list[tuple[str, bool]] = []
        super().__init__(
            FakeKube(),  # type: ignore[arg-type]
            FakeConsumers("reconcile", self.log),  # type: ignore[arg-type]
            FakeConsumers("lane", self.log),  # type: ignore[arg-type]
        )


def body(
    generation: int,
    *,
    percent: int = 100,
    enabled: bool = True,
    rolled_back: int | None = None,
    rearm: str | None = None,
    uid: str = "u1",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "t", "namespace": "ns", "uid": uid, "generation": generation}
    if rearm:
        meta["annotations"] = {names.ANNOTATION_REARM: rearm}
    status: dict[str, Any] = {
        "observedGeneration": generation - 1,
        "consumers": {
            "workloads": [
                {"kind": "Deployment", "name": "api", "enabled": True},
                {"kind": "Deployment", "name": "off", "enabled": False},
            ]
        },
    }
    if rolled_back:
        status["rollout"] = {"rolledBackGeneration": rolled_back}
    return {
        "metadata": meta,
        "spec": {"rollout": {"enabled": enabled, "percent": percent}},
        "status": status,
    }


def spec_of(b: dict[str, Any]) -> CacheTierSpec:
    return CacheTierSpec.model_validate(
        {"mode": "external", "external": {"urlSecretRef": {"name": "u", "key": "url"}}, **b["spec"]}
    )


REF = TierRef(name="t", namespace="ns", uid="u1")


def run_pass(lane: Lane, b: dict[str, Any]) -> ConsumerReport:
    spec = spec_of(b)
    off = rollback_requested(b, spec)
    step = ConsumerStep(
        plan=ConsumerPlan(selected=2, enabled=0 if off else 2),
        enabled=not off,
        effective_percent=0 if off else 100,
        connection_ready=True,
        off=off,
    )
    return lane.run(b, REF, step)


def test_rollback_requested_by_spec_or_by_a_recorded_automatic_rollback() -> None:
    assert rollback_requested(body(1, percent=0), spec_of(body(1, percent=0)))
    assert rollback_requested(body(1, enabled=False), spec_of(body(1, enabled=False)))
    assert rollback_requested(body(3, rolled_back=3), spec_of(body(3)))
    assert not rollback_requested(body(4, rolled_back=3), spec_of(body(4)))
    assert not rollback_requested(body(1), spec_of(body(1)))


def test_rearm_ends_a_recorded_automatic_rollback() -> None:
    b = body(3, rolled_back=3, rearm="r1")  # status has no re-arm mark yet: a new one
    assert not rollback_requested(b, spec_of(b))


LANE = ("lane-off [('Deployment', 'api')]", False)


def test_lane_switches_off_what_status_says_is_on_and_the_reconcile_records_it() -> None:
    lane = Lane()
    b = body(2, percent=0)
    report = lane.rollback_now(b, spec_of(b))
    assert report is not None and report.changed == ["Deployment/api REDIS_ENABLED=false"]
    assert lane.log == [LANE]
    # The full reconcile of the same view still runs its complete pass (drift, new
    # consumers) and reports the lane's writes as its own (the Event, the metric) ...
    assert run_pass(lane, b).changed == ["Deployment/api REDIS_ENABLED=false"]
    # ... once: a later reconcile of that view (a resync) reports only its own.
    assert run_pass(lane, b).changed == []
    assert lane.log == [LANE, ("reconcile", False), ("reconcile", False)]


def test_with_status_older_than_the_previous_generation_the_lane_runs_the_complete_pass() -> None:
    lane = Lane()
    b = body(5, percent=0)
    b["status"]["observedGeneration"] = 3  # generation 4 (a ramp, say) never recorded
    assert lane.rollback_now(b, spec_of(b)) is not None
    # percent 0 is a percent (pins "true" stay on): enabled, at 0 %.
    assert lane.log == [("lane", True)]


def test_the_lanes_complete_pass_of_an_explicit_rollback_is_total() -> None:
    lane = Lane()
    b = body(5, enabled=False)
    b["status"]["observedGeneration"] = 3
    assert lane.rollback_now(b, spec_of(b)) is not None
    assert lane.log == [("lane", False)]


def test_at_percent_zero_the_lane_leaves_pinned_workloads_to_the_pass() -> None:
    lane = Lane()
    b = body(2, percent=0)
    b["status"]["consumers"]["workloads"].append(
        {"kind": "Deployment", "name": "pinned", "enabled": True, "pinned": True}
    )
    lane.rollback_now(b, spec_of(b))
    assert lane.log == [LANE]
    total = body(2, enabled=False)
    total["status"]["consumers"]["workloads"].append(
        {"kind": "Deployment", "name": "pinned", "enabled": True, "pinned": True}
    )
    other = Lane()
    other.rollback_now(total, spec_of(total))
    assert other.log[-1] == ("lane-off [('Deployment', 'api'), ('Deployment', 'pinned')]", False)


def test_at_pod_granularity_the_lane_runs_the_complete_pass() -> None:
    lane = Lane()
    b = body(2, percent=0)
    b["spec"]["rollout"]["granularity"] = "pod"
    assert lane.rollback_now(b, spec_of(b)) is not None
    assert lane.log == [("lane", True)]


def test_lane_does_nothing_when_no_rollback_is_asked() -> None:
    lane = Lane()
    b = body(1)
    assert lane.rollback_now(b, spec_of(b)) is None
    assert lane.log == []


def test_a_reconcile_that_read_an_older_generation_cannot_switch_consumers_back_on() -> None:
    lane = Lane()
    newer = body(5, percent=0)
    lane.rollback_now(newer, spec_of(newer))
    with pytest.raises(StaleRollout):
        run_pass(lane, body(4))
    assert lane.log == [LANE]


def test_an_automatic_rollback_fences_a_view_read_before_it_was_recorded() -> None:
    lane = Lane()
    recorded = body(7, rolled_back=7)
    lane.rollback_now(recorded, spec_of(recorded))
    with pytest.raises(StaleRollout):
        run_pass(lane, body(7))  # same generation, status read before the prober's write
    # Re-armed (a new annotation) or a new generation: the rollout goes on.
    run_pass(lane, body(7, rearm="r2"))
    run_pass(lane, body(8))
    assert lane.log == [LANE, ("reconcile", True), ("reconcile", True)]


def test_the_lane_skips_a_view_a_reconcile_already_rolled_back() -> None:
    lane = Lane()
    b = body(3, percent=0)
    run_pass(lane, b)
    assert lane.rollback_now(b, spec_of(b)) is None
    older = body(2, percent=0)
    assert lane.rollback_now(older, spec_of(older)) is None
    assert lane.log == [("reconcile", False)]


def test_a_recreated_tier_is_not_fenced_by_its_predecessor() -> None:
    lane = Lane()
    old = body(9, percent=0, uid="old")
    lane.rollback_now(old, spec_of(old))
    run_pass(lane, body(1))  # uid u1, generation 1: a new object of the same name
    assert lane.log == [LANE, ("reconcile", True)]


@pytest.mark.parametrize(
    "b",
    [
        body(1, percent=0),
        body(1, enabled=False),
        body(3, rolled_back=3),
        body(4, rolled_back=3),
        body(3, rolled_back=3, rearm="r1"),
        body(1),
    ],
)
def test_the_handlers_raw_filter_agrees_with_the_validated_decision(b: dict[str, Any]) -> None:
    assert may_request_rollback(b) == rollback_requested(b, spec_of(b))
