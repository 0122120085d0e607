"""Benchmark: rollback latency to running pods, pod vs workload granularity (issue 6).

Starts its own local control plane (``.local/bench-flags-<pid>-*/``, node agent ON),
installs the CRD and runs the operator in this process (kopf.testing.KopfRunner).
For each N in (20, 100), in its own namespace:

- pod granularity: a standalone tier at 100 % with one consumer Deployment of N
  pods. The consumers use an image the node agent does not know (it reports the pod
  Running without a process, so 100 pods fit on 2 cores), but the agent still
  materialises their volumes, so the downward-API flag file
  ``<agent state>/pods/<uid>/volumes/cachetier-flags/redis-enabled`` is exactly
  what a running app reads. Measured: seconds from the rollback patch
  (``spec.rollout.enabled=false``) until the last of the N files reads ``false``
  (and, for reference, until the last pod annotation says ``false``);
- workload granularity (the comparison): the same tier and Deployment, but the
  rollback flips the template env; measured: seconds from the patch until N pods
  of the new template (``REDIS_ENABLED=false``) are Running and no old pod is left.

Prints one JSON object and writes ``bench/results/flag_rollback.json``.
Run from the repository root:
``env -u KUBECONFIG .venv/bin/python bench/bench_flag_rollback.py [N ...]``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness
from _harness import emit, install_crd, machine, private_cluster, running_operator, say
from cachetier import names
from cachetier.kube.client import Kube, load_api_client
from cachetier.reconcile.injection import FLAG_FILE, FLAG_VOLUME

SIZES = [int(a) for a in sys.argv[1:]] or [20, 100]
IMAGE = "registry.example/app:1"  # no process: the node agent reports it Running
LABEL = "bench.cachetier.io/consumer"
TIMEOUT = 300.0
POLL = 0.02


def wait(
    what: str, probe: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.2
) -> Any:
    """``_harness.wait`` with this benchmark's default timeout."""
    return _harness.wait(what, probe, timeout, interval)


def tier_body(ns: str, granularity: str) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "flags", "namespace": ns},
        "spec": {
            "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
            "consumers": {"selector": {"matchLabels": {LABEL: "true"}}},
            "rollout": {"enabled": True, "percent": 100, "granularity": granularity},
        },
    }


def deployment_body(ns: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "consumer", "namespace": ns, "labels": {LABEL: "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "consumer"}},
            "template": {
                "metadata": {"labels": {"app": "consumer"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": IMAGE}],
                },
            },
        },
    }


def live_pods(kube: Kube, ns: str) -> list[dict[str, Any]]:
    return [
        p
        for p in kube.list_objects("Pod", ns, "app=consumer")
        if not p["metadata"].get("deletionTimestamp")
    ]


def pod_env(pod: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or []}


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def setup(kube: Kube, ns: str, n: int, granularity: str) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create(tier_body(ns, granularity))
    kube.create(deployment_body(ns, n))
    wait(
        f"{ns}: tier Ready",
        lambda: (
            ((kube.get(names.KIND, ns, "flags") or {}).get("status") or {}).get("phase") == "Ready"
        ),
    )


def flag_files(agent_dir: Path, pods: list[dict[str, Any]]) -> list[Path]:
    return [
        agent_dir / "pods" / p["metadata"]["uid"] / "volumes" / FLAG_VOLUME / FLAG_FILE
        for p in pods
    ]


def read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def run_pod_phase(kube: Kube, agent_dir: Path, n: int) -> dict[str, Any]:
    ns = f"bench-pod-{n}"
    setup(kube, ns, n, "pod")

    def all_on() -> list[Path] | None:
        pods = live_pods(kube, ns)
        if len(pods) != n or not all(
            running(p) and names.ENV_REDIS_FLAG_FILE in pod_env(p) for p in pods
        ):
            return None
        files = flag_files(agent_dir, pods)
        return files if all(read(f) == "true" for f in files) else None

    files: list[Path] = wait(f"{ns}: {n} flag files read true", all_on)
    uids = sorted(p["metadata"]["uid"] for p in live_pods(kube, ns))
    time.sleep(1.0)
    say(f"{ns}: rollback (pod granularity, {n} pods)")
    t0 = time.monotonic()
    kube.merge_patch(names.KIND, ns, "flags", {"spec": {"rollout": {"enabled": False}}})
    pending = set(files)
    while pending:
        pending = {f for f in pending if read(f) != "false"}
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"{ns}: {len(pending)} flag files still not false")
        time.sleep(POLL)
    seconds = time.monotonic() - t0

    def annotated_off() -> bool:
        return all(
            (p["metadata"].get("annotations") or {}).get(names.ANNOTATION_REDIS_ENABLED) == "false"
            for p in live_pods(kube, ns)
        )

    wait(f"{ns}: annotations false", annotated_off, interval=POLL)
    after = live_pods(kube, ns)
    restarts = sum(
        cs.get("restartCount", 0)
        for p in after
        for cs in (p.get("status") or {}).get("containerStatuses") or []
    )
    same_pods = sorted(p["metadata"]["uid"] for p in after) == uids
    kube.delete("Namespace", None, ns)  # frees its Redis and pods for the next phase
    return {
        "pods": n,
        "seconds_until_last_flag_file_false": round(seconds, 3),
        "same_pods": same_pods,
        "restarts": restarts,
    }


