"""Benchmark: pod created -> Ready latency on the local node agent, and the agent's memory.

Creates 20 Redis pods (``redis:7.2-alpine``, exec readiness probe ``redis-cli ping``, as an
operator would) in a fresh namespace, one after another, and measures for each the time
from just before its create request to the first watch event that shows it Ready. Prints
ONE JSON object (median and max latency, the agent's RSS and peak RSS) and writes it to
``bench/results/pod_ready.json``.

Cluster: the one named by ``KUBECONFIG`` (it must run the node agent), or, when unset, a
local control plane with the agent started in ``.local/bench-<pid>-*/`` and stopped after.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from _harness import emit, private_cluster

PODS = 20


def agent_pid(kubeconfig: str) -> int | None:
    """The node agent process serving this kubeconfig (found in /proc, read only)."""
    want = Path(kubeconfig).resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "ctdev.nodeagent" not in argv or "--kubeconfig" not in argv:
            continue
        try:
            path = Path(argv[argv.index("--kubeconfig") + 1])
            cwd = (entry / "cwd").resolve()
        except (IndexError, OSError):
            continue
        if (path if path.is_absolute() else cwd / path).resolve() == want:
            return int(entry.name)
    return None


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"bench": "pod-ready"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "redis",
                    "image": "redis:7.2-alpine",
                    "args": ["--save", "", "--appendonly", "no"],
                    "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}},
                }
            ],
        },
    }


def run(kubeconfig: str) -> dict[str, Any]:
    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    ns = f"bench-pod-ready-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                core.read_namespaced_service_account("default", ns)
                break
            except ApiException as err:
                if err.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        created: dict[str, float] = {}
        ready: dict[str, float] = {}
        done = threading.Event()
        started = threading.Event()

        def observe() -> None:
            w = watch.Watch()
            started.set()
            for event in w.stream(core.list_namespaced_pod, ns, timeout_seconds=300):
                obj = event["object"]
                conds = obj.status.conditions or [] if obj.status else []
                if any(c.type == "Ready" and c.status == "True" for c in conds):
                    ready.setdefault(obj.metadata.name, time.monotonic())
                if len(ready) >= PODS:
                    w.stop()
            done.set()

        watcher = threading.Thread(target=observe, daemon=True)
        watcher.start()
        started.wait(10)
        time.sleep(0.5)  # let the watch connect
        for i in range(PODS):
            name = f"redis-{i:02d}"
            created[name] = time.monotonic()
            core.create_namespaced_pod(ns, pod(name))
        if not done.wait(180):
            raise SystemExit(f"only {len(ready)} of {PODS} pods became Ready within 180 s")
        latencies = sorted(ready[n] - created[n] for n in created)
        pid = agent_pid(kubeconfig)
        mem = memory_kib(pid) if pid else {}
        return {
            "benchmark": "pod_ready",
            "pods": PODS,
            "median_seconds": round(statistics.median(latencies), 3),
            "max_seconds": round(max(latencies), 3),
            "min_seconds": round(min(latencies), 3),
            "agent_rss_mib": round(mem["VmRSS"] / 1024, 1) if mem else None,
            "agent_peak_rss_mib": round(mem["VmHWM"] / 1024, 1) if mem else None,
            "agent_threads": mem.get("Threads"),
        }
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(ns)
        api.close()


def main() -> int:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        result = run(kubeconfig)
    else:
        with private_cluster(node_agent=True) as cp:
            result = run(str(cp.kubeconfig))
    emit("pod_ready", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
