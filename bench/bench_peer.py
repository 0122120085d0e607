"""Benchmark: 50 standalone Redis instances through CacheTier and through a Go peer.

The peer is OT-CONTAINER-KIT/redis-operator: its manager built from its source with the
Go toolchain (cached under ``~/.cache/cachetier/peer/``) and its ``Redis`` CRD. Its
source is not on the Go module proxy, so the bench needs a git checkout of it:
``CACHETIER_PEER_SOURCE`` (a work tree or a git directory), or the ``fetch`` mirror
beside this repository. Without one it prints ``{"skipped": ...}`` and exits 0.

One private control plane with the node agent (pods really run redis-server), in the
same run, one namespace per run, one run each (noisy 2-core machine):

1. OT as shipped (client-go's default client rate limit, 5 requests/s);
2. OT with ``--kube-client-qps=100``;
3. CacheTier (``python -m cachetier.main --namespace``; its client is not rate limited).

Each run starts the operator, creates 50 instances from 16 threads, and measures: the
time until each instance's StatefulSet and Services exist (the set it ends up with), the
time until its pod is Ready, the operator's API writes (its own counters: OT's
controller-runtime ``rest_client_requests_total`` with a write method, CacheTier's
``cachetier_api_writes_total``), its writes in the ``BENCH_PEER_SETTLE`` (15) s after
the last pod is Ready (CacheTier writes the tier's Ready condition and its first health
verdict there; OT writes nothing), then its writes while idle over ``BENCH_PEER_IDLE`` (60) s,
its CPU seconds and RSS (/proc). The instance namespace is deleted while the operator
still runs (both put finalizers on their objects), then the operator is stopped.

Fairness, stated in the output: OT's default readiness/liveness probe runs
``redis-cli -h $(hostname)``, and the node agent does not resolve a pod's own host
name, so the bench's Redis CRs override both probes with the same PONG check without
``-h`` (redis-cli then talks to the pod's address). CacheTier also writes a status, an
auth Secret with a generated password and ACL users, a PDB and a NetworkPolicy, and its
Redis requires a password; OT's instances (as configured here) have no password, no
status and no PDB. Neither uses a PVC.

Run: ``env -u KUBECONFIG .venv/bin/python bench/bench_peer.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import (
    OPERATOR_PYTHONPATH,
    REPO_ROOT,
    ServedProcess,
    emit,
    in_private_hosts,
    install_crd,
    machine,
    operator_argv,
    private_cluster,
    say,
    start_serving_metrics,
)
from bench_scale import free_port
from cachetier import names
from cachetier.kube.client import Kube, load_api_client
from ctdev.controlplane import ControlPlane

INSTANCES = int(os.environ.get("BENCH_PEER_INSTANCES", "50"))
IDLE = float(os.environ.get("BENCH_PEER_IDLE", "60"))
SETTLE = float(os.environ.get("BENCH_PEER_SETTLE", "15"))
# BENCH_PEER_ONLY=cachetier: CacheTier's run alone (no ratios), to look at its own figures
ONLY = os.environ.get("BENCH_PEER_ONLY", "")
THREADS = 16
TIMEOUT = 600.0
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cachetier" / "peer"
MIRROR = REPO_ROOT.parent / ".mirror" / "OT-CONTAINER-KIT+redis-operator" / "repo"
OT_GROUP = "redis.redis.opstreelabs.in"
OT_CRDS = "config/crd/bases"
"""All of OT's CRDs: its manager starts a controller per kind and exits when one of
their caches cannot sync (about 2 minutes after start without them)."""
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
PONG_CHECK = 'RESP="$(redis-cli -p ${REDIS_PORT} ping)"\n[ "$RESP" = "PONG" ]'


def git_dir() -> Path | None:
    """The peer's git directory: CACHETIER_PEER_SOURCE, else the fetched mirror."""
    given = os.environ.get("CACHETIER_PEER_SOURCE")
    for candidate in [Path(given)] if given else [MIRROR]:
        for d in (candidate / ".git", candidate):
            if (d / "HEAD").is_file() and (d / "objects").is_dir():
                return d
    return None


