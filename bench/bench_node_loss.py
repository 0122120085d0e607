"""Benchmark: what losing a Kubernetes node costs a 3 x 1 cluster tier, placed or not.

One private local control plane with three worker nodes (``cachetier-a``/``-b``/``-c``,
zones a, b, c; the tiers require a zone, so they run on the workers only) and the
operator in this process. Two setups, ``ROUNDS`` rounds each, in the same run; every
round is a new tier (creation is not timed), 5,000 keys written and acknowledged by
every replica, then one worker stopped the way a machine dies (its agent and every
process of its pods SIGKILLed):

- ``cachetier``: the defaults — spread over hostnames and zones, and the placement-aware
  planner (masters on distinct nodes, no replica on its master's node);
- ``baseline``: the layout Kubernetes' scheduler gives alone — the tier's spreading
  turned off (``affinity.podAntiAffinity: {}``, ``topologySpreadConstraints: []``) and
  the planner blind to nodes (roles assigned as before failure domains existed).

The node stopped is the worst one for the layout (the one whose loss takes the most
shards' every copy; else a master's), as a failure may pick any node. Per round:
seconds until every surviving node says ``cluster_state:ok`` with 16,384 slots ok
(``null`` if not within 90 s), keys lost (read back from the masters that serve each
key's slot; a slot nobody serves loses its keys), and once the node is started again,
once the tier's status shows the loss, the node is started again: seconds until the
tier is whole (six healthy members; for ``cachetier`` also masters on distinct nodes and
no replica beside its master, ``placement: Spread``).
Prints medians and the per-round figures as JSON and writes
``bench/results/node_loss.json``. Run from the repository root:
``env -u KUBECONFIG .venv/bin/python bench/bench_node_loss.py``;
``BENCH_NODE_LOSS_ROUNDS`` overrides the 5 rounds.
"""

from __future__ import annotations

import base64
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

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
from cachetier.topology import Domain

ROUNDS = int(os.environ.get("BENCH_NODE_LOSS_ROUNDS", "5"))
KEYS = 5000
TIER = "spread"
ZONES = ("a", "b", "c")
OK_TIMEOUT = 90.0

SCHEDULING: dict[str, dict[str, Any]] = {
    "cachetier": {},
    "baseline": {"affinity": {"podAntiAffinity": {}}, "topologySpreadConstraints": []},
}


def tier_body(ns: str, setup: str) -> dict[str, Any]:
    on_workers = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "topology.kubernetes.io/zone", "operator": "Exists"}
                        ]
                    }
                ]
            }
        }
    }
    scheduling = dict(SCHEDULING[setup])
    scheduling["affinity"] = {**on_workers, **scheduling.get("affinity", {})}
    return {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": "CacheTier",
        "metadata": {"name": TIER, "namespace": ns},
        "spec": {
            "mode": "cluster",
            "cluster": {"shards": 3, "replicasPerShard": 1},
            "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
            "scheduling": scheduling,
        },
    }


@contextmanager
def blind_planner(on: bool) -> Iterator[None]:
    """While on: the cluster mode hands the planner unknown failure domains."""
    from cachetier.reconcile.modes import cluster as cluster_mode

    original = cluster_mode.Domain
    if on:
        cluster_mode.Domain = lambda node="", zone="": Domain()  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        cluster_mode.Domain = original  # type: ignore[misc]


def cluster_info(addr: str, password: str) -> dict[str, str]:
    host, port = addr.rsplit(":", 1)
    with redis.Redis(
        host=host, port=int(port), password=password, socket_timeout=1,
        socket_connect_timeout=1, **quiet_handshake(),
    ) as r:  # fmt: skip
        info = r.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return {str(k): str(v) for k, v in info.items()}
    text = info.decode() if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def served_slots(survivors: list[str], ids: dict[str, str], password: str) -> dict[int, str]:
    """slot -> address of the live master that serves it (as a survivor sees it);
    ``ids``: node id -> address of the survivors (CLUSTER SLOTS names nodes by hostname)."""
    for addr in survivors:
        host, port = addr.rsplit(":", 1)
        with (
            suppress(redis.RedisError),
            redis.Redis(host=host, port=int(port), password=password, socket_timeout=2,
                        **quiet_handshake()) as r,
        ):  # fmt: skip
            slots: dict[int, str] = {}
            for start, end, master, *_ in r.execute_command("CLUSTER SLOTS"):
                node_id = master[2].decode() if isinstance(master[2], bytes) else str(master[2])
                if node_id in ids:
                    slots.update((s, ids[node_id]) for s in range(int(start), int(end) + 1))
            return slots
    return {}


