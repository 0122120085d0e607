"""Benchmark: how the operator's cost grows with tiers and consumer workloads.

One private control plane (node agent off: no pod runs, so this measures the
operator and the API server). For each size — tiers 10, 50, 200, 500 beside 100
consumer Deployments; consumer Deployments 100, 1,000, 5,000 beside 50 tiers; and
200 tiers beside 1,000 Deployments (the memory target) — in a namespace of its own:

1. the Deployments (replicas 0, each labelled for one tier) and the tiers (each
   selecting its share of them) are created first, from 16 threads;
2. the operator is started as its own process (``python -m cachetier.main
   --namespace <ns>``, so it sees only that size's objects), and the clock runs until
   every tier has its StatefulSet and a status with conditions: **converge**;
3. once its writes have settled, one full resync period (``CACHETIER_RESYNC_INTERVAL``
   = 20 s: every tier re-read and re-decided) is measured: **resync**.

Reported per size: seconds, API reads and writes (the operator's own counters, from
its /metrics: GETs and LISTs it sent; watch caches answer the rest), per tier; CPU
seconds of the operator process (/proc) and its RSS at the end; and, between sizes,
the growth factors (ratio of time, CPU, reads per tier) next to the ratio of the
sizes, so a reader sees whether the curve is linear (time ratio ~ size ratio) and
whether a resync's reads per tier stay flat as consumers grow (O(N + M), not N x M).

``BENCH_SCALE_QUICK=1`` runs the small sizes only. Prints JSON and writes
``bench/results/scale.json``. Run: ``env -u KUBECONFIG .venv/bin/python bench/bench_scale.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import (
    OPERATOR_PYTHONPATH,
    ServedProcess,
    emit,
    install_crd,
    machine,
    operator_argv,
    private_cluster,
    say,
    start_serving_metrics,
)
from cachetier import names
from cachetier.kube.client import Kube, load_api_client
from ctdev.controlplane import ControlPlane

THREADS = 16
RESYNC = 20.0
TIMEOUT = 600.0

QUICK = os.environ.get("BENCH_SCALE_QUICK") == "1"
TIER_SWEEP = [10, 50] if QUICK else [10, 50, 200, 500]
CONSUMER_SWEEP = [100, 1000] if QUICK else [100, 1000, 5000]
FIXED_CONSUMERS = 100
FIXED_TIERS = 50
MEMORY_POINT = (200, 1000)
# BENCH_SCALE_POINTS="500x100,200x1000": only these sizes (tiers x consumers), no growth
POINTS = [
    (int(t), int(c))
    for t, c in (p.split("x") for p in os.environ.get("BENCH_SCALE_POINTS", "").split(",") if p)
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deployment(ns: str, i: int, tiers: int) -> dict[str, Any]:
    labels = {"app": f"consumer-{i}", "cache": f"tier-{i % tiers:03d}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"consumer-{i:04d}", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": labels["app"]}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
    }


def tier(ns: str, t: int) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": f"tier-{t:03d}", "namespace": ns},
        "spec": {
            "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
            "consumers": {
                "selector": {"matchLabels": {"cache": f"tier-{t:03d}"}},
                "containers": ["app"],
            },
        },
    }


class Operator(ServedProcess):
    """The operator as its own process: its /metrics counters and /proc figures."""

    def __init__(self, cp: ControlPlane, namespace: str, log: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "CACHETIER_RESYNC_INTERVAL": str(RESYNC),
            "PYTHONPATH": OPERATOR_PYTHONPATH,
        }
        self.log = log
        argv = operator_argv(cp.kubeconfig, namespace, str(self.port), free_port())
        self.proc = start_serving_metrics(argv, env, log, self.port)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for key in ("cachetier_api_writes_total", "cachetier_api_reads_total"):
            m = re.search(rf"^{key} (\S+)$", text, re.M)
            out[key] = float(m.group(1)) if m else 0.0
        return out

    def errors(self) -> list[str]:
        """ERROR lines and tracebacks of the log, each as its message and the
        traceback's last line (the exception)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if not ('"level": "ERROR"' in line or "Traceback" in line or " ERROR " in line):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                out.append(line)
                continue
            exc = str(record.get("exc") or "").strip().splitlines()
            out.append(f"{record.get('msg')} | {exc[-1] if exc else ''}")
        return out


def converged(kube: Kube, ns: str, tiers: int) -> bool:
    done = sum(
        1
        for t in kube.list_objects(names.KIND, ns)
        if (t.get("status") or {}).get("conditions")
        and (t.get("status") or {}).get("observedGeneration") == t["metadata"].get("generation")
    )
    if done < tiers:
        return False
    return len(kube.list_objects("StatefulSet", ns)) >= tiers


def settle(op: Operator, quiet: float = 3.0, limit: float = 60.0) -> None:
    last, since, t0 = op.metrics()["cachetier_api_writes_total"], time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - t0 < limit:
        time.sleep(0.5)
        now = op.metrics()["cachetier_api_writes_total"]
        if now != last:
            last, since = now, time.monotonic()