def build_peer() -> tuple[Path, Path, str] | str:
    """(manager binary, CRD file, commit) built once per commit; or why it cannot be."""
    gd = git_dir()
    if gd is None:
        return "no OT-CONTAINER-KIT/redis-operator checkout (set CACHETIER_PEER_SOURCE)"
    if shutil.which("go") is None:
        return "no Go toolchain"
    commit = subprocess.run(
        ["git", "--git-dir", str(gd), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    src, binary = CACHE / f"src-{commit[:12]}", CACHE / f"ot-manager-{commit[:12]}"
    if not (src / "go.mod").is_file():
        tmp = CACHE / f"src-{commit[:12]}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.Popen(
            ["git", "--git-dir", str(gd), "archive", commit], stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            return "git archive of the peer's source failed"
        tmp.rename(src)
    if not binary.is_file():
        say(f"building the OT manager at {commit[:12]} (a few minutes, once)")
        out = binary.with_suffix(".tmp")
        subprocess.run(["go", "build", "-o", str(out), "./cmd"], cwd=src, check=True)
        out.rename(binary)
    return binary, src / OT_CRDS, commit


class Process(ServedProcess):
    """An operator process: its write counter (from its metrics page), CPU and RSS."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, writes: Callable[[str], float]
    ) -> None:
        self.metrics_port = free_port()
        self.log = log
        self._writes = writes
        argv = [a.replace("{METRICS_PORT}", str(self.metrics_port)) for a in argv]
        self.proc = start_serving_metrics(argv, {**os.environ, **env}, log, self.metrics_port)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode())
        except OSError:
            code = self.proc.poll()
            if code is None:
                raise
            text = self.log.read_text(errors="replace")
            tail = text.split("\nUsage:")[0].splitlines()[-20:]  # a Go CLI's usage follows
            raise SystemExit(
                f"{Path(self.proc.args[0]).name} exited with {code} before its metrics "
                "were read; the end of its log:\n" + "\n".join(tail)
            ) from None

    def writes(self) -> float:
        return self._writes(self.metrics())


def ot_writes(text: str) -> float:
    total = 0.0
    for m in re.finditer(r"^rest_client_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        if any(f'method="{w}"' in m.group(1) for w in WRITE_METHODS):
            total += float(m.group(2))
    return total


def cachetier_writes(text: str) -> float:
    m = re.search(r"^cachetier_api_writes_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def writes_by_resource(text: str) -> dict[str, float]:
    """CacheTier's writes by verb and resource (OT's client metrics carry no resource)."""
    out: dict[str, float] = {}
    for m in re.finditer(r"^cachetier_api_writes_by_resource_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m[1]))
        out[f"{labels.get('verb')} {labels.get('resource')}"] = float(m[2])
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    out = {k: int(v - before.get(k, 0.0)) for k, v in after.items()}
    return {k: v for k, v in sorted(out.items()) if v}


def ot_instance(ns: str, i: int) -> dict[str, Any]:
    probe = {"exec": {"command": ["sh", "-ec", PONG_CHECK]}, "periodSeconds": 1}
    return {
        "apiVersion": f"{OT_GROUP}/v1beta2",
        "kind": "Redis",
        "metadata": {"name": f"r-{i:02d}", "namespace": ns},
        "spec": {
            "kubernetesConfig": {"image": "quay.io/opstree/redis:v7.0.15"},
            "readinessProbe": probe,
            "livenessProbe": {**probe, "periodSeconds": 10},
        },
    }


def cachetier_instance(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": f"r-{i:02d}", "namespace": ns},
        "spec": {"redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}}},
    }


def create(admin: Kube, obj: dict[str, Any]) -> None:
    """POST one instance (OT's kind is not in the operator's own resource table)."""
    if obj["kind"] != "Redis":
        admin.create(obj)
        return
    ns = obj["metadata"]["namespace"]
    admin.request("POST", f"/apis/{OT_GROUP}/v1beta2/namespaces/{ns}/redis", body=obj)


def _owner(obj: dict[str, Any]) -> str | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return str(refs[0]["name"]) if refs else None


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def observe(admin: Kube, ns: str, t0: float, instances: int) -> dict[str, Any]:
    """Poll until every instance's pod is Ready; first-seen times of children and pods."""
    seen: dict[tuple[str, str], float] = {}  # (kind/name, owner) -> first seen
    ready: dict[str, float] = {}
    while len(ready) < instances:
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"{ns}: {len(ready)}/{instances} ready after {TIMEOUT}s")
        now = time.monotonic() - t0
        sets = {s["metadata"]["name"]: _owner(s) for s in admin.list_objects("StatefulSet", ns)}
        for name, owner in sets.items():
            seen.setdefault((f"StatefulSet/{name}", owner or ""), now)
        for svc in admin.list_objects("Service", ns):
            seen.setdefault((f"Service/{svc['metadata']['name']}", _owner(svc) or ""), now)
        for pod in admin.list_objects("Pod", ns):
            instance = sets.get(_owner(pod) or "")
            if instance and _ready(pod):
                ready.setdefault(instance, now)
        time.sleep(0.2)
    children: dict[str, float] = {}
    for (_, owner), at in seen.items():
        if owner:
            children[owner] = max(children.get(owner, 0.0), at)
    return {"children": children, "ready": ready}


