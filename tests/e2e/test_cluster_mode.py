"""A 3 x 1 Redis Cluster tier on the local control plane (node agent runs real redis-server)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from tests.e2e.helpers import Operator, get_json, kubectl_apply, pod_ips, wait_for

pytestmark = pytest.mark.timeout(400)


def test_cluster_tier_forms_and_serves(
    kube_cluster: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns, name = namespace, "sessions"
    manifest = f"""
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  mode: cluster
  cluster: {{shards: 3, replicasPerShard: 1}}
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
"""
    kubectl_apply(kube_cluster, manifest)

    def ready() -> dict[str, Any] | None:
        tier = get_json(kube_cluster, "cachetier", ns, name)
        return tier if tier and (tier.get("status") or {}).get("phase") == "Ready" else None

    tier = wait_for(ready, timeout=300, what="cluster tier Ready")
    cluster_status = tier["status"]["cluster"]
    assert cluster_status["state"] == "ok"
    assert cluster_status["slotsAssigned"] == 16384
    assert cluster_status["shards"] == 3
    assert cluster_status["nodes"] == 6

    secret = get_json(kube_cluster, "secret", ns, f"{name}-connection")
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["mode"] == "cluster"
    # Clients reach pods by IP here (loopback pod IPs get no Service endpoints).
    startup = [ClusterNode(ip, 6379) for ip in pod_ips(kube_cluster, ns, name)]
    client = RedisCluster(startup_nodes=startup, password=data["password"], socket_timeout=5)
    try:
        for i in range(200):
            client.set(f"key:{i}", str(i))
        assert all(client.get(f"key:{i}") == str(i).encode() for i in range(200))
    finally:
        client.close()

    # Heal: a pod comes back (its emptyDir, so as a new node): the cluster fails
    # over, the newcomer joins, the dead id is forgotten, and every key survives.
    old_uid = get_json(kube_cluster, "pod", ns, f"{name}-0")["metadata"]["uid"]  # type: ignore[index]
    kube_cluster.run_kubectl("delete", "pod", f"{name}-0", "-n", ns, "--wait=false")

    def new_pod_ready() -> bool:
        pod = get_json(kube_cluster, "pod", ns, f"{name}-0")
        if pod is None or pod["metadata"]["uid"] == old_uid or not pod["status"].get("podIP"):
            return False
        return all(c.get("ready") for c in pod["status"].get("containerStatuses") or [{}])

    wait_for(new_pod_ready, timeout=120, what="the replacement pod")

    def healed() -> bool:
        tier = get_json(kube_cluster, "cachetier", ns, name)
        st = (tier or {}).get("status") or {}
        if st.get("phase") != "Ready" or (st.get("cluster") or {}).get("nodes") != 6:
            return False
        return _all_keys_readable(kube_cluster, ns, name, data["password"])

    wait_for(healed, timeout=240, what="cluster healed after losing a pod", interval=2)


def _all_keys_readable(cluster: Any, ns: str, name: str, password: str) -> bool:
    startup = [ClusterNode(ip, 6379) for ip in pod_ips(cluster, ns, name)]
    try:
        client = RedisCluster(startup_nodes=startup, password=password, socket_timeout=2)
    except RedisError:
        return False
    try:
        return all(client.get(f"key:{i}") == str(i).encode() for i in range(200))
    except RedisError:
        return False
    finally:
        client.close()


def test_cluster_tier_scales_out_and_in_keeping_every_key(
    kube_cluster: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    """3 -> 4 -> 3 masters through the CacheTier: slots move with their keys; the
    StatefulSet shrinks only after the retiring node has been drained."""
    ns, name = namespace, "scaling"

    def apply(shards: int) -> None:
        manifest = f"""
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  mode: cluster
  cluster: {{shards: {shards}, replicasPerShard: 0}}
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
"""
        kubectl_apply(kube_cluster, manifest)

    def settled(shards: int) -> dict[str, Any] | None:
        tier = get_json(kube_cluster, "cachetier", ns, name)
        st = (tier or {}).get("status") or {}
        cl = st.get("cluster") or {}
        sts = get_json(kube_cluster, "statefulset", ns, name)
        if (
            st.get("phase") == "Ready"
            and st.get("observedGeneration") == (tier or {})["metadata"]["generation"]
            and cl.get("shards") == shards
            and cl.get("slotsAssigned") == 16384
            and sts is not None
            and sts["spec"]["replicas"] == shards
        ):
            return tier
        return None

    apply(3)
    wait_for(lambda: settled(3), timeout=300, what="3 shards")
    secret = get_json(kube_cluster, "secret", ns, f"{name}-connection")
    assert secret is not None
    password = base64.b64decode(secret["data"]["password"]).decode()
    client = RedisCluster(
        startup_nodes=[ClusterNode(ip, 6379) for ip in pod_ips(kube_cluster, ns, name)],
        password=password,
        socket_timeout=5,
    )
    try:
        for i in range(2000):
            client.set(f"key:{i}", str(i))
    finally:
        client.close()

    apply(4)
    wait_for(lambda: settled(4), timeout=300, what="4 shards, balanced", interval=2)
    assert _count_readable(kube_cluster, ns, name, password, 2000) == 2000

    apply(3)
    wait_for(lambda: settled(3), timeout=300, what="back to 3 shards", interval=2)
    assert _count_readable(kube_cluster, ns, name, password, 2000) == 2000


def _count_readable(cluster: Any, ns: str, name: str, password: str, n: int) -> int:
    startup = [ClusterNode(ip, 6379) for ip in pod_ips(cluster, ns, name)]
    client = RedisCluster(startup_nodes=startup, password=password, socket_timeout=5)
    try:
        return sum(client.get(f"key:{i}") == str(i).encode() for i in range(n))
    finally:
        client.close()
