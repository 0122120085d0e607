"""Rollout maths: buckets, pins, pod counts, steps and the auto-rollback verdict."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachetier.api.models import AutoRollbackSpec, RolloutSpec
from cachetier.rollout import (
    NOT_STARTED,
    StepState,
    Workload,
    bucket,
    describe_errors,
    enabled_pod_count,
    evaluate_latency,
    evaluate_probe,
    next_effective_percent,
    parse_pin,
    plan_workloads,
    select_pods,
)

NS = "ordo"
TIER = "tasks-cache"

percents = st.integers(min_value=0, max_value=100)
names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
kinds = st.sampled_from(["Deployment", "StatefulSet"])
pins = st.sampled_from([None, True, False])
workload_sets = st.lists(
    st.builds(Workload, kind=kinds, name=names, pin=pins),
    max_size=40,
    unique_by=lambda w: (w.kind, w.name),
)


def spec_bucket(namespace: str, tier: str, kind: str, name: str) -> int:
    """SPEC section 4's formula, written out again independently of the package."""
    key = f"{namespace}/{tier}/{kind}/{name}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100


def enabled_set(workloads: list[Workload], *, enabled: bool, percent: int) -> set[tuple[str, str]]:
    plan = plan_workloads(NS, TIER, workloads, enabled=enabled, effective_percent=percent)
    return {key for key, decision in plan.items() if decision.enabled}


# --- buckets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "tier", "kind", "name", "expected"),
    [
        # Computed once with hashlib from SPEC's formula; a change here breaks every
        # running rollout (workloads would switch), so it must never happen silently.
        ("ordo", "tasks-cache", "Deployment", "api", 40),
        ("ordo", "tasks-cache", "Deployment", "worker", 32),
        ("ordo", "tasks-cache", "StatefulSet", "api", 66),
        ("default", "t", "Deployment", "a", 19),
        ("prod", "sessions", "Deployment", "web-frontend-7", 29),
    ],
)
def test_bucket_fixed_vectors(
    namespace: str, tier: str, kind: str, name: str, expected: int
) -> None:
    assert bucket(namespace, tier, kind, name) == expected
    assert spec_bucket(namespace, tier, kind, name) == expected


@given(names, names, kinds, st.text(max_size=60))
def test_bucket_matches_spec_formula(namespace: str, tier: str, kind: str, name: str) -> None:
    assert bucket(namespace, tier, kind, name) == spec_bucket(namespace, tier, kind, name)
    assert 0 <= bucket(namespace, tier, kind, name) < 100


# --- pins ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ("TRUE", True),
        (" False ", False),
        (None, None),
        ("", None),
        ("yes", None),
        ("1", None),
        ("truex", None),
    ],
)
def test_parse_pin(value: str | None, expected: bool | None) -> None:
    assert parse_pin(value) is expected


# --- workload plan ---------------------------------------------------------


@given(workload_sets, percents, percents)
def test_raising_the_percent_never_disables_a_workload(
    workloads: list[Workload], a: int, b: int
) -> None:
    low, high = sorted((a, b))
    assert enabled_set(workloads, enabled=True, percent=low) <= enabled_set(
        workloads, enabled=True, percent=high
    )


@given(workload_sets, percents)
def test_enabled_false_disables_every_workload_even_pinned(
    workloads: list[Workload], percent: int
) -> None:
    plan = plan_workloads(NS, TIER, workloads, enabled=False, effective_percent=percent)
    assert set(plan) == {(w.kind, w.name) for w in workloads}
    assert not any(d.enabled for d in plan.values())
    assert not any(d.pinned for d in plan.values())


@given(workload_sets)
def test_percent_zero_disables_every_unpinned_workload(workloads: list[Workload]) -> None:
    plan = plan_workloads(NS, TIER, workloads, enabled=True, effective_percent=0)
    for w in workloads:
        assert plan[(w.kind, w.name)].enabled is (w.pin is True)