def summary(times: dict[str, float]) -> dict[str, float]:
    values = sorted(times.values())
    return {"median_s": round(statistics.median(values), 2), "all_s": round(values[-1], 2)}


def run(
    cp: ControlPlane,
    admin: Kube,
    label: str,
    start: Callable[[str, Path], Process],
    instance: Callable[[str, int], dict[str, Any]],
) -> dict[str, Any]:
    ns = f"peer-{label}"
    admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    op = start(ns, cp.state_dir / f"{ns}.log")
    try:
        w0, cpu0, t0_text = op.writes(), op.cpu(), op.metrics()
        say(f"{label}: creating {INSTANCES} instances")
        t0 = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda i: create(admin, instance(ns, i)), range(INSTANCES)))
        seen = observe(admin, ns, t0, INSTANCES)
        w1, cpu1, t1_text = op.writes(), op.cpu(), op.metrics()
        say(
            f"{label}: all Ready after {max(seen['ready'].values()):.1f}s; "
            f"{SETTLE:.0f}s settle, {IDLE:.0f}s idle"
        )
        time.sleep(SETTLE)
        ws, cpus, ts_text = op.writes(), op.cpu(), op.metrics()
        time.sleep(IDLE)
        w2, cpu2, rss, t2_text = op.writes(), op.cpu(), op.rss_mb(), op.metrics()
        services = sum(1 for _ in admin.list_objects("Service", ns)) / INSTANCES
        admin.delete("Namespace", None, ns)
        gone = time.monotonic() + 180
        while admin.list_objects("Pod", ns) and time.monotonic() < gone:
            time.sleep(1)
    finally:
        op.stop()
    return {
        "children_exist": summary(seen["children"]),
        "pods_ready": summary(seen["ready"]),
        "services_per_instance": round(services, 1),
        "writes_until_ready": int(w1 - w0),
        "writes_per_instance": round((w1 - w0) / INSTANCES, 1),
        "settle_writes": int(ws - w1),
        "settle_seconds": SETTLE,
        "settle_cpu_seconds": round(cpus - cpu1, 2),
        "idle_writes": int(w2 - ws),
        "idle_seconds": IDLE,
        "cpu_seconds_until_ready": round(cpu1 - cpu0, 2),
        "cpu_seconds_per_instance": round((cpu1 - cpu0) / INSTANCES, 3),
        "idle_cpu_seconds": round(cpu2 - cpus, 2),
        "rss_mb": rss,
        **(
            {
                "writes_until_ready_by_resource": delta(
                    writes_by_resource(t1_text), writes_by_resource(t0_text)
                ),
                "settle_writes_by_resource": delta(
                    writes_by_resource(ts_text), writes_by_resource(t1_text)
                ),
                "idle_writes_by_resource": delta(
                    writes_by_resource(t2_text), writes_by_resource(ts_text)
                ),
            }
            if "cachetier_api_writes_by_resource_total" in t2_text
            else {}
        ),
    }


