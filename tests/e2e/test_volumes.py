"""Volume expansion on a running tier (real API server, node agent and redis-server).

A standalone tier with an AOF volume holds keys. ``persistence.size`` is raised while
the local StorageClass does not allow expansion: the tier says
``VolumeExpansionUnsupported`` and nothing is changed (the StatefulSet and the claim
stay). With expansion allowed again, the claim grows in place, the StatefulSet is
re-created with the new template (orphaned, not deleted with its pod): the same pod
(uid) keeps running and every key is there. Shrinking is refused by the API server.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cachetier import names
from tests.e2e.helpers import Operator, get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(400)

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: disk, namespace: {ns}}}
spec:
  redis: {{maxmemory: 16mb, persistence: {{mode: aof, size: {size}}}}}
"""
CLASS = "cachetier-local"


def _expansion(cluster: Any, allowed: bool) -> None:
    cluster.run_kubectl(
        "patch", "storageclass", CLASS, "--type=merge",
        "-p", f'{{"allowVolumeExpansion": {str(allowed).lower()}}}',
    )  # fmt: skip


@pytest.fixture
def no_expansion(kube_cluster: Any) -> Iterator[None]:
    """The local class refuses expansion until the test allows it (restored after)."""
    _expansion(kube_cluster, False)
    try:
        yield
    finally:
        _expansion(kube_cluster, True)


def _status(cluster: Any, ns: str) -> dict[str, Any]:
    return dict((get_json(cluster, names.PLURAL, ns, "disk") or {}).get("status") or {})


def _conditions(cluster: Any, ns: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in _status(cluster, ns).get("conditions") or []}


def _template_size(cluster: Any, ns: str) -> str:
    sts = get_json(cluster, "statefulset", ns, names.statefulset("disk")) or {}
    templates = (sts.get("spec") or {}).get("volumeClaimTemplates") or [{}]
    return str(templates[0]["spec"]["resources"]["requests"]["storage"]) if sts else ""


def test_a_larger_size_grows_the_volume_in_place_keeping_pod_and_keys(
    kube_cluster: Any, namespace: str, operator: Operator, no_expansion: None
) -> None:
    ns, claim = namespace, names.claim("disk", 0)
    kubectl_apply(kube_cluster, TIER.format(ns=ns, size="64Mi"))
    wait_for(lambda: _status(kube_cluster, ns).get("phase") == "Ready", timeout=180,
             what="the tier Ready")  # fmt: skip
    pod = get_json(kube_cluster, "pod", ns, f"{names.statefulset('disk')}-0") or {}
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    auth = get_json(kube_cluster, "secret", ns, names.auth_secret("disk")) or {}
    op_pw = base64.b64decode(auth["data"][names.OPERATOR_PASSWORD_KEY]).decode()
    client = redis.Redis(host=ip, username=names.OPERATOR_USER, password=op_pw, socket_timeout=5)
    with client:
        for i in range(500):
            client.set(f"k{i}", str(i))

    # The class cannot expand: said, nothing changed.
    kubectl_apply(kube_cluster, TIER.format(ns=ns, size="128Mi"))
    ready = wait_for(
        lambda: (c := _conditions(kube_cluster, ns).get("Ready"))
        and c["reason"] == "VolumeExpansionUnsupported" and c,
        timeout=60, what="Ready=False, VolumeExpansionUnsupported",
    )  # fmt: skip
    assert ready["status"] == "False" and CLASS in ready["message"], ready
    assert _template_size(kube_cluster, ns) == "64Mi"
    pvc = get_json(kube_cluster, "pvc", ns, claim) or {}
    assert pvc["spec"]["resources"]["requests"]["storage"] == "64Mi"

    # Allowed: the claim grows, the StatefulSet is re-created, the pod is the same one.
    _expansion(kube_cluster, True)
    phases: set[str] = set()

    def grown() -> bool:
        phases.add(str(_status(kube_cluster, ns).get("phase")))
        pvc = get_json(kube_cluster, "pvc", ns, claim) or {}
        capacity = ((pvc.get("status") or {}).get("capacity") or {}).get("storage")
        conditions = _conditions(kube_cluster, ns)
        return (
            capacity == "128Mi"
            and _template_size(kube_cluster, ns) == "128Mi"
            and conditions.get("Ready", {}).get("status") == "True"
            and conditions.get("Progressing", {}).get("status") == "False"
        )

    wait_for(grown, timeout=120, what="the volume grown and the StatefulSet re-created")
    # The pod served throughout: the tier never looked as if it were being created.
    assert phases <= {"Ready", "Degraded"}, phases
    pod = get_json(kube_cluster, "pod", ns, f"{names.statefulset('disk')}-0") or {}
    assert pod["metadata"]["uid"] == uid  # orphaned and adopted: never restarted
    owners = pod["metadata"].get("ownerReferences") or []
    sts = get_json(kube_cluster, "statefulset", ns, names.statefulset("disk")) or {}
    assert [o["uid"] for o in owners] == [sts["metadata"]["uid"]]  # adopted by the new one
    with redis.Redis(
        host=ip, username=names.OPERATOR_USER, password=op_pw, socket_timeout=5
    ) as client:
        assert [client.get(f"k{i}") for i in range(500)] == [str(i).encode() for i in range(500)]

    # Shrinking is refused by the API server, in words.
    proc = subprocess.run(
        [kube_cluster.kubectl, "--kubeconfig", kube_cluster.kubeconfig, "apply", "-f", "-"],
        input=TIER.format(ns=ns, size="64Mi"), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "persistence.size cannot shrink" in proc.stderr, proc.stderr
