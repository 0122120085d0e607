"""Failure domains on three worker nodes in three zones (real agents, redis-server).

The module adds the workers ``cachetier-a``/``-b``/``-c`` (zones a, b, c) to the
session's cluster and removes them at the end; the tiers here require a zone label, so
their pods land on the workers only (the session's own node has none). The cases share
those nodes:

- a 3 x 1 cluster tier is spread: masters on three nodes, no replica beside its master;
  a master's node is stopped the way a machine dies (agent and pod processes SIGKILLed)
  while a cluster client writes: the cluster is ``ok`` again with 16,384 slots covered,
  none of 5,000 pre-written keys is lost, the status reports the loss; the node started
  again, the planner moves the master role back (``CLUSTER FAILOVER``, no FORCE) and
  the placement is ``Spread``;
- a replication tier: 5,000 keys acknowledged by both replicas (WAIT), then the
  primary's node stopped under a `REDIS_URL` writer: a replica on another node is
  promoted, writes resume, none of the keys is lost;
- a 3 x 1 cluster tier pinned by ``nodeSelector`` to one zone cannot be spread: it
  is Ready, ``Degraded`` with reason ``PlacementDegraded``, and ``kubectl get ct`` says
  so.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from cachetier import names
from cachetier.redis.options import quiet_handshake
from tests.e2e.helpers import ClusterWriter, Operator, get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(600)

T = TypeVar("T")

ZONES = ("a", "b", "c")
KEYS = 5000

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  mode: cluster
  cluster: {{shards: 3, replicasPerShard: 1}}
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
  scheduling:
{scheduling}
"""

ON_WORKERS = """\
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
          - matchExpressions:
            - {key: topology.kubernetes.io/zone, operator: Exists}"""

IN_ZONE_A = """\
    nodeSelector: {topology.kubernetes.io/zone: a}"""


@pytest.fixture(scope="module")
def workers(kube_cluster: Any) -> Iterator[list[str]]:
    """Three worker nodes in zones a, b, c, Ready; removed (agents and Nodes) afterwards."""
    from ctdev.controlplane.nodes import worker

    cp = kube_cluster.control_plane
    if cp is None:
        pytest.skip("needs the local control plane (it starts and stops node agents)")
    specs = [worker(z) for z in ZONES]
    try:
        for spec in specs:
            cp.add_node(spec)
        yield [s.name for s in specs]
    finally:
        _drain(kube_cluster, [s.name for s in specs])
        for spec in specs:
            with contextlib.suppress(Exception):
                cp.remove_node(spec.name)
            kube_cluster.run_kubectl("delete", "node", spec.name, "--wait=false", check=False)


def _drain(cluster: Any, nodes: list[str]) -> None:
    """Wait (bounded) until no pod runs on ``nodes``: tests' namespaces are being deleted."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pods = json.loads(
            cluster.run_kubectl("get", "pods", "-A", "-o", "json", check=False).stdout or "{}"
        ).get("items", [])
        if not [p for p in pods if (p.get("spec") or {}).get("nodeName") in nodes]:
            return
        time.sleep(1)


def _say(line: str) -> None:
    """A line on the real stdout (pytest -s; the in-process operator swaps sys.stdout)."""
    print(line, file=sys.__stdout__, flush=True)


def _tier(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    return get_json(cluster, names.PLURAL, ns, name) or {}


def _password(cluster: Any, ns: str, name: str) -> str:
    secret = get_json(cluster, "secret", ns, names.connection_secret(name)) or {}
    return base64.b64decode(secret["data"]["password"]).decode()


def _pods(cluster: Any, ns: str, name: str) -> dict[str, dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(name).items())
    items = json.loads(
        cluster.run_kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    )["items"]
    return {p["metadata"]["name"]: p for p in items}


def _where(cluster: Any, ns: str, name: str) -> str:
    """What a failed wait saw: the tier's status and each pod's node, phase, Ready
    condition (status and message) and IP."""

    def ready(st: dict[str, Any]) -> str:
        for c in st.get("conditions") or []:
            if c.get("type") == "Ready":
                return f"Ready={c.get('status')} {c.get('reason') or ''} {c.get('message') or ''}"
        return "Ready=?"

    pods = {
        pod: (
            p["spec"].get("nodeName"),
            (p.get("status") or {}).get("phase"),
            ready(p.get("status") or {}).strip(),
            (p.get("status") or {}).get("podIP"),
        )
        for pod, p in _pods(cluster, ns, name).items()
    }
    return f"pods: {pods}; status: {json.dumps(_tier(cluster, ns, name).get('status'))[:3000]}"


def _wait(cluster: Any, ns: str, name: str, probe: Callable[[], T | None], **kwargs: Any) -> T:
    """`wait_for` (same arguments), failing with what `_where` sees of the tier."""
    try:
        return wait_for(probe, **kwargs)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {_where(cluster, ns, name)}") from None


def _members(tier: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((tier.get("status") or {}).get("cluster") or {}).get("members") or [])


def _spread(tier: dict[str, Any]) -> bool:
    """Every master on its own node, no replica on its master's node."""
    members = _members(tier)
    masters = {m["id"]: m for m in members if m["role"] == "master"}
    if len(masters) != 3 or len({m["node"] for m in masters.values()}) != 3:
        return False
    replicas = [m for m in members if m["role"] == "replica"]
    return len(replicas) == 3 and all(
        r.get("masterId") in masters and masters[r["masterId"]]["node"] != r["node"]
        for r in replicas
    )