@given(workload_sets, percents)
def test_pins_win_over_the_percentage(workloads: list[Workload], percent: int) -> None:
    plan = plan_workloads(NS, TIER, workloads, enabled=True, effective_percent=percent)
    for w in workloads:
        decision = plan[(w.kind, w.name)]
        assert decision.bucket == spec_bucket(NS, TIER, w.kind, w.name)
        if w.pin is None:
            assert not decision.pinned
            assert decision.enabled is (decision.bucket < percent)
        else:
            assert decision.pinned
            assert decision.enabled is w.pin


def test_hundred_percent_enables_every_unpinned_workload() -> None:
    workloads = [Workload("Deployment", f"app-{i}", None) for i in range(50)]
    assert len(enabled_set(workloads, enabled=True, percent=100)) == 50


@pytest.mark.parametrize("percent", [-1, 101])
def test_plan_rejects_a_percent_out_of_range(percent: int) -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        plan_workloads(NS, TIER, [], enabled=True, effective_percent=percent)


# --- pod granularity -------------------------------------------------------


def test_enabled_pod_count_is_exact_for_every_small_case() -> None:
    for n in range(201):
        for p in range(101):
            expected = math.floor(Fraction(n * p, 100) + Fraction(1, 2))
            assert enabled_pod_count(n, p) == expected, (n, p)


def test_select_pods_count_is_exact_for_every_small_case() -> None:
    pods = [f"api-7d9f8c-{i:03d}" for i in range(200)]
    order = sorted(pods, key=lambda name: (hashlib.sha256(name.encode()).hexdigest(), name))
    rank = {name: i for i, name in enumerate(order)}
    for n in range(201):
        subset = pods[:n]
        for p in range(101):
            chosen = select_pods(subset, p, True)
            assert len(chosen) == math.floor(Fraction(n * p, 100) + Fraction(1, 2)), (n, p)
            # the lowest hashes among the subset
            worst_chosen = max((rank[c] for c in chosen), default=-1)
            assert all(rank[s] > worst_chosen for s in set(subset) - chosen), (n, p)


@given(st.lists(names, max_size=60), percents, percents)
def test_select_pods_is_monotonic_in_percent(pods: list[str], a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert select_pods(pods, low, True) <= select_pods(pods, high, True)


@given(st.lists(names, max_size=60), percents)
def test_select_pods_rolled_back_selects_none(pods: list[str], percent: int) -> None:
    assert select_pods(pods, percent, False) == set()
    assert select_pods(pods, 0, True) == set()


def test_select_pods_half_rounds_up_and_counts_duplicates_once() -> None:
    assert len(select_pods(["a"], 50, True)) == 1
    assert len(select_pods(["a", "a", "b", "c"], 50, True)) == 2  # 3 pods * 0.5 = 1.5 -> 2
    assert select_pods(["x", "y", "z", "w"], 100, True) == {"x", "y", "z", "w"}


# --- steps -----------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stepped(percent: int = 100, steps: tuple[int, ...] = (10, 25, 50), **kw: object) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {"percent": percent, "steps": list(steps), "stepInterval": "10m", **kw}
    )


def test_no_steps_means_the_target_at_once() -> None:
    rollout = RolloutSpec(percent=40)
    assert next_effective_percent(rollout, NOT_STARTED, T0, healthy=False) == (
        40,
        NOT_STARTED,
        "Complete",
    )


def test_steps_progress_over_a_simulated_clock() -> None:
    rollout = stepped()
    state = NOT_STARTED
    seen: list[tuple[int, int, str]] = []  # (minute, effective, reason) at each change
    for minute in range(0, 61):
        effective, state, reason = next_effective_percent(
            rollout, state, T0 + timedelta(minutes=minute), healthy=True
        )
        if not seen or seen[-1][1:] != (effective, reason):
            seen.append((minute, effective, reason))
    assert seen == [
        (0, 10, "Stepping"),
        (10, 25, "Stepping"),
        (20, 50, "Stepping"),
        (30, 100, "Complete"),
    ]
    assert state == StepState(index=3, last_step_time=T0 + timedelta(minutes=30))


def test_steps_hold_while_unhealthy_and_resume_after() -> None:
    rollout = stepped()
    result = next_effective_percent(rollout, NOT_STARTED, T0, healthy=True)
    held = next_effective_percent(rollout, result.state, T0 + timedelta(hours=5), healthy=False)
    assert held == (10, result.state, "HoldingUnhealthy")
    resumed = next_effective_percent(rollout, held.state, T0 + timedelta(hours=6), healthy=True)
    assert resumed == (
        25,
        StepState(index=1, last_step_time=T0 + timedelta(hours=6)),
        "Stepping",
    )


