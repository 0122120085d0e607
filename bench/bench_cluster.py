"""Benchmark of the cluster executor against real redis-server processes.

Prints one JSON object and writes it to bench/results/cluster.json:

- bootstrap: six empty nodes to `cluster_state:ok` on every node, with our
  `converge` and, on six other equal nodes in the same run, with
  `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`;
- heal (with the keys written): SIGKILL of a master until every node that answers reports
  `cluster_state:ok` and every slot is served by a node that answers (Redis
  itself promotes the replica; our loop only watches), then the time for the
  restarted node to rejoin as a replica through `converge`;
- migration: keys per second moved during a 3 -> 4 shard scale-out (a new
  master and its replica), with our `converge` and, on the `redis-cli`-created
  cluster holding the same keys, with `redis-cli --cluster add-node` (master),
  `rebalance --cluster-use-empty-masters` and `add-node --cluster-slave`.

Usage: .venv/bin/python bench/bench_cluster.py [--keys 20000] [--node-timeout-ms 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from cachetier.redis.cluster import Progress, cluster_summary, converge
from cachetier.topology import NodeAddress

PASSWORD = "bench-password"
RESULTS = Path(__file__).resolve().parent / "results" / "cluster.json"


class Server:
    """One cluster-enabled redis-server in its own directory."""

    def __init__(self, directory: Path, port: int, node_timeout_ms: int) -> None:
        self.directory = directory
        self.address = NodeAddress("127.0.0.1", port)
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True)
        settings = {
            "port": str(port),
            "bind": "127.0.0.1",
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(node_timeout_ms),
            "dir": str(directory),
            "requirepass": PASSWORD,
            "masterauth": PASSWORD,
            "save": '""',
            "appendonly": "no",
            "repl-diskless-sync-delay": "0",
            "logfile": str(directory / "redis.log"),
        }
        (directory / "redis.conf").write_text("".join(f"{k} {v}\n" for k, v in settings.items()))

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.address.port, password=PASSWORD)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", str(self.directory / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _pings(self), 30, "redis-server start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def state(self) -> str:
        try:
            with self.client() as c:
                info = c.execute_command("CLUSTER", "INFO").decode()
        except redis.RedisError:
            return "down"
        return info.split("cluster_state:", 1)[1].split()[0]


def _pings(server: Server) -> bool:
    try:
        with server.client() as c:
            return bool(c.ping())
    except redis.RedisError:
        return False


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.02)


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 55000 or port in ports or port + 10000 in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def all_ok(servers: list[Server]) -> bool:
    return all(s.state() == "ok" for s in servers)


WRITABLE_DELAY_S = 2.0
"""Redis keeps a master's cluster_state `fail` for 2 s after it starts (CLUSTER_WRITABLE_DELAY)."""