def _settled(cluster: Any, ns: str, name: str, placement: str) -> dict[str, Any] | None:
    tier = _tier(cluster, ns, name)
    st = tier.get("status") or {}
    cl = st.get("cluster") or {}
    ok = (
        st.get("phase") == "Ready"
        and cl.get("state") == "ok"
        and cl.get("slotsAssigned") == 16384
        and len(_members(tier)) == 6
        and cl.get("placement") == placement
    )
    return tier if ok else None


def _cluster_info(addr: str, password: str) -> dict[str, str]:
    host, port = addr.rsplit(":", 1)
    with redis.Redis(
        host=host, port=int(port), password=password, socket_timeout=2, **quiet_handshake()
    ) as r:
        info = r.execute_command("CLUSTER INFO")
    if isinstance(info, dict):  # redis-py parses the reply
        return {str(k): str(v) for k, v in info.items()}
    text = info.decode() if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _slots_served_by(survivors: list[str], ids: set[str], password: str) -> int:
    """Slots whose master (in a survivor's CLUSTER SLOTS) has one of the node ``ids``."""
    host, port = survivors[0].rsplit(":", 1)
    with redis.Redis(
        host=host, port=int(port), password=password, socket_timeout=2, **quiet_handshake()
    ) as r:
        ranges = r.execute_command("CLUSTER SLOTS")
    served = 0
    for start, end, master, *_ in ranges:
        node_id = master[2].decode() if isinstance(master[2], bytes) else str(master[2])
        if node_id in ids:
            served += int(end) - int(start) + 1
    return served


def _in_sync(members: list[dict[str, Any]], password: str) -> bool:
    """Every master's replica has acknowledged the master's whole replication stream."""
    for m in members:
        if m["role"] != "master":
            continue
        host, port = m["address"].rsplit(":", 1)
        with redis.Redis(
            host=host, port=int(port), password=password, socket_timeout=2, **quiet_handshake()
        ) as r:
            info = r.info("replication")
        slaves = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        if not slaves or any(s.get("offset") != info["master_repl_offset"] for s in slaves):
            return False
    return True