def test_steps_hold_while_paused() -> None:
    rollout = stepped()
    start = next_effective_percent(rollout, NOT_STARTED, T0, healthy=True)
    later = T0 + timedelta(hours=1)
    held = next_effective_percent(rollout, start.state, later, healthy=True, paused=True)
    assert held == (10, start.state, "Paused")


@pytest.mark.parametrize(
    ("changes", "effective", "reason"),
    [
        ({"enabled": False}, 0, "RolledBack"),
        ({"percent": 0, "steps": []}, 0, "Disabled"),
    ],
)
def test_rollback_resets_the_steps(changes: dict[str, object], effective: int, reason: str) -> None:
    rollout = stepped()
    state = StepState(index=2, last_step_time=T0)
    result = next_effective_percent(
        rollout.model_copy(update=changes), state, T0 + timedelta(hours=1), healthy=True
    )
    assert result == (effective, NOT_STARTED, reason)
    # re-enabling climbs again from the first step
    again = next_effective_percent(rollout, result.state, T0 + timedelta(hours=2), healthy=True)
    assert again.effective_percent == 10


def test_auto_rollback_in_force_holds_zero() -> None:
    result = next_effective_percent(stepped(), StepState(3, T0), T0, healthy=True, rolled_back=True)
    assert result == (0, NOT_STARTED, "RolledBack")


def test_last_step_equal_to_target_completes_there() -> None:
    rollout = stepped(percent=50, steps=(10, 50))
    first = next_effective_percent(rollout, NOT_STARTED, T0, healthy=True)
    second = next_effective_percent(rollout, first.state, T0 + timedelta(minutes=10), healthy=True)
    assert (first.effective_percent, second.effective_percent, second.reason) == (
        10,
        50,
        "Complete",
    )


def test_a_state_past_shortened_steps_is_clamped_to_the_target() -> None:
    result = next_effective_percent(stepped(percent=30, steps=(10,)), StepState(5, T0), T0, True)
    assert result == (30, StepState(1, T0), "Complete")


@given(
    st.lists(st.integers(min_value=0, max_value=100), max_size=6, unique=True),
    st.integers(min_value=1, max_value=100),
    st.lists(st.tuples(st.integers(min_value=0, max_value=900), st.booleans()), max_size=40),
)
def test_steps_never_go_down_or_past_the_target_nor_skip_an_interval(
    steps: list[int], target: int, ticks: list[tuple[int, bool]]
) -> None:
    rollout = RolloutSpec.model_validate(
        {"percent": target, "steps": sorted(s for s in steps if s <= target), "stepInterval": "5m"}
    )
    now = T0
    effective, state, _ = next_effective_percent(rollout, NOT_STARTED, now, healthy=True)
    for seconds, healthy in ticks:
        now += timedelta(seconds=seconds)
        before = state
        new_effective, state, reason = next_effective_percent(rollout, state, now, healthy)
        assert effective <= new_effective <= target
        if new_effective != effective:
            assert healthy
            assert before.last_step_time is not None
            assert now - before.last_step_time >= timedelta(minutes=5)
            assert state.index == (before.index or 0) + 1
        assert (reason == "Complete") is (new_effective == target)
        effective = new_effective


# --- auto-rollback ---------------------------------------------------------

AUTO = AutoRollbackSpec()  # seed guide thresholds: 10 ms, 1 %, 3 probes


@pytest.mark.parametrize(
    ("up", "latency", "error_rate", "bad"),
    [
        (True, 0.4, 0.0, False),
        (True, 10.0, 0.01, False),  # at the thresholds is still fine
        (True, 10.5, 0.0, False),  # slow is a warning, not a bad probe
        (True, 500.0, 0.0, False),
        (True, 0.4, 0.011, True),
        (False, None, None, True),
        (True, None, None, False),
    ],
)
def test_probe_thresholds(
    up: bool, latency: float | None, error_rate: float | None, bad: bool
) -> None:
    verdict = evaluate_probe(AUTO, up, latency, error_rate, 0)
    assert verdict.bad is bad
    assert verdict.consecutive_failures == (1 if bad else 0)
    assert bool(verdict.message) is bad


