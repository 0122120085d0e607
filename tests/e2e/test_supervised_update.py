"""A supervised rolling update of a 3x1 cluster tier under a writer (real processes).

A restart-only ``redis.config`` setting (``tcp-backlog``) changes the pod template; the
StatefulSet (``OnDelete``) waits for the operator, which replaces the pods one at a time:
replicas first, each master only after a coordinated ``CLUSTER FAILOVER`` has made it a
replica. Checked: every pod ends on the new revision, every pod was a replica when the
operator deleted it (``ROLE`` asked at that moment), ``status.update`` counts up to 6/6,
none of 2,000 pre-written keys is lost; the writer's errors and longest gap are printed.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from cachetier import names
from cachetier.handlers import tier as tier_handlers
from cachetier.redis.options import quiet_handshake
from tests.e2e.helpers import ClusterWriter, Operator, get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(600)

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: rolling, namespace: {ns}}}
spec:
  mode: cluster
  cluster: {{shards: 3, replicasPerShard: 1}}
  redis:
    maxmemory: 32mb
    persistence: {{mode: none}}
    config: {config}
"""
KEYS = 2000


def _status(cluster: Any, ns: str) -> dict[str, Any]:
    return dict((get_json(cluster, names.PLURAL, ns, "rolling") or {}).get("status") or {})


def _pods(cluster: Any, ns: str) -> dict[str, dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels("rolling").items())
    items = json.loads(
        cluster.run_kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    )["items"]
    return {p["metadata"]["name"]: p for p in items}


def test_pods_are_replaced_replicas_first_and_masters_after_a_switchover(
    kube_cluster: Any, namespace: str, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = namespace
    kubectl_apply(kube_cluster, TIER.format(ns=ns, config="{}"))

    def ready() -> dict[str, Any] | None:
        st = _status(kube_cluster, ns)
        cl = st.get("cluster") or {}
        ok = st.get("phase") == "Ready" and cl.get("state") == "ok" and cl.get("nodes") == 6
        return st if ok else None

    st = wait_for(ready, timeout=300, what="the cluster tier Ready")
    secret = get_json(kube_cluster, "secret", ns, names.connection_secret("rolling")) or {}
    password = base64.b64decode(secret["data"]["password"]).decode()
    startup = [ClusterNode(*m["address"].rsplit(":", 1)) for m in st["cluster"]["members"]]
    seed = RedisCluster(startup_nodes=startup, password=password, **quiet_handshake())
    try:
        for i in range(KEYS):
            seed.set(f"key:{i}", str(i))
    finally:
        seed.close()

    writer = ClusterWriter(startup, password)
    writer.start()
    before = {name: p["metadata"]["uid"] for name, p in _pods(kube_cluster, ns).items()}
    roles_at_delete: dict[str, str] = {}
    auth = get_json(kube_cluster, "secret", ns, names.auth_secret("rolling")) or {}
    op_pw = base64.b64decode(auth["data"][names.OPERATOR_PASSWORD_KEY]).decode()
    kube = tier_handlers.CURRENT.reconciler.kube  # type: ignore[union-attr]
    delete = kube.delete

    def delete_and_record(kind: str, namespace_: str | None, name: str, **kw: Any) -> None:
        """The operator's own delete, recording what Redis says the pod is right then."""
        if kind == "Pod" and namespace_ == ns:
            pod = get_json(kube_cluster, "pod", ns, name) or {}
            ip = (pod.get("status") or {}).get("podIP", "")
            with redis.Redis(
                host=ip, username=names.OPERATOR_USER, password=op_pw, socket_timeout=2
            ) as r:
                role = r.execute_command("ROLE")[0]
            roles_at_delete[name] = role.decode() if isinstance(role, bytes) else str(role)
        delete(kind, namespace_, name, **kw)

    monkeypatch.setattr(kube, "delete", delete_and_record)
    kubectl_apply(kube_cluster, TIER.format(ns=ns, config='{"tcp-backlog": "256"}'))
    try:

        def rolled() -> bool:
            pods = _pods(kube_cluster, ns)
            sts = get_json(kube_cluster, "statefulset", ns, "rolling") or {}
            revision = (sts.get("status") or {}).get("updateRevision")
            st = _status(kube_cluster, ns)
            update = st.get("update") or {}
            return (
                len(pods) == 6
                and all(
                    p["metadata"]["labels"].get("controller-revision-hash") == revision
                    and p["metadata"]["uid"] != before[n]
                    for n, p in pods.items()
                )
                and update.get("updated") == 6
                and ready() is not None
            )

        try:
            wait_for(rolled, timeout=480, what="every pod replaced", interval=0.3)
        except AssertionError as exc:
            st = _status(kube_cluster, ns)
            pods = {
                n: (p["metadata"]["labels"].get("controller-revision-hash"), p["metadata"]["uid"])
                for n, p in _pods(kube_cluster, ns).items()
            }
            sts = (get_json(kube_cluster, "statefulset", ns, "rolling") or {}).get("status")
            raise AssertionError(
                f"{exc}; pods {pods}; before {before}; sts {sts}; status {json.dumps(st)[:2500]}"
            ) from None
    finally:
        writer.stop.set()
        writer.join(timeout=10)
    print(
        f"\nsupervised update: roles at delete {roles_at_delete}; writer "
        f"{len(writer.acked)} acked, {writer.errors} errors, longest gap {writer.gap:.2f}s",
        file=sys.__stdout__,
        flush=True,
    )
    assert sorted(roles_at_delete) == sorted(before), roles_at_delete
    assert set(roles_at_delete.values()) == {"slave"}, roles_at_delete  # ROLE says "slave"
    members = (_status(kube_cluster, ns).get("cluster") or {}).get("members") or []
    client = RedisCluster(
        startup_nodes=[ClusterNode(*m["address"].rsplit(":", 1)) for m in members],
        password=password, **quiet_handshake(),
    )  # fmt: skip
    try:
        lost = [i for i in range(KEYS) if client.get(f"key:{i}") != str(i).encode()]
    finally:
        client.close()
    assert lost == [], f"{len(lost)} keys lost"
