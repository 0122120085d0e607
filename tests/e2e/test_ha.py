"""Two operator replicas, one active (real processes, a real Lease).

Two ``cachetier-operator --leader-elect`` processes share the Lease
``cachetier-operator`` of a test namespace (the in-process operator skips the tier's
namespace meanwhile). The first holds it and reconciles a tier; the second stays a
standby that answers liveness and sends no write for the tier. The active one is
killed (SIGKILL: no release); the standby takes the Lease once it expired and
reconciles the next change. Checked: no write for the tier from the standby before it
leads, no 409 conflict in either log, takeover time printed (the Lease lasts 15 s);
a clean shutdown releases the Lease.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cachetier import names
from cachetier.handlers import tier as tier_handlers
from tests.e2e.helpers import get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: ha, namespace: {ns}}}
spec:
  redis: {{maxmemory: {maxmemory}, persistence: {{mode: none}}}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    def __init__(self, cluster: Any, ns: str, identity: str, log: Path) -> None:
        self.identity, self.log = identity, log
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
        env.pop("KUBECONFIG", None)
        env.update(PYTHONUNBUFFERED="1", POD_NAME=identity, CACHETIER_LOG_FORMAT="text")
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "cachetier.main", "--kubeconfig", cluster.kubeconfig,
                    "--liveness", f"http://127.0.0.1:{self.port}/healthz", "--metrics-port", "0",
                    "--leader-elect", "--lease-namespace", ns, "--verbose",
                ],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def live(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _holder(cluster: Any, ns: str) -> str:
    lease = get_json(cluster, "lease", ns, "cachetier-operator") or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _writes_for(text: str, ns: str) -> list[str]:
    return [line for line in text.splitlines() if "write " in line and f"/namespaces/{ns}/" in line]


def test_two_replicas_one_active_and_the_standby_takes_over(
    kube_cluster: Any,
    namespace: str,
    operator_ignores_namespace: tier_handlers.Runtime | None,
    crd_installed: None,
    tmp_path: Path,
) -> None:
    ns = namespace
    a = Replica(kube_cluster, ns, "op-a", tmp_path / "a.log")
    b: Replica | None = None
    try:
        wait_for(lambda: _holder(kube_cluster, ns) == "op-a", timeout=60, what="op-a leading")
        b = Replica(kube_cluster, ns, "op-b", tmp_path / "b.log")
        wait_for(lambda: "standby" in b.text(), timeout=60, what="op-b a standby")
        wait_for(b.live, timeout=30, what="the standby answering liveness")
        kubectl_apply(kube_cluster, TIER.format(ns=ns, maxmemory="32mb"))

        def ready() -> dict[str, Any] | None:
            assert a.proc.poll() is None, a.text()[-3000:]
            tier = get_json(kube_cluster, names.PLURAL, ns, "ha") or {}
            return tier if (tier.get("status") or {}).get("phase") == "Ready" else None

        wait_for(ready, timeout=120, what="the tier Ready (reconciled by op-a)")
        assert _writes_for(a.text(), ns), "op-a sent no write for the tier"
        assert _writes_for(b.text(), ns) == [], "the standby wrote while op-a led"
        assert a.live()

        a.proc.kill()  # no release: the Lease must expire
        a.proc.wait(timeout=10)
        killed = time.monotonic()
        wait_for(lambda: _holder(kube_cluster, ns) == "op-b", timeout=60, what="op-b leading")
        took_lease = time.monotonic() - killed
        kubectl_apply(kube_cluster, TIER.format(ns=ns, maxmemory="48mb"))

        def observed() -> bool:
            tier = get_json(kube_cluster, names.PLURAL, ns, "ha") or {}
            st = tier.get("status") or {}
            return (
                st.get("observedGeneration") == tier["metadata"]["generation"]
                and st.get("phase") == "Ready"
            )

        wait_for(observed, timeout=120, what="the change reconciled by op-b")
        reconciled = time.monotonic() - killed
        assert _writes_for(b.text(), ns), "op-b sent no write after taking over"
        print(
            f"\nHA: standby took the Lease {took_lease:.1f}s after the leader's SIGKILL "
            f"(lease 15 s), reconciled the next change {reconciled:.1f}s after",
            file=sys.__stdout__,
            flush=True,
        )
        for replica in (a, b):
            text = replica.text()
            conflicts = [line for line in text.splitlines() if " 409" in line or "Conflict" in line]
            assert conflicts == [], (replica.identity, conflicts[:3])
            tracebacks = [line for line in text.splitlines() if "Traceback" in line]
            assert tracebacks == [], (replica.identity, text[-3000:])
        b.stop()
        assert b.proc.returncode == 0, b.text()[-2000:]
        assert _holder(kube_cluster, ns) == "", "a clean shutdown releases the Lease"
        assert "released lease" in b.text()
    finally:
        a.stop()
        if b is not None:
            b.stop()
