"""Benchmark: a full update of a 3 x 1 cluster tier and of a 1 + 2 replication tier
under a writer, supervised vs the StatefulSet's own RollingUpdate, in the same run.

One private local control plane (node agent on) and the operator in this process.
Each setup: a new 3 x 1 cluster tier (``persistence: none``), 2,000 keys written, then
a cluster client writing continuously (``socket_timeout`` 1 s, a SET every ~5 ms, errors
counted, 50 ms pause after one) while a restart-only ``redis.config`` setting
(``tcp-backlog``) changes the pod template; measured until every pod runs the new
revision and the cluster is whole again (six healthy members, every slot served):

- ``supervised``: CacheTier as shipped (``OnDelete``; the operator replaces replicas
  first and each master after a coordinated ``CLUSTER FAILOVER``);
- ``rolling_update``: the same operator with the StatefulSet's ``RollingUpdate`` (the
  controller restarts pods from the highest ordinal down, each as soon as the previous
  is Ready; Redis fails a restarted master over by itself after
  ``cluster-node-timeout``).

The replication setups are the same with a ``REDIS_URL`` writer (see
``replication_setup``); they also count acknowledged writes lost.

Reported per setup: the longest gap between two acknowledged writes, write errors, the
update's seconds, keys of the 2,000 lost. Prints JSON and writes
``bench/results/rolling_update.json``. Run from the repository root:
``env -u KUBECONFIG .venv/bin/python bench/bench_rolling_update.py``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from _harness import (
    emit,
    in_private_hosts,
    install_crd,
    machine,
    private_cluster,
    running_operator,
    say,
)
from _harness import wait as wait_until
from cachetier import names
from cachetier.redis.options import quiet_handshake

KEYS = 2000
TIER = "rolling"


class Writer(threading.Thread):
    def __init__(self, startup: list[ClusterNode], password: str) -> None:
        super().__init__(daemon=True)
        self.startup, self.password = startup, password
        self.errors, self.acked, self.gap = 0, 0, 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        client = RedisCluster(
            startup_nodes=self.startup, password=self.password, socket_timeout=1,
            socket_connect_timeout=1, **quiet_handshake(),
        )  # fmt: skip
        last = time.monotonic()
        i = 0
        while not self.stop.is_set():
            try:
                client.set(f"w{i}", str(i))
                now = time.monotonic()
                self.gap = max(self.gap, now - last)
                last, self.acked, i = now, self.acked + 1, i + 1
            except (redis.RedisError, RedisClusterException, IndexError):
                # IndexError: redis-py finds no master among the nodes it knows.
                self.errors += 1
                time.sleep(0.05)
            time.sleep(0.005)
        # A writer that never got through again: the gap lasts until it stopped.
        self.gap = max(self.gap, time.monotonic() - last)
        client.close()


@contextmanager
def strategy(supervised: bool) -> Iterator[None]:
    """While not supervised: the renderer gives cluster tiers RollingUpdate."""
    from cachetier.render import _statefulset

    original = _statefulset.update_strategy
    if not supervised:
        _statefulset.update_strategy = lambda spec: {"type": "RollingUpdate"}  # type: ignore[assignment]
    try:
        yield
    finally:
        _statefulset.update_strategy = original  # type: ignore[assignment]


def one_setup(cp: Any, ns: str) -> dict[str, Any]:
    kubectl = [str(cp.kubectl_path), "--kubeconfig", str(cp.kubeconfig)]

    def get(kind: str, name: str) -> dict[str, Any]:
        proc = subprocess.run(
            [*kubectl, "get", kind, name, "-n", ns, "-o", "json"], capture_output=True, text=True
        )
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}

    def apply(config: dict[str, str]) -> None:
        body = {
            "apiVersion": f"{names.GROUP}/{names.VERSION}",
            "kind": "CacheTier",
            "metadata": {"name": TIER, "namespace": ns},
            "spec": {
                "mode": "cluster",
                "cluster": {"shards": 3, "replicasPerShard": 1},
                "redis": {
                    "maxmemory": "32mb",
                    "persistence": {"mode": "none"},
                    "config": config,
                },
            },
        }
        subprocess.run(
            [*kubectl, "apply", "-f", "-"], input=json.dumps(body), text=True, check=True,
            capture_output=True,
        )  # fmt: skip

    def whole() -> dict[str, Any] | None:
        st = get(names.PLURAL, TIER).get("status") or {}
        cl = st.get("cluster") or {}
        members = cl.get("members") or []
        ok = (
            cl.get("state") == "ok"
            and cl.get("slotsAssigned") == 16384
            and len(members) == 6
            and all(m.get("healthy") for m in members)
        )
        return st if ok else None

    subprocess.run([*kubectl, "create", "namespace", ns], check=True, capture_output=True)
    apply({})
    st = wait_until("the tier whole", whole, 300, 1.0)
    password = base64.b64decode(
        get("secret", names.connection_secret(TIER))["data"]["password"]
    ).decode()
    startup = [ClusterNode(*m["address"].rsplit(":", 1)) for m in st["cluster"]["members"]]
    seed = RedisCluster(startup_nodes=startup, password=password, **quiet_handshake())
    try:
        for i in range(KEYS):
            seed.set(f"key:{i}", str(i))
    finally:
        seed.close()
    time.sleep(2)  # replication catches up (asynchronous)
    writer = Writer(startup, password)
    writer.start()
    wait_until("the writer going", lambda: writer.acked > 50, 30)
    initial = (get("statefulset", TIER).get("status") or {}).get("updateRevision")
    started = time.monotonic()
    apply({"tcp-backlog": "256"})

    def rolled() -> bool:
        sts = get("statefulset", TIER)
        revision = (sts.get("status") or {}).get("updateRevision")
        selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(TIER).items())
        proc = subprocess.run(
            [*kubectl, "get", "pods", "-n", ns, "-l", selector, "-o", "json"],
            capture_output=True, text=True,
        )  # fmt: skip
        pods = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
        new = [
            p for p in pods if p["metadata"]["labels"].get("controller-revision-hash") == revision
        ]
        st = whole()
        # The status must describe these pods, not those of before.
        ips = {p["status"].get("podIP") for p in new}
        members = {m["address"].rsplit(":", 1)[0] for m in (st or {}).get("cluster", {}).get(
            "members") or []}  # fmt: skip
        return bool(revision) and revision != initial and len(new) == 6 and members == ips

    seconds: float | None
    try:
        wait_until("every pod updated and the cluster whole", rolled, 300, 0.5)
        seconds = round(time.monotonic() - started, 2)
    except SystemExit as exc:  # the baseline may never be whole again: say so
        say(f"{ns}: {exc}")
        seconds = None
    writer.stop.set()
    writer.join(timeout=10)

    def count_lost() -> list[int] | None:
        """Keys of the seed missing, read through the pods as they are now (the status
        may still describe the pods of before)."""
        selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(TIER).items())
        proc = subprocess.run(
            [*kubectl, "get", "pods", "-n", ns, "-l", selector, "-o", "json"],
            capture_output=True, text=True,
        )  # fmt: skip
        ips = [p["status"].get("podIP") for p in json.loads(proc.stdout)["items"]]
        try:
            client = RedisCluster(
                startup_nodes=[ClusterNode(ip, names.REDIS_PORT) for ip in ips if ip],
                password=password, socket_timeout=5, require_full_coverage=False,
                **quiet_handshake(),
            )  # fmt: skip
        except (redis.RedisError, RedisClusterException, IndexError):
            return None  # no master answers (redis-py: IndexError)
        try:
            lost = 0
            for i in range(KEYS):
                try:
                    lost += client.get(f"key:{i}") != str(i).encode()
                except (redis.RedisError, RedisClusterException, IndexError):
                    lost += 1  # its slot is served by nobody (redis-py: IndexError)
            return [lost]  # a list: 0 lost is a result, not "not yet"
        finally:
            client.close()

    lost: int | None
    try:
        lost = wait_until("the keys readable", count_lost, 120, 1.0)[0]
    except SystemExit as exc:
        say(f"{ns}: {exc}: no key readable")
        lost = KEYS
    subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)
    result = {
        "longest_write_gap_seconds": round(writer.gap, 3),
        "write_errors": writer.errors,
        "acked_writes": writer.acked,
        "update_seconds": seconds,
        "keys_lost": lost,
    }
    say(f"{ns}: {result}")
    return result


class UrlWriter(threading.Thread):
    """SET w<i> on REDIS_URL in a loop, reconnecting after an error (what an
    application with a plain client does); records what was acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.errors, self.gap = 0, 0.0
        self.acked: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        def connect() -> redis.Redis:
            return redis.from_url(
                self.url, socket_timeout=1, socket_connect_timeout=1, **quiet_handshake()
            )

        client = connect()
        last = time.monotonic()
        i = 0
        while not self.stop.is_set():
            try:
                client.set(f"w{i}", str(i))
                now = time.monotonic()
                self.gap = max(self.gap, now - last)
                last = now
                self.acked.append(i)
                i += 1
            except redis.RedisError:
                self.errors += 1
                client.close()
                client = connect()
                time.sleep(0.05)
            time.sleep(0.005)
        self.gap = max(self.gap, time.monotonic() - last)
        client.close()


