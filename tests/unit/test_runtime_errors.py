"""Operator errors are not spec errors: traceback, Event, metric, back-off.

The runtime (``handlers/tier.py``) with an in-memory Kube and a reconciler that
fails the way a bug would; the spec-error side is ``cond.invalid_spec`` through
``SpecError`` (tests/e2e/test_invalid_input.py proves it on a control plane).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cachetier import metrics
from cachetier.api.errors import SpecError
from cachetier.handlers.tier import Runtime

TIER = {
    "apiVersion": "cachetier.io/v1alpha1",
    "kind": "CacheTier",
    "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1},
    "spec": {},
}


class MemoryKube:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    @contextmanager
    def scoped(self, name: str) -> Iterator[None]:
        yield

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return TIER if kind == "CacheTier" else None

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.created.append(obj)
        return obj


def _runtime(fault: BaseException) -> tuple[Runtime, MemoryKube]:
    kube = MemoryKube()
    rt = Runtime(kube)  # type: ignore[arg-type]

    def reconcile(body: dict[str, Any]) -> Any:
        raise fault

    rt.reconciler.reconcile = reconcile  # type: ignore[method-assign]
    return rt, kube


def _errors() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "cachetier_reconciles_total", {"result": "operator_error"}
    )
    return value or 0.0


def test_a_bug_is_logged_with_its_traceback_posted_counted_and_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt, kube = _runtime(KeyError("spec"))
    before = _errors()
    with caplog.at_level(logging.ERROR):
        rt.reconcile("ns", "t")
    record = next(r for r in caplog.records if "reconcile ns/t failed" in r.getMessage())
    assert record.exc_info is not None
    events = [e for e in kube.created if e["kind"] == "Event"]
    assert [e["reason"] for e in events] == ["ReconcileError"]
    assert "operator error KeyError" in events[0]["message"]
    assert _errors() == before + 1
    first = rt.requeue[("ns", "t")]
    rt.requeue.clear()
    rt.reconcile("ns", "t")
    rt.reconcile("ns", "t")
    assert rt.failures[("ns", "t")] == 3  # 1 s, 2 s, 4 s
    assert rt.requeue[("ns", "t")] > first


def test_backoff_is_capped_and_reset_by_a_success() -> None:
    rt, _ = _runtime(RuntimeError("boom"))
    assert [rt._backoff(("ns", "t")) for _ in range(11)][-3:] == [256.0, 300.0, 300.0]
    rt.reconciler.reconcile = lambda body: type("R", (), {"requeue_after": None})()  # type: ignore[method-assign]
    rt.reconcile("ns", "t")
    assert ("ns", "t") not in rt.failures


@pytest.mark.parametrize("url", ["rediss://user:p%zz@h:6379", "http://h:6379", "redis://"])
def test_a_bad_url_in_the_users_secret_is_a_spec_error(url: str) -> None:
    import base64

    from cachetier.api.models import CacheTierSpec
    from cachetier.reconcile.modes import MODES, Inputs
    from cachetier.reconcile.observed import Observed
    from cachetier.render import TierRef

    spec = CacheTierSpec.model_validate(
        {"mode": "external", "external": {"urlSecretRef": {"name": "u", "key": "url"}}}
    )
    secret = {"data": {"url": base64.b64encode(url.encode()).decode()}}
    obs = Observed(
        tier={"metadata": {"name": "t", "namespace": "ns", "uid": "u"}},
        ref=TierRef("t", "ns", "u"),
        spec=spec,
        problems=(),
        secrets={"u": secret},
    )
    with pytest.raises(SpecError, match=r"spec\.external\.urlSecretRef"):
        MODES["external"].desired(Inputs(obs, spec, None, None))
