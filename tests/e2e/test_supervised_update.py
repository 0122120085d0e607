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
import contextlib
import json
import sys
import time
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


REPLICATION_TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: rolling-r, namespace: {ns}}}
spec:
  mode: replication
  replication: {{replicas: 2, sentinels: 3, downAfterMilliseconds: 2000, failoverTimeout: 10000}}
  redis:
    maxmemory: 32mb
    persistence: {{mode: aof, size: 64Mi}}
    config: {config}
"""


def test_replication_pods_are_replaced_replicas_first_and_the_primary_after_a_switchover(
    kube_cluster: Any, namespace: str, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replication tier: replicas replaced one at a time, then ``SENTINEL FAILOVER``
    (writes paused on the old primary until its replicas have its offset), then the
    old primary's pod; a writer on ``REDIS_URL`` loses no acknowledged write."""
    from tests.e2e.test_replication import Writer

    ns, tier = namespace, "rolling-r"
    kubectl_apply(kube_cluster, REPLICATION_TIER.format(ns=ns, config="{}"))

    def ready() -> dict[str, Any] | None:
        st = dict((get_json(kube_cluster, names.PLURAL, ns, tier) or {}).get("status") or {})
        repl = st.get("replication") or {}
        ok = st.get("phase") == "Ready" and repl.get("primary") and len(repl["replicas"]) == 2
        return st if ok and all(r["linkUp"] for r in repl["replicas"]) else None

    wait_for(ready, timeout=300, what="the replication tier Ready")
    conn = get_json(kube_cluster, "secret", ns, names.connection_secret(tier)) or {}
    url = base64.b64decode(conn["data"]["url"]).decode()
    with redis.from_url(url, socket_timeout=5, **quiet_handshake()) as client:
        for i in range(KEYS):
            client.set(f"key:{i}", str(i))
    auth = get_json(kube_cluster, "secret", ns, names.auth_secret(tier)) or {}
    op_pw = base64.b64decode(auth["data"][names.OPERATOR_PASSWORD_KEY]).decode()
    selector = ",".join(
        f"{k}={v}" for k, v in names.component_labels(tier, names.COMPONENT_REDIS).items()
    )
    sentinel_selector = ",".join(
        f"{k}={v}" for k, v in names.component_labels(tier, names.COMPONENT_SENTINEL).items()
    )

    def pods() -> dict[str, dict[str, Any]]:
        out = kube_cluster.run_kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json")
        return {p["metadata"]["name"]: p for p in json.loads(out.stdout)["items"]}

    def sentinel_primary() -> str:
        """The address a majority of the Sentinels name, asked right now."""
        out = kube_cluster.run_kubectl(
            "get", "pods", "-n", ns, "-l", sentinel_selector, "-o", "json"
        )
        votes: dict[str, int] = {}
        for p in json.loads(out.stdout)["items"]:
            ip = (p.get("status") or {}).get("podIP")
            if not ip:
                continue
            with contextlib.suppress(redis.RedisError), redis.Redis(
                host=ip, port=names.SENTINEL_PORT, username=names.OPERATOR_USER,
                password=op_pw, socket_timeout=2, decode_responses=True,
            ) as s:  # fmt: skip
                host = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", tier)[0]
                votes[host] = votes.get(host, 0) + 1
        return max(votes, key=lambda h: votes[h]) if votes else ""

    before = {name: p["metadata"]["uid"] for name, p in pods().items()}
    primary_at_delete: dict[str, bool] = {}
    kube = tier_handlers.CURRENT.reconciler.kube  # type: ignore[union-attr]
    delete = kube.delete

    def delete_and_record(kind: str, namespace_: str | None, name: str, **kw: Any) -> None:
        if kind == "Pod" and namespace_ == ns and name in before:
            ip = ((get_json(kube_cluster, "pod", ns, name) or {}).get("status") or {}).get("podIP")
            primary_at_delete[name] = ip == sentinel_primary()
        delete(kind, namespace_, name, **kw)

    monkeypatch.setattr(kube, "delete", delete_and_record)
    writer = Writer(url)
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, timeout=30, what="the writer going")
    started = time.monotonic()
    kubectl_apply(kube_cluster, REPLICATION_TIER.format(ns=ns, config='{"tcp-backlog": "256"}'))
    try:

        def rolled() -> bool:
            now = pods()
            sts = get_json(kube_cluster, "statefulset", ns, tier) or {}
            revision = (sts.get("status") or {}).get("updateRevision")
            st = ready()
            return (
                len(now) == 3
                and all(
                    p["metadata"]["labels"].get("controller-revision-hash") == revision
                    and p["metadata"]["uid"] != before[n]
                    for n, p in now.items()
                )
                and st is not None
                and (st.get("update") or {}).get("updated") == 3
            )

        try:
            wait_for(rolled, timeout=480, what="every Redis pod replaced", interval=0.3)
        except AssertionError as exc:
            st = (get_json(kube_cluster, names.PLURAL, ns, tier) or {}).get("status")
            raise AssertionError(f"{exc}; status {json.dumps(st)[:2500]}") from None
        took = time.monotonic() - started
        wait_for(lambda: len(writer.acked) > 100, timeout=30, what="the writer still going")
    finally:
        writer.stop.set()
        writer.join(timeout=10)
    gaps = [b - a for a, b in zip(writer.times, writer.times[1:], strict=False)]
    with redis.from_url(url, socket_timeout=5, **quiet_handshake()) as client:
        lost = [i for i in range(KEYS) if client.get(f"key:{i}") != str(i).encode()]
        acked_lost = [i for i in writer.acked if client.get(f"k{i}") != str(i).encode()]
    print(
        f"\nsupervised update (replication): primary at delete {primary_at_delete}; "
        f"{took:.1f}s; writer {len(writer.acked)} acked, {len(writer.failures)} errors, "
        f"longest gap {max(gaps, default=0):.2f}s, {len(acked_lost)} acknowledged writes lost",
        file=sys.__stdout__,
        flush=True,
    )
    assert sorted(primary_at_delete) == sorted(before), primary_at_delete
    assert not any(primary_at_delete.values()), f"a primary was deleted: {primary_at_delete}"
    assert lost == [], f"{len(lost)} pre-written keys lost"
    assert acked_lost == [], f"{len(acked_lost)} acknowledged writes lost"