def replication_setup(cp: Any, ns: str) -> dict[str, Any]:
    """The same change on a replication tier (1 primary + 2 replicas + 3 Sentinels,
    ``persistence: aof``) under a ``REDIS_URL`` writer: supervised, the replicas go
    first and the primary after a paused ``SENTINEL FAILOVER``; under RollingUpdate the
    controller restarts pods from the highest ordinal and Sentinel fails over when the
    primary's pod goes (``downAfterMilliseconds`` 2000 in both setups)."""
    kubectl = [str(cp.kubectl_path), "--kubeconfig", str(cp.kubeconfig)]
    tier = "rolling-r"

    def get(kind: str, name: str) -> dict[str, Any]:
        proc = subprocess.run(
            [*kubectl, "get", kind, name, "-n", ns, "-o", "json"], capture_output=True, text=True
        )
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}

    def apply(config: dict[str, str]) -> None:
        body = {
            "apiVersion": f"{names.GROUP}/{names.VERSION}",
            "kind": "CacheTier",
            "metadata": {"name": tier, "namespace": ns},
            "spec": {
                "mode": "replication",
                "replication": {"replicas": 2, "sentinels": 3, "downAfterMilliseconds": 2000},
                "redis": {
                    "maxmemory": "32mb",
                    "persistence": {"mode": "aof", "size": "64Mi"},
                    "config": config,
                },
            },
        }
        subprocess.run(
            [*kubectl, "apply", "-f", "-"], input=json.dumps(body), text=True, check=True,
            capture_output=True,
        )  # fmt: skip

    def whole() -> dict[str, Any] | None:
        st = get(names.PLURAL, tier).get("status") or {}
        repl = st.get("replication") or {}
        replicas = repl.get("replicas") or []
        ok = (
            st.get("phase") == "Ready"
            and bool(repl.get("primary"))
            and len(replicas) == 2
            and all(r.get("linkUp") for r in replicas)
        )
        return st if ok else None

    subprocess.run([*kubectl, "create", "namespace", ns], check=True, capture_output=True)
    apply({})
    wait_until("the tier whole", whole, 300, 1.0)
    url = base64.b64decode(get("secret", names.connection_secret(tier))["data"]["url"]).decode()
    with redis.from_url(url, socket_timeout=5, **quiet_handshake()) as seed:
        for i in range(KEYS):
            seed.set(f"key:{i}", str(i))
    writer = UrlWriter(url)
    writer.start()
    wait_until("the writer going", lambda: len(writer.acked) > 50, 30)
    initial = (get("statefulset", tier).get("status") or {}).get("updateRevision")
    started = time.monotonic()
    apply({"tcp-backlog": "256"})
    labels = names.component_labels(tier, names.COMPONENT_REDIS)
    selector = ",".join(f"{k}={v}" for k, v in labels.items())

    def rolled() -> bool:
        revision = (get("statefulset", tier).get("status") or {}).get("updateRevision")
        proc = subprocess.run(
            [*kubectl, "get", "pods", "-n", ns, "-l", selector, "-o", "json"],
            capture_output=True, text=True,
        )  # fmt: skip
        pods = json.loads(proc.stdout)["items"] if proc.returncode == 0 else []
        new = [
            p for p in pods
            if p["metadata"]["labels"].get("controller-revision-hash") == revision
            and not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        return bool(revision) and revision != initial and len(new) == 3 and whole() is not None

    wait_until("every pod updated and the tier whole", rolled, 600, 0.5)
    seconds = round(time.monotonic() - started, 2)
    time.sleep(1)
    writer.stop.set()
    writer.join(timeout=10)

    def count_lost() -> list[int] | None:
        try:
            with redis.from_url(url, socket_timeout=5, **quiet_handshake()) as client:
                keys = sum(client.get(f"key:{i}") != str(i).encode() for i in range(KEYS))
                acked = sum(client.get(f"w{i}") != str(i).encode() for i in writer.acked)
        except redis.RedisError:
            return None
        return [keys, acked]

    lost, acked_lost = wait_until("the keys readable", count_lost, 120, 1.0)
    subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)
    result = {
        "longest_write_gap_seconds": round(writer.gap, 3),
        "write_errors": writer.errors,
        "acked_writes": len(writer.acked),
        "acked_writes_lost": acked_lost,
        "update_seconds": seconds,
        "keys_lost": lost,
    }
    say(f"{ns}: {result}")
    return result


