"""Automatic rollback: is a probe bad, and has the tier had enough bad probes?

Pure: no I/O and no clock; the caller probes Redis and passes the measurements.

The thresholds are the seed guide's alert rules, as ``spec.rollout.autoRollback``
defaults: Redis unreachable, PING latency above 10 ms, error rate above 1 %.
Hit rate is not a rollback criterion: a cold cache has a low hit rate by design.
"""

from __future__ import annotations

from typing import NamedTuple

from cachetier.api.models import AutoRollbackSpec


class ProbeVerdict(NamedTuple):
    """The outcome of :func:`evaluate_probe`."""

    bad: bool
    """This probe breached a threshold (or Redis did not answer)."""
    consecutive_failures: int
    """Bad probes in a row, this one included (0 after a good probe)."""
    rollback: bool
    """Roll back now: auto-rollback is enabled and the failures reached the threshold."""
    message: str
    """Why the probe was bad, naming the measured values and thresholds; "" when good."""


def _ms(value: float) -> str:
    return f"{round(value, 2):g} ms"


def _pct(value: float) -> str:
    return f"{round(value * 100, 2):g} %"


def evaluate_probe(
    auto: AutoRollbackSpec,
    up: bool,
    latency_ms: float | None,
    error_rate: float | None,
    consecutive_failures: int,
) -> ProbeVerdict:
    """Judge one health probe against ``auto``'s thresholds.

    A probe is bad when Redis is not ``up``, or ``latency_ms > maxLatencyMs``, or
    ``error_rate > maxErrorRate`` (a measurement of None is not judged: the first
    probe has no error rate yet). ``consecutive_failures`` is the count before this
    probe; a good probe resets it. ``rollback`` is True on every bad probe from the
    ``failureThreshold``-th on while ``auto.enabled``; the caller makes it idempotent.
    """
    reasons: list[str] = []
    if not up:
        reasons.append("Redis unreachable")
    if latency_ms is not None and latency_ms > auto.max_latency_ms:
        reasons.append(f"PING latency {_ms(latency_ms)} > {_ms(auto.max_latency_ms)}")
    if error_rate is not None and error_rate > auto.max_error_rate:
        reasons.append(f"error rate {_pct(error_rate)} > {_pct(auto.max_error_rate)}")
    if not reasons:
        return ProbeVerdict(bad=False, consecutive_failures=0, rollback=False, message="")

    failures = max(consecutive_failures, 0) + 1
    rollback = auto.enabled and failures >= auto.failure_threshold
    message = (
        f"{'; '.join(reasons)} "
        f"({failures} consecutive bad probe{'s' if failures != 1 else ''}, "
        f"threshold {auto.failure_threshold})"
    )
    return ProbeVerdict(bad=True, consecutive_failures=failures, rollback=rollback, message=message)
