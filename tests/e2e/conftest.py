"""Fixtures shared by the e2e tests.

- ``crd_installed`` (session): applies ``crds/cachetier.yaml`` to the test cluster
  and waits until the CRD is Established and ``cachetiers`` is served. The CRD
  is left installed (the local control plane is thrown away after the session;
  on an existing cluster it is what ``make demo`` would install anyway).
- ``operator`` (session): the operator running in this process under
  ``kopf.testing.KopfRunner``; ``Operator`` gives tests its write counter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachetier import names
from cachetier.handlers import tier as tier_handlers
from tests.conftest import KubeCluster
from tests.e2e.helpers import ERRORS, Operator, start_operator, unexpected

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "cachetier.yaml"
CRD_NAME = f"{names.PLURAL}.{names.GROUP}"


@pytest.fixture(scope="session")
def crd_installed(kube_cluster: KubeCluster) -> None:
    """The CacheTier CRD, installed from crds/ and ready to serve."""
    kube_cluster.run_kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=cachetier-e2e",
        "-f",
        str(CRD_FILE),
    )
    # kubectl wait fails at once (".status.conditions accessor error") while the API
    # server has not written the new CRD's conditions yet: try again until it has.
    deadline = time.monotonic() + 60
    while True:
        wait = kube_cluster.run_kubectl(
            "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s",
            timeout=90, check=False,
        )  # fmt: skip
        if wait.returncode == 0:
            break
        if "accessor error" not in wait.stderr or time.monotonic() > deadline:
            raise AssertionError(f"CRD {CRD_NAME} not Established: {wait.stderr.strip()}")
        time.sleep(0.5)
    # Established can come a moment before kubectl's discovery sees the resource.
    deadline = time.monotonic() + 30
    while True:
        probe = kube_cluster.run_kubectl(
            "get", names.PLURAL, "--all-namespaces", "-o", "name", check=False
        )
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{names.PLURAL} not served: {probe.stderr.strip()}")
        time.sleep(0.5)


RESYNC_SECONDS = 10
"""The operator's full-resync period in the e2e session (60 s in production)."""


@pytest.fixture(scope="session")
def operator(kube_cluster: Any, crd_installed: None) -> Iterator[Operator]:
    """The operator, running in this process (kopf.testing.KopfRunner) for the session."""
    os.environ["CACHETIER_RESYNC_INTERVAL"] = str(RESYNC_SECONDS)
    # No fixed port in tests: the in-process operator serves no metrics port (tests
    # read its registry), and operators the tests start inherit that.
    os.environ["CACHETIER_METRICS_PORT"] = "0"
    yield from start_operator()


@pytest.fixture(autouse=True)
def no_unexpected_operator_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if anything in this process logged an ERROR it did not expect.

    The operator runs in this process, so its ERROR lines and tracebacks (kopf's
    included) land here. A test that provokes one on purpose names it with
    ``@pytest.mark.operator_errors("regex", ...)``.
    """
    start = ERRORS.mark()
    yield
    allowed = [a for m in request.node.iter_markers("operator_errors") for a in m.args]
    found = unexpected(ERRORS.since(start), allowed)
    if found:
        pytest.fail(
            "the operator logged unexpected ERROR lines during this test:\n"
            + "\n".join(found[:10]),
            pytrace=False,
        )


@pytest.fixture
def operator_ignores_namespace(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tier_handlers.Runtime | None]:
    """If the session's in-process operator runs, make it skip ``namespace`` meanwhile.

    For tests that must see the API server alone (status round trips) or another
    operator (the RBAC test's ServiceAccount-run subprocess).
    """
    rt = tier_handlers.CURRENT
    if rt is not None:
        original = rt.reconcile
        original_rollback = rt.submit_rollback

        def reconcile(ns: str, name: str) -> None:
            if ns != namespace:
                original(ns, name)

        def submit_rollback(body: dict[str, Any] | None, key: tuple[str, str]) -> None:
            if key[0] != namespace:
                original_rollback(body, key)

        monkeypatch.setattr(rt, "reconcile", reconcile)
        monkeypatch.setattr(rt, "submit_rollback", submit_rollback)
    yield rt