def bench_bootstrap(ours: list[Server], theirs: list[Server], started: float) -> dict[str, float]:
    # Both sides start past Redis's start-up delay: the side that runs first must not pay it alone.
    time.sleep(max(0.0, started + WRITABLE_DELAY_S + 0.2 - time.monotonic()))
    t = time.monotonic()
    result = converge([s.address for s in ours], PASSWORD, 3, 1, timeout=120)
    if not result.converged:
        raise SystemExit(f"bootstrap did not converge: {result.plan.waiting}")
    wait_for(lambda: all_ok(ours), 60, "our cluster ok")
    ours_s = time.monotonic() - t

    redis_cli = shutil.which("redis-cli") or "redis-cli"
    t = time.monotonic()
    subprocess.run(
        [redis_cli, "-a", PASSWORD, "--no-auth-warning", "--cluster", "create"]
        + [str(s.address) for s in theirs]
        + ["--cluster-replicas", "1", "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: all_ok(theirs), 60, "redis-cli cluster ok")
    theirs_s = time.monotonic() - t
    return {"cachetier_s": round(ours_s, 3), "redis_cli_s": round(theirs_s, 3)}


def bench_heal(servers: list[Server]) -> dict[str, float]:
    addresses = [s.address for s in servers]
    victim = next(s for s in servers if _role(s) == "master")
    victim.kill()
    t = time.monotonic()
    alive = [s for s in servers if s is not victim]

    def healed() -> bool:
        summary = cluster_summary(addresses, PASSWORD)
        return all_ok(alive) and summary.slots_served == 16384

    wait_for(healed, 120, "heal after master kill")
    heal_s = time.monotonic() - t
    t = time.monotonic()
    victim.start()
    result = converge(addresses, PASSWORD, 3, 1, timeout=120)
    if not result.converged or _role(victim) != "slave":
        raise SystemExit(f"old master did not rejoin as replica: {result.plan.waiting}")
    with victim.client() as c:
        master = c.info("replication")
        copied = int(c.dbsize())
    with redis.Redis(
        host=master["master_host"], port=master["master_port"], password=PASSWORD
    ) as c:
        assert copied == int(c.dbsize()), "replica not in sync"
    return {
        "failover_to_ok_s": round(heal_s, 3),
        "restart_to_replica_in_sync_s": round(time.monotonic() - t, 3),
    }


def _role(server: Server) -> str:
    with server.client() as c:
        return str(c.info("replication")["role"])


def write_keys(servers: list[Server], keys: int) -> dict[str, str]:
    payload = {f"bench:{i}": f"value-{i}" for i in range(keys)}
    names = list(payload)
    with RedisCluster(host="127.0.0.1", port=servers[0].address.port, password=PASSWORD) as rc:
        for i in range(0, keys, 1000):
            rc.mset_nonatomic({k: payload[k] for k in names[i : i + 1000]})
    return payload


def bench_migration(
    servers: list[Server], extra: list[Server], payload: dict[str, str]
) -> dict[str, object]:
    names, keys = list(payload), len(payload)
    marks: list[tuple[float, int]] = []

    def progress(p: Progress) -> bool:
        marks.append((time.monotonic(), p.keys_migrated))
        return False

    t = time.monotonic()
    result = converge(
        [s.address for s in servers + extra], PASSWORD, 4, 1, timeout=300, stop=progress
    )
    total = time.monotonic() - t
    if not result.converged:
        raise SystemExit(f"scale-out did not converge: {result.plan.waiting}")
    with RedisCluster(host="127.0.0.1", port=servers[0].address.port, password=PASSWORD) as rc:
        values: list[bytes | None] = []
        for i in range(0, keys, 1000):
            values += rc.mget_nonatomic(names[i : i + 1000])
    verified = all(
        v is not None and v.decode() == payload[k] for k, v in zip(names, values, strict=True)
    )
    moved = [(t, k) for t, k in marks if k > 0]
    if len(moved) > 1:  # between the first and the last MIGRATE round
        rate = (moved[-1][1] - moved[0][1]) / (moved[-1][0] - moved[0][0])
    else:
        rate = result.keys_migrated / total
    return {
        "keys": keys,
        "keys_migrated": result.keys_migrated,
        "scale_out_total_s": round(total, 3),
        "keys_per_s_while_migrating": round(rate),
        "keys_per_s_overall": round(result.keys_migrated / total),
        "all_keys_readable_after": verified,
    }


def _known_to_all(servers: list[Server]) -> bool:
    """Every node knows every other, none in handshake (what `rebalance` checks first)."""
    for s in servers:
        with s.client() as c:
            lines = c.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
        if len(lines) != len(servers) or any("handshake" in line for line in lines):
            return False
    return True


def _agree(servers: list[Server]) -> bool:
    """Every node sees the same slot owners (redis-cli's "nodes agree" check)."""
    views = set()
    for s in servers:
        with s.client() as c:
            lines = c.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
        views.add(frozenset((f[0], " ".join(sorted(f[8:]))) for f in (x.split() for x in lines)))
    return len(views) == 1


def bench_redis_cli_scale_out(
    servers: list[Server], extra: list[Server], payload: dict[str, str]
) -> dict[str, object]:
    """The same 3 -> 4 shard scale-out with redis-cli's cluster manager, as shipped."""
    redis_cli = [shutil.which("redis-cli") or "redis-cli", "-a", PASSWORD, "--no-auth-warning"]
    master, replica = extra
    seed = str(servers[0].address)
    t = time.monotonic()
    subprocess.run(
        [*redis_cli, "--cluster", "add-node", str(master.address), seed],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # rebalance (like our executor) needs every node to know the others and be `ok`
    wait_for(lambda: _known_to_all([*servers, master]), 60, "new master known to all")
    wait_for(lambda: all_ok([*servers, master]), 60, "new master sees the cluster ok")
    joined = time.monotonic()
    done = subprocess.run(
        [*redis_cli, "--cluster", "rebalance", seed, "--cluster-use-empty-masters"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"redis-cli rebalance failed:\n{done.stdout}")
    rebalanced = time.monotonic()
    with master.client() as c:
        moved = int(c.dbsize())
    with master.client() as c:
        master_id = c.execute_command("CLUSTER", "MYID").decode()
    # add-node's own check refuses while gossip has not told every node the new slots
    wait_for(lambda: _agree([*servers, master]), 60, "nodes agree after rebalance")
    done = subprocess.run(
        [*redis_cli, "--cluster", "add-node", str(replica.address), seed, "--cluster-slave",
         "--cluster-master-id", master_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"redis-cli add-node --cluster-slave failed:\n{done.stdout}")

    def replica_in_sync() -> bool:
        with replica.client() as c:
            info = c.info("replication")
        return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")

    wait_for(replica_in_sync, 60, "redis-cli replica in sync")
    wait_for(lambda: all_ok([*servers, *extra]), 60, "redis-cli cluster ok after scale-out")
    total = time.monotonic() - t
    rebalance_s = rebalanced - joined
    names = list(payload)
    with RedisCluster(host="127.0.0.1", port=servers[0].address.port, password=PASSWORD) as rc:
        values: list[bytes | None] = []
        for i in range(0, len(names), 1000):
            values += rc.mget_nonatomic(names[i : i + 1000])
    verified = all(
        v is not None and v.decode() == payload[k] for k, v in zip(names, values, strict=True)
    )
    return {
        "keys": len(payload),
        "keys_migrated": moved,
        "scale_out_total_s": round(total, 3),
        "rebalance_s": round(rebalance_s, 3),
        "keys_per_s_while_migrating": round(moved / rebalance_s),
        "keys_per_s_overall": round(moved / total),
        "all_keys_readable_after": verified,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--node-timeout-ms", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        ports = free_ports(16)
        servers = [
            Server(Path(tmp) / f"n{i}", port, args.node_timeout_ms) for i, port in enumerate(ports)
        ]
        try:
            for s in servers:
                s.start()
            started = time.monotonic()
            ours, theirs = servers[:6], servers[6:12]
            extra, their_extra = servers[12:14], servers[14:]
            bootstrap = bench_bootstrap(ours, theirs, started)
            payload = write_keys(ours, args.keys)
            write_keys(theirs, args.keys)
            heal = bench_heal(ours)
            ours_out = bench_migration(ours, extra, payload)
            theirs_out = bench_redis_cli_scale_out(theirs, their_extra, payload)
            # A master turns `ok` no sooner than its rejoin delay (cluster-node-timeout,
            # clamped to 0.5-5 s) after it gets its slots, whoever bootstraps it; so the
            # bootstrap is also measured at 500 ms, where the tools' own work shows.
            quick = bench_bootstrap_at(Path(tmp) / "quick", 500)
            result = {
                "benchmark": "cluster",
                "redis_version": _version(servers[0]),
                "cluster_node_timeout_ms": args.node_timeout_ms,
                "bootstrap_six_nodes": _with_ratio(bootstrap),
                "bootstrap_six_nodes_node_timeout_500ms": _with_ratio(quick),
                "keys_written": len(payload),
                "heal_after_master_kill": heal,
                "migration_3_to_4_shards": ours_out,
                "migration_3_to_4_shards_redis_cli": theirs_out,
                "migration_ratios": {
                    "keys_per_s_while_migrating": _ratio(
                        ours_out, theirs_out, "keys_per_s_while_migrating"
                    ),
                    "total_time_cachetier_over_redis_cli": _ratio(
                        ours_out, theirs_out, "scale_out_total_s"
                    ),
                },
            }
        finally:
            for s in servers:
                s.kill()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    RESULTS.write_text(text + "\n")
    sys.stdout.write(text + "\n")


def bench_bootstrap_at(directory: Path, node_timeout_ms: int) -> dict[str, float]:
    """The bootstrap pair on twelve fresh nodes with another cluster-node-timeout."""
    servers = [
        Server(directory / f"n{i}", port, node_timeout_ms) for i, port in enumerate(free_ports(12))
    ]
    try:
        for s in servers:
            s.start()
        return bench_bootstrap(servers[:6], servers[6:], time.monotonic())
    finally:
        for s in servers:
            s.kill()


def _with_ratio(bootstrap: dict[str, float]) -> dict[str, float]:
    ratio = round(bootstrap["cachetier_s"] / bootstrap["redis_cli_s"], 2)
    return {**bootstrap, "ratio_to_redis_cli": ratio}


def _ratio(ours: dict[str, object], theirs: dict[str, object], key: str) -> float:
    a, b = ours[key], theirs[key]
    assert isinstance(a, int | float) and isinstance(b, int | float)
    return round(a / b, 2) if b else 0.0


def _version(server: Server) -> str:
    with server.client() as c:
        return str(c.info("server")["redis_version"])


if __name__ == "__main__":
    main()