def test_probe_message_names_the_measured_values() -> None:
    verdict = evaluate_probe(AUTO, True, 12.5, 0.02, 1)
    assert "2 %" in verdict.message
    assert "1 %" in verdict.message
    assert "2 consecutive" in verdict.message
    assert "ms" not in verdict.message  # latency is not a reason without rollbackOnLatency
    assert "Redis unreachable" in evaluate_probe(AUTO, False, None, None, 0).message
    opted = AutoRollbackSpec(rollback_on_latency=True)
    verdict = evaluate_probe(opted, True, 12.5, 0.0, 0)
    assert "12.5 ms" in verdict.message
    assert "> 10 ms" in verdict.message


def test_error_rate_message_names_the_class_and_the_denied_command() -> None:
    verdict = evaluate_probe(
        AUTO,
        True,
        0.3,
        0.0828,
        0,
        error_classes={"NOPERM": 97, "ERR": 3},
        denied={"KEYS": 97},
    )
    assert "error rate 8.28 % > 1 %" in verdict.message
    assert "NOPERM 97 % (KEYS denied to the application user: use SCAN" in verdict.message
    assert "ERR 3 %" in verdict.message
    assert describe_errors(None, None) == ""
    assert "stale REDIS_URL" in describe_errors({"WRONGPASS": 5}, None)


def test_rollback_after_failure_threshold_consecutive_bad_probes() -> None:
    failures = 0
    verdicts = []
    for up in [False, False, True, False, False, False, False]:
        verdict = evaluate_probe(AUTO, up, 0.3 if up else None, 0.0, failures)
        failures = verdict.consecutive_failures
        verdicts.append((verdict.consecutive_failures, verdict.rollback))
    assert verdicts == [
        (1, False),
        (2, False),
        (0, False),
        (1, False),
        (2, False),
        (3, True),
        (4, True),
    ]


def test_latency_rolls_back_only_when_opted_in_and_sustained() -> None:
    opted = AutoRollbackSpec(rollback_on_latency=True)
    failures = 0
    rolled = []
    for latency in [50.0, 50.0, 0.3, 50.0, 50.0, 50.0]:
        verdict = evaluate_probe(opted, True, latency, 0.0, failures)
        failures = verdict.consecutive_failures
        rolled.append(verdict.rollback)
    assert rolled == [False, False, False, False, False, True]
    assert not any(evaluate_probe(AUTO, True, 50.0, 0.0, n).rollback for n in range(0, 10))


def test_latency_warning_has_hysteresis() -> None:
    """One slow probe on a busy node changes nothing; threshold-many in a row do."""
    slow, streak = False, 0
    states = []
    for latency in [50.0, 0.3, 50.0, 50.0, 50.0, 0.3, 50.0, 0.3, 0.3, 0.3, None]:
        verdict = evaluate_latency(AUTO, latency, slow, streak)
        slow, streak = verdict.slow, verdict.streak
        states.append(slow)
    assert states == [False, False, False, False, True, True, True, True, True, False, False]
    assert "> 10 ms" in evaluate_latency(AUTO, 50.0, True, 0).message
    assert evaluate_latency(AUTO, 0.3, False, 0).message == ""


def test_no_rollback_when_auto_rollback_is_disabled() -> None:
    auto = AutoRollbackSpec(enabled=False, failure_threshold=1)
    verdict = evaluate_probe(auto, False, None, None, 10)
    assert verdict.bad
    assert verdict.consecutive_failures == 11
    assert not verdict.rollback


def test_custom_thresholds_are_honoured() -> None:
    auto = AutoRollbackSpec(
        max_latency_ms=100, max_error_rate=0.5, failure_threshold=1, rollback_on_latency=True
    )
    assert not evaluate_probe(auto, True, 50.0, 0.2, 0).bad
    assert evaluate_probe(auto, True, 150.0, 0.2, 0).rollback
    assert evaluate_probe(auto, True, 1.0, 0.6, 0).rollback
