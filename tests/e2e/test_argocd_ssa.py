"""Argo CD and the operator sharing a consumer Deployment (server-side apply, a real API
server and the real kubectl).

Argo CD syncs with server-side apply as the field manager ``argocd-controller``; the
operator injects ``REDIS_URL``/``REDIS_ENABLED`` with its own (``cachetier-operator``).
Checked: a re-sync of the unchanged Git manifest is accepted with no conflict and keeps
the injected env; ``kubectl diff --server-side --field-manager=argocd-controller`` of
the Git manifest (the server-side diff Argo CD computes) shows nothing; a change in Git
(replicas) syncs and the env stays; and the managed fields split exactly as the README's
``ignoreDifferences: managedFieldsManagers: [cachetier-operator]`` assumes: the injected
entries are the operator's, the Git manifest's are Argo's.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from cachetier import names
from tests.e2e.helpers import Operator, get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(300)

ARGO = "argocd-controller"
TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: argo-cache, namespace: {ns}}}
spec:
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
  consumers: {{selector: {{matchLabels: {{app: argo-demo}}}}}}
  rollout: {{enabled: true, percent: 100}}
"""
GIT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: argo-demo, namespace: {ns}, labels: {{app: argo-demo}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: argo-demo}}}}
  template:
    metadata: {{labels: {{app: argo-demo}}}}
    spec:
      containers:
        - name: app
          image: cachetier/demo-app:0.1.0
          env:
            - {{name: PORT, value: "8080"}}
"""


def _argo(cluster: Any, verb: str, manifest: str) -> subprocess.CompletedProcess[str]:
    """``kubectl apply|diff --server-side --field-manager=argocd-controller -f -``."""
    return subprocess.run(
        [
            cluster.kubectl, "--kubeconfig", cluster.kubeconfig, verb, "--server-side",
            f"--field-manager={ARGO}", "-f", "-",
        ],
        input=manifest, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _env(cluster: Any, ns: str) -> list[str]:
    dep = get_json(cluster, "deployment", ns, "argo-demo") or {}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    return [e["name"] for e in container.get("env") or []]


def _owned(cluster: Any, ns: str) -> dict[str, str]:
    """Each applier's fields (kubectl hides managedFields unless asked)."""
    dep = json.loads(
        cluster.run_kubectl(
            "get", "deployment", "argo-demo", "-n", ns, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    return {
        entry["manager"]: json.dumps(entry.get("fieldsV1") or {})
        for entry in dep["metadata"].get("managedFields") or []
        if entry.get("operation") == "Apply"
    }


def test_an_argo_cd_sync_keeps_the_injected_env_and_shows_no_diff(
    kube_cluster: Any, namespace: str, operator: Operator
) -> None:
    ns = namespace
    first = _argo(kube_cluster, "apply", GIT.format(ns=ns, replicas=0))
    assert first.returncode == 0, first.stderr
    kubectl_apply(kube_cluster, TIER.format(ns=ns))
    wait_for(
        lambda: {names.ENV_REDIS_URL, names.ENV_REDIS_ENABLED} <= set(_env(kube_cluster, ns)),
        timeout=120,
        what="REDIS_URL and REDIS_ENABLED injected",
    )
    injected = _env(kube_cluster, ns)

    again = _argo(kube_cluster, "apply", GIT.format(ns=ns, replicas=0))  # a re-sync
    assert again.returncode == 0 and "conflict" not in again.stderr.lower(), again.stderr
    assert _env(kube_cluster, ns) == injected
    diff = _argo(kube_cluster, "diff", GIT.format(ns=ns, replicas=0))
    assert diff.returncode == 0 and diff.stdout == "", f"a diff after sync:\n{diff.stdout}"

    owned = _owned(kube_cluster, ns)
    for var in (names.ENV_REDIS_URL, names.ENV_REDIS_ENABLED):
        key = f'"k:{{\\"name\\":\\"{var}\\"}}"'
        assert key in owned[names.FIELD_MANAGER], (var, owned)
        assert key not in owned[ARGO], (var, owned[ARGO])
    assert '"k:{\\"name\\":\\"PORT\\"}"' in owned[ARGO]

    changed = _argo(kube_cluster, "apply", GIT.format(ns=ns, replicas=1))  # Git changed
    assert changed.returncode == 0, changed.stderr
    dep = get_json(kube_cluster, "deployment", ns, "argo-demo") or {}
    assert dep["spec"]["replicas"] == 1
    assert _env(kube_cluster, ns) == injected
    diff = _argo(kube_cluster, "diff", GIT.format(ns=ns, replicas=1))
    assert diff.returncode == 0 and diff.stdout == "", f"a diff after sync:\n{diff.stdout}"
