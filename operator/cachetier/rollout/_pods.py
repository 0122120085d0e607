"""Pod-granularity rollout: which of a workload's running pods get the flag.

Pure: no I/O and no clock; purely data-manipulative.

Invariants: exactly ``floor(n * percent / 100 + 0.5)`` pods are chosen (n = the
distinct pod names), computed in integers so no float rounding can miss by one;
the chosen set only grows as the percent rises over the same pods, because the
order (lowest sha256 of the pod name first) does not depend on the percent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def enabled_pod_count(pods: int, percent: int) -> int:
    """``floor(pods * percent / 100 + 0.5)``, SPEC section 4's exact count, in integers.

    ``floor(x + 1/2)`` with ``x = pods * percent / 100`` equals
    ``(2 * pods * percent + 100) // 200``: halves round up (1 pod at 50 % is 1).
    """
    if pods < 0:
        raise ValueError(f"pod count must not be negative, got {pods}")
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within 0..100, got {percent}")
    return (pods * percent * 2 + 100) // 200


def pod_order_key(pod_name: str) -> tuple[str, str]:
    """Sort key of a pod: its sha256 hex digest, then its name (ties are theoretical)."""
    return (hashlib.sha256(pod_name.encode()).hexdigest(), pod_name)


def select_pods(pod_names: Iterable[str], percent: int, enabled: bool) -> set[str]:
    """The pods of one workload that get ``cachetier.io/redis-enabled: "true"``.

    ``pod_names`` are the workload's running pods (duplicates count once).
    ``enabled`` False (a rollback) selects none; otherwise the
    :func:`enabled_pod_count` pods with the lowest sha256 of their name.
    """
    names = set(pod_names)
    count = enabled_pod_count(len(names), percent)
    if not enabled or count == 0:
        return set()
    return set(sorted(names, key=pod_order_key)[:count])
