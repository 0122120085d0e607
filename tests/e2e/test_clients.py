"""Client conformance: node-redis 4, ioredis and redis-py against real tiers.

Two tiers share this module (one standalone, one 3 x 1 cluster). Each client connects
the way the README's "Connect from your application" section says, from exactly what
the operator injects into consumers: ``REDIS_URL``, ``REDIS_PASSWORD`` and
``REDIS_MODE``, read from the ``<tier>-connection`` Secret — the URL's host is the
tier's Service name, resolved as on a real cluster (the session runs with a private
hosts file the node agent keeps; see ``hack/private-hosts.sh``). Checked: SET/GET with
a TTL, PUBLISH/SUBSCRIBE, SCAN, the disabled commands and the administrative ones
refused, and that every client carries on after a master pod is deleted.

The Node.js clients are the pinned packages of ``tests/clients/package-lock.json``,
installed into the cache by ``hack/tools.sh``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Operator, get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "tests" / "clients"
NODE_CLIENTS = ("node-redis", "ioredis")
ALL_CLIENTS = (*NODE_CLIENTS, "redis-py")
MODES = ("standalone", "cluster")
TIER_NAMES = {"standalone": "conf-standalone", "cluster": "conf-cluster"}

TIERS = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: conf-standalone, namespace: {ns}}}
spec:
  redis: {{maxmemory: 32mb, persistence: {{mode: aof, size: 64Mi}}}}
  consumers: {{selector: {{matchLabels: {{app: conformance}}}}}}
  rollout: {{autoRollback: {{maxLatencyMs: 5000}}}}
---
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: conf-cluster, namespace: {ns}}}
spec:
  mode: cluster
  cluster: {{shards: 3, replicasPerShard: 1}}
  redis: {{maxmemory: 32mb, persistence: {{mode: aof, size: 64Mi}}}}
  consumers: {{selector: {{matchLabels: {{app: conformance-cluster}}}}}}
  rollout: {{autoRollback: {{maxLatencyMs: 5000}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app, namespace: {ns}, labels: {{app: conformance}}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: conformance}}}}
  template:
    metadata: {{labels: {{app: conformance}}}}
    spec:
      containers: [{{name: app, image: example/app:1}}]
"""


def _node_path() -> str:
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "tools.sh"), "path", "npm"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = out.stdout.strip()
    assert Path(path, "redis").is_dir() and Path(path, "ioredis").is_dir(), (
        f"node-redis/ioredis not installed in {path}: run `make bootstrap`"
    )
    return path


@pytest.fixture(scope="module")
def conformance_ns(kube_api: Any, operator: Operator, kube_cluster: Any) -> Iterator[str]:
    """One namespace with both tiers Ready, for the whole module."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    ns = f"e2e-clients-{os.getpid()}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"cachetier.io/e2e": "true"}}})
    try:
        wait_for(
            lambda: _has_default_sa(core, ns), timeout=60, what="the namespace's ServiceAccount"
        )
        kubectl_apply(kube_cluster, TIERS.format(ns=ns))
        for mode in MODES:
            wait_for(
                lambda m=mode: _phase(kube_cluster, ns, TIER_NAMES[m]) == "Ready",
                timeout=300,
                what=f"{mode} tier Ready",
                interval=1,
            )
        yield ns
    finally:
        core.delete_namespace(ns, propagation_policy="Background")


def _has_default_sa(core: Any, ns: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespaced_service_account("default", ns)
        return True
    except ApiException:
        return False


def _status(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    """The tier's status as stored."""
    return dict(((get_json(cluster, "cachetier", ns, name) or {}).get("status")) or {})


def _phase(cluster: Any, ns: str, name: str) -> str | None:
    tier = get_json(cluster, "cachetier", ns, name)
    return ((tier or {}).get("status") or {}).get("phase")


