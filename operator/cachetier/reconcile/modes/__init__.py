"""The reconcile's mode strategies: one module per ``spec.mode``, one registry.

A strategy is pure: from the snapshot of a tier it says which children its mode
needs (``desired``), how ready the tier is, where clients connect and which Redis
actions to take (``judge``). The shared part of the decision (spec validation,
passwords, instant rollback, the rollout, status) is the same for every mode and
lives in ``cachetier.reconcile.decide``; the I/O is the pipeline's
(``cachetier.reconcile.tier``).

A new mode is a new module here implementing :class:`Mode`, an entry in
:data:`MODES`, and a profile in ``cachetier.api.modes``.
"""

from __future__ import annotations

from cachetier.reconcile.modes.base import ConvergeRequest, Inputs, Judgement, LabelChange, Mode
from cachetier.reconcile.modes.cluster import ClusterMode
from cachetier.reconcile.modes.external import ExternalMode
from cachetier.reconcile.modes.replication import ReplicationMode
from cachetier.reconcile.modes.standalone import StandaloneMode

__all__ = ["MODES", "ConvergeRequest", "Inputs", "Judgement", "LabelChange", "Mode"]

MODES: dict[str, Mode] = {
    "standalone": StandaloneMode(),
    "replication": ReplicationMode(),
    "cluster": ClusterMode(),
    "external": ExternalMode(),
}
"""One strategy per mode name (stateless: the state lives in the pipeline)."""
