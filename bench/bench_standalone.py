"""Benchmark: 50 standalone CacheTiers applied at once, against the floor.

Starts its own local control plane (``.local/bench-<pid>/``, node agent OFF: this
measures the operator and the API server, not pods, so no tier reaches Ready),
installs the CRD and runs two phases on it:

- operator: the operator runs in this process (kopf.testing.KopfRunner); the tiers
  are created from a pool of 16 threads, as the floor creates its own; measured is the
  time until every tier's 9 children exist and its status carries conditions
  (polled with list calls), and the write requests the operator sent
  (``Kube.write_count``), at that moment and once the writes have settled;
- baseline (the floor, operator stopped): the same 50 tiers and the same
  children (``render_tier`` with fixed passwords) and a status, created directly
  with the Kube client from a pool of 16 threads, as fast as it can.

Prints one JSON object and writes it to ``bench/results/standalone.json``.
Run from the repository root: ``env -u KUBECONFIG .venv/bin/python bench/bench_standalone.py``.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _harness import (
    cpu_seconds,
    emit,
    install_crd,
    machine,
    private_cluster,
    rss_mb,
    running_operator,
    say,
    settle,
    utc_now,
)
from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.kube.client import Kube, load_api_client
from cachetier.render import TierRef, TierSecrets, render_tier
from ctdev.controlplane import ControlPlane

NAME = "standalone_apply_50"
TIERS = 50
THREADS = 16
ROUNDS = 3
TIMEOUT = 300.0

SPEC: dict[str, Any] = {"redis": {"maxmemory": "64mb", "persistence": {"mode": "none"}}}

# kind -> child names of tier t; 9 per tier.
CHILD_KINDS: dict[str, list[str]] = {
    "Secret": ["{t}-auth", "{t}-auth-recovery", "{t}-connection"],
    "ConfigMap": ["{t}-config"],
    "Service": ["{t}", "{t}-headless"],
    "StatefulSet": ["{t}"],
    "PodDisruptionBudget": ["{t}"],
    "NetworkPolicy": ["{t}"],
}


def tier_name(i: int) -> str:
    return f"tier-{i:03d}"


def tier_body(namespace: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": tier_name(i), "namespace": namespace},
        "spec": SPEC,
    }


def create_namespace(kube: Kube, namespace: str) -> None:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def pending_tiers(kube: Kube, namespace: str) -> list[str]:
    """Tiers whose 9 children do not all exist yet, or whose status has no conditions."""
    present: dict[str, set[str]] = {
        kind: {o["metadata"]["name"] for o in kube.list_objects(kind, namespace)}
        for kind in CHILD_KINDS
    }
    with_status = {
        t["metadata"]["name"]
        for t in kube.list_objects(names.KIND, namespace)
        if ((t.get("status") or {}).get("conditions"))
    }
    pending = []
    for i in range(TIERS):
        t = tier_name(i)
        children_ok = all(
            p.format(t=t) in present[kind] for kind, pats in CHILD_KINDS.items() for p in pats
        )
        if not (children_ok and t in with_status):
            pending.append(t)
    return pending


def wait_all_done(kube: Kube, namespace: str, t0: float) -> float:
    """Poll until every tier is done; returns the seconds since ``t0``."""
    while True:
        pending = pending_tiers(kube, namespace)
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"timed out after {TIMEOUT}s; {len(pending)} tiers pending")
        time.sleep(0.2)


def run_operator_phase(cp: ControlPlane, admin: Kube, round_: int) -> dict[str, Any]:
    """Operator in-process (this round's namespace only); 50 tiers created from 16
    threads; time until all are done."""
    namespace = f"bench-operator-{round_}"
    create_namespace(admin, namespace)
    client = Kube(load_api_client(str(cp.kubeconfig)))
    with running_operator(namespace) as rt:
        time.sleep(1.0)  # let the watches settle before the clock starts
        writes_before = rt.kube.write_count
        reads_before = rt.kube.reads.copy()
        cpu_before, main_before = cpu_seconds(), time.thread_time()
        creating: list[float] = []

        def create(i: int) -> None:
            c0 = time.thread_time()
            client.create(tier_body(namespace, i))
            creating.append(time.thread_time() - c0)

        say(f"operator: creating {TIERS} tiers with {THREADS} threads")
        t0 = time.monotonic()
        # The tiers are created exactly as the floor creates its own (16 threads).
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(create, range(TIERS)))
        apply_seconds = time.monotonic() - t0
        seconds = wait_all_done(admin, namespace, t0)
        writes_done = rt.kube.write_count - writes_before
        say(f"operator: all done in {seconds:.2f}s; waiting for the writes to settle")
        settle(rt)
        writes_settled = rt.kube.write_count - writes_before
        per_tier = [rt.kube.writes_for(f"{namespace}/{tier_name(i)}") for i in range(TIERS)]
        by_method = dict(rt.kube.writes)
        by_kind = dict(sorted(rt.kube.writes_by_kind.items()))
        reads = dict(sorted((rt.kube.reads - reads_before).items()))
        watch_reads = dict(sorted(rt.watch_kube.reads.items()))
        # The operator's CPU: the process's, less this thread's polling and the creations.
        cpu = cpu_seconds() - cpu_before - (time.thread_time() - main_before) - sum(creating)
        rss = rss_mb()
        reconciles = rt.reconciles
        timings = dict(rt.reconciler.timings)
        caches = rt.caches.sizes()
    client.api_client.close()
    events = Counter(str(e.get("reason")) for e in admin.list_objects("Event", namespace))
    return {
        "seconds": round(seconds, 3),
        "create_seconds": round(apply_seconds, 3),
        "writes": writes_done,
        "writes_per_tier": round(writes_done / TIERS, 2),
        "writes_settled": writes_settled,
        "writes_settled_per_tier": {
            "min": min(per_tier),
            "max": max(per_tier),
            "mean": round(sum(per_tier) / TIERS, 2),
        },
        "writes_by_method": by_method,
        "writes_by_kind": by_kind,
        "reads": reads,
        "reads_per_tier": round(sum(reads.values()) / TIERS, 2),
        "watch_cache_reads": watch_reads,
        "events_by_reason": dict(sorted(events.items())),
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_per_tier": round(cpu / TIERS, 3),
        "rss_mb": rss,
        "reconciles": reconciles,
        # Wall seconds summed over every pass, per pipeline phase (8 reconcile threads).
        "phase_seconds": {k: round(v, 2) for k, v in timings.items()},
        "watch_cache_objects": caches,
    }


def run_baseline_phase(cp: ControlPlane, admin: Kube, round_: int) -> dict[str, Any]:
    """The floor: the same tiers, children and status created directly, 16 threads."""
    namespace = f"bench-baseline-{round_}"
    create_namespace(admin, namespace)
    kube = Kube(load_api_client(str(cp.kubeconfig)))
    spec = CacheTierSpec.model_validate(SPEC)
    secrets = TierSecrets(
        app_password="bench-app-password-0123456789abcdef",
        operator_password="bench-operator-password-0123456789",
        app_password_generated=True,
    )

    def one(i: int) -> None:
        tier = kube.create(tier_body(namespace, i))
        meta = tier["metadata"]
        ref = TierRef(name=meta["name"], namespace=namespace, uid=meta["uid"])
        for obj in render_tier(ref, spec, secrets):
            kube.create(obj)
        now = utc_now()
        generation = meta.get("generation", 1)

        def condition(ctype: str, status: str, reason: str) -> dict[str, Any]:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": reason,
                "observedGeneration": generation,
                "lastTransitionTime": now,
            }

        kube.merge_patch(
            names.KIND,
            namespace,
            meta["name"],
            {
                "status": {
                    "observedGeneration": generation,
                    "phase": "Provisioning",
                    "conditions": [
                        condition("Ready", "False", "Provisioning"),
                        condition("Progressing", "True", "Provisioning"),
                        condition("Degraded", "False", "AsExpected"),
                    ],
                    "endpoint": {
                        "host": names.service_host(meta["name"], namespace),
                        "port": names.REDIS_PORT,
                    },
                    "connectionSecret": names.connection_secret(meta["name"]),
                }
            },
            subresource="status",
        )

    say(f"baseline: creating {TIERS} tiers and their children with {THREADS} threads")
    t0 = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(TIERS)))
    create_seconds = time.monotonic() - t0
    seconds = wait_all_done(admin, namespace, t0)  # the same check as the operator's
    writes = kube.write_count
    kube.api_client.close()
    return {
        "seconds": round(seconds, 3),
        "create_seconds": round(create_seconds, 3),
        "threads": THREADS,
        # Tier creations are kubectl's in the operator phase; count them apart.
        "writes": writes - TIERS,
        "writes_per_tier": round((writes - TIERS) / TIERS, 2),
        "tier_creates": TIERS,
    }


def main() -> None:
    operators: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    with private_cluster(node_agent=False) as cp:
        install_crd(cp)
        admin = Kube(load_api_client(str(cp.kubeconfig)))
        # Alternating rounds, fresh namespaces: the machine's noise falls on both.
        for r in range(ROUNDS):
            operators.append(run_operator_phase(cp, admin, r))
            baselines.append(run_baseline_phase(cp, admin, r))
        admin.api_client.close()
    op_seconds = statistics.median(o["seconds"] for o in operators)
    floor_seconds = statistics.median(b["seconds"] for b in baselines)
    operator = min(operators, key=lambda o: abs(o["seconds"] - op_seconds))
    baseline = min(baselines, key=lambda b: abs(b["seconds"] - floor_seconds))
    result = {
        "name": NAME,
        "tiers": TIERS,
        "rounds": ROUNDS,
        "children_per_tier": sum(len(p) for p in CHILD_KINDS.values()),
        "operator_seconds_each_round": [o["seconds"] for o in operators],
        "baseline_seconds_each_round": [b["seconds"] for b in baselines],
        "operator": operator,
        "baseline": baseline,
        "ratio_seconds": round(op_seconds / floor_seconds, 2),
        "ratio_writes": round(operator["writes"] / baseline["writes"], 2),
        "ratio_writes_settled": round(operator["writes_settled"] / baseline["writes"], 2),
        "node_agent": False,
        "note": (
            "local control plane without a node agent: pods never run, so this measures "
            "the operator and the API server (children exist + status has conditions), "
            "not Redis start-up; three alternating rounds, the median round shown and "
            "the ratio of the medians; both phases' seconds include creating the 50 tiers the "
            "same way (16 threads); cpu_seconds is the process's less the bench's "
            "own polling and tier creations; rss_mb is the whole process's"
        ),
        **machine(),
    }
    emit("standalone", result)


if __name__ == "__main__":
    main()
