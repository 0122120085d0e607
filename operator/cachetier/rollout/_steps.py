"""Step progression: the effective percent of a rollout with ``rollout.steps``.

Pure: no I/O and no clock reads; the caller passes ``now`` (timezone-aware, the
same zone as the stored ``last_step_time``) and the health it observed.

The ladder of a rollout is its steps below the target, in increasing order, then
the target itself: ``steps: [10, 25, 50], percent: 100`` climbs 10 -> 25 -> 50 -> 100.
A step is taken when a whole ``stepInterval`` has passed since the last one, the
tier is healthy and the rollout is not paused; at most one step per call, and the
interval restarts at the moment of the step (a late reconcile never takes two).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, NamedTuple

from cachetier.api.models import RolloutSpec
from cachetier.api.units import parse_duration

Reason = Literal["Stepping", "Complete", "HoldingUnhealthy", "Paused", "RolledBack", "Disabled"]
"""Why the effective percent is what it is (``status.rollout.reason``).

- ``Stepping``: on a step below the target, waiting for the interval;
- ``Complete``: at the target (always, without steps);
- ``HoldingUnhealthy``: on a step, not advancing because the tier is unhealthy;
- ``Paused``: on a step, not advancing because of ``cachetier.io/rollout-paused``;
- ``RolledBack``: ``enabled: false`` (a person rolled back) or an automatic
  rollback in force; effective 0;
- ``Disabled``: enabled, but ``percent: 0``; effective 0.
"""

STEPPING: Final = "Stepping"
COMPLETE: Final = "Complete"
HOLDING_UNHEALTHY: Final = "HoldingUnhealthy"
PAUSED: Final = "Paused"
ROLLED_BACK: Final = "RolledBack"
DISABLED: Final = "Disabled"


@dataclass(frozen=True)
class StepState:
    """Where a stepped rollout is; kept in ``status.rollout`` between reconciles."""

    index: int | None
    """Index into the ladder (equal to the index into ``spec.rollout.steps`` while on a
    step; ``len(steps)`` when the target lies beyond the last step); None = not started."""
    last_step_time: datetime | None
    """When the current step was taken; None = not started."""


NOT_STARTED: Final = StepState(index=None, last_step_time=None)
"""The state of a rollout that has no steps, is rolled back, or has not begun."""


class StepResult(NamedTuple):
    """The outcome of :func:`next_effective_percent`."""

    effective_percent: int
    """The percent in force now."""
    state: StepState
    """The state to store (equal to the input when nothing moved)."""
    reason: Reason
    """Why (see :data:`Reason`)."""


def ladder(steps: list[int], target: int) -> list[int]:
    """The percents a stepped rollout climbs: the distinct steps below ``target``, then it.

    Steps at or above the target are dropped (the API server already refuses steps
    past the target), so the effective percent never exceeds ``spec.rollout.percent``.
    """
    return [*sorted({s for s in steps if 0 <= s < target}), target]


def next_effective_percent(
    rollout: RolloutSpec,
    state: StepState,
    now: datetime,
    healthy: bool,
    *,
    paused: bool = False,
    rolled_back: bool = False,
) -> StepResult:
    """The effective percent now, the step state to store, and the reason.

    - ``enabled: false`` or ``rolled_back`` (an automatic rollback in force) ->
      0, ``RolledBack``; ``percent: 0`` -> 0, ``Disabled``. All three reset the
      state, so re-enabling climbs again from ``steps[0]``.
    - No steps -> the target percent, ``Complete``.
    - Steps, first seen -> ``steps[0]``, clock started at ``now``.
    - Then one step up when ``now - last_step_time >= stepInterval``, ``healthy``
      and not ``paused``; otherwise hold (``HoldingUnhealthy`` / ``Paused`` /
      ``Stepping``). On the last rung (the target), ``Complete``.

    A state whose index lies past the ladder (the steps were shortened) is clamped
    to the target. Raises ValueError for a malformed ``stepInterval``.
    """
    if not rollout.enabled or rolled_back:
        return StepResult(0, NOT_STARTED, ROLLED_BACK)
    if rollout.percent == 0:
        return StepResult(0, NOT_STARTED, DISABLED)
    if not rollout.steps:
        return StepResult(rollout.percent, NOT_STARTED, COMPLETE)

    rungs = ladder(rollout.steps, rollout.percent)
    last = len(rungs) - 1
    if state.index is None or state.last_step_time is None:
        index, state = 0, StepState(index=0, last_step_time=now)
    else:
        index = min(max(state.index, 0), last)
        interval = timedelta(seconds=parse_duration(rollout.step_interval))
        due = now - state.last_step_time >= interval
        if index < last and due and healthy and not paused:
            index, state = index + 1, StepState(index=index + 1, last_step_time=now)
        elif index != state.index:
            state = StepState(index=index, last_step_time=state.last_step_time)

    reason: Reason
    if index == last:
        reason = COMPLETE
    elif paused:
        reason = PAUSED
    elif not healthy:
        reason = HOLDING_UNHEALTHY
    else:
        reason = STEPPING
    return StepResult(rungs[index], state, reason)
