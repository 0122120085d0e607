"""Automatic rollback: is a probe bad, and has the tier had enough bad probes?

Pure: no I/O and no clock; the caller probes Redis and passes the measurements.

The thresholds are the seed guide's alert rules, as ``spec.rollout.autoRollback``
defaults, graded as the guide grades them: Redis unreachable and an error rate above
1 % are critical (bad probes, which roll back); PING latency above 10 ms is a warning
(:func:`evaluate_latency`: the ``HighLatency`` condition once it lasts), and rolls back
only with ``rollbackOnLatency``. Hit rate is not a criterion: a cold cache has a low
hit rate by design.
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


ADVICE = {
    "NOPERM": "the ACL refused a command to the application user",
    "NOAUTH": "a client did not authenticate (is REDIS_PASSWORD / the URL's password set?)",
    "WRONGPASS": "a client authenticated with a wrong password (stale REDIS_URL?)",
    "OOM": "Redis is out of memory under a noeviction policy (raise maxmemory or evict)",
    "READONLY": "a client wrote to a read-only replica",
    "MOVED": "a client is not cluster-aware (mode cluster needs a cluster client)",
    "CROSSSLOT": "a multi-key command spans hash slots (use hash tags)",
}
"""What each error class usually means, for status and Events."""

COMMAND_ADVICE = {
    "KEYS": "use SCAN (SCAN 0 MATCH pattern COUNT 100) instead of KEYS",
    "FLUSHDB": "delete the keys you own (SCAN + UNLINK) instead of FLUSHDB",
    "FLUSHALL": "delete the keys you own (SCAN + UNLINK) instead of FLUSHALL",
}


def describe_errors(classes: dict[str, int] | None, denied: dict[str, int] | None) -> str:
    """Which error classes made up the errors, e.g. ``NOPERM 97 % (KEYS denied: use SCAN)``.

    ``classes`` are error replies per class in the probe window; ``denied`` the
    commands the ACL refused. Empty when nothing is known.
    """
    if not classes:
        return ""
    total = sum(classes.values())
    parts = []
    for name, count in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))[:3]:
        text = f"{name} {_pct(count / total)}"
        if name == "NOPERM" and denied:
            commands = sorted(denied, key=lambda c: (-denied[c], c))[:3]
            tips = [COMMAND_ADVICE[c] for c in commands if c in COMMAND_ADVICE]
            text += f" ({', '.join(commands)} denied to the application user"
            text += f": {'; '.join(tips)})" if tips else ")"
        elif name in ADVICE:
            text += f" ({ADVICE[name]})"
        parts.append(text)
    return "errors: " + ", ".join(parts)


class LatencyVerdict(NamedTuple):
    """The outcome of :func:`evaluate_latency`."""

    slow: bool
    """The sustained state: latency has stayed above the threshold."""
    streak: int
    """Probes in a row that disagree with ``slow`` (the state flips when it reaches the
    failure threshold)."""
    message: str
    """The measurement against the threshold when slow, else ""."""


def evaluate_latency(
    auto: AutoRollbackSpec, latency_ms: float | None, was_slow: bool, streak: int
) -> LatencyVerdict:
    """Latency as a warning with hysteresis: ``failureThreshold`` probes in a row to flip.

    One slow PING on a busy node changes nothing; a node that stays slow raises the
    warning, and it clears after as many fast probes. A missing measurement keeps
    the state.
    """
    if latency_ms is None:
        return LatencyVerdict(was_slow, 0, "")
    above = latency_ms > auto.max_latency_ms
    streak = streak + 1 if above != was_slow else 0
    slow = was_slow
    if streak >= auto.failure_threshold:
        slow, streak = above, 0
    message = (
        f"PING latency {_ms(latency_ms)} > {_ms(auto.max_latency_ms)} "
        f"for {auto.failure_threshold}+ probes"
        if slow
        else ""
    )
    return LatencyVerdict(slow, streak, message)


def evaluate_probe(
    auto: AutoRollbackSpec,
    up: bool,
    latency_ms: float | None,
    error_rate: float | None,
    consecutive_failures: int,
    *,
    error_classes: dict[str, int] | None = None,
    denied: dict[str, int] | None = None,
) -> ProbeVerdict:
    """Judge one health probe against ``auto``'s thresholds.

    A probe is bad when Redis is not ``up``, or ``error_rate > maxErrorRate``, or
    (with ``rollbackOnLatency`` only) ``latency_ms > maxLatencyMs``; a measurement of
    None is not judged (the first probe has no error rate yet). The message of a bad
    error rate names the error classes (``error_classes``) and, for NOPERM, the
    denied commands. ``consecutive_failures`` is the count before this
    probe; a good probe resets it. ``rollback`` is True on every bad probe from the
    ``failureThreshold``-th on while ``auto.enabled``; the caller makes it idempotent.
    """
    reasons: list[str] = []
    if not up:
        reasons.append("Redis unreachable")
    slow = latency_ms is not None and latency_ms > auto.max_latency_ms
    if slow and auto.rollback_on_latency:
        reasons.append(f"PING latency {_ms(latency_ms or 0.0)} > {_ms(auto.max_latency_ms)}")
    if error_rate is not None and error_rate > auto.max_error_rate:
        text = f"error rate {_pct(error_rate)} > {_pct(auto.max_error_rate)}"
        cause = describe_errors(error_classes, denied)
        reasons.append(f"{text} ({cause})" if cause else text)
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
