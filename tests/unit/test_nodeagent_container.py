"""Unit tests for container lifecycles and probes (ctdev.nodeagent.container, probes).

Processes here are tiny local ``sh`` commands; nothing talks to a cluster.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from ctdev.nodeagent.container import Backoff, ContainerRunner, Launch
from ctdev.nodeagent.probes import ProbeState, ProbeTarget, run_probe

FAST = Backoff(base=0.2, max=0.4, reset=60.0)


def runner(policy: str = "Always", init: bool = False, **spec: object) -> ContainerRunner:
    return ContainerRunner(
        {"name": "c", "image": "redis", **spec},
        kind="redis",
        restart_policy=policy,
        init=init,
        backoff=FAST,
        fast_probe=0.05,
    )


def launch(tmp_path: Path, script: str) -> Launch:
    return Launch(
        ["/bin/sh", "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        cwd=str(tmp_path),
        log_path=tmp_path / "c.log",
    )


def wait_exit(r: ContainerRunner) -> None:
    assert r.proc is not None
    assert r.proc.wait(10)
    deadline = time.monotonic() + 5
    while not r.reap():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_restart_with_backoff_counts_and_last_state(tmp_path: Path) -> None:
    r = runner()
    assert r.due_start(time.monotonic())
    woke = threading.Event()
    r.start(launch(tmp_path, "echo hi; exit 3"), woke.set)
    assert r.state.get("running") and r.container_id.startswith("cachetier://")
    wait_exit(r)
    assert woke.is_set()
    assert r.state["terminated"]["exitCode"] == 3  # first restart is immediate
    assert r.due_start(time.monotonic())
    r.start(launch(tmp_path, "exit 4"), woke.set)
    assert r.restart_count == 1
    wait_exit(r)
    assert r.state["waiting"]["reason"] == "CrashLoopBackOff"
    assert r.last_state["terminated"]["exitCode"] == 4
    assert not r.due_start(time.monotonic())
    assert r.next_wake() is not None
    time.sleep(0.25)
    assert r.due_start(time.monotonic())
    assert (tmp_path / "c.log").read_text().startswith("hi")


def test_killed_process_reports_signal_exit_code(tmp_path: Path) -> None:
    r = runner("Never")
    r.start(launch(tmp_path, "sleep 30"), lambda: None)
    r.stop()
    wait_exit(r)
    assert r.completed and r.last_state == {} and r.state["terminated"]["exitCode"] == 143
    assert r.state["terminated"]["signal"] == 15


@pytest.mark.parametrize(
    ("policy", "code", "completed"),
    [
        ("Never", 0, True),
        ("Never", 1, True),
        ("OnFailure", 0, True),
        ("OnFailure", 1, False),
    ],
)
def test_restart_policy(tmp_path: Path, policy: str, code: int, completed: bool) -> None:
    r = runner(policy)
    r.start(launch(tmp_path, f"exit {code}"), lambda: None)
    wait_exit(r)
    assert r.completed is completed


def test_init_container_completes_on_success_and_retries_on_failure(tmp_path: Path) -> None:
    r = runner("Always", init=True)
    r.start(launch(tmp_path, "exit 1"), lambda: None)
    wait_exit(r)
    assert not r.completed
    r.start(launch(tmp_path, "exit 0"), lambda: None)
    wait_exit(r)
    assert r.completed and r.state["terminated"]["reason"] == "Completed"


def test_placeholder_containers_run_and_are_ready(tmp_path: Path) -> None:
    r = runner(readinessProbe={"tcpSocket": {"port": 1}})
    r.start(Launch(argv=None), lambda: None)
    assert r.running and r.ready and r.view().state.get("running")
    init = runner(init=True)
    init.start(Launch(argv=None), lambda: None)
    assert init.completed and init.state["terminated"]["exitCode"] == 0


def test_probe_state_thresholds() -> None:
    p = ProbeState("readiness", {"periodSeconds": 5, "failureThreshold": 2}, fast_interval=0.1)
    p.reset(100.0)
    assert not p.result and p.next_at == 100.0
    p.record(False, 100.0)
    assert p.next_at == pytest.approx(100.1)  # fast until the first success
    p.record(True, 101.0)
    assert p.result and p.next_at == 106.0
    p.record(False, 106.0)
    assert p.result
    p.record(False, 111.0)
    assert not p.result
    live = ProbeState("liveness", {"initialDelaySeconds": 3})
    live.reset(0.0)
    assert live.result and live.next_at == 3.0


def test_readiness_gates_ready_and_liveness_kills(tmp_path: Path) -> None:
    r = runner(readinessProbe={"exec": {"command": ["x"]}}, livenessProbe={"failureThreshold": 1})
    r.start(launch(tmp_path, "sleep 30"), lambda: None)
    assert r.running and not r.ready
    now = time.monotonic()
    due = r.due_probes(now)
    assert {p.kind for p in due} == {"readiness", "liveness"}
    readiness = r.probes["readiness"]
    r.record_probe(readiness, True, now, grace=5)
    assert r.ready
    r.record_probe(r.probes["liveness"], False, now, grace=0.0)
    assert r.kill_at is not None
    wait_exit(r)
    assert r.state["terminated"]["exitCode"] == 143


def test_run_probe_kinds() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.0 204 No Content\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    calls: list[list[str]] = []

    def run_exec(argv: list[str], timeout: float) -> bool:
        calls.append(argv)
        return argv == ["ok"]

    target = ProbeTarget("127.0.0.1", {"http": port}, run_exec)
    try:
        assert run_probe({"httpGet": {"path": "/healthz", "port": "http"}}, target, 2.0)
        thread.join(5)
        assert run_probe({"tcpSocket": {"port": port}}, target, 1.0)
        assert run_probe({"exec": {"command": ["ok"]}}, target, 1.0)
        assert not run_probe({"exec": {"command": ["bad"]}}, target, 1.0)
    finally:
        server.close()
    assert not run_probe({"tcpSocket": {"port": port}}, target, 1.0)
    assert calls == [["ok"], ["bad"]]
