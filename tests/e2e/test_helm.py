"""The Helm chart ``charts/cachetier`` with a real Helm (v4, built from the Go module
proxy by ``hack/tools.sh``) against the local control plane.

- ``helm lint`` passes, and ``helm template`` with the default values renders exactly
  the objects ``kubectl kustomize manifests/`` installs (the same CRD file, the same
  RBAC rules, Deployment, PDB, ServiceAccount; Helm's own labels aside), and its
  PrometheusRule is the one under ``manifests/monitoring/``.
- A namespace-scoped release (``watchNamespaces``): ``helm install`` into its own
  namespace creates Roles in the watched namespace only; the operator, run with the
  chart's Deployment's args and env and the chart's ServiceAccount's own token
  (the node agent runs Redis and the demo app, not the operator image), reconciles a
  tier there to Ready with no Forbidden in its log, and may not touch another
  namespace; ``helm upgrade`` changes the Deployment; ``helm uninstall`` leaves no
  object of the release behind, while the CRD and the tier (and its children) stay.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from cachetier.handlers import tier as tier_handlers
from tests.conftest import KubeCluster
from tests.e2e.helpers import CHILDREN, get_json, kubectl_apply, wait_for
from tests.e2e.test_gitops_status import tool
from tests.e2e.test_rbac import FORBIDDEN, _token_kubeconfig

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "cachetier"
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
)
TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: helm-cache, namespace: {ns}}}
spec:
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
"""


HELM_ENV = {
    "HELM_CACHE_HOME": "/tmp/cachetier-helm/cache",
    "HELM_CONFIG_HOME": "/tmp/cachetier-helm/config",
    "HELM_DATA_HOME": "/tmp/cachetier-helm/data",
}