def run_point(cp: ControlPlane, admin: Kube, tiers: int, consumers: int) -> dict[str, Any]:
    ns = f"scale-{tiers}-{consumers}"
    admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    say(f"{ns}: creating {consumers} Deployments and {tiers} tiers")
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: admin.create(deployment(ns, i, tiers)), range(consumers)))
        list(pool.map(lambda t: admin.create(tier(ns, t)), range(tiers)))
    log = cp.state_dir / f"operator-{ns}.log"
    t0 = time.monotonic()
    op = Operator(cp, ns, log)
    try:
        while not converged(admin, ns, tiers):
            if time.monotonic() - t0 > TIMEOUT:
                raise SystemExit(f"{ns}: not converged after {TIMEOUT}s; see {log}")
            time.sleep(0.5)
        seconds = time.monotonic() - t0
        m1, cpu1 = op.metrics(), op.cpu()
        say(f"{ns}: converged in {seconds:.1f}s; settling, then one resync period")
        settle(op)
        m2, cpu2 = op.metrics(), op.cpu()
        time.sleep(RESYNC)
        m3, cpu3 = op.metrics(), op.cpu()
        rss = op.rss_mb()
    finally:
        op.stop()
    errors = op.errors()
    reads = m1["cachetier_api_reads_total"]
    writes = m1["cachetier_api_writes_total"]
    resync_reads = m3["cachetier_api_reads_total"] - m2["cachetier_api_reads_total"]
    return {
        "tiers": tiers,
        "consumers": consumers,
        "converge": {
            "seconds": round(seconds, 2),
            "reads_per_tier": round(reads / tiers, 2),
            "writes_per_tier": round(writes / tiers, 2),
            "cpu_seconds": round(cpu1, 2),
            "cpu_seconds_per_tier": round(cpu1 / tiers, 3),
        },
        "settled_writes_per_tier": round(m2["cachetier_api_writes_total"] / tiers, 2),
        "resync": {
            "seconds": RESYNC,
            "reads_per_tier": round(resync_reads / tiers, 2),
            "writes": int(m3["cachetier_api_writes_total"] - m2["cachetier_api_writes_total"]),
            "cpu_seconds": round(cpu3 - cpu2, 2),
            "cpu_seconds_per_tier": round((cpu3 - cpu2) / tiers, 4),
        },
        "rss_mb": rss,
        "error_lines": len(errors),
        # the first few distinct ones, so a reader (and the next session) sees what they were
        "error_samples": list(
            dict.fromkeys(re.sub(r"tier-\d+", "tier-N", e)[:400] for e in errors)
        )[:5],
    }


def growth(points: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Ratios between consecutive sizes: size, converge time, CPU, resync reads/tier."""
    out = []
    for a, b in itertools.pairwise(points):
        out.append(
            {
                "from": a[by],
                "to": b[by],
                "size_ratio": round(b[by] / a[by], 2),
                "seconds_ratio": round(b["converge"]["seconds"] / a["converge"]["seconds"], 2),
                "cpu_ratio": round(
                    b["converge"]["cpu_seconds"] / max(a["converge"]["cpu_seconds"], 0.01), 2
                ),
                "resync_cpu_ratio": round(
                    b["resync"]["cpu_seconds"] / max(a["resync"]["cpu_seconds"], 0.01), 2
                ),
                "resync_reads_per_tier_ratio": round(
                    b["resync"]["reads_per_tier"] / max(a["resync"]["reads_per_tier"], 0.01), 2
                ),
                "rss_ratio": round(b["rss_mb"] / a["rss_mb"], 2),
            }
        )
    return out


def main() -> None:
    results: dict[tuple[int, int], dict[str, Any]] = {}
    with private_cluster(node_agent=False, prefix="bench-scale") as cp:
        install_crd(cp)
        admin = Kube(load_api_client(str(cp.kubeconfig)))
        wanted = [(t, FIXED_CONSUMERS) for t in TIER_SWEEP]
        wanted += [(FIXED_TIERS, c) for c in CONSUMER_SWEEP]
        if not QUICK:
            wanted.append(MEMORY_POINT)
        if POINTS:
            wanted = POINTS
        for point in dict.fromkeys(wanted):
            results[point] = run_point(cp, admin, *point)
        admin.api_client.close()
    if POINTS:
        emit("scale-points", {"name": "scale-points", "points": list(results.values())}, indent=1)
        return
    tier_sweep = [results[(t, FIXED_CONSUMERS)] for t in TIER_SWEEP]
    consumer_sweep = [results[(FIXED_TIERS, c)] for c in CONSUMER_SWEEP]
    result = {
        "name": "scale",
        "resync_interval_seconds": RESYNC,
        "tier_sweep": {"consumers": FIXED_CONSUMERS, "points": tier_sweep},
        "tier_growth": growth(tier_sweep, "tiers"),
        "consumer_sweep": {"tiers": FIXED_TIERS, "points": consumer_sweep},
        "consumer_growth": growth(consumer_sweep, "consumers"),
        "memory_point": results.get(MEMORY_POINT),
        "node_agent": False,
        "note": (
            "each size in a namespace of its own, the operator a process of its own "
            "started after the objects exist (--namespace: it sees that size only); "
            "converge: until every tier has its StatefulSet and a status of its generation; "
            "reads/writes are the operator's /metrics counters (GET+LIST sent; watch "
            "caches answer the rest); resync: one CACHETIER_RESYNC_INTERVAL after the "
            "writes settled; no pod runs (no node agent), so no tier gets Ready and no "
            "consumer is injected"
        ),
        **machine(),
    }
    emit("scale", result, indent=1)


if __name__ == "__main__":
    main()
