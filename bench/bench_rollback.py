"""Benchmark: instant rollback of 200 consumer Deployments, against the floor.

Starts its own local control plane (``.local/bench-rollback-<pid>-*/``, node
agent ON so the standalone tier's Redis pod runs and the tier goes Ready),
installs the CRD, runs the operator in this process (kopf.testing.KopfRunner),
creates a tier at 100 % and 200 labelled consumer Deployments (``replicas: 0``
to keep the machine light: the controller manager still makes a ReplicaSet per
template change, but no pods), waits until all 200 carry ``REDIS_ENABLED=true``
and measures (the tier has ``autoRollback.enabled: false`` and ``maxLatencyMs:
60000``: on a busy 2-core machine the default 10 ms PING threshold trips the
auto-rollback during the run, which would switch the consumers off early):

- ``rollback``: seconds from the rollback patch (``rollout.enabled: false``)
  until the last Deployment template carries ``REDIS_ENABLED=false``, as seen by
  an observer: a watch of the namespace's Deployments in a separate process (its
  own interpreter, so decoding 200 events takes nothing from the operator's GIL;
  no poll interval, so neither side is rounded up to the next poll), and the
  operator's API write requests (``Kube.write_count``) per consumer change;
- ``reenable``: the same back to 100 % (not a target, for context);
- ``idle``: the operator's write requests during 60 s with 200 consumers and
  nothing to do (target 0; the window holds one full resync);
- ``baseline`` (the floor, operator stopped first so it cannot fight back):
  the same 200 switched to ``REDIS_ENABLED=false`` directly by server-side
  apply under another field manager (forced: ``cachetier-operator`` owns the
  value), from a pool of 16 threads, timed by the same observer (started
  before the first apply, like the operator's before the patch).

Prints one JSON object and writes it to ``bench/results/rollback.json``.
Run from the repository root: ``env -u KUBECONFIG .venv/bin/python bench/bench_rollback.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _harness import (
    emit,
    install_crd,
    machine,
    private_cluster,
    profiled,
    running_operator,
    say,
    settle,
    wait,
)
from cachetier import names
from cachetier.kube.client import Kube, load_api_client, path

NAME = "rollback_200"
CONSUMERS = 200
THREADS = 16
POLL = 0.1
IDLE_SECONDS = 60.0
TIMEOUT = 300.0
NAMESPACE = "bench-rollback"
TIER = "tasks-cache"
LABEL = "cache.ordo.dev/tasks"
BASELINE_MANAGER = "bench-baseline"


def consumer_name(i: int) -> str:
    return f"svc-{i:03d}"


def deployment(i: int) -> dict[str, Any]:
    name = consumer_name(i)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app": name, LABEL: "true"},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/app:1",
                            "env": [{"name": "APP_MODE", "value": "web"}],
                        }
                    ]
                },
            },
        },
    }


def tier_body() -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": TIER, "namespace": NAMESPACE},
        "spec": {
            "mode": "standalone",
            "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
            "consumers": {"selector": {"matchLabels": {LABEL: "true"}}},
            # Only the rollback patch may switch consumers off, and a slow PING on a
            # busy 2-core machine must not write health status into the idle window.
            "rollout": {
                "enabled": True,
                "percent": 100,
                "autoRollback": {"enabled": False, "maxLatencyMs": 60000},
            },
        },
    }


def flags(kube: Kube) -> dict[str, str | None]:
    """REDIS_ENABLED of container "app" of every consumer (one list call)."""
    out: dict[str, str | None] = {}
    for dep in kube.list_objects("Deployment", NAMESPACE):
        value = None
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "app":
                for e in c.get("env") or []:
                    if e.get("name") == names.ENV_REDIS_ENABLED:
                        value = e.get("value")
        out[dep["metadata"]["name"]] = value
    return out


def wait_all(kube: Kube, value: str, t0: float, what: str) -> tuple[float, int]:
    """Poll every ~POLL s until all consumers carry ``value``; (seconds since t0, polls)."""
    polls = 0
    while True:
        polls += 1
        current = flags(kube)
        done = sum(1 for v in current.values() if v == value)
        if done == CONSUMERS and len(current) == CONSUMERS:
            return time.monotonic() - t0, polls
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"timed out waiting for {what}: {done}/{CONSUMERS}")
        time.sleep(POLL)


def _flag(dep: dict[str, Any]) -> str | None:
    for c in dep["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "app":
            for e in c.get("env") or []:
                if e.get("name") == names.ENV_REDIS_ENABLED:
                    return str(e.get("value"))
    return None


def observe(kubeconfig: str, value: str) -> None:
    """The observer process: list, print "ready", then watch until all CONSUMERS
    carry ``value``; print that moment (``time.monotonic()``, one clock for every
    process of the machine) and exit."""
    kube = Kube(load_api_client(kubeconfig))
    listed = kube.request("GET", path("Deployment", NAMESPACE))
    current = {d["metadata"]["name"]: _flag(d) for d in listed.get("items", [])}
    version = listed["metadata"]["resourceVersion"]
    print("ready", flush=True)
    while True:
        if len(current) == CONSUMERS and all(v == value for v in current.values()):
            print(f"{time.monotonic():.6f}", flush=True)
            return
        query = [("watch", "true"), ("resourceVersion", version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", "60")]  # fmt: skip
        for event in kube.watch(path("Deployment", NAMESPACE), query, timeout=70):
            obj = event["object"]
            version = obj["metadata"].get("resourceVersion", version)
            if event["type"] in ("ADDED", "MODIFIED"):
                current[obj["metadata"]["name"]] = _flag(obj)
            elif event["type"] == "DELETED":
                current.pop(obj["metadata"]["name"], None)
            elif event["type"] == "ERROR":
                raise SystemExit(f"observer: watch error {obj}")
            if len(current) == CONSUMERS and all(v == value for v in current.values()):
                break


@contextmanager
def observed(kubeconfig: str, value: str, what: str) -> Iterator[Callable[[float], float]]:
    """An observer process watching for every consumer at ``value``; yields
    ``done(t0)``: the seconds from ``t0`` until the observer saw the last one."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--observe", kubeconfig, value],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {what} observer did not start")

        def done(t0: float) -> float:
            assert proc.stdout is not None
            out, _ = proc.communicate(timeout=TIMEOUT)
            if proc.returncode != 0 or not out.strip():
                raise SystemExit(f"timed out or failed waiting for {what}")
            return float(out.strip().splitlines()[-1]) - t0

        yield done
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def tier_ready(kube: Kube) -> bool:
    tier = kube.get(names.KIND, NAMESPACE, TIER) or {}
    for c in (tier.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return bool(c["status"] == "True")
    return False


def patch_rollout(kube: Kube, rollout: dict[str, Any]) -> None:
    kube.merge_patch(
        names.KIND,
        NAMESPACE,
        TIER,
        {"spec": {"rollout": rollout}},
        field_manager=names.CLI_FIELD_MANAGER,
    )


def run_operator_phase(kubeconfig: str, admin: Kube) -> dict[str, Any]:
    with running_operator() as rt:
        say("creating the tier; waiting for Ready")
        admin.create(tier_body())
        wait("the tier Ready", lambda: tier_ready(admin), timeout=240, interval=0.5)

        say(f"creating {CONSUMERS} consumer Deployments (replicas 0)")
        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda i: admin.create(deployment(i)), range(CONSUMERS)))
        onboard_seconds, _ = wait_all(admin, "true", t0, "onboarding")
        settle(rt)

        say(f"idle: {IDLE_SECONDS:.0f}s with {CONSUMERS} consumers")
        idle_before, reconciles_before = rt.kube.write_count, rt.reconciles
        idle_methods_before = dict(rt.kube.writes)
        time.sleep(IDLE_SECONDS)
        idle_writes = rt.kube.write_count - idle_before
        idle_reconciles = rt.reconciles - reconciles_before
        idle_by_method = _delta(rt.kube.writes, idle_methods_before)

        current = flags(admin)
        if sum(1 for v in current.values() if v == "true") != CONSUMERS:
            raise SystemExit("consumers were switched off before the rollback patch")

        say("rollback")
        writes_before, by_method_before = rt.kube.write_count, dict(rt.kube.writes)
        with observed(kubeconfig, "false", "rollback") as done, profiled("rollback"):
            t0 = time.monotonic()
            patch_rollout(admin, {"enabled": False})
            rollback_seconds = done(t0)
        writes_at_done = rt.kube.write_count - writes_before
        settle(rt)
        rollback_writes = rt.kube.write_count - writes_before
        by_method = _delta(rt.kube.writes, by_method_before)

        say("re-enable")
        writes_before = rt.kube.write_count
        with observed(kubeconfig, "true", "re-enable") as done:
            t0 = time.monotonic()
            patch_rollout(admin, {"enabled": True})
            reenable_seconds = done(t0)
        settle(rt)
        reenable_writes = rt.kube.write_count - writes_before
    return {
        "onboard_seconds": round(onboard_seconds, 3),
        "rollback": {
            "seconds": round(rollback_seconds, 3),
            "writes_when_done": writes_at_done,
            "writes": rollback_writes,
            "writes_per_consumer_change": round(rollback_writes / CONSUMERS, 3),
            "writes_by_method": by_method,
        },
        "reenable": {
            "seconds": round(reenable_seconds, 3),
            "writes": reenable_writes,
            "writes_per_consumer_change": round(reenable_writes / CONSUMERS, 3),
        },
        "idle": {
            "seconds": IDLE_SECONDS,
            "writes": idle_writes,
            "writes_by_method": idle_by_method,
            "reconciles": idle_reconciles,
        },
    }


