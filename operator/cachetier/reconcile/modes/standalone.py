"""``mode: standalone``: one Redis pod behind a Service; Ready when it serves."""

from __future__ import annotations

from typing import Any

from cachetier.api.models import CacheTierSpec
from cachetier.reconcile.modes import _operated
from cachetier.reconcile.modes.base import Inputs, Judgement
from cachetier.reconcile.observed import Key, Observed
from cachetier.render import TierRef


class StandaloneMode:
    """Standalone Redis: the common operated path, nothing more."""

    def child_keys(self, ref: TierRef, spec: CacheTierSpec) -> list[Key]:
        return _operated.operated_keys(ref, spec)

    def wants_pods(self, obs: Observed, spec: CacheTierSpec) -> bool:
        return _operated.wants_pods(obs, spec)

    def desired(self, inputs: Inputs) -> list[dict[str, Any]]:
        return _operated.operated_desired(inputs)

    def judge(self, inputs: Inputs, desired: list[dict[str, Any]], written: set[Key]) -> Judgement:
        return _operated.operated_judge(inputs, desired, written)[1]