def test_cluster_tier_is_spread_and_loses_nothing_with_a_node(
    kube_cluster: Any, namespace: str, operator: Operator, workers: list[str]
) -> None:
    ns, name = namespace, "spread"
    cp = kube_cluster.control_plane
    kubectl_apply(kube_cluster, TIER.format(ns=ns, name=name, scheduling=ON_WORKERS))
    tier = _wait(
        kube_cluster, ns, name, lambda: _settled(kube_cluster, ns, name, "Spread"),
        timeout=300, what="a spread cluster",
    )  # fmt: skip
    assert _spread(tier), _members(tier)
    pods = _pods(kube_cluster, ns, name)
    assert {p["spec"]["nodeName"] for p in pods.values()} <= set(workers)
    assert {m["zone"] for m in _members(tier)} == set(ZONES)
    assert (tier["status"]["cluster"].get("sharedDomains") or 0) == 0

    password = _password(kube_cluster, ns, name)
    startup = [ClusterNode(*m["address"].rsplit(":", 1)) for m in _members(tier)]
    seed = RedisCluster(
        startup_nodes=startup, password=password, socket_timeout=5, **quiet_handshake()
    )
    try:
        for start in range(0, KEYS, 500):
            pipe = seed.pipeline()
            for i in range(start, start + 500):
                pipe.set(f"key:{i}", str(i))
            pipe.execute()
    finally:
        seed.close()
    wait_for(lambda: _in_sync(_members(tier), password), timeout=30, what="replicas in sync")

    writer = ClusterWriter(startup, password)
    writer.start()
    victim = next(m for m in _members(tier) if m["role"] == "master")["node"]
    survivors = [m["address"] for m in _members(tier) if m["node"] != victim]
    survivor_ids = {m["id"] for m in _members(tier) if m["node"] != victim}
    try:
        wait_for(lambda: len(writer.acked) > 50, timeout=30, what="the writer writing")
        stopped_at = time.monotonic()
        cp.stop_node(victim)

        def cluster_ok() -> bool:
            """Every survivor says ok, and survivors' masters serve every slot (right after
            the kill the others still say ok: they have not noticed yet)."""
            with contextlib.suppress(redis.RedisError):
                infos = [_cluster_info(a, password) for a in survivors]
                return _slots_served_by(survivors, survivor_ids, password) == 16384 and all(
                    i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                    for i in infos
                )
            return False

        wait_for(cluster_ok, timeout=120, what="cluster_state:ok without the stopped node")
        recovered_s = time.monotonic() - stopped_at
        acked_before = len(writer.acked)
        wait_for(lambda: len(writer.acked) > acked_before + 50, timeout=60, what="writes resuming")

        def loss_reported() -> dict[str, Any] | None:
            st = _tier(kube_cluster, ns, name).get("status") or {}
            members = (st.get("cluster") or {}).get("members") or []
            on_victim = [m for m in members if m["node"] == victim]
            ready = {c["type"]: c for c in st.get("conditions") or []}.get("Ready") or {}
            lost = on_victim and not any(m["healthy"] for m in on_victim)
            return st if lost and ready.get("status") == "False" else None

        lost_status = _wait(
            kube_cluster, ns, name, loss_reported,
            timeout=120, what="status marking the stopped node's members",
        )  # fmt: skip

        def node_marked() -> bool:
            node = json.loads(kube_cluster.run_kubectl("get", "node", victim, "-o", "json").stdout)
            ready = {c["type"]: c for c in node["status"].get("conditions") or []}.get("Ready")
            taints = {t["key"] for t in node["spec"].get("taints") or []}
            return (ready or {}).get("status") != "True" and (
                "node.kubernetes.io/unreachable" in taints
            )

        # The machine died as far as Kubernetes can tell: no heartbeats, so the node
        # lifecycle controller marked the Node and tainted it.
        wait_for(node_marked, timeout=60, what=f"{victim} NotReady and tainted unreachable")

        client = RedisCluster(
            startup_nodes=[ClusterNode(*a.rsplit(":", 1)) for a in survivors],
            password=password, socket_timeout=5, **quiet_handshake(),
        )  # fmt: skip
        try:
            lost = [i for i in range(KEYS) if client.get(f"key:{i}") != str(i).encode()]
        finally:
            client.close()
        assert lost == [], f"{len(lost)} of {KEYS} keys lost, e.g. {lost[:5]}"
    finally:
        cp.start_node(victim)
        writer.stop.set()
        writer.join(timeout=10)

    repaired_at = time.monotonic()
    tier = _wait(
        kube_cluster, ns, name, lambda: _settled(kube_cluster, ns, name, "Spread"),
        timeout=300, what="placement repaired after the node's return", interval=2,
    )  # fmt: skip
    assert _spread(tier), _members(tier)
    # The cluster served throughout: the prober went to another node, no auto-rollback.
    rolled = {c["type"]: c for c in tier["status"]["conditions"]}.get("RolledBack") or {}
    assert rolled.get("status") != "True", rolled
    _say(f"\nstatus during the loss: {json.dumps(lost_status.get('cluster'))[:600]}")
    _say(
        f"node loss: cluster ok after {recovered_s:.1f}s, placement repaired "
        f"{time.monotonic() - repaired_at:.1f}s after the node's return; writer "
        f"{len(writer.acked)} acked, {writer.errors} errors; 0/{KEYS} keys lost"
    )