def _delta(now: Any, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


def run_baseline_phase(kubeconfig: str, admin: Kube) -> dict[str, Any]:
    """The floor: SSA REDIS_ENABLED=false on the 200 directly, 16 threads, operator stopped."""
    kube = Kube(load_api_client(kubeconfig))

    def one(i: int) -> None:
        kube.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": consumer_name(i), "namespace": NAMESPACE},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "app",
                                    "env": [{"name": names.ENV_REDIS_ENABLED, "value": "false"}],
                                }
                            ]
                        }
                    }
                },
            },
            field_manager=BASELINE_MANAGER,
            force=True,
        )

    before = flags(admin)
    if sum(1 for v in before.values() if v == "true") != CONSUMERS:
        raise SystemExit("baseline: the consumers are not all enabled")
    say(f"baseline: {CONSUMERS} server-side applies with {THREADS} threads")
    with observed(kubeconfig, "false", "baseline") as done:
        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(one, range(CONSUMERS)))
        patch_seconds = time.monotonic() - t0
        seconds = done(t0)
    writes = kube.write_count
    kube.api_client.close()
    return {
        "seconds": round(seconds, 3),
        "patch_seconds": round(patch_seconds, 3),
        "threads": THREADS,
        "writes": writes,
        "writes_per_consumer_change": round(writes / CONSUMERS, 3),
    }