def main() -> None:
    in_private_hosts()
    out: dict[str, Any] = {}
    with private_cluster(node_agent=True, prefix="bench-rolling") as cp:
        install_crd(cp)
        with running_operator():
            for setup, supervised in (("supervised", True), ("rolling_update", False)):
                say(f"{setup}: a 3x1 cluster, a restart-only setting changed under a writer")
                with strategy(supervised):
                    out[setup] = one_setup(cp, f"bench-{setup.replace('_', '-')}")
            for setup, supervised in (("supervised", True), ("rolling_update", False)):
                say(f"{setup}: a 1+2 replication tier, the same change under a writer")
                with strategy(supervised):
                    out[f"replication_{setup}"] = replication_setup(
                        cp, f"bench-r-{setup.replace('_', '-')}"
                    )
    sup, base = out["supervised"], out["rolling_update"]
    rsup, rbase = out["replication_supervised"], out["replication_rolling_update"]
    emit(
        "rolling_update",
        {
            "name": "rolling_update",
            "keys": KEYS,
            **out,
            "gap_ratio_supervised_to_rolling": round(
                sup["longest_write_gap_seconds"] / max(base["longest_write_gap_seconds"], 1e-9), 3
            ),
            "replication_gap_ratio_supervised_to_rolling": round(
                rsup["longest_write_gap_seconds"] / max(rbase["longest_write_gap_seconds"], 1e-9),
                3,
            ),
            "goal": "no write gap longer than a switchover (well under 1 s), 0 errors "
            "(cluster); replication: no acknowledged write lost, a shorter gap than the "
            "baseline's",
            "goal_met": sup["longest_write_gap_seconds"] < 1.0
            and sup["write_errors"] == 0
            and rsup["acked_writes_lost"] == 0
            and rsup["longest_write_gap_seconds"] < rbase["longest_write_gap_seconds"],
            **machine(),
        },
        indent=2,
    )


if __name__ == "__main__":
    main()
