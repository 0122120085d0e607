"""The operator SIGKILLed at random points converges, and loses nothing.

A real operator process (``python -m cachetier.main``) is killed with SIGKILL at a
random moment of each step — create a tier and two consumers, raise the percent,
change maxmemory, roll back, re-enable — and started again. At the end the tier is
Ready for its latest generation, both consumers carry exactly one of each injected env
entry, the password is the one generated first, and every object of the tier is owned
by it (no orphans). The same for the formation of a 3x1 Redis Cluster, which then
also heals by itself with no operator running. The seed is printed, so a failure can
be replayed (``CACHETIER_FAULT_SEED``).
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cachetier.handlers import tier as tier_handlers
from tests.e2e.helpers import get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
TIER = "faulty"
TIER_YAML = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: faulty, namespace: {ns}}}
spec:
  redis: {{maxmemory: {maxmemory}, persistence: {{mode: none}}}}
  consumers: {{selector: {{matchLabels: {{app: faulty}}}}}}
  rollout: {{enabled: {enabled}, percent: {percent}}}
"""
CONSUMER = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}, labels: {{app: faulty}}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: app, image: example/app:1}}]}}
"""
STEPS = [
    {"maxmemory": "32mb", "enabled": "true", "percent": 100},
    {"maxmemory": "32mb", "enabled": "true", "percent": 50},
    {"maxmemory": "48mb", "enabled": "true", "percent": 50},
    {"maxmemory": "48mb", "enabled": "false", "percent": 50},
    {"maxmemory": "48mb", "enabled": "true", "percent": 100},
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """The operator as its own process, against the admin kubeconfig."""

    def __init__(self, kubeconfig: str, log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CACHETIER_PROBE_INTERVAL": "2"}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "cachetier.main", "--kubeconfig", kubeconfig),
                    *("--liveness", f"http://127.0.0.1:{_free_port()}/healthz"),
                    *("--metrics-port", "0"),
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def test_sigkill_at_random_points_converges_and_loses_nothing(
    kube_cluster: Any,
    namespace: str,
    crd_installed: None,
    operator_ignores_namespace: tier_handlers.Runtime | None,
    tmp_path: Path,
) -> None:
    ns = namespace
    seed = int(os.environ.get("CACHETIER_FAULT_SEED") or random.randrange(1 << 30))
    print(f"CACHETIER_FAULT_SEED={seed}")
    rng = random.Random(seed)
    log = tmp_path / "operator.log"
    password: str | None = None
    for index, step in enumerate(STEPS):
        op = OperatorProcess(kube_cluster.kubeconfig, log)
        try:
            kubectl_apply(kube_cluster, TIER_YAML.format(ns=ns, **step))
            if index == 0:
                for name in ("api", "worker"):
                    kubectl_apply(kube_cluster, CONSUMER.format(ns=ns, name=name))
            time.sleep(rng.uniform(0.2, 3.0))
        finally:
            op.kill()
        auth = get_json(kube_cluster, "secret", ns, f"{TIER}-auth")
        if auth is not None:
            current = base64.b64decode(auth["data"]["password"]).decode()
            assert password in (None, current), "the password changed across a SIGKILL"
            password = current

    final = OperatorProcess(kube_cluster.kubeconfig, log)
    try:

        def converged() -> dict[str, Any] | None:
            tier = get_json(kube_cluster, "cachetier", ns, TIER) or {}
            st = tier.get("status") or {}
            fresh = st.get("observedGeneration") == tier["metadata"]["generation"]
            enabled = (st.get("consumers") or {}).get("enabled")
            return tier if fresh and st.get("phase") == "Ready" and enabled == 2 else None

        wait_for(converged, timeout=180, what=f"convergence (seed {seed})", interval=1)
    finally:
        final.stop()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]

    auth = get_json(kube_cluster, "secret", ns, f"{TIER}-auth") or {}
    assert base64.b64decode(auth["data"]["password"]).decode() == password
    for name in ("api", "worker"):
        dep = get_json(kube_cluster, "deployment", ns, name) or {}
        for container in dep["spec"]["template"]["spec"]["containers"]:
            counts = Counter(e["name"] for e in container.get("env") or [])
            assert all(n == 1 for n in counts.values()), f"{name}: duplicate env {counts}"
            env = {e["name"]: e for e in container["env"]}
            assert env["REDIS_ENABLED"]["value"] == "true"
            assert set(env) >= {"REDIS_URL", "REDIS_PASSWORD", "REDIS_MODE"}
    _assert_owned(kube_cluster, ns, TIER)


CLUSTER_KILL_ROUNDS = 4

CLUSTER_YAML = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: selfheal, namespace: {ns}}}
spec:
  mode: cluster
  cluster: {{shards: 3, replicasPerShard: 1}}
  redis: {{maxmemory: 32mb, persistence: {{mode: aof, size: 64Mi}}}}
"""


def _masters_with_replicas(ip: str, password: str) -> dict[str, int]:
    """Node id of every master -> how many replicas follow it (CLUSTER NODES of one node)."""
    import redis

    with redis.Redis(
        host=ip, username="cachetier-operator", password=password, socket_timeout=2
    ) as node:
        raw = node.execute_command("CLUSTER", "NODES")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    rows = [line.split() for line in text.splitlines() if line.strip()]
    masters = {r[0]: 0 for r in rows if "master" in r[2].split(",")}
    for r in rows:
        if "slave" in r[2].split(",") and r[3] in masters:
            masters[r[3]] += 1
    return masters


