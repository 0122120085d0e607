"""Rollout maths: buckets, pins, pod counts, steps and the auto-rollback verdict.

Pure: no I/O and no clock reads (time is passed in). Everything here is data in,
data out, so the reconciler can call it on every event and the property tests in
``tests/unit/test_rollout.py`` can state the invariants:

- raising the percent never disables a workload;
- ``enabled: false`` disables every workload; percent 0 every unpinned one;
- a pin (``cachetier.io/redis-enabled``) overrides the percentage, not a rollback;
- pod granularity enables exactly ``floor(pods * percent / 100 + 0.5)`` pods.
"""

from cachetier.rollout._autorollback import (
    LatencyVerdict,
    ProbeVerdict,
    describe_errors,
    evaluate_latency,
    evaluate_probe,
)
from cachetier.rollout._buckets import (
    BUCKETS,
    Decision,
    Workload,
    bucket,
    decide,
    parse_pin,
    plan_workloads,
)
from cachetier.rollout._pods import enabled_pod_count, pod_order_key, select_pods
from cachetier.rollout._steps import (
    COMPLETE,
    DISABLED,
    HOLDING_UNHEALTHY,
    NOT_STARTED,
    PAUSED,
    ROLLED_BACK,
    STEPPING,
    Reason,
    StepResult,
    StepState,
    ladder,
    next_effective_percent,
)

__all__ = [
    "BUCKETS",
    "COMPLETE",
    "DISABLED",
    "HOLDING_UNHEALTHY",
    "NOT_STARTED",
    "PAUSED",
    "ROLLED_BACK",
    "STEPPING",
    "Decision",
    "LatencyVerdict",
    "ProbeVerdict",
    "Reason",
    "StepResult",
    "StepState",
    "Workload",
    "bucket",
    "decide",
    "describe_errors",
    "enabled_pod_count",
    "evaluate_latency",
    "evaluate_probe",
    "ladder",
    "next_effective_percent",
    "parse_pin",
    "plan_workloads",
    "pod_order_key",
    "select_pods",
]
