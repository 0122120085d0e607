"""What a mode strategy is given and returns (the Protocols of the mode modules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from cachetier.api.models import CacheTierSpec
from cachetier.kube.client import Kube
from cachetier.reconcile import conditions as cond
from cachetier.render import TierRef, TierSecrets


@dataclass
class TierContext:
    """One reconcile of one tier, as the strategies see it."""

    body: dict[str, Any]
    ref: TierRef
    spec: CacheTierSpec
    previous_phase: str | None
    status: dict[str, Any] = field(default_factory=dict)
    """Status fields the strategy fills (``endpoint``, ``connectionSecret``, ``cluster``)."""
    tls_ca: str | None = None
    """A TLS tier's CA (PEM, from its Secret), for the operator's own Redis connections."""


@dataclass
class Outcome:
    """The strategy's verdict, and when to reconcile again (None: on the next event)."""

    verdict: cond.Verdict
    requeue: float | None = None


class Workbench(Protocol):
    """What the reconciler offers every strategy (the shared I/O steps)."""

    kube: Kube

    def tier_secrets(
        self, ref: TierRef, spec: CacheTierSpec, body: dict[str, Any] | None = None
    ) -> TierSecrets: ...

    def require_tls_secret(self, ref: TierRef, spec: CacheTierSpec) -> str | None: ...

    def apply_children(self, body: dict[str, Any], desired: list[dict[str, Any]]) -> list[str]: ...

    def observe_statefulset(self, ref: TierRef, want: int) -> cond.WorkloadObservation: ...

    def external_connection(self, ref: TierRef, spec: CacheTierSpec) -> dict[str, Any]: ...


class Mode(Protocol):
    """One ``spec.mode``: bring the workload to the spec and judge it."""

    def reconcile(self, bench: Workbench, ctx: TierContext) -> Outcome:
        """Render, apply and observe the mode's children; raise TemporaryError or
        SpecError as the reconcile does for missing dependencies and bad specs."""
        ...

    def forget(self, namespace: str, name: str) -> None:
        """The tier is gone: drop any state kept for it."""
        ...
