"""Workload-granularity rollout: stable buckets, pins, and the enabled set.

Pure: no I/O and no clock; purely data-manipulative.

Invariants (proved by the property tests in ``tests/unit/test_rollout.py``):

- a workload's bucket depends only on ``namespace/tier/kind/name``, so the same
  workloads are chosen on every run and on every operator replica;
- raising the percent never disables a workload (``bucket < p1`` implies
  ``bucket < p2`` when ``p1 <= p2``);
- ``enabled: false`` disables every workload, pinned or not; percent 0 disables
  every workload that is not pinned ``"true"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

BUCKETS = 100
"""Number of buckets: a workload's bucket is in ``range(BUCKETS)``."""


def bucket(namespace: str, tier: str, kind: str, name: str) -> int:
    """The stable rollout bucket (0..99) of a workload, exactly as SPEC section 4 states it.

    ``int.from_bytes(sha256(f"{namespace}/{tier}/{kind}/{name}".encode()).digest()[:8],
    "big") % 100``. The tier is part of the key so that two tiers ramping over the
    same workloads do not pick the same ones first.
    """
    digest = hashlib.sha256(f"{namespace}/{tier}/{kind}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def parse_pin(value: str | None) -> bool | None:
    """Read a ``cachetier.io/redis-enabled`` annotation value as a pin.

    ``"true"`` and ``"false"`` (any case, surrounding blanks ignored) pin the
    workload on or off; anything else, including a missing annotation, is no pin
    (``None``), so a typo never switches a workload by itself.
    """
    if value is None:
        return None
    word = value.strip().lower()
    if word == "true":
        return True
    if word == "false":
        return False
    return None


@dataclass(frozen=True)
class Workload:
    """A consumer workload as the rollout sees it."""

    kind: str
    """``Deployment`` or ``StatefulSet``."""
    name: str
    """metadata.name of the workload."""
    pin: bool | None
    """The workload's ``cachetier.io/redis-enabled`` pin (see :func:`parse_pin`), or None."""


@dataclass(frozen=True)
class Decision:
    """What the rollout decided for one workload."""

    enabled: bool
    """Whether the workload gets ``REDIS_ENABLED="true"``."""
    pinned: bool
    """Whether a pin decided it (False when the rollout is disabled: the rollback decided)."""
    bucket: int
    """The workload's stable bucket, 0..99 (reported even when a pin decided)."""


def _check_percent(percent: int) -> None:
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within 0..100, got {percent}")


def decide(
    workload_bucket: int, pin: bool | None, *, enabled: bool, effective_percent: int
) -> Decision:
    """Decide one workload from its bucket and pin.

    Rules, in order:

    1. ``enabled`` False (an explicit rollback) disables the workload, even one
       pinned ``"true"``: a rollback must be total, so an SRE never has to hunt
       for annotations while Redis is on fire.
    2. A pin decides otherwise: it overrides the percentage (so a workload pinned
       ``"true"`` stays on at percent 0, and one pinned ``"false"`` stays off at 100).
    3. Otherwise the workload is enabled iff ``bucket < effective_percent``.
    """
    _check_percent(effective_percent)
    if not enabled:
        return Decision(enabled=False, pinned=False, bucket=workload_bucket)
    if pin is not None:
        return Decision(enabled=pin, pinned=True, bucket=workload_bucket)
    return Decision(
        enabled=workload_bucket < effective_percent, pinned=False, bucket=workload_bucket
    )


def plan_workloads(
    namespace: str,
    tier: str,
    workloads: Iterable[Workload],
    *,
    enabled: bool,
    effective_percent: int,
) -> dict[tuple[str, str], Decision]:
    """Decide every consumer workload of a tier, keyed by ``(kind, name)``.

    ``enabled`` is ``spec.rollout.enabled``; ``effective_percent`` is the percent in
    force now (the target, or the current step; see :func:`next_effective_percent`).
    See :func:`decide` for the rules; in short: a pin overrides the percentage but
    not an explicit rollback (``enabled: false`` switches every workload off).
    A workload listed twice under the same kind and name is decided once (last pin wins).
    """
    _check_percent(effective_percent)
    return {
        (w.kind, w.name): decide(
            bucket(namespace, tier, w.kind, w.name),
            w.pin,
            enabled=enabled,
            effective_percent=effective_percent,
        )
        for w in workloads
    }