def _assert_owned(cluster: Any, ns: str, name: str) -> None:
    """Every object labelled with the tier is owned by it (no orphans)."""
    tier = get_json(cluster, "cachetier", ns, name) or {}
    uid = tier["metadata"]["uid"]
    listed = cluster.run_kubectl(
        "get", "secret,configmap,service,statefulset,poddisruptionbudget,networkpolicy",
        "-n", ns, "-l", f"app.kubernetes.io/instance={name}", "-o", "json",
    )  # fmt: skip
    orphans = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in json.loads(listed.stdout)["items"]
        if uid not in [r.get("uid") for r in o["metadata"].get("ownerReferences") or []]
    ]
    assert not orphans, f"not owned by the tier: {orphans}"


def _cluster_info(ip: str, password: str) -> str:
    import redis

    with redis.Redis(
        host=ip, username="cachetier-operator", password=password, socket_timeout=2
    ) as node:
        info = node.execute_command("CLUSTER", "INFO")
    if isinstance(info, dict):
        return "\n".join(f"{k}:{v}" for k, v in info.items())
    return info.decode() if isinstance(info, bytes) else str(info)


def test_cluster_formation_survives_sigkills_then_heals_without_the_operator(
    kube_cluster: Any,
    namespace: str,
    crd_installed: None,
    operator_ignores_namespace: tier_handlers.Runtime | None,
    tmp_path: Path,
) -> None:
    """Two faults on one 3x1 cluster (they share its pods, the slow part).

    1. The operator SIGKILLed at random points while it forms the cluster (bounded
       rounds, seed printed): the next operator finishes the formation — every node
       ``cluster_state:ok`` with 16384 slots and 6 known nodes, three masters with one
       replica each, the passwords generated first, nothing orphaned.
    2. Every pod of the formed cluster replaced at once (new IPs), no operator running:
       the nodes find each other by name (the resolve-peers init container) and serve.
    """
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    from tests.e2e.helpers import pod_ips

    ns, name = namespace, "selfheal"
    seed = int(os.environ.get("CACHETIER_FAULT_SEED") or random.randrange(1 << 30))
    print(f"CACHETIER_FAULT_SEED={seed}")
    rng = random.Random(seed)
    log = tmp_path / "operator.log"
    passwords: dict[str, str] | None = None
    kubectl_apply(kube_cluster, CLUSTER_YAML.format(ns=ns))
    for _ in range(CLUSTER_KILL_ROUNDS):
        op = OperatorProcess(kube_cluster.kubeconfig, log)
        try:
            time.sleep(rng.uniform(2.0, 15.0))
        finally:
            op.kill()
        auth = get_json(kube_cluster, "secret", ns, f"{name}-auth")
        if auth is not None:
            current = {k: base64.b64decode(v).decode() for k, v in auth["data"].items()}
            assert passwords in (None, current), "a password changed across a SIGKILL"
            passwords = current

    op = OperatorProcess(kube_cluster.kubeconfig, log)
    try:

        def formed() -> bool:
            tier = get_json(kube_cluster, "cachetier", ns, name) or {}
            st = tier.get("status") or {}
            return st.get("phase") == "Ready" and (st.get("cluster") or {}).get("state") == "ok"

        wait_for(formed, timeout=300, what=f"the cluster formed (seed {seed})", interval=2)
    finally:
        op.stop()
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-3000:]
    auth = get_json(kube_cluster, "secret", ns, f"{name}-auth") or {}
    final = {k: base64.b64decode(v).decode() for k, v in auth["data"].items()}
    assert passwords in (None, final), "a password changed after the SIGKILL rounds"
    ips = pod_ips(kube_cluster, ns, name)
    for info in (_cluster_info(ip, final["operator-password"]) for ip in ips):
        assert "cluster_state:ok" in info, info
        assert "cluster_slots_assigned:16384" in info, info
        assert "cluster_known_nodes:6" in info, info
    masters = _masters_with_replicas(ips[0], final["operator-password"])
    assert sorted(masters.values()) == [1, 1, 1], f"masters and their replica counts: {masters}"
    _assert_owned(kube_cluster, ns, name)

    connection = get_json(kube_cluster, "secret", ns, f"{name}-connection") or {}
    password = base64.b64decode(connection["data"]["password"]).decode()
    auth = get_json(kube_cluster, "secret", ns, f"{name}-auth") or {}
    op_pw = base64.b64decode(auth["data"]["operator-password"]).decode()
    startup = [ClusterNode(ip, 6379) for ip in pod_ips(kube_cluster, ns, name)]
    with RedisCluster(startup_nodes=startup, password=password, socket_timeout=5) as client:
        for i in range(300):
            client.set(f"k{i}", str(i))

    old = set(pod_ips(kube_cluster, ns, name))
    kube_cluster.run_kubectl(
        "delete", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={name}", "--wait=false"
    )

    def replaced() -> list[str] | None:
        ips = pod_ips(kube_cluster, ns, name)
        return ips if len(ips) == 6 and not set(ips) & old else None

    ips = wait_for(replaced, timeout=180, what="six pods with new addresses", interval=1)

    def healed() -> bool:
        try:
            infos = [_cluster_info(ip, op_pw) for ip in ips]
        except redis.RedisError:
            return False
        return all("cluster_state:ok" in i and "cluster_known_nodes:6" in i for i in infos)

    wait_for(healed, timeout=180, what="every node cluster_state:ok, no operator", interval=2)
    startup = [ClusterNode(ip, 6379) for ip in ips]
    with RedisCluster(startup_nodes=startup, password=password, socket_timeout=5) as client:
        assert all(client.get(f"k{i}") == str(i).encode() for i in range(300))
