"""manifests/ against a real API server, and the operator under its own ServiceAccount.

Proven, not assumed (issue 2, item 5):

- ``kubectl apply --dry-run=server -k manifests/`` is accepted (CRD included via ../crds);
- the ClusterRole is least privilege: ``kubectl auth can-i --as=<the ServiceAccount>``
  says yes to what the operator needs and no to what it must not do;
- the operator, run as a subprocess with a TokenRequest token of
  ``cachetier-system/cachetier-operator`` (not the admin kubeconfig), reconciles a
  standalone tier to Ready with every child, and its log has no Forbidden/403.

The session may also run the in-process operator (the ``operator`` fixture, admin
credentials) for other tests. While this test runs it is told to ignore this test's
namespace, and the test asserts it sent no write for the tier, so every object and
status here was written by the ServiceAccount's operator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cachetier.handlers import tier as tier_handlers
from tests.conftest import KubeCluster
from tests.e2e.helpers import CHILDREN, get_json, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
SA_NAMESPACE = "cachetier-system"
SA_NAME = "cachetier-operator"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"

TIER_NAME = "rbac-cache"
TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  redis:
    maxmemory: 32mb
    persistence: {{mode: none}}
"""


# (verb, resource, extra kubectl args, expected answer) for `kubectl auth can-i`.
CAN_I = [
    ("get", "secrets", [], "yes"),
    ("create", "secrets", [], "yes"),
    ("patch", "statefulsets.apps", [], "yes"),
    ("patch", "cachetiers.cachetier.io", ["--subresource=status"], "yes"),
    ("watch", "pods", [], "yes"),
    ("delete", "pods", [], "yes"),  # supervised update of a cluster tier
    ("delete", "secrets", [], "no"),
    ("list", "secrets", [], "no"),  # read by name only: not every Secret of the cluster
    ("watch", "secrets", [], "no"),
    ("list", "configmaps", [], "yes"),  # watched (label selector): the watch caches
    ("watch", "services", [], "yes"),
    ("watch", "poddisruptionbudgets.policy", [], "yes"),
    ("watch", "networkpolicies.networking.k8s.io", [], "yes"),
    ("update", "secrets", [], "no"),
    ("create", "cachetiers.cachetier.io", [], "no"),
    ("delete", "cachetiers.cachetier.io", [], "no"),
    ("delete", "statefulsets.apps", [], "yes"),  # volume expansion: orphan, re-create
    ("get", "persistentvolumeclaims", [], "yes"),
    ("patch", "persistentvolumeclaims", [], "yes"),  # volume expansion
    ("list", "persistentvolumeclaims", [], "no"),  # read by name only
    ("get", "storageclasses.storage.k8s.io", [], "yes"),  # allowVolumeExpansion?
    ("list", "storageclasses.storage.k8s.io", [], "no"),
    ("create", "deployments.apps", [], "no"),
    ("delete", "persistentvolumeclaims", [], "no"),
    ("create", "pods", [], "no"),
    ("create", "pods", ["--subresource=exec"], "no"),
    ("get", "nodes", [], "yes"),  # a node's zone, for placement
    ("list", "nodes", [], "no"),
    ("patch", "nodes", [], "no"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", [], "no"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", [], "no"),
    ("impersonate", "serviceaccounts", [], "no"),
    ("*", "*", [], "no"),
]
# Leader election: the Lease of its own namespace, nowhere else.
CAN_I_NAMESPACED = [
    ("get", "leases.coordination.k8s.io", ["-n", SA_NAMESPACE], "yes"),
    ("create", "leases.coordination.k8s.io", ["-n", SA_NAMESPACE], "yes"),
    ("patch", "leases.coordination.k8s.io", ["-n", SA_NAMESPACE], "yes"),
    ("delete", "leases.coordination.k8s.io", ["-n", SA_NAMESPACE], "no"),
    ("patch", "leases.coordination.k8s.io", ["-n", "default"], "no"),
]

