"""Benchmark: the write outage a client sees when the primary dies, CacheTier against bare Sentinel.

Two setups with the same Redis (the machine's redis-server), the same topology (1
primary + 2 replicas + 3 Sentinels, quorum 2) and the same Sentinel settings
(``down-after-milliseconds`` 2000, ``failover-timeout`` 10000), measured in the same run:

- ``bare_sentinel`` — the floor: the six processes started by hand on loopback, no
  operator, and a Sentinel-aware client (redis-py ``Sentinel.master_for``), which asks
  the Sentinels for the primary on every reconnect. The fault: ``SIGKILL`` of the
  primary's process; it stays dead until the failover is over, then is started again
  (as a supervisor would) and Sentinel makes it a replica.
- ``cachetier`` — a replication tier on a private local control plane (node agent on,
  the operator in this process) and a plain client on the connection Secret's URL
  (``redis.from_url``: the ``<tier>`` Service, which selects the pod labelled
  ``cachetier.io/role: primary``). The fault: the primary's pod force-deleted (grace 0)
  and its process ``SIGKILL``ed at once — the machine is gone; the StatefulSet makes a
  new pod (a new address, the old one dead for good, as on the bare side). Without the
  force-delete the node agent would restart the killed process within a second, the
  way the kubelet does, and no failover would happen (the restart is measured too, as
  ``cachetier_sigkill_restart``, for context: not a failover).

Both clients: ``socket_timeout`` 1 s, no redis-py retries, a SET every ~10 ms, a new
connection 50 ms after an error. The outage of a round is the longest time between two
acknowledged writes from the last one before the fault on; lost writes are acknowledged
SETs missing from the primary once the round has settled (asynchronous replication may lose the last
ones). Between rounds both setups settle fully: every Sentinel agrees on the primary,
knows exactly the 2 live replicas and the 2 other Sentinels (CacheTier resets the
Sentinels that remember a dead address), every replica's link is up.

Prints one JSON object (per setup: median and max outage of ``ROUNDS`` rounds, lost
writes, and the difference of the medians against the goal of 1.5 s) and writes it to
``bench/results/failover.json``. Run from the repository root:
``env -u KUBECONFIG .venv/bin/python bench/bench_failover.py`` (it re-runs itself
inside ``hack/private-hosts.sh``, so the client resolves the Service name as a pod
would). ``BENCH_FAILOVER_ROUNDS`` overrides the 10 rounds; ``BENCH_FAILOVER_POLL_ONLY=1``
turns the operator's Sentinel subscriptions off (it then looks every 2 s), to show
what they buy.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from _harness import (
    REPO_ROOT,
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

ROUNDS = int(os.environ.get("BENCH_FAILOVER_ROUNDS", "10"))
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10000
MASTER = "bench"
NAMESPACE = "bench-failover"
TIER = "sessions"
GOAL_EXTRA_SECONDS = 1.5

CLIENT: dict[str, Any] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "retry": Retry(NoBackoff(), 0),
    **quiet_handshake(),
}


class Writer(threading.Thread):
    """SET <prefix><i> in a loop on a client from ``connect``; ack times recorded."""

    def __init__(self, connect: Callable[[], redis.Redis], prefix: str) -> None:
        super().__init__(daemon=True)
        self.connect, self.prefix = connect, prefix
        self.acked: list[int] = []
        self.ack_times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        client = self.connect()
        i = 0
        while not self.stop.is_set():
            try:
                client.set(f"{self.prefix}{i}", str(i))
                self.acked.append(i)
                self.ack_times.append(time.monotonic())
                i += 1
                time.sleep(0.01)
            except (redis.RedisError, OSError):
                client.close()
                time.sleep(0.05)
                client = self.connect()
        client.close()

    def acked_after(self, t: float, count: int = 20) -> bool:
        return sum(1 for x in self.ack_times[-count:] if x > t) >= count

    def outage(self, fault_at: float) -> float:
        """The longest time between two acknowledged writes, from the last one before
        the fault on (a reply read just after the fault was sent before it)."""
        times = self.ack_times
        start = max((i for i, x in enumerate(times) if x <= fault_at), default=0)
        gaps = [b - a for a, b in zip(times[start:], times[start + 1 :], strict=False)]
        return round(max(gaps), 3) if gaps else float("nan")

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=10)


def lost(writer: Writer, client: redis.Redis) -> int:
    keys = [f"{writer.prefix}{i}" for i in writer.acked]
    missing = 0
    for start in range(0, len(keys), 500):
        missing += sum(1 for v in client.mget(keys[start : start + 500]) if v is None)
    return missing


def sentinels_settled(
    addrs: list[tuple[str, int]], auth: dict[str, Any], replicas: int
) -> tuple[str, int] | None:
    """The primary's address when every Sentinel agrees on it, knows exactly the live
    replicas (links up) and the other Sentinels, and judges nothing down."""
    seen = set()
    for host, port in addrs:
        try:
            with redis.Redis(host=host, port=port, decode_responses=True, **auth, **CLIENT) as s:
                m = s.execute_command("SENTINEL", "MASTER", MASTER_NAME[0])
                if isinstance(m, list):
                    m = dict(zip(m[::2], m[1::2], strict=False))
                reps = s.execute_command("SENTINEL", "REPLICAS", MASTER_NAME[0])
        except redis.RedisError:
            return None
        reps = [dict(zip(r[::2], r[1::2], strict=False)) if isinstance(r, list) else r
                for r in reps]  # fmt: skip
        if (
            m.get("flags") != "master"
            or int(m.get("num-slaves") or 0) != replicas
            or int(m.get("num-other-sentinels") or 0) != len(addrs) - 1
            or any(r.get("flags") != "slave" or r.get("master-link-status") != "ok" for r in reps)
        ):
            return None
        seen.add((m["ip"], int(m["port"])))
    return seen.pop() if len(seen) == 1 else None


MASTER_NAME = [MASTER]  # the bare setup's name; CacheTier's is the tier's


def summary(outages: list[float], lost_writes: list[int]) -> dict[str, Any]:
    return {
        "rounds": len(outages),
        "outage_seconds": outages,
        "outage_median_seconds": round(statistics.median(outages), 3),
        "outage_max_seconds": max(outages),
        "lost_acked_writes": lost_writes,
    }


# -- the floor: bare Sentinel ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_sentinel(rounds: int) -> dict[str, Any]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed (make bootstrap)")
    root = Path(tempfile.mkdtemp(prefix="bench-failover-bare-", dir=REPO_ROOT / ".local"))
    password = secrets.token_hex(16)
    ports = [free_port() for _ in range(3)]
    sentinel_ports = [free_port() for _ in range(3)]
    procs: dict[int, subprocess.Popen[bytes]] = {}

    def start_redis(i: int) -> None:
        conf = root / f"redis-{i}.conf"
        if not conf.exists():
            (root / f"data-{i}").mkdir()
            lines = [
                f"port {ports[i]}",
                "bind 127.0.0.1",
                f"dir {root / f'data-{i}'}",
                "appendonly yes",
                'save ""',
                f"requirepass {password}",
                f"masterauth {password}",
                "repl-diskless-sync-delay 1",
            ]
            if i:
                lines.append(f"replicaof 127.0.0.1 {ports[0]}")
            conf.write_text("\n".join(lines) + "\n")
        procs[ports[i]] = subprocess.Popen(
            [server, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    sentinels: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            start_redis(i)
        for i, port in enumerate(sentinel_ports):
            conf = root / f"sentinel-{i}.conf"
            conf.write_text(
                "\n".join([
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {root}",
                    f"sentinel monitor {MASTER} 127.0.0.1 {ports[0]} 2",
                    f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {MASTER} 1",
                    f"sentinel auth-pass {MASTER} {password}",
                ]) + "\n"
            )  # fmt: skip
            sentinels.append(
                subprocess.Popen(
                    [server, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        addrs = [("127.0.0.1", p) for p in sentinel_ports]
        MASTER_NAME[0] = MASTER
        wait_until("bare Sentinels settled", lambda: sentinels_settled(addrs, {}, 2), 120)
        sentinel = Sentinel(addrs, **CLIENT)
        outages, lost_writes = [], []
        for r in range(rounds):
            writer = Writer(
                lambda: sentinel.master_for(MASTER, password=password, **CLIENT), f"bare{r}-"
            )
            writer.start()
            wait_until("the writer going", lambda w=writer: len(w.acked) > 50, 30)
            primary = sentinels_settled(addrs, {}, 2)
            assert primary is not None
            fault_at = time.monotonic()
            procs[primary[1]].send_signal(signal.SIGKILL)
            wait_until("writes resumed", lambda w=writer, t=fault_at: w.acked_after(t), 120, 0.05)
            procs[primary[1]].wait()
            start_redis(ports.index(primary[1]))  # back, as a supervisor would: a replica
            settled = wait_until(
                "bare Sentinels settled", lambda: sentinels_settled(addrs, {}, 2), 120
            )
            writer.finish()
            outages.append(writer.outage(fault_at))
            with redis.Redis(host=settled[0], port=settled[1], password=password) as c:
                lost_writes.append(lost(writer, c))
            say(f"bare round {r + 1}: outage {outages[-1]} s, lost {lost_writes[-1]}")
        return summary(outages, lost_writes)
    finally:
        for p in [*procs.values(), *sentinels]:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


# -- CacheTier replication mode --------------------------------------------------------

TIER_YAML: dict[str, Any] = {
    "apiVersion": f"{names.GROUP}/{names.VERSION}",
    "kind": names.KIND,
    "metadata": {"name": TIER, "namespace": NAMESPACE},
    "spec": {
        "mode": "replication",
        "replication": {
            "replicas": 2,
            "sentinels": 3,
            "downAfterMilliseconds": DOWN_AFTER_MS,
            "failoverTimeout": FAILOVER_TIMEOUT_MS,
        },
        "redis": {"maxmemory": "32mb", "persistence": {"mode": "aof", "size": "64Mi"}},
        # A busy 2-core machine must not roll the (consumer-less) tier back mid-run.
        "rollout": {"autoRollback": {"enabled": False}},
    },
}


def redis_pid(ip: str) -> int:
    out = subprocess.run(
        ["pgrep", "-f", f"redis-server {ip}:{names.REDIS_PORT}"], capture_output=True, text=True
    ).stdout.split()
    if len(out) != 1:
        raise SystemExit(f"expected one redis-server at {ip}, found {out}")
    return int(out[0])


def cachetier(rounds: int) -> dict[str, Any]:
    from kubernetes import client as k8s
    from kubernetes import config

    with private_cluster(node_agent=True, prefix="bench-failover") as cp:
        install_crd(cp)
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        core = k8s.CoreV1Api(api)
        custom = k8s.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        with running_operator() as rt:
            if os.environ.get("BENCH_FAILOVER_POLL_ONLY") == "1":
                rt.sentinels.close()
                rt.reconciler.follower = None
            custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, NAMESPACE, names.PLURAL, TIER_YAML
            )

            def status() -> dict[str, Any]:
                body = custom.get_namespaced_custom_object(
                    names.GROUP, names.VERSION, NAMESPACE, names.PLURAL, TIER
                )
                return dict(body.get("status") or {})

            def secret(name: str) -> dict[str, str]:
                data = core.read_namespaced_secret(name, NAMESPACE).data or {}
                return {k: base64.b64decode(v).decode() for k, v in data.items()}

            def sentinel_addrs() -> list[tuple[str, int]]:
                selector = ",".join(
                    f"{k}={v}" for k, v in names.sentinel_selector_labels(TIER).items()
                )
                pods = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
                return [(p.status.pod_ip, names.SENTINEL_PORT) for p in pods if p.status.pod_ip]

            def roles_settled() -> str | None:
                selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(TIER).items())
                pods = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
                roles = [(p.metadata.labels or {}).get(names.LABEL_ROLE) for p in pods]
                st = status()
                primary = (st.get("replication") or {}).get("primary")
                ok = (
                    st.get("phase") == "Ready"
                    and len(pods) == 3
                    and roles.count(names.ROLE_PRIMARY) == 1
                    and roles.count(names.ROLE_REPLICA) == 2
                    and any(
                        p.metadata.name == primary
                        and (p.metadata.labels or {}).get(names.LABEL_ROLE) == names.ROLE_PRIMARY
                        for p in pods
                    )
                )
                return str(primary) if ok else None

            def settled() -> str | None:
                primary = roles_settled()
                return (
                    primary
                    if primary and sentinels_settled(sentinel_addrs(), operator_auth, 2)
                    else None
                )

            say("waiting for the tier to be Ready")
            wait_until("the tier Ready", lambda: status().get("phase") == "Ready", 300)
            auth = secret(names.auth_secret(TIER))
            operator_auth = {
                "username": names.OPERATOR_USER,
                "password": auth[names.OPERATOR_PASSWORD_KEY],
            }
            MASTER_NAME[0] = names.sentinel_master(TIER)
            url = secret(names.connection_secret(TIER))["url"]
            wait_until("the tier settled", settled, 180)

            def connect() -> redis.Redis:
                return redis.from_url(url, **CLIENT)

            def pod_ip(pod: str) -> str:
                return str(core.read_namespaced_pod(pod, NAMESPACE).status.pod_ip)

            # For context: a SIGKILL alone; the node agent restarts the process at once.
            writer = Writer(connect, "restart-")
            writer.start()
            wait_until("the writer going", lambda: len(writer.acked) > 50, 30)
            primary = wait_until("settled", settled, 180)
            fault_at = time.monotonic()
            os.kill(redis_pid(pod_ip(primary)), signal.SIGKILL)
            wait_until("writes resumed", lambda: writer.acked_after(fault_at), 120, 0.05)
            wait_until("settled", settled, 180)
            writer.finish()
            restart = {"outage_seconds": writer.outage(fault_at), "lost": lost(writer, connect())}
            say(f"SIGKILL alone (restarted in place): {restart}")

            outages, lost_writes = [], []
            for r in range(rounds):
                writer = Writer(connect, f"ct{r}-")
                writer.start()
                wait_until("the writer going", lambda w=writer: len(w.acked) > 50, 30)
                primary = wait_until("settled", settled, 180)
                pid = redis_pid(pod_ip(primary))
                fault_at = time.monotonic()
                core.delete_namespaced_pod(primary, NAMESPACE, grace_period_seconds=0)
                with contextlib.suppress(ProcessLookupError):  # the agent may be first
                    os.kill(pid, signal.SIGKILL)
                wait_until(
                    "writes resumed", lambda w=writer, t=fault_at: w.acked_after(t), 120, 0.05
                )
                wait_until("settled", settled, 240)
                writer.finish()
                outages.append(writer.outage(fault_at))
                with connect() as c:
                    lost_writes.append(lost(writer, c))
                say(f"cachetier round {r + 1}: outage {outages[-1]} s, lost {lost_writes[-1]}")
            out = summary(outages, lost_writes)
            out["cachetier_sigkill_restart"] = restart
            out["operator_writes"] = rt.kube.write_count
            return out


def main() -> None:
    in_private_hosts()
    say(f"bare Sentinel, {ROUNDS} rounds")
    bare = bare_sentinel(ROUNDS)
    say(f"CacheTier replication mode, {ROUNDS} rounds")
    ours = cachetier(ROUNDS)
    extra = round(ours["outage_median_seconds"] - bare["outage_median_seconds"], 3)
    emit(
        "failover",
        {
            "name": "failover_outage",
            "down_after_milliseconds": DOWN_AFTER_MS,
            "sentinel_subscriptions": os.environ.get("BENCH_FAILOVER_POLL_ONLY") != "1",
            "bare_sentinel": bare,
            "cachetier": ours,
            "extra_outage_median_seconds": extra,
            "extra_outage_max_seconds": round(
                ours["outage_max_seconds"] - bare["outage_max_seconds"], 3
            ),
            "goal_extra_seconds": GOAL_EXTRA_SECONDS,
            "goal_met": extra <= GOAL_EXTRA_SECONDS,
            **machine(),
        },
    )


if __name__ == "__main__":
    main()
