"""The cluster executor against real redis-server processes.

Bootstrap from empty nodes, failover and rejoin, scaling with data, and an
executor stopped in the middle of a slot migration. Waits are polls with
generous limits, never timing assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cachetier.redis.cluster import ClusterExecutor, Connection, Progress, converge
from cachetier.topology import DesiredLayout, MigrateSlots, NodeAddress, plan_next_steps
from cachetier.topology.nodes import parse_cluster_nodes
from tests.redis.conftest import PASSWORD, RedisNode

pytestmark = [pytest.mark.redis, pytest.mark.timeout(600)]

NodeFactory = Callable[[int], list[RedisNode]]
CONVERGE_TIMEOUT = 180.0


def addresses(nodes: list[RedisNode]) -> list[NodeAddress]:
    return [n.address for n in nodes]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def cluster_info(node: RedisNode) -> dict[str, str]:
    with node.client() as c:
        text = c.execute_command("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def myself(node: RedisNode) -> tuple[str, str | None]:
    """(role flags, master id) of a node, from its own CLUSTER NODES."""
    with node.client() as c:
        nodes = parse_cluster_nodes(c.execute_command("CLUSTER", "NODES").decode())
    me = next(n for n in nodes if n.myself)
    return ("master" if me.is_master else "replica"), me.master_id


def node_id(node: RedisNode) -> str:
    with node.client() as c:
        return str(c.execute_command("CLUSTER", "MYID").decode())


def client(node: RedisNode) -> RedisCluster:
    return RedisCluster(host=node.address.host, port=node.address.port, password=PASSWORD)


def write_keys(node: RedisNode, keys: dict[str, str]) -> None:
    with client(node) as rc:
        items = list(keys.items())
        for i in range(0, len(items), 1000):
            rc.mset_nonatomic(dict(items[i : i + 1000]))


def assert_all_readable(node: RedisNode, keys: dict[str, str]) -> None:
    names = list(keys)
    with client(node) as rc:
        values: list[bytes | None] = []
        for i in range(0, len(names), 1000):
            values += rc.mget_nonatomic(names[i : i + 1000])
    missing = [k for k, v in zip(names, values, strict=True) if v is None or v.decode() != keys[k]]
    assert not missing, f"{len(missing)} keys lost, e.g. {missing[:3]}"


def bootstrap(nodes: list[RedisNode]) -> None:
    result = converge(addresses(nodes), PASSWORD, 3, 1, timeout=CONVERGE_TIMEOUT)
    assert result.converged, (result.plan.waiting, result.errors)
    wait_for(lambda: all(cluster_info(n)["cluster_state"] == "ok" for n in nodes), "state ok")


def test_bootstrap_six_empty_nodes(redis_nodes: NodeFactory) -> None:
    nodes = redis_nodes(6)
    result = converge(addresses(nodes), PASSWORD, 3, 1, timeout=CONVERGE_TIMEOUT)
    assert result.converged, (result.plan.waiting, result.errors)
    assert result.summary.state == "ok" and result.summary.slots_assigned == 16384
    assert result.summary.shards == 3
    for n in nodes:
        info = cluster_info(n)
        assert info["cluster_state"] == "ok" and info["cluster_slots_assigned"] == "16384"
        assert info["cluster_known_nodes"] == "6"
    roles = [myself(n) for n in nodes]
    masters = [node_id(n) for n, (role, _) in zip(nodes, roles, strict=True) if role == "master"]
    assert len(masters) == 3
    assert sorted(m for role, m in roles if role == "replica") == sorted(masters)
    with client(nodes[0]) as rc:
        rc.set("hello", "world")
        assert rc.get("hello") == b"world"
    again = converge(addresses(nodes), PASSWORD, 3, 1, timeout=CONVERGE_TIMEOUT)
    assert again.converged and again.steps_done == 0


def test_master_killed_replica_promoted_and_old_master_rejoins_as_replica(
    redis_nodes: NodeFactory,
) -> None:
    nodes = redis_nodes(6)
    bootstrap(nodes)
    keys = {f"heal:{i}": str(i) for i in range(1000)}
    write_keys(nodes[0], keys)
    master = next(n for n in nodes if myself(n)[0] == "master")
    master_id = node_id(master)
    replica = next(n for n in nodes if myself(n) == ("replica", master_id))

    master.kill()
    wait_for(lambda: myself(replica)[0] == "master", "replica promoted")
    wait_for(lambda: cluster_info(replica)["cluster_state"] == "ok", "cluster ok after failover")

    master.start()  # same directory: it comes back with its nodes.conf
    result = converge(addresses(nodes), PASSWORD, 3, 1, timeout=CONVERGE_TIMEOUT)
    assert result.converged, (result.plan.waiting, result.errors)
    assert node_id(master) == master_id
    assert myself(master) == ("replica", node_id(replica))
    assert_all_readable(replica, keys)


def test_full_restart_with_new_addresses_reforms_from_nodes_conf(
    redis_nodes: NodeFactory, new_port: Callable[[], int]
) -> None:
    nodes = redis_nodes(6)
    bootstrap(nodes)
    keys = {f"moved:{i}": str(i) for i in range(500)}
    write_keys(nodes[0], keys)
    wait_for(lambda: all(myself(n)[0] == "master" or in_sync(n) for n in nodes), "replicas synced")
    ids = [node_id(n) for n in nodes]
    for n in nodes:  # every pod comes back with a new address: nobody can reach anybody
        n.stop()
        n.move_to(new_port())
    for n in nodes:
        n.start()
    result = converge(addresses(nodes), PASSWORD, 3, 1, timeout=CONVERGE_TIMEOUT)
    assert result.converged, (result.plan.waiting, result.errors)
    assert [node_id(n) for n in nodes] == ids
    assert result.summary.state == "ok" and result.summary.slots_served == 16384
    assert_all_readable(nodes[0], keys)


def in_sync(node: RedisNode) -> bool:
    with node.client() as c:
        return bool(c.info("replication").get("master_link_status") == "up")


def test_scale_out_to_four_and_back_to_three_keeps_every_key(redis_nodes: NodeFactory) -> None:
    nodes = redis_nodes(6)
    bootstrap(nodes)
    keys = {f"key:{i}": f"value-{i}" for i in range(10_000)}
    write_keys(nodes[0], keys)

    nodes += redis_nodes(2)
    out = converge(addresses(nodes), PASSWORD, 4, 1, timeout=CONVERGE_TIMEOUT)
    assert out.converged, (out.plan.waiting, out.errors)
    assert out.summary.shards == 4 and out.summary.slots_assigned == 16384
    assert out.keys_migrated > 0
    slots = sorted(n.slots for n in out.summary.nodes if n.role == "master")
    assert slots[-1] - slots[0] <= 1
    assert_all_readable(nodes[0], keys)

    back = converge(addresses(nodes), PASSWORD, 3, 1, timeout=CONVERGE_TIMEOUT)
    assert back.converged, (back.plan.waiting, back.errors)
    assert set(back.plan.removable) == {n.address for n in nodes[6:]}
    assert back.summary.shards == 3 and len(back.summary.nodes) == 6
    for n in nodes[6:]:
        n.stop()
    nodes = nodes[:6]
    final = converge(addresses(nodes), PASSWORD, 3, 1, timeout=CONVERGE_TIMEOUT)
    assert final.converged, (final.plan.waiting, final.errors)
    assert all(cluster_info(n)["cluster_known_nodes"] == "6" for n in nodes)
    assert_all_readable(nodes[0], keys)


def first_slot_to_migrate(nodes: list[RedisNode], desired: DesiredLayout) -> int:
    """Run the plan up to its first migration, and return the first slot it moves."""
    with ClusterExecutor(Connection(password=PASSWORD)) as ex:
        for _ in range(50):
            plan = plan_next_steps(ex.observe(desired.nodes), desired)
            migrations = [s for s in plan.steps if isinstance(s, MigrateSlots)]
            if migrations:
                return migrations[0].slots[0].start
            for step in plan.steps:
                ex.execute(step)
            time.sleep(0.2)
    raise AssertionError("no migration planned")


def test_executor_stopped_mid_migration_resumes_without_losing_keys(
    redis_nodes: NodeFactory,
) -> None:
    nodes = redis_nodes(6)
    bootstrap(nodes)
    nodes += redis_nodes(2)
    desired = DesiredLayout(4, 1, tuple(addresses(nodes)))
    slot = first_slot_to_migrate(nodes, desired)
    tag = next(f"t{i}" for i in range(1_000_000) if key_slot(f"{{t{i}}}".encode()) == slot)
    keys = {f"{{{tag}}}:{i}": str(i) for i in range(300)}
    keys |= {f"spread:{i}": str(i) for i in range(2000)}
    write_keys(nodes[0], keys)

    def stop(p: Progress) -> bool:
        return p.slot == slot and p.keys_migrated >= 60

    cut = converge(
        addresses(nodes), PASSWORD, 4, 1, timeout=CONVERGE_TIMEOUT, stop=stop, keys_per_batch=20
    )
    assert cut.stopped == "stopped" and not cut.converged
    markers = []
    for n in nodes:
        with n.client() as c:
            me = next(
                x
                for x in parse_cluster_nodes(c.execute_command("CLUSTER", "NODES").decode())
                if x.myself
            )
        markers += [s for s, _ in me.importing + me.migrating]
    assert slot in markers, "the executor was not stopped mid-slot"

    # Resume under a step budget: the half-done slot is finished first, then it stops again.
    budget = converge(addresses(nodes), PASSWORD, 4, 1, timeout=CONVERGE_TIMEOUT, max_steps=2)
    assert budget.stopped == "budget" and budget.steps_done == 2 and not budget.converged
    assert_all_readable(nodes[0], keys)

    done = converge(addresses(nodes), PASSWORD, 4, 1, timeout=CONVERGE_TIMEOUT)
    assert done.converged, (done.plan.waiting, done.errors)
    assert done.summary.shards == 4
    assert_all_readable(nodes[0], keys)