# "403 Forbidden: ..." (ApiError), kopf's APIForbiddenError, "status": 403 in a body;
# not the milliseconds of a timestamp (",403").
FORBIDDEN = re.compile(r"forbidden|[^\d,.]403\b", re.IGNORECASE)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _token_kubeconfig(cluster: KubeCluster, token: str, dest: Path) -> Path:
    """A kubeconfig with the admin kubeconfig's server and CA, and only ``token``."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    contexts = {c["name"]: c["context"] for c in admin["contexts"]}
    clusters = {c["name"]: c["cluster"] for c in admin["clusters"]}
    current = contexts.get(admin.get("current-context")) or next(iter(contexts.values()))
    server = clusters[current["cluster"]]
    entry = {"server": server["server"]}
    for key in ("certificate-authority-data", "certificate-authority"):
        if key in server:
            entry[key] = server[key]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": entry}],
        "users": [{"name": SA_NAME, "user": {"token": token}}],
        "contexts": [{"name": SA_NAME, "context": {"cluster": "cluster", "user": SA_NAME}}],
        "current-context": SA_NAME,
    }
    dest.write_text(yaml.safe_dump(config))
    dest.chmod(0o600)
    return dest


@pytest.fixture
def operator_rbac(kube_cluster: KubeCluster, crd_installed: None) -> None:
    """manifests/ namespace, ServiceAccount and RBAC really applied (not the Deployment)."""
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        kube_cluster.run_kubectl("apply", "-f", str(MANIFESTS / name))
    wait_for(
        lambda: (
            kube_cluster.run_kubectl(
                "get", "sa", SA_NAME, "-n", SA_NAMESPACE, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="ServiceAccount",
    )


def test_manifests_dry_run(kube_cluster: KubeCluster, operator_rbac: None) -> None:
    """The whole kustomization (CRD, namespace, SA, RBAC, Deployment) passes the API server."""
    proc = kube_cluster.run_kubectl("apply", "--dry-run=server", "-k", str(MANIFESTS), timeout=90)
    out = proc.stdout
    for kind_name in (
        "customresourcedefinition.apiextensions.k8s.io/cachetiers.cachetier.io",
        f"namespace/{SA_NAMESPACE}",
        f"serviceaccount/{SA_NAME}",
        f"clusterrole.rbac.authorization.k8s.io/{SA_NAME}",
        f"clusterrolebinding.rbac.authorization.k8s.io/{SA_NAME}",
        f"deployment.apps/{SA_NAME}",
        f"poddisruptionbudget.policy/{SA_NAME}",
        f"role.rbac.authorization.k8s.io/{SA_NAME}-leader",
    ):
        assert kind_name in out, f"{kind_name} missing from dry-run output:\n{out}"
    assert "(server dry run)" in out


def test_kubectl_apply_f_crds_directory(kube_cluster: KubeCluster) -> None:
    """``kubectl apply -f crds/`` (the habit most operator READMEs teach) works."""
    crds = MANIFESTS.parent / "crds"
    proc = kube_cluster.run_kubectl("apply", "--dry-run=server", "-f", str(crds), timeout=90)
    assert "customresourcedefinition.apiextensions.k8s.io/cachetiers.cachetier.io" in proc.stdout
    # and kustomize still reads the directory
    proc = kube_cluster.run_kubectl("kustomize", str(crds), timeout=60)
    assert "name: cachetiers.cachetier.io" in proc.stdout


def test_least_privilege(kube_cluster: KubeCluster, operator_rbac: None) -> None:
    """The ServiceAccount may do what the operator needs, and nothing destructive."""
    wrong = []
    for verb, resource, extra, expected in CAN_I:
        proc = kube_cluster.run_kubectl(
            "auth", "can-i", verb, resource, "-A", *extra, f"--as={SA_USER}", check=False
        )
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
        if answer != expected:
            wrong.append(f"can-i {verb} {resource} {' '.join(extra)}: {answer!r} != {expected}")
    for verb, resource, extra, expected in CAN_I_NAMESPACED:
        proc = kube_cluster.run_kubectl(
            "auth", "can-i", verb, resource, *extra, f"--as={SA_USER}", check=False
        )
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
        if answer != expected:
            wrong.append(f"can-i {verb} {resource} {' '.join(extra)}: {answer!r} != {expected}")
    assert not wrong, "\n".join(wrong)


def test_operator_reconciles_with_service_account_token(
    kube_cluster: KubeCluster,
    namespace: str,
    operator_rbac: None,
    operator_ignores_namespace: tier_handlers.Runtime | None,
    tmp_path: Path,
) -> None:
    ns, name = namespace, TIER_NAME
    token = kube_cluster.run_kubectl(
        "create", "token", SA_NAME, "-n", SA_NAMESPACE, "--duration", "1h"
    ).stdout.strip()
    assert token.count(".") == 2, "not a JWT"
    kubeconfig = _token_kubeconfig(kube_cluster, token, tmp_path / "sa.kubeconfig")
    # The kubeconfig authenticates as the ServiceAccount, not as admin.
    whoami = kube_cluster.run_kubectl(
        "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json"
    )
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == SA_USER

    log_path = tmp_path / "operator.log"
    # --kubeconfig alone (no KUBECONFIG variable) must be enough for kopf's login too.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KUBERNETES_SERVICE") and k != "KUBECONFIG"
    }
    env.update(PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cachetier.main",
                "--kubeconfig",
                str(kubeconfig),
                "--liveness",
                f"http://127.0.0.1:{_free_port()}/healthz",
                "--verbose",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        subprocess.run(
            [kube_cluster.kubectl, "--kubeconfig", kube_cluster.kubeconfig, "apply", "-f", "-"],
            input=TIER.format(name=name, ns=ns),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

        def ready() -> dict[str, Any] | None:
            assert proc.poll() is None, f"operator exited:\n{log_path.read_text()[-3000:]}"
            tier = get_json(kube_cluster, "cachetier", ns, name)
            status = (tier or {}).get("status") or {}
            return tier if status.get("conditions") and status.get("phase") == "Ready" else None

        tier = wait_for(ready, timeout=120, what="phase Ready with conditions", interval=1.0)
        uid = tier["metadata"]["uid"]
        assert tier["status"]["observedGeneration"] == tier["metadata"]["generation"]
        for kind, pattern in CHILDREN:
            obj = get_json(kube_cluster, kind, ns, pattern.format(t=name))
            assert obj is not None, f"{kind} {pattern.format(t=name)} missing"
            owners = obj["metadata"].get("ownerReferences") or []
            assert [o["uid"] for o in owners] == [uid], f"{kind} owner"
        # The events it posted are the ServiceAccount's too.
        events = kube_cluster.run_kubectl(
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        )
        assert json.loads(events.stdout)["items"], "no Event posted on the tier"
        # The operator under test did the work: it logged its writes, and the
        # in-process (admin) operator, if any, sent none for this tier.
        if operator_ignores_namespace is not None:
            assert operator_ignores_namespace.kube.writes_for(f"{ns}/{name}") == 0
        # Deletion too: the operator's finalizer is removed under the same RBAC (and the
        # namespace is not left Terminating behind a finalizer nobody serves).
        kube_cluster.run_kubectl(
            "delete", "cachetier", name, "-n", ns, "--wait=true", "--timeout=60s", timeout=90
        )
        assert get_json(kube_cluster, "cachetier", ns, name) is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    log = log_path.read_text(errors="replace")
    writes = [
        line for line in log.splitlines() if f"/namespaces/{ns}/" in line and "write " in line
    ]
    assert writes, f"no writes for {ns} in the operator log:\n{log[-3000:]}"
    # A namespace being deleted (an earlier test's) refuses new Events with 403 too
    # ("because it is being terminated"): namespace lifecycle, not RBAC. Requests
    # into other tests' namespaces are judged by that message alone.
    denied = [
        line
        for line in log.splitlines()
        if FORBIDDEN.search(line)
        and "being terminated" not in line
        and ("/namespaces/" not in line or f"/namespaces/{ns}/" in line)
    ]
    assert not denied, "the ServiceAccount was refused:\n" + "\n".join(denied[:20])
    assert "Traceback" not in log, log[-3000:]


pytestmark = pytest.mark.timeout(300)