def test_a_spread_that_scheduling_forbids_is_reported(
    kube_cluster: Any, namespace: str, operator: Operator, workers: list[str]
) -> None:
    ns, name = namespace, "pinned"
    kubectl_apply(kube_cluster, TIER.format(ns=ns, name=name, scheduling=IN_ZONE_A))
    tier = _wait(
        kube_cluster, ns, name, lambda: _settled(kube_cluster, ns, name, "Degraded"),
        timeout=300, what="a Ready tier whose placement is Degraded",
    )  # fmt: skip
    assert {p["spec"]["nodeName"] for p in _pods(kube_cluster, ns, name).values()} == {
        "cachetier-a"
    }
    st = tier["status"]
    assert st["cluster"]["sharedDomains"] == 3
    conditions = {c["type"]: c for c in st["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "PlacementDegraded"
    row = kube_cluster.run_kubectl("get", names.SHORT_NAMES[0], name, "-n", ns).stdout
    assert "Degraded" in row.splitlines()[1], row


REPLICATED = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  mode: replication
  replication: {{replicas: 2, sentinels: 3, downAfterMilliseconds: 2000, failoverTimeout: 10000}}
  redis: {{maxmemory: 32mb, persistence: {{mode: aof, size: 64Mi}}}}
  scheduling:
{scheduling}
"""


def test_replication_tier_promotes_a_replica_on_another_node(
    kube_cluster: Any, namespace: str, operator: Operator, workers: list[str]
) -> None:
    from tests.e2e.test_replication import Writer

    ns, name = namespace, "replicated"
    cp = kube_cluster.control_plane
    kubectl_apply(kube_cluster, REPLICATED.format(ns=ns, name=name, scheduling=ON_WORKERS))

    def spread() -> dict[str, Any] | None:
        st = _tier(kube_cluster, ns, name).get("status") or {}
        rs = st.get("replication") or {}
        ok = st.get("phase") == "Ready" and rs.get("placement") == "Spread"
        return rs if ok and len(rs.get("replicas") or []) == 2 else None

    rs = wait_for(spread, timeout=300, what="a Ready, spread replication tier")
    nodes = [rs["primaryNode"], *(r["node"] for r in rs["replicas"])]
    assert len(set(nodes)) == 3 and set(nodes) <= set(workers), rs
    assert {rs["primaryZone"], *(r["zone"] for r in rs["replicas"])} == set(ZONES)
    selector = ",".join(f"{k}={v}" for k, v in names.sentinel_selector_labels(name).items())
    sentinel_pods = json.loads(
        kube_cluster.run_kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    )["items"]
    sentinel_nodes = {p["spec"].get("nodeName") for p in sentinel_pods}
    # Preferred anti-affinity (a preference: the scheduler may still pair two).
    assert len(sentinel_pods) == 3 and len(sentinel_nodes) >= 2, sentinel_nodes
    _say(f"\nsentinels on {sorted(n or '-' for n in sentinel_nodes)}")

    secret = get_json(kube_cluster, "secret", ns, names.connection_secret(name)) or {}
    url = base64.b64decode(secret["data"]["url"]).decode()
    # Keys every replica has acknowledged (WAIT) before the node dies: none may be lost.
    with redis.from_url(url, socket_timeout=5, **quiet_handshake()) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(KEYS):
            pipe.set(f"key:{i}", str(i))
        pipe.execute()
        assert client.execute_command("WAIT", 2, 10000) == 2
    writer = Writer(url)
    writer.start()
    victim, old_primary = rs["primaryNode"], rs["primary"]
    try:
        wait_for(lambda: len(writer.acked) > 50, timeout=30, what="the writer writing")
        stopped_at = time.monotonic()
        cp.stop_node(victim)

        def promoted() -> dict[str, Any] | None:
            rs = (_tier(kube_cluster, ns, name).get("status") or {}).get("replication") or {}
            moved = rs.get("primary") not in ("", old_primary)
            return rs if moved and rs.get("primaryNode") != victim else None

        after = wait_for(promoted, timeout=120, what="a replica on another node promoted")
        before = len(writer.acked)
        wait_for(lambda: len(writer.acked) > before + 50, timeout=90, what="writes resuming")
        resumed_s = time.monotonic() - stopped_at
    finally:
        cp.start_node(victim)
        writer.stop.set()
        writer.join(timeout=10)
    _say(
        f"primary {old_primary}@{victim} -> {after['primary']}@{after['primaryNode']}; "
        f"writes resumed {resumed_s:.1f}s after the node stopped"
    )

    def whole_again() -> bool:
        st = _tier(kube_cluster, ns, name).get("status") or {}
        rs = st.get("replication") or {}
        replicas = rs.get("replicas") or []
        # Ready or RolledBack: the primary's outage may have rolled the consumers back
        # (auto-rollback: the primary was unreachable for a few probes), as designed.
        return (
            st.get("phase") in ("Ready", "RolledBack")
            and len(replicas) == 2
            and all(r.get("linkUp") for r in replicas)
            and rs.get("placement") == "Spread"
        )

    _wait(
        kube_cluster, ns, name, whole_again,
        timeout=240, what="the old primary back as a linked replica",
    )  # fmt: skip
    with redis.from_url(url, socket_timeout=5, **quiet_handshake()) as client:
        values = client.mget([f"key:{i}" for i in range(KEYS)])
    lost = [i for i, v in enumerate(values) if v != str(i).encode()]
    assert lost == [], f"{len(lost)} of {KEYS} replicated keys lost"