def injected_env(cluster: Any, ns: str, tier: str) -> dict[str, str]:
    """What the operator injects, resolved from the connection Secret as kubelet would."""
    secret = get_json(cluster, "secret", ns, f"{tier}-connection")
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return {
        "REDIS_URL": data["url"],
        "REDIS_PASSWORD": data.get("password", ""),
        "REDIS_MODE": data["mode"],
    }


def _command(client: str, *args: str) -> list[str]:
    if client == "redis-py":
        return [sys.executable, str(CLIENTS / "conformance_py.py"), *args]
    return ["node", str(CLIENTS / "conformance.js"), client, *args]


def _env(cluster: Any, ns: str, mode: str) -> dict[str, str]:
    return {**os.environ, **injected_env(cluster, ns, TIER_NAMES[mode]), "NODE_PATH": _node_path()}


def test_consumers_get_password_and_mode_from_the_secret(
    kube_cluster: Any, conformance_ns: str
) -> None:
    def env_of_app() -> dict[str, Any] | None:
        dep = get_json(kube_cluster, "deployment", conformance_ns, "app")
        env = (dep or {})["spec"]["template"]["spec"]["containers"][0].get("env") or []
        by_name = {e["name"]: e for e in env}
        return by_name if "REDIS_MODE" in by_name else None

    env = wait_for(env_of_app, timeout=60, what="injected env")
    for name, key in (("REDIS_URL", "url"), ("REDIS_PASSWORD", "password"), ("REDIS_MODE", "mode")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("conf-standalone-connection", key)
        assert "value" not in env[name]


def test_a_restarted_operator_writes_nothing_and_does_not_flap(
    kube_cluster: Any, conformance_ns: str, operator: Operator
) -> None:
    """A new process knows nothing of the clusters and probes: an unchanged world must
    cost it no write and no Ready -> "forming the cluster" -> Ready flap."""
    from cachetier.reconcile.cluster import ClusterManager
    from cachetier.redis.cluster import converge

    ns, rt = conformance_ns, operator.runtime()
    for tier in TIER_NAMES.values():

        def settled(t: str = tier) -> bool:
            before = operator.write_count(ns, t)
            operator.reconcile_now(ns, t)
            status = (get_json(kube_cluster, "cachetier", ns, t) or {}).get("status") or {}
            formed = "cluster" not in status or status["cluster"].get("message") == "ok"
            probed = "health" in status  # the first probe's verdict is written once
            ready = status.get("phase") == "Ready" and formed and probed
            return before == operator.write_count(ns, t) and ready

        wait_for(settled, timeout=120, what=f"{tier} settled", interval=2)
    writes = {t: operator.write_count(ns, t) for t in TIER_NAMES.values()}
    methods = dict(rt.kube.writes)
    before = {t: _status(kube_cluster, ns, t) for t in TIER_NAMES.values()}
    # What a restarted process starts with: no converge results, no probe memory.
    rt.reconciler.clusters = ClusterManager(converge)
    rt.prober._memory.clear()
    for tier in TIER_NAMES.values():
        operator.reconcile_now(ns, tier)
        assert _phase(kube_cluster, ns, tier) == "Ready"
    probes = rt.prober.probes
    wait_for(lambda: rt.prober.probes >= probes + 4, timeout=60, what="two probe rounds")
    for tier in TIER_NAMES.values():
        operator.reconcile_now(ns, tier)
    after = {t: operator.write_count(ns, t) for t in TIER_NAMES.values()}
    changed = {
        t: (before[t], _status(kube_cluster, ns, t))
        for t in TIER_NAMES.values()
        if _status(kube_cluster, ns, t) != before[t]
    }
    assert after == writes, (
        f"writes by method before {methods}, after {dict(rt.kube.writes)}; "
        f"status changes: {json.dumps(changed)[:3000]}"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", ALL_CLIENTS)
def test_client_conformance(kube_cluster: Any, conformance_ns: str, mode: str, client: str) -> None:
    proc = subprocess.run(
        _command(client, "check"),
        env=_env(kube_cluster, conformance_ns, mode),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{client} ({mode}) failed:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mode"] == mode
    failed = {k: v for k, v in result["checks"].items() if v != "ok"}
    assert not failed, f"{client} in {mode} mode: {json.dumps(failed, indent=1)}"
    assert len(result["checks"]) >= 16


class _Loop:
    """A client process reporting one line per second of SET+GET rounds."""

    def __init__(self, client: str, env: dict[str, str], seconds: int) -> None:
        self.client = client
        self.proc = subprocess.Popen(
            _command(client, "loop", str(seconds)),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.lines.append(json.loads(line))

    def clean_seconds_after(self, index: int) -> int:
        """Seconds in a row, at the end, with rounds and no error (after line ``index``)."""
        run = 0
        for line in self.lines[index:]:
            run = run + 1 if line["ok"] > 0 and line["errors"] == 0 else 0
        return run

    def stop(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err[-2000:]


def _master_pod(cluster: Any, ns: str, tier: str) -> str:
    """A pod that is a master now (cluster), or the one pod (standalone)."""
    if not tier.endswith("cluster"):
        return f"{tier}-0"
    import redis

    auth = get_json(cluster, "secret", ns, f"{tier}-auth") or {}
    password = base64.b64decode(auth["data"]["operator-password"]).decode()
    pods = json.loads(
        cluster.run_kubectl(
            "get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={tier}", "-o", "json"
        ).stdout
    )["items"]
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        ip = pod["status"].get("podIP")
        if not ip:
            continue
        with redis.Redis(
            host=ip, username="cachetier-operator", password=password, socket_timeout=2
        ) as r:
            if r.execute_command("ROLE")[0] in (b"master", "master"):
                return str(pod["metadata"]["name"])
    raise AssertionError(f"no master among the pods of {tier}")


@pytest.mark.parametrize("mode", MODES)
def test_clients_recover_after_a_master_pod_is_deleted(
    kube_cluster: Any, conformance_ns: str, mode: str
) -> None:
    """Every client carries on after the pod behind its master is replaced (new IP).

    node-redis 4 used to retry the dead IP forever in cluster mode: the cluster now
    announces pods by name, which follows the replacement pod.
    """
    ns, tier = conformance_ns, TIER_NAMES[mode]
    env = _env(kube_cluster, ns, mode)
    loops = [_Loop(c, env, seconds=240) for c in ALL_CLIENTS]
    try:
        for loop in loops:
            wait_for(
                lambda lp=loop: lp.clean_seconds_after(0) >= 2,
                timeout=60,
                what=f"{loop.client} serving before the pod deletion (lines: {loop.lines[-3:]})",
            )
        pod = _master_pod(kube_cluster, ns, tier)
        old = get_json(kube_cluster, "pod", ns, pod) or {}
        old_ip = (old.get("status") or {}).get("podIP")
        marks = [len(loop.lines) for loop in loops]
        kube_cluster.run_kubectl("delete", "pod", pod, "-n", ns, "--wait=false")

        def replaced() -> bool:
            new = get_json(kube_cluster, "pod", ns, pod) or {}
            if (new.get("metadata") or {}).get("uid") == (old.get("metadata") or {}).get("uid"):
                return False
            return bool((new.get("status") or {}).get("podIP"))

        wait_for(replaced, timeout=120, what=f"a replacement for {pod}")
        new_ip = (get_json(kube_cluster, "pod", ns, pod) or {})["status"]["podIP"]
        assert new_ip != old_ip, "the replacement pod must have a new address for this test"
        for loop, mark in zip(loops, marks, strict=True):
            wait_for(
                lambda lp=loop, m=mark: lp.clean_seconds_after(m) >= 5,
                timeout=150,
                interval=1,
                what=(
                    f"{loop.client} ({mode}) to recover after {pod} moved "
                    f"{old_ip} -> {new_ip} (last seconds: {loop.lines[-3:]})"
                ),
            )
    finally:
        for loop in loops:
            loop.stop()