def helm(cluster: KubeCluster | None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm (against ``cluster`` if given) from the repository root; it must succeed."""
    kube = ["--kubeconfig", cluster.kubeconfig] if cluster is not None else []
    proc = subprocess.run(
        [tool("helm"), *kube, *args],
        capture_output=True, text=True, env={**os.environ, **HELM_ENV}, cwd=REPO,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for obj in yaml.safe_load_all(text):
        if obj:
            out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def _without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with Helm's labels dropped everywhere (metadata and pod template) and the
    rules of a role in a canonical order."""
    obj = json.loads(json.dumps(obj))
    for meta in (
        obj.get("metadata"),
        ((obj.get("spec") or {}).get("template") or {}).get("metadata"),
    ):
        labels = (meta or {}).get("labels") or {}
        for key in HELM_LABELS:
            labels.pop(key, None)
    if "rules" in obj:
        obj["rules"] = sorted(obj["rules"], key=lambda r: json.dumps(r, sort_keys=True))
    return obj


def test_the_chart_renders_what_manifests_install(kube_cluster: KubeCluster) -> None:
    lint = helm(None, "lint", str(CHART))
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    rendered = _objects(
        helm(
            None, "template", "cachetier", str(CHART), "-n", "cachetier-system", "--include-crds"
        ).stdout
    )
    kustomized = _objects(
        kube_cluster.run_kubectl("kustomize", str(REPO / "manifests"), timeout=60).stdout
    )
    # Helm installs into a namespace it does not own: the one object left to you.
    assert kustomized.pop(("Namespace", "cachetier-system"))
    assert sorted(rendered) == sorted(kustomized)
    for key, want in kustomized.items():
        assert _without_helm_labels(rendered[key]) == _without_helm_labels(want), key
    assert (CHART / "files" / "prometheusrule.yaml").read_text() == (
        REPO / "manifests" / "monitoring" / "prometheusrule.yaml"
    ).read_text()
    assert (CHART / "files" / "argocd-health.lua").read_text() == (
        REPO / "manifests" / "argocd" / "health.lua"
    ).read_text()
    monitored = _objects(
        helm(
            None,
            "template",
            "cachetier",
            str(CHART),
            "-n",
            "cachetier-system",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "metrics.service.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ).stdout
    )
    rule = yaml.safe_load((REPO / "manifests" / "monitoring" / "prometheusrule.yaml").read_text())
    assert monitored[("PrometheusRule", "cachetier")]["spec"] == rule["spec"]
    assert ("ServiceMonitor", "cachetier-operator") in monitored
    assert ("Service", "cachetier-operator-metrics") in monitored


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _release_objects(cluster: KubeCluster, release: str) -> list[str]:
    kinds = (
        "deployments,serviceaccounts,poddisruptionbudgets,roles,rolebindings,"
        "clusterroles,clusterrolebindings"
    )
    proc = cluster.run_kubectl(
        "get", kinds, "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
    )
    return [line for line in proc.stdout.splitlines() if line.strip()]


def test_a_namespace_scoped_release_installs_reconciles_upgrades_and_uninstalls(
    kube_cluster: KubeCluster,
    namespace: str,
    crd_installed: None,
    operator_ignores_namespace: tier_handlers.Runtime | None,
    tmp_path: Path,
) -> None:
    ns = namespace
    release_ns = f"ct-helm-{uuid.uuid4().hex[:6]}"
    release = f"ct-{uuid.uuid4().hex[:6]}"
    kube_cluster.run_kubectl("create", "namespace", release_ns)
    proc: subprocess.Popen[bytes] | None = None
    try:
        helm(
            kube_cluster, "install", release, str(CHART), "-n", release_ns,
            "--set", f"watchNamespaces={{{ns}}}", "--set", "replicaCount=0",
        )  # fmt: skip
        made = _release_objects(kube_cluster, release)
        roles = [o for o in made if o.startswith("role.")]
        assert roles, made
        role_ns = json.loads(
            kube_cluster.run_kubectl(
                "get", "roles", "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "json"
            ).stdout
        )["items"]
        assert sorted({r["metadata"]["namespace"] for r in role_ns}) == sorted({ns, release_ns})
        sa_user = f"system:serviceaccount:{release_ns}:cachetier-operator"
        for verb, resource, where, want in (
            ("create", "secrets", ns, "yes"),
            ("patch", "deployments.apps", ns, "yes"),
            ("create", "secrets", "default", "no"),
            ("patch", "deployments.apps", "default", "no"),
            ("list", "cachetiers.cachetier.io", "default", "no"),
            ("get", "nodes", "", "yes"),  # clusterReadOnly: placement by zone
            ("list", "secrets", ns, "no"),
        ):
            scope = ["-n", where] if where else []
            answer = kube_cluster.run_kubectl(
                "auth", "can-i", verb, resource, *scope, f"--as={sa_user}", check=False
            ).stdout.strip()
            assert answer == want, (verb, resource, where, answer)

        deployment = get_json(kube_cluster, "deployment", release_ns, "cachetier-operator") or {}
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env_of = {e["name"]: e.get("value") for e in container["env"]}
        assert env_of["WATCH_NAMESPACES"] == ns
        args = list(container["args"])
        i = args.index("--liveness")
        args[i + 1] = f"http://127.0.0.1:{_free_port()}/healthz"  # never a fixed port here
        token = kube_cluster.run_kubectl(
            "create", "token", "cachetier-operator", "-n", release_ns, "--duration", "1h"
        ).stdout.strip()
        kubeconfig = _token_kubeconfig(kube_cluster, token, tmp_path / "sa.kubeconfig")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KUBERNETES_SERVICE") and k != "KUBECONFIG"
        }
        env.update(
            PYTHONUNBUFFERED="1",
            POD_NAME="helm-operator-0",
            CACHETIER_OPERATOR_NAMESPACE=release_ns,  # the downward API's value
            WATCH_NAMESPACES=str(env_of["WATCH_NAMESPACES"]),
        )
        log_path = tmp_path / "operator.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "cachetier.main", *args,
                    "--kubeconfig", str(kubeconfig), "--metrics-port", "0", "--verbose",
                ],
                cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        kubectl_apply(kube_cluster, TIER.format(ns=ns))

        def ready() -> dict[str, Any] | None:
            assert proc is not None and proc.poll() is None, log_path.read_text()[-3000:]
            tier = get_json(kube_cluster, "cachetier", ns, "helm-cache") or {}
            return tier if (tier.get("status") or {}).get("phase") == "Ready" else None

        tier = wait_for(ready, timeout=150, what="the tier Ready (the chart's operator)")
        for kind, pattern in CHILDREN:
            assert get_json(kube_cluster, kind, ns, pattern.format(t="helm-cache")), kind
        if operator_ignores_namespace is not None:
            assert operator_ignores_namespace.kube.writes_for(f"{ns}/helm-cache") == 0
        log = log_path.read_text(errors="replace")
        assert not [line for line in log.splitlines() if FORBIDDEN.search(line)], log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        lease = get_json(kube_cluster, "lease", release_ns, "cachetier-operator") or {}
        assert lease["spec"]["holderIdentity"] == "helm-operator-0"

        helm(
            kube_cluster, "upgrade", release, str(CHART), "-n", release_ns, "--reuse-values",
            "--set", "logFormat=text",
        )  # fmt: skip
        upgraded = get_json(kube_cluster, "deployment", release_ns, "cachetier-operator") or {}
        args_after = upgraded["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args_after[-2:] == ["--log-format", "text"], args_after
        history = json.loads(
            helm(kube_cluster, "history", release, "-n", release_ns, "-o", "json").stdout
        )
        assert [h["revision"] for h in history] == [1, 2]

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        helm(kube_cluster, "uninstall", release, "-n", release_ns, "--wait")
        assert _release_objects(kube_cluster, release) == []
        # The CRD and the tiers are not the release's to remove: uninstalling keeps the
        # tier, its children and so its data.
        crd = kube_cluster.run_kubectl("get", "crd", "cachetiers.cachetier.io", check=False)
        assert crd.returncode == 0, crd.stderr
        still = get_json(kube_cluster, "cachetier", ns, "helm-cache") or {}
        assert still["metadata"]["uid"] == tier["metadata"]["uid"]
        for kind, pattern in CHILDREN:
            assert get_json(kube_cluster, kind, ns, pattern.format(t="helm-cache")), kind
        # Nobody serves its finalizer now (the session's operator ignores the namespace):
        # drop it so that the namespace can go.
        kube_cluster.run_kubectl(
            "patch", "cachetier", "helm-cache", "-n", ns, "--type=merge",
            "-p", '{"metadata":{"finalizers":[]}}',
        )  # fmt: skip
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        kube_cluster.run_kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


def test_the_namespaced_overlay_is_the_charts_namespace_scoped_rendering(
    kube_cluster: KubeCluster, namespace: str, crd_installed: None
) -> None:
    """``overlays/namespaced`` (kustomize, for team-a) renders the same RBAC and env as the
    chart with ``watchNamespaces={team-a}``, and the API server accepts it (dry run, with
    the test's namespace in place of team-a)."""
    overlay = kube_cluster.run_kubectl("kustomize", str(REPO / "overlays" / "namespaced")).stdout
    kustomized = _objects(overlay)
    rendered = _objects(
        helm(
            None, "template", "cachetier", str(CHART), "-n", "cachetier-system",
            "--set", "watchNamespaces={team-a}",
        ).stdout
    )  # fmt: skip
    assert kustomized.pop(("Namespace", "cachetier-system"))
    kustomized.pop(("CustomResourceDefinition", "cachetiers.cachetier.io"))
    assert sorted(rendered) == sorted(kustomized)
    for key, want in kustomized.items():
        assert _without_helm_labels(rendered[key]) == _without_helm_labels(want), key
    assert ("ClusterRole", "cachetier-operator") not in kustomized
    kube_cluster.run_kubectl("apply", "-f", str(REPO / "manifests" / "namespace.yaml"))
    dry = subprocess.run(
        [
            kube_cluster.kubectl, "--kubeconfig", kube_cluster.kubeconfig, "apply",
            "--dry-run=server", "-f", "-",
        ],
        input=overlay.replace("namespace: team-a", f"namespace: {namespace}"),
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert (
        "role.rbac.authorization.k8s.io/cachetier-operator created (server dry run)" in dry.stdout
    )
