"""Benchmark: 50 standalone CacheTiers applied at once, against the floor.

Starts its own local control plane (``.local/bench-<pid>/``, node agent OFF: this
measures the operator and the API server, not pods, so no tier reaches Ready),
installs the CRD and runs two phases on it:

- operator: the operator runs in this process (kopf.testing.KopfRunner); one
  ``kubectl apply -f`` of a 50-document file creates the tiers; measured is the
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

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _harness import (
    emit,
    install_crd,
    machine,
    private_cluster,
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


def run_operator_phase(cp: ControlPlane, admin: Kube) -> dict[str, Any]:
    """Operator in-process; one kubectl apply of 50 tiers; time until all are done."""
    namespace = "bench-operator"
    create_namespace(admin, namespace)
    manifest = "\n---\n".join(json.dumps(tier_body(namespace, i)) for i in range(TIERS))
    with running_operator() as rt:
        time.sleep(1.0)  # let the watches settle before the clock starts
        writes_before = rt.kube.write_count
        say(f"operator: applying {TIERS} tiers")
        t0 = time.monotonic()
        subprocess.run(
            [str(cp.kubectl_path), "--kubeconfig", str(cp.kubeconfig), "apply", "-f", "-"],
            input=manifest,
            text=True,
            check=True,
            capture_output=True,
        )
        apply_seconds = time.monotonic() - t0
        seconds = wait_all_done(admin, namespace, t0)
        writes_done = rt.kube.write_count - writes_before
        say(f"operator: all done in {seconds:.2f}s; waiting for the writes to settle")
        settle(rt)
        writes_settled = rt.kube.write_count - writes_before
        per_tier = [rt.kube.writes_for(f"{namespace}/{tier_name(i)}") for i in range(TIERS)]
        by_method = dict(rt.kube.writes)
        reconciles = rt.reconciles
    return {
        "seconds": round(seconds, 3),
        "kubectl_apply_seconds": round(apply_seconds, 3),
        # kubectl applies the 50 documents one by one; the operator works meanwhile.
        "seconds_after_kubectl_apply": round(seconds - apply_seconds, 3),
        "writes": writes_done,
        "writes_per_tier": round(writes_done / TIERS, 2),
        "writes_settled": writes_settled,
        "writes_settled_per_tier": {
            "min": min(per_tier),
            "max": max(per_tier),
            "mean": round(sum(per_tier) / TIERS, 2),
        },
        "writes_by_method": by_method,
        "reconciles": reconciles,
    }


def run_baseline_phase(cp: ControlPlane, admin: Kube) -> dict[str, Any]:
    """The floor: the same tiers, children and status created directly, 16 threads."""
    namespace = "bench-baseline"
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
    with private_cluster(node_agent=False) as cp:
        install_crd(cp)
        admin = Kube(load_api_client(str(cp.kubeconfig)))
        operator = run_operator_phase(cp, admin)
        baseline = run_baseline_phase(cp, admin)
        admin.api_client.close()
    result = {
        "name": NAME,
        "tiers": TIERS,
        "children_per_tier": sum(len(p) for p in CHILD_KINDS.values()),
        "operator": operator,
        "baseline": baseline,
        "ratio_seconds": round(operator["seconds"] / baseline["seconds"], 2),
        "ratio_writes": round(operator["writes"] / baseline["writes"], 2),
        "node_agent": False,
        "note": (
            "local control plane without a node agent: pods never run, so this measures "
            "the operator and the API server (children exist + status has conditions), "
            "not Redis start-up; seconds include the kubectl apply (operator) or the "
            "tier creations (baseline)"
        ),
        **machine(),
    }
    emit("standalone", result)


if __name__ == "__main__":
    main()