def main() -> None:
    with private_cluster(node_agent=True, prefix="bench-rollback") as cp:
        install_crd(cp)
        admin = Kube(load_api_client(str(cp.kubeconfig)))
        admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        operator = run_operator_phase(str(cp.kubeconfig), admin)
        baseline = run_baseline_phase(str(cp.kubeconfig), admin)
        admin.api_client.close()
    result = {
        "name": NAME,
        "consumers": CONSUMERS,
        "consumer_replicas": 0,
        "operator": operator,
        "baseline": baseline,
        "rollback_seconds": operator["rollback"]["seconds"],
        "baseline_seconds": baseline["seconds"],
        "ratio_seconds": round(operator["rollback"]["seconds"] / baseline["seconds"], 2),
        "writes_per_consumer_change": operator["rollback"]["writes_per_consumer_change"],
        "idle_writes_60s": operator["idle"]["writes"],
        "node_agent": True,
        "note": (
            "local control plane with the node agent (the standalone tier's Redis runs); "
            "consumer Deployments have replicas 0 to keep the machine light (the "
            "controller manager still makes a ReplicaSet per template change); seconds "
            "are from the patch until a watch in a separate process sees the last "
            "template switched; the baseline applies REDIS_ENABLED=false "
            f"directly (server-side apply, field manager {BASELINE_MANAGER}, forced, "
            f"{THREADS} threads) with the operator stopped; autoRollback off and "
            "maxLatencyMs 60000 so health probes neither roll back nor write status"
        ),
        **machine(),
    }
    emit("rollback", result)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--observe"]:
        observe(sys.argv[2], sys.argv[3])
    else:
        main()
