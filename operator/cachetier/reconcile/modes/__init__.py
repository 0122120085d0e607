"""The reconcile's mode strategies: one module per ``spec.mode``, one registry.

A strategy brings a tier's workload to its spec and judges it: it renders and
applies the children its mode needs, observes them, and returns the verdict
(phase and conditions), the endpoint for status and when to look again. The
shared part of the reconcile (spec validation, instant rollback, the rollout,
status) is the same for every mode and lives in ``reconcile/tier.py``.

A new mode is a new module here implementing :class:`Mode`, an entry in
:func:`build`, and a profile in ``cachetier.api.modes``.
"""

from __future__ import annotations

from collections.abc import Callable

from cachetier.reconcile.modes.base import Mode, Outcome, TierContext, Workbench
from cachetier.reconcile.modes.cluster import ClusterMode
from cachetier.reconcile.modes.external import ExternalMode
from cachetier.reconcile.modes.standalone import StandaloneMode

__all__ = ["Mode", "Outcome", "TierContext", "Workbench", "build"]


def build(wake: Callable[[str, str], None]) -> dict[str, Mode]:
    """One strategy per mode name (a reconciler keeps them: cluster mode has state)."""
    return {
        "standalone": StandaloneMode(),
        "cluster": ClusterMode(wake),
        "external": ExternalMode(),
    }
