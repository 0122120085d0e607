"""Top-level pytest fixtures: a Kubernetes cluster for the end-to-end tests.

- ``kube_cluster`` (session): by default starts the project's local control plane
  (``ctdev.controlplane.ControlPlane``: etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler and, when it exists, the node agent) in ``.local/e2e-<pid>/`` and
  stops it when the session ends. With ``CACHETIER_E2E_USE_EXISTING=1`` and
  ``KUBECONFIG`` set it uses that cluster instead (kind, k3d, a real one) and starts
  nothing. Either way ``KUBECONFIG`` points at the cluster for the whole session, so
  kopf (``kopf.testing.KopfRunner``) and kubectl subprocesses find it.
- ``kube_api`` (session): a ``kubernetes.client.ApiClient`` for that cluster.
- ``namespace`` (function): a fresh namespace named after the test, deleted afterwards.

Tests under ``tests/e2e`` get the ``e2e`` marker automatically (``-m "not e2e"``
deselects them). If the control plane cannot be built or started the tests fail
with the reason; they are never skipped silently.

Environment knobs: ``CACHETIER_E2E_NODE_AGENT=0`` starts no node agent;
``CACHETIER_E2E_KEEP=1`` keeps ``.local/e2e-<pid>/`` (it is kept anyway when a
test failed, for its logs); ``CACHETIER_KUBECTL`` names the kubectl to use.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Import Hypothesis now, while the process has one thread: its pytest plugin would
# otherwise import it lazily at session end, when kopf's thread may still run, and
# CPython 3.11's parser can then fail with "AST constructor recursion depth mismatch".
import hypothesis  # noqa: F401
import pytest

from ctdev.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, kubectl_binary

E2E_DIR = Path(__file__).resolve().parent / "e2e"


@dataclass(frozen=True)
class KubeCluster:
    """The cluster the e2e tests run against."""

    kubeconfig: str
    kubectl: str
    control_plane: ControlPlane | None = None  # None when an existing cluster is used

    def run_kubectl(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster and return the completed process."""
        proc = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e with ``e2e``."""
    for item in items:
        if E2E_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _existing_cluster() -> KubeCluster:
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig:
        pytest.fail("CACHETIER_E2E_USE_EXISTING=1 needs KUBECONFIG to be set", pytrace=False)
    kubectl = os.environ.get("CACHETIER_KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        try:
            kubectl = str(kubectl_binary())
        except ControlPlaneError as err:
            pytest.fail(f"no kubectl on PATH and none could be built: {err}", pytrace=False)
    return KubeCluster(kubeconfig=kubeconfig, kubectl=kubectl)


def _reap_stale_e2e_dirs() -> None:
    """Stop and remove control planes of earlier e2e sessions whose pytest process is gone."""
    for state_dir in (REPO_ROOT / ".local").glob("e2e-*"):
        try:
            os.kill(int(state_dir.name.removeprefix("e2e-")), 0)
            continue  # that session still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        ControlPlane(state_dir, log=lambda _msg: None).stop()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[KubeCluster]:
    """A running cluster: the local control plane, or the one KUBECONFIG names."""
    saved_kubeconfig = os.environ.get("KUBECONFIG")
    if os.environ.get("CACHETIER_E2E_USE_EXISTING") == "1":
        yield _existing_cluster()
        return

    _reap_stale_e2e_dirs()
    state_dir = REPO_ROOT / ".local" / f"e2e-{os.getpid()}"
    control_plane = ControlPlane(
        state_dir, node_agent=os.environ.get("CACHETIER_E2E_NODE_AGENT", "1") != "0"
    )
    try:
        control_plane.start()
    except ControlPlaneError as err:
        pytest.fail(
            f"could not start the local Kubernetes control plane: {err}\n"
            "(binaries come from hack/build-control-plane.sh; to test against another "
            "cluster set CACHETIER_E2E_USE_EXISTING=1 and KUBECONFIG)",
            pytrace=False,
        )
    os.environ["KUBECONFIG"] = str(control_plane.kubeconfig)
    try:
        yield KubeCluster(
            kubeconfig=str(control_plane.kubeconfig),
            kubectl=os.environ.get("CACHETIER_KUBECTL") or str(control_plane.kubectl_path),
            control_plane=control_plane,
        )
    finally:
        if saved_kubeconfig is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved_kubeconfig
        control_plane.stop()
        keep = os.environ.get("CACHETIER_E2E_KEEP") == "1" or request.session.testsfailed
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_api(kube_cluster: KubeCluster) -> Iterator[object]:
    """A ``kubernetes.client.ApiClient`` configured for the test cluster."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=kube_cluster.kubeconfig)
    try:
        yield api_client
    finally:
        api_client.close()


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")
    suffix = secrets.token_hex(3)
    base = f"e2e-{base}"[: 63 - len(suffix) - 1].rstrip("-")
    return f"{base}-{suffix}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_api: object) -> Iterator[str]:
    """A new namespace named after the test (ready for pods); deleted afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_api)
    name = _namespace_name(request.node.name)
    core.create_namespace({"metadata": {"name": name, "labels": {"cachetier.io/e2e": "true"}}})
    try:
        # Pods are rejected until the namespace's default ServiceAccount exists.
        deadline = time.monotonic() + 60
        while True:
            try:
                core.read_namespaced_service_account("default", name)
                break
            except ApiException as err:
                if err.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as err:
            if err.status not in (404, 409):
                raise