def keys_lost(survivors: list[str], ids: dict[str, str], password: str) -> int:
    slots = served_slots(survivors, ids, password)
    by_node: dict[str, list[int]] = {}
    lost = 0
    for i in range(KEYS):
        where = slots.get(key_slot(f"key:{i}".encode()))
        if where is None:
            lost += 1
        else:
            by_node.setdefault(where, []).append(i)
    for addr, keys in by_node.items():
        host, port = addr.rsplit(":", 1)
        try:
            with redis.Redis(
                host=host, port=int(port), password=password, socket_timeout=5,
                **quiet_handshake(),
            ) as r:  # fmt: skip
                pipe = r.pipeline(transaction=False)
                for i in keys:
                    pipe.get(f"key:{i}")
                values = pipe.execute(raise_on_error=False)
            lost += sum(1 for i, v in zip(keys, values, strict=True) if v != str(i).encode())
        except redis.RedisError:
            lost += len(keys)
    return lost


def in_sync(members: list[dict[str, Any]], password: str) -> bool:
    for m in members:
        if m["role"] != "master":
            continue
        host, port = m["address"].rsplit(":", 1)
        try:
            with redis.Redis(
                host=host, port=int(port), password=password, socket_timeout=2,
                **quiet_handshake(),
            ) as r:  # fmt: skip
                info = r.info("replication")
        except redis.RedisError:
            return False
        slaves = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        if not slaves or any(s.get("offset") != info["master_repl_offset"] for s in slaves):
            return False
    return True


def worst_node(members: list[dict[str, Any]]) -> tuple[str, int]:
    """The node whose loss takes the most shards' every copy (ties: a master's node)."""
    masters = {m["id"]: m for m in members if m["role"] == "master"}
    together: dict[str, int] = {}
    for mid, master in masters.items():
        copies = [master, *(m for m in members if m.get("masterId") == mid)]
        if len({c["node"] for c in copies}) == 1:
            together[master["node"]] = together.get(master["node"], 0) + 1
    if together:
        node = max(together, key=lambda n: together[n])
        return node, together[node]
    return next(iter(masters.values()))["node"], 0


def spread(cluster: dict[str, Any]) -> bool:
    """Masters on distinct nodes, no replica on its master's node."""
    members = cluster.get("members") or []
    masters = {m["id"]: m["node"] for m in members if m["role"] == "master"}
    return len(set(masters.values())) == len(masters) and all(
        masters.get(m.get("masterId")) not in (None, m["node"])
        for m in members
        if m["role"] == "replica"
    )


