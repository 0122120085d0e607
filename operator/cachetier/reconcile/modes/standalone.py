"""``mode: standalone``: one Redis pod behind a Service; Ready when it serves."""

from __future__ import annotations

from cachetier.reconcile.modes._operated import reconcile_operated
from cachetier.reconcile.modes.base import Outcome, TierContext, Workbench


class StandaloneMode:
    """Standalone Redis: the common operated path, nothing more."""

    def reconcile(self, bench: Workbench, ctx: TierContext) -> Outcome:
        return reconcile_operated(bench, ctx)

    def forget(self, namespace: str, name: str) -> None:
        return None
