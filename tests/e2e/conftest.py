"""Fixtures shared by the e2e tests.

- ``crd_installed`` (session): applies ``crds/cachetier.yaml`` to the test cluster
  and waits until the CRD is Established and ``cachetiers`` is served. The CRD
  is left installed (the local control plane is thrown away after the session;
  on an existing cluster it is what ``make demo`` would install anyway).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cachetier import names

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "cachetier.yaml"
CRD_NAME = f"{names.PLURAL}.{names.GROUP}"


@pytest.fixture(scope="session")
def crd_installed(kube_cluster: Any) -> None:
    """The CacheTier CRD, installed from crds/ and ready to serve."""
    kube_cluster.run_kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=cachetier-e2e",
        "-f",
        str(CRD_FILE),
    )
    kube_cluster.run_kubectl(
        "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s", timeout=90
    )
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