def one_round(cp: Any, api: Any, setup: str, r: int) -> dict[str, Any]:
    from kubernetes import client as k8s

    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    ns = f"bench-node-loss-{setup}-{r}"
    core.create_namespace({"metadata": {"name": ns}})

    def status() -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, ns, names.PLURAL, TIER
        )
        return dict(body.get("status") or {})

    def whole(placement: str | None) -> dict[str, Any] | None:
        st = status()
        cl = st.get("cluster") or {}
        ok = (
            st.get("phase") == "Ready"
            and cl.get("state") == "ok"
            and cl.get("slotsAssigned") == 16384
            and len(cl.get("members") or []) == 6
            and all(m.get("healthy") for m in cl.get("members") or [])
            and (placement is None or (st.get("placement") == placement and spread(cl)))
        )
        return st if ok else None

    want = "Spread" if setup == "cachetier" else None
    custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, ns, names.PLURAL, tier_body(ns, setup)
    )
    st = wait_until("the tier whole", lambda: whole(want), 300, 1.0)
    # Where each member runs, from the pods (the blind baseline's status does not know).
    node_of = {p.status.pod_ip: p.spec.node_name for p in core.list_namespaced_pod(ns).items}
    members = [
        {**m, "node": node_of.get(m["address"].rsplit(":", 1)[0], "")}
        for m in st["cluster"]["members"]
    ]
    data = core.read_namespaced_secret(names.connection_secret(TIER), ns).data or {}
    password = base64.b64decode(data["password"]).decode()
    startup = [ClusterNode(*m["address"].rsplit(":", 1)) for m in members]
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
    wait_until("replicas in sync", lambda: in_sync(members, password), 60, 0.5)

    victim, shards_together = worst_node(members)
    survivors = [m["address"] for m in members if m["node"] != victim]
    ids = {m["id"]: m["address"] for m in members if m["node"] != victim}
    say(f"{setup} round {r + 1}: stopping {victim} ({shards_together} shard(s) on it alone)")
    stopped = time.monotonic()
    cp.stop_node(victim)

    def cluster_ok() -> bool:
        try:
            infos = [cluster_info(a, password) for a in survivors]
        except redis.RedisError:
            return False
        states_ok = all(
            i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384" for i in infos
        )
        # Right after the kill the others still say ok (not noticed yet): every slot must
        # also be served by a survivor.
        return states_ok and len(served_slots(survivors, ids, password)) == 16384

    ok_seconds: float | None = None
    deadline = stopped + OK_TIMEOUT
    while time.monotonic() < deadline:
        if cluster_ok():
            ok_seconds = round(time.monotonic() - stopped, 2)
            break
        time.sleep(0.2)
    lost = keys_lost(survivors, ids, password)

    lost_addresses = {m["address"] for m in members if m["node"] == victim}

    def loss_in_status() -> bool:
        members = (status().get("cluster") or {}).get("members") or []
        return any(m["address"] in lost_addresses and not m.get("healthy") for m in members)

    # The node stays down until the tier's status shows the loss (as in the e2e test), so
    # the repair measured below is a repair, not a status that never noticed.
    wait_until("the loss in status", loss_in_status, 120, 0.5)
    started = time.monotonic()
    cp.start_node(victim)
    repaired: float | None = None
    with suppress(SystemExit):
        wait_until("the tier whole again", lambda: whole(want), 300, 1.0)
        repaired = round(time.monotonic() - started, 2)
    core.delete_namespace(ns)
    wait_until("the round's pods gone", lambda: not core.list_namespaced_pod(ns).items, 120, 1.0)
    result = {
        "stopped_node": victim,
        "shards_on_stopped_node_alone": shards_together,
        "cluster_ok_seconds": ok_seconds,
        "keys_lost": lost,
        "whole_again_seconds": repaired,
    }
    say(f"{setup} round {r + 1}: {result}")
    return result


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [x[key] for x in rounds if x[key] is not None]
        return round(statistics.median(values), 2) if values else None

    return {
        "rounds": rounds,
        "cluster_ok_median_seconds": median("cluster_ok_seconds"),
        "whole_again_median_seconds": median("whole_again_seconds"),
        "keys_lost_total": sum(x["keys_lost"] for x in rounds),
        "rounds_with_loss": sum(1 for x in rounds if x["keys_lost"]),
        "rounds_not_ok": sum(1 for x in rounds if x["cluster_ok_seconds"] is None),
    }


def run(rounds: int) -> dict[str, Any]:
    from kubernetes import config

    from ctdev.controlplane.nodes import worker

    out: dict[str, Any] = {}
    with private_cluster(node_agent=True, prefix="bench-node-loss") as cp:
        for zone in ZONES:
            cp.add_node(worker(zone))
        install_crd(cp)
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        with running_operator():
            for setup in ("cachetier", "baseline"):
                results: list[dict[str, Any]] = []
                with blind_planner(setup == "baseline"):
                    for r in range(rounds):
                        results.append(one_round(cp, api, setup, r))
                out[setup] = summarize(results)
    return out


def main() -> None:
    in_private_hosts()
    say(f"node loss, {ROUNDS} rounds per setup")
    result = run(ROUNDS)
    emit(
        "node_loss",
        {
            "name": "node_loss",
            "keys": KEYS,
            **result,
            "goal_keys_lost": 0,
            "goal_met": result["cachetier"]["keys_lost_total"] == 0
            and result["cachetier"]["rounds_not_ok"] == 0,
            **machine(),
        },
        indent=2,
    )


if __name__ == "__main__":
    main()
