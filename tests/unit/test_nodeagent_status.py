"""Unit tests for pod status building (ctdev.nodeagent.status) and address pools (ipam)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ctdev.nodeagent.ipam import AddressPool, PoolExhausted
from ctdev.nodeagent.status import (
    Conditions,
    ContainerView,
    build_pod_status,
    container_status,
    pod_phase,
)

RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
WAITING = {"waiting": {"reason": "ContainerCreating"}}
CRASH = {"waiting": {"reason": "CrashLoopBackOff"}}


def term(code: int) -> dict[str, dict[str, object]]:
    return {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}


def view(
    state: dict[str, dict[str, object]], *, ready: bool = False, last: bool = False
) -> ContainerView:
    return ContainerView("c", "redis", state, last_state=term(1) if last else {}, ready=ready)


@pytest.mark.parametrize(
    ("policy", "states", "phase"),
    [
        ("Always", [view(WAITING)], "Pending"),
        ("Always", [view(RUNNING), view(WAITING)], "Pending"),
        ("Always", [view(RUNNING)], "Running"),
        ("Always", [view(CRASH, last=True)], "Running"),
        ("Always", [view(term(0))], "Running"),
        ("Never", [view(term(0)), view(term(0))], "Succeeded"),
        ("Never", [view(term(0)), view(term(2))], "Failed"),
        ("OnFailure", [view(term(0))], "Succeeded"),
        ("OnFailure", [view(CRASH, last=True)], "Running"),
    ],
)
def test_pod_phase(policy: str, states: list[ContainerView], phase: str) -> None:
    assert pod_phase(policy, states, initializing=False, init_failed=False) == phase


def test_pod_phase_during_and_after_init() -> None:
    assert pod_phase("Always", [view(RUNNING)], initializing=True, init_failed=False) == "Pending"
    assert pod_phase("Never", [view(WAITING)], initializing=True, init_failed=True) == "Failed"


def test_container_status_nulls_the_other_state_kinds() -> None:
    status = container_status(ContainerView("r", "redis:7", RUNNING, container_id="x://1"))
    assert status["state"] == {"waiting": None, "terminated": None, **RUNNING}
    assert status["containerID"] == "x://1" and status["imageID"].endswith("redis:7")


def test_conditions_keep_transition_times_and_clear_reasons() -> None:
    conds = Conditions([{"type": "Ready", "status": "False", "lastTransitionTime": "T0"}])
    first = conds.make("Ready", False, "ContainersNotReady", "m")
    assert first["lastTransitionTime"] == "T0" and first["reason"] == "ContainersNotReady"
    second = conds.make("Ready", True, "ContainersNotReady", "m")
    assert second["lastTransitionTime"] != "T0"
    assert second["reason"] is None and second["message"] is None


def test_build_pod_status_ready_and_gates() -> None:
    pod = {"spec": {"restartPolicy": "Always"}, "status": {"conditions": []}}
    body = build_pod_status(
        pod,
        pod_ip="127.10.0.4",
        host_ip="127.0.0.1",
        start_time="T",
        init_views=[],
        views=[view(RUNNING, ready=True)],
        initializing=False,
        init_failed=False,
        conditions=Conditions(),
    )
    status = body["status"]
    by_type = {c["type"]: c["status"] for c in status["conditions"]}
    assert by_type == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    assert status["podIPs"] == [{"ip": "127.10.0.4"}] and status["phase"] == "Running"
    assert "initContainerStatuses" not in status

    gated = {**pod, "spec": {"readinessGates": [{"conditionType": "example.com/ok"}]}}
    body = build_pod_status(
        gated,
        pod_ip="127.10.0.4",
        host_ip="127.0.0.1",
        start_time="T",
        init_views=[],
        views=[view(RUNNING, ready=True)],
        initializing=False,
        init_failed=False,
        conditions=Conditions(),
    )
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ReadinessGatesNotReady"


def test_address_pool_skips_network_ends_and_is_stable(tmp_path: Path) -> None:
    pool = AddressPool("127.10.0.0/23", tmp_path / "ips.json")
    first = pool.allocate("a")
    assert first == "127.10.0.1"
    assert pool.allocate("a") == first
    seen = {pool.allocate(f"k{i}") for i in range(300)}
    assert all(int(ipaddress.IPv4Address(ip)) & 0xFF not in (0, 255) for ip in seen)
    assert first not in seen
    again = AddressPool("127.10.0.0/23", tmp_path / "ips.json")
    assert again.get("a") == first and again.get("k299") == pool.get("k299")


def test_address_pool_round_robin_prefer_and_exhaustion() -> None:
    pool = AddressPool("127.10.0.0/30")  # .1 .2 .3 usable (.0 skipped)
    assert [pool.allocate(k) for k in "abc"] == ["127.10.0.1", "127.10.0.2", "127.10.0.3"]
    with pytest.raises(PoolExhausted):
        pool.allocate("d")
    pool.release("a")
    assert pool.allocate("d") == "127.10.0.1"
    pool.release("b")
    assert pool.allocate("e", prefer="127.10.0.2") == "127.10.0.2"
    pool.release("e")
    assert pool.allocate("f", prefer="10.0.0.1") == "127.10.0.2"  # outside: ignored


def test_address_pools_of_two_agents_never_share_an_address(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    one = AddressPool("127.10.0.0/24", tmp_path / "a.json", lease_dir=leases, owner="agent-a")
    two = AddressPool("127.10.0.0/24", tmp_path / "b.json", lease_dir=leases, owner="agent-b")
    mine = {one.allocate(f"a{i}") for i in range(5)}
    theirs = {two.allocate(f"b{i}") for i in range(5)}
    assert not mine & theirs
    assert two.allocate("b-pref", prefer="127.10.0.1") != "127.10.0.1"
    one.release("a0")  # 127.10.0.1 is free again machine-wide
    assert two.allocate("b-late", prefer="127.10.0.1") == "127.10.0.1"
    # A restarted agent (same owner) keeps its addresses.
    again = AddressPool("127.10.0.0/24", tmp_path / "a.json", lease_dir=leases, owner="agent-a")
    assert again.get("a1") == one.get("a1")
    assert (leases / str(again.get("a1"))).exists()


def test_leases_of_dead_agents_are_taken_over(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.mkdir()
    (leases / "127.10.0.1").write_text('{"owner": "gone", "pid": 999999999}')
    pool = AddressPool("127.10.0.0/24", lease_dir=leases, owner="me")
    assert pool.allocate("k") == "127.10.0.1"
