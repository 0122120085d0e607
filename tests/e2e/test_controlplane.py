"""Smoke test of the cluster the e2e suite runs against.

Proves the API server answers, the controller manager reconciles (Deployment ->
ReplicaSet -> Pod, garbage collection, namespace finalization) and the scheduler
runs (it marks an unschedulable pod as such).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

NO_SUCH_NODE = {"cachetier.io/e2e-no-such-node": "true"}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def deployment(name: str) -> dict[str, Any]:
    """A one-replica Deployment whose pod can never be scheduled (and passes `restricted`)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": NO_SUCH_NODE,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/cachetier-smoke:1",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_readyz(kube_cluster: Any) -> None:
    proc = kube_cluster.run_kubectl("get", "--raw", "/readyz")
    assert proc.stdout.strip() == "ok"


def test_deployment_gets_replicaset_and_pod(kube_api: Any, namespace: str) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    created = apps.create_namespaced_deployment(namespace, deployment("smoke"))

    replica_set = wait_for(
        "a ReplicaSet owned by the Deployment",
        lambda: next(
            (
                rs
                for rs in apps.list_namespaced_replica_set(namespace).items
                if any(o.uid == created.metadata.uid for o in rs.metadata.owner_references or [])
            ),
            None,
        ),
    )
    pod = wait_for(
        "a Pod owned by the ReplicaSet",
        lambda: next(
            (
                p
                for p in core.list_namespaced_pod(namespace).items
                if any(o.uid == replica_set.metadata.uid for o in p.metadata.owner_references or [])
            ),
            None,
        ),
    )

    def unschedulable() -> Any:
        current = core.read_namespaced_pod(pod.metadata.name, namespace)
        for cond in current.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return current
        return None

    current = wait_for("the scheduler to mark the pod unschedulable", unschedulable)
    assert current.status.phase == "Pending"
    assert not current.spec.node_name

    # Garbage collection: deleting the Deployment removes its ReplicaSet and Pod.
    apps.delete_namespaced_deployment("smoke", namespace, propagation_policy="Background")
    wait_for(
        "the ReplicaSet and Pod to be garbage-collected",
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
    )


def test_namespace_deletion_completes(kube_api: Any, namespace: str) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "data"}, "data": {"a": "1"}})
    apps.create_namespaced_deployment(namespace, deployment("doomed"))
    wait_for("a Pod in the namespace", lambda: core.list_namespaced_pod(namespace).items)

    core.delete_namespace(namespace)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    wait_for("the namespace to be finalized and removed", gone, timeout=120)
