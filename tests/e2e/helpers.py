"""Helpers for the e2e tests: polling, and a handle on the operator running in-process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from cachetier.handlers import tier as tier_handlers

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | bool | None], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Operator:
    """The operator running in this process under kopf.testing.KopfRunner."""

    def runtime(self) -> tier_handlers.Runtime:
        rt = tier_handlers.CURRENT
        assert rt is not None, "the operator has not started"
        return rt

    def write_count(self, namespace: str, name: str) -> int:
        """API write requests the operator sent while reconciling this tier."""
        return self.runtime().kube.writes_for(f"{namespace}/{name}")

    def reconcile_now(self, namespace: str, name: str) -> None:
        """Run one reconcile of the tier synchronously (as a watch event would)."""
        self.runtime().reconcile(namespace, name)


def start_operator() -> Iterator[Operator]:
    """Run the operator in a thread (kopf.testing.KopfRunner) against KUBECONFIG."""
    from kopf.testing import KopfRunner

    tier_handlers.CURRENT = None
    args = ["run", "--standalone", "--all-namespaces", "-m", "cachetier.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        wait_for(lambda: tier_handlers.CURRENT, timeout=60, what="operator start-up")
        yield Operator()
    tier_handlers.CURRENT = None
    assert runner.exception is None, runner.exception