def run_workload_phase(kube: Kube, n: int) -> dict[str, Any]:
    ns = f"bench-workload-{n}"
    setup(kube, ns, n, "workload")

    def all_on() -> bool:
        pods = live_pods(kube, ns)
        return len(pods) == n and all(
            running(p) and pod_env(p).get(names.ENV_REDIS_ENABLED) == "true" for p in pods
        )

    wait(f"{ns}: {n} pods running with REDIS_ENABLED=true", all_on)
    time.sleep(1.0)
    say(f"{ns}: rollback (workload granularity, {n} pods)")
    t0 = time.monotonic()
    kube.merge_patch(names.KIND, ns, "flags", {"spec": {"rollout": {"enabled": False}}})
    template_seconds: float | None = None

    def all_off() -> bool:
        nonlocal template_seconds
        if template_seconds is None:
            dep = kube.get("Deployment", ns, "consumer") or {}
            env = dep["spec"]["template"]["spec"]["containers"][0].get("env") or []
            if any(e["name"] == names.ENV_REDIS_ENABLED and e.get("value") == "false" for e in env):
                template_seconds = time.monotonic() - t0
        pods = kube.list_objects("Pod", ns, "app=consumer")
        new = [
            p
            for p in pods
            if running(p)
            and not p["metadata"].get("deletionTimestamp")
            and pod_env(p).get(names.ENV_REDIS_ENABLED) == "false"
        ]
        old = [p for p in pods if pod_env(p).get(names.ENV_REDIS_ENABLED) != "false"]
        return len(new) == n and not old

    wait(f"{ns}: {n} new pods running with REDIS_ENABLED=false", all_off, interval=0.05)
    seconds = time.monotonic() - t0
    kube.delete("Namespace", None, ns)
    return {
        "pods": n,
        "seconds_until_template_flipped": round(template_seconds or seconds, 3),
        "seconds_until_last_new_pod_running": round(seconds, 3),
    }


def main() -> None:
    pod_results: list[dict[str, Any]] = []
    workload_results: list[dict[str, Any]] = []
    with private_cluster(node_agent=True, prefix="bench-flags") as cp:
        os.environ["CACHETIER_METRICS_PORT"] = "0"  # no metrics port needed here
        install_crd(cp)
        kube = Kube(load_api_client(str(cp.kubeconfig)))
        agent_dir = cp.state_dir / "nodeagent"
        with running_operator():
            for n in SIZES:
                pod_results.append(run_pod_phase(kube, agent_dir, n))
                say(f"pod granularity: {pod_results[-1]}")
                workload_results.append(run_workload_phase(kube, n))
                say(f"workload granularity: {workload_results[-1]}")
        kube.api_client.close()
    result = {
        "name": "flag_rollback",
        "pod_granularity": pod_results,
        "workload_granularity": workload_results,
        "speedup": {
            str(p["pods"]): round(
                w["seconds_until_last_new_pod_running"] / p["seconds_until_last_flag_file_false"],
                1,
            )
            for p, w in zip(pod_results, workload_results, strict=True)
        },
        "node_agent": True,
        "note": (
            "local control plane with the node agent; consumer pods run an image without a "
            "process, so the pod-granularity time is until the materialised downward-API "
            "flag file of every pod reads false (what the app reads on its next request); "
            "workload granularity is until N pods of the flipped template are Running and "
            "no old pod is left (a rolling update, default maxSurge/maxUnavailable 25 %)"
        ),
        **machine(),
    }
    emit("flag_rollback", result)


if __name__ == "__main__":
    main()