def cachetier_process(cp: ControlPlane) -> Callable[[str, Path], Process]:
    """Starts CacheTier's operator, as its own process, watching one namespace."""

    def cachetier(ns: str, log: Path) -> Process:
        argv = operator_argv(cp.kubeconfig, ns, "{METRICS_PORT}", free_port())
        if os.environ.get("BENCH_PEER_VERBOSE") == "1":
            argv.append("--verbose")
        return Process(argv, {"PYTHONPATH": OPERATOR_PYTHONPATH}, log, cachetier_writes)

    return cachetier


def main() -> None:
    # CacheTier alone needs no peer: neither its source nor its CRD.
    peer = None if ONLY == "cachetier" else build_peer()
    if isinstance(peer, str):
        emit("peer", {"name": "peer", "skipped": peer, **machine()})
        return
    in_private_hosts()
    with private_cluster(node_agent=True, prefix="bench-peer") as cp:
        install_crd(cp)
        admin = Kube(load_api_client(str(cp.kubeconfig)))
        if peer is None:
            only = run(cp, admin, "cachetier", cachetier_process(cp), cachetier_instance)
            admin.api_client.close()
            emit(
                "peer-cachetier",
                {"name": "peer-cachetier", "instances": INSTANCES, "only": only, **machine()},
            )
            return
        binary, crds, commit = peer
        kubectl = [str(cp.kubectl_path), "--kubeconfig", str(cp.kubeconfig)]
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(crds)], check=True, stdout=sys.stderr
        )
        wait = [*kubectl, "wait", "--for=condition=Established", "--timeout=120s"]
        for attempt in range(3):  # a fresh API server may not serve the new CRD at once
            done = subprocess.run([*wait, "-f", str(crds)], capture_output=True, text=True)
            if done.returncode == 0:
                break
            say(f"kubectl wait: {done.stderr.strip()} (attempt {attempt + 1})")
            time.sleep(2)
        else:
            raise SystemExit("OT's CRD did not become Established")

        def ot(qps: float | None) -> Callable[[str, Path], Process]:
            def start(ns: str, log: Path) -> Process:
                argv = [
                    str(binary),
                    "manager",
                    "--enable-webhooks=false",
                    "--metrics-bind-address=127.0.0.1:{METRICS_PORT}",
                    f"--health-probe-bind-address=127.0.0.1:{free_port()}",
                ]
                if qps is not None:
                    argv.append(f"--kube-client-qps={qps:g}")
                env = {"KUBECONFIG": str(cp.kubeconfig), "WATCH_NAMESPACE": ns}
                return Process(argv, env, log, ot_writes)

            return start

        runs = {
            "ot_as_shipped": run(cp, admin, "ot-default", ot(None), ot_instance),
            "ot_qps_100": run(cp, admin, "ot-qps100", ot(100), ot_instance),
            "cachetier": run(cp, admin, "cachetier", cachetier_process(cp), cachetier_instance),
        }
        admin.api_client.close()
    ct, fast = runs["cachetier"], runs["ot_qps_100"]
    result = {
        "name": "peer",
        "instances": INSTANCES,
        "peer": f"OT-CONTAINER-KIT/redis-operator@{commit[:12]}",
        "runs": runs,
        "ratios_cachetier_over_ot_qps_100": {
            key: round(ct[key]["all_s"] / fast[key]["all_s"], 2)
            for key in ("children_exist", "pods_ready")
        },
        "ratios_cachetier_over_ot_as_shipped": {
            key: round(ct[key]["all_s"] / runs["ot_as_shipped"][key]["all_s"], 2)
            for key in ("children_exist", "pods_ready")
        },
        "fairness": [
            "OT's readiness and liveness probes are overridden in its CRs: the same PONG "
            "check without -h $(hostname), which the node agent does not resolve",
            "CacheTier also writes a status, an auth Secret, ACL users, a PDB and a "
            "NetworkPolicy and requires a password; OT's instances here have none of those",
            "one run each, in order OT as shipped, OT qps 100, CacheTier, on a shared "
            "2-core machine; the namespace of each run is deleted before the next",
        ],
        **machine(),
    }
    emit("peer", result, indent=1)


if __name__ == "__main__":
    main()
