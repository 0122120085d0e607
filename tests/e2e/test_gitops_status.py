"""What GitOps tools and SREs see through one tier's life, computed by the real tools.

kstatus (``sigs.k8s.io/cli-utils``, the library of Flux and kpt; ``hack/kstatus``,
built by ``hack/tools.sh``) judges the tier at each state: provisioning and a spec
change in flight are InProgress, Ready is Current, a refused spec and an automatic
rollback are Failed — never an endless InProgress — and Argo CD's verdict from the
shipped Lua health check (``manifests/argocd/health.lua``, run in gopher-lua by
``hack/luahealth``) agrees at every one of those states. An application that calls a
disabled command rolls the tier back with the cause named (NOPERM, KEYS);
``cachetier rollout set`` re-arms it without a spec change and says so. The full
resync restores a deleted connection Secret that no watch event reports.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import generate_latest

from cachetier import metrics
from tests.e2e.conftest import RESYNC_SECONDS
from tests.e2e.helpers import (
    Operator,
    event_messages,
    get_json,
    kubectl_apply,
    pod_ips,
    wait_for,
)
from tests.e2e.test_cli import run_cli

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
TIER = "gitops"
MANIFEST = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: gitops, namespace: {ns}}}
spec:
  redis: {{maxmemory: {maxmemory}, persistence: {{mode: none}}}}
  resources: {{limits: {{memory: {limit}}}}}
  rollout:
    autoRollback: {{failureThreshold: 1, maxErrorRate: 0.01}}
"""


class Watcher:
    """Every version of the namespace's CacheTiers, from a watch (in a thread)."""

    def __init__(self, kube_api: Any, ns: str) -> None:
        from kubernetes import client, watch

        self.seen: list[dict[str, Any]] = []
        self._watch = watch.Watch()
        api = client.CustomObjectsApi(kube_api)

        def run() -> None:
            stream = self._watch.stream(
                api.list_namespaced_custom_object,
                "cachetier.io",
                "v1alpha1",
                ns,
                "cachetiers",
                timeout_seconds=120,
            )
            try:
                for event in stream:
                    self.seen.append(event["object"])
            except Exception:
                return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        time.sleep(0.5)  # the watch is open before the tier is created

    def stop(self) -> None:
        self._watch.stop()


def tool(name: str) -> str:
    """The binary ``hack/tools.sh`` built for ``name`` (kstatus, luahealth, helm)."""
    binary = subprocess.run(
        ["bash", str(REPO / "hack" / "tools.sh"), "path", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(binary).is_file(), f"{binary} missing: run `make bootstrap`"
    return binary


def kstatus(obj: dict[str, Any]) -> dict[str, str]:
    """The verdict of cli-utils' ``status.Compute`` for ``obj``."""
    out = subprocess.run(
        [tool("kstatus")],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    result: dict[str, str] = json.loads(out.stdout)
    # Argo CD's verdict on the same object, from the Lua health check we ship, run in
    # gopher-lua (the interpreter Argo CD embeds): it must agree with kstatus.
    argo = argocd_health(obj)
    assert argo["status"] == ARGO_FOR_KSTATUS[result["status"]], (result, argo)
    result["argocd"] = argo["status"]
    return result


ARGO_FOR_KSTATUS = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded"}
HEALTH_LUA = REPO / "manifests" / "argocd" / "health.lua"


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD's health assessment says of ``obj`` with manifests/argocd/health.lua."""
    out = subprocess.run(
        [tool("luahealth"), str(HEALTH_LUA)], input=json.dumps(obj), capture_output=True, text=True,
        check=True, timeout=30,
    )  # fmt: skip
    result: dict[str, str] = json.loads(out.stdout)
    return result


def test_the_argocd_configmap_snippet_carries_the_shipped_script() -> None:
    import yaml

    snippet = yaml.safe_load((HEALTH_LUA.with_name("argocd-cm-patch.yaml")).read_text())
    script = snippet["data"]["resource.customizations.health.cachetier.io_CacheTier"]
    assert script.strip() == HEALTH_LUA.read_text().strip()
    ignore = yaml.safe_load(
        snippet["data"]["resource.customizations.ignoreDifferences.apps_Deployment"]
    )
    assert ignore == {"managedFieldsManagers": ["cachetier-operator"]}
    # Before the operator answered: Progressing, never Healthy.
    fresh = {"metadata": {"name": "t", "generation": 1}, "status": {"observedGeneration": 0}}
    assert argocd_health(fresh)["status"] == "Progressing"
    assert argocd_health({"metadata": {"name": "t", "generation": 1}})["status"] == "Progressing"


def patch_spec(cluster: Any, ns: str, spec: dict[str, Any]) -> None:
    """``kubectl patch --type=merge`` of the tier's spec, as an SRE would."""
    patch = json.dumps({"spec": spec})
    cluster.run_kubectl("patch", "cachetier", TIER, "-n", ns, "--type=merge", "-p", patch)


def tier_of(cluster: Any, ns: str) -> dict[str, Any]:
    tier = get_json(cluster, "cachetier", ns, TIER)
    assert tier is not None
    return tier


def condition(tier: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (tier.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return {}


def current_generation_everywhere(tier: dict[str, Any]) -> None:
    generation = tier["metadata"]["generation"]
    assert tier["status"]["observedGeneration"] == generation
    stale = [
        c["type"] for c in tier["status"]["conditions"] if c.get("observedGeneration") != generation
    ]
    assert not stale, f"conditions with an older observedGeneration: {stale}"


def settled(cluster: Any, ns: str, want: str) -> dict[str, Any] | None:
    tier = tier_of(cluster, ns)
    st = tier.get("status") or {}
    if st.get("observedGeneration") != tier["metadata"]["generation"]:
        return None
    return tier if kstatus(tier)["status"] == want else None


@pytest.mark.operator_errors()  # none expected: the guard must stay quiet
def test_kstatus_rollback_cause_rearm_and_resync(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns = namespace
    versions = Watcher(kube_api, ns)
    kubectl_apply(kube_cluster, MANIFEST.format(ns=ns, maxmemory="32mb", limit="128Mi"))

    # Provisioning: InProgress, not Current and not Failed — judged on every version
    # of the tier the API server had (a watch), however fast it went Ready.
    wait_for(
        lambda: any((v.get("status") or {}).get("phase") == "Ready" for v in versions.seen),
        timeout=120,
        what="the tier Ready",
    )
    seen = [((v.get("status") or {}).get("phase"), kstatus(v)["status"]) for v in versions.seen]
    versions.stop()
    # Before the operator's first status write too: the CRD defaults status to
    # {observedGeneration: 0}, so a tier nobody answered yet is not Current.
    early = [verdict for phase, verdict in seen if phase in (None, "Pending", "Provisioning")]
    assert early, f"no provisioning state observed: {seen}"
    assert set(early) == {"InProgress"}, seen
    assert seen[-1] == ("Ready", "Current") or ("Ready", "Current") in seen, seen
    tier = wait_for(lambda: settled(kube_cluster, ns, "Current"), timeout=60, what="Current")
    current_generation_everywhere(tier)

    # A spec change in flight is InProgress until observed, then Current again.
    patch_spec(kube_cluster, ns, {"redis": {"maxmemory": "48mb"}})
    changed = tier_of(kube_cluster, ns)
    if changed["status"]["observedGeneration"] != changed["metadata"]["generation"]:
        assert kstatus(changed)["status"] == "InProgress"
    tier = wait_for(lambda: settled(kube_cluster, ns, "Current"), timeout=120, what="Current")
    current_generation_everywhere(tier)

    # A spec the operator refuses: Failed (Stalled), with the reason.
    patch_spec(kube_cluster, ns, {"resources": {"limits": {"memory": "16Mi"}}})
    tier = wait_for(lambda: settled(kube_cluster, ns, "Failed"), timeout=60, what="Failed")
    assert condition(tier, "Stalled")["reason"] == "InvalidSpec"
    assert "maxmemory" in kstatus(tier)["message"]
    current_generation_everywhere(tier)
    patch_spec(kube_cluster, ns, {"resources": {"limits": {"memory": "128Mi"}}})
    wait_for(lambda: settled(kube_cluster, ns, "Current"), timeout=120, what="Current again")

    # An application that calls KEYS (disabled): the error rate rolls the tier back,
    # and status, the Event and the metric say why.
    secret = get_json(kube_cluster, "secret", ns, f"{TIER}-connection") or {}
    password = base64.b64decode(secret["data"]["password"]).decode()
    ip = wait_for(lambda: pod_ips(kube_cluster, ns, TIER), timeout=60, what="pod IP")[0]
    app = redis.Redis(host=ip, port=6379, password=password, socket_timeout=5)

    def rolled_back() -> dict[str, Any] | None:
        for i in range(270):
            app.set(f"k{i % 50}", "v")
        for _ in range(30):
            with contextlib.suppress(redis.exceptions.NoPermissionError):
                app.keys("k*")
        tier = tier_of(kube_cluster, ns)
        return tier if condition(tier, "RolledBack").get("status") == "True" else None

    tier = wait_for(rolled_back, timeout=90, what="automatic rollback", interval=2)
    app.close()
    message = condition(tier, "RolledBack")["message"]
    assert condition(tier, "RolledBack")["reason"] == "AutoRollback"
    assert "error rate" in message and "NOPERM" in message and "KEYS" in message, message
    assert "SCAN" in message, message
    tier = wait_for(lambda: settled(kube_cluster, ns, "Failed"), timeout=30, what="Failed")
    assert condition(tier, "Stalled")["reason"] == "AutoRollback"
    assert tier["status"]["health"]["deniedCommands"] == ["KEYS"] or "KEYS" in message
    exported = generate_latest(metrics.REGISTRY).decode()
    assert f'cachetier_redis_error_replies{{class="NOPERM",namespace="{ns}",tier="{TIER}"}}' in (
        exported
    )
    events = event_messages(kube_cluster, ns, "AutoRollback")
    assert any("NOPERM" in e for e in events), events

    # Re-arm without a spec change: `rollout set` to the percent it already has.
    generation = tier["metadata"]["generation"]
    proc = run_cli(kube_cluster.kubeconfig, "rollout", "set", TIER, "100", namespace=ns)
    assert proc.returncode == 0, proc.stderr
    assert "re-armed after the automatic rollback" in proc.stdout, proc.stdout

    def rearmed() -> dict[str, Any] | None:
        tier = tier_of(kube_cluster, ns)
        ok = condition(tier, "RolledBack").get("status") == "False"
        return tier if ok and kstatus(tier)["status"] == "Current" else None

    tier = wait_for(rearmed, timeout=60, what="re-armed and Current")
    assert tier["metadata"]["generation"] == generation
    assert tier["status"]["rollout"]["effectivePercent"] == 100
    assert "rolledBackGeneration" not in tier["status"]["rollout"]
    again = run_cli(kube_cluster.kubeconfig, "rollout", "set", TIER, "100", namespace=ns)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout
    usage = run_cli(kube_cluster.kubeconfig, "rollout", "set", TIER, "101", namespace=ns)
    assert usage.returncode == 2, usage

    # Drift that no watch event reports: the full resync restores it.
    kube_cluster.run_kubectl("delete", "secret", f"{TIER}-connection", "-n", ns)
    restored = wait_for(
        lambda: get_json(kube_cluster, "secret", ns, f"{TIER}-connection"),
        timeout=2 * RESYNC_SECONDS + 20,
        what="the connection Secret restored by the resync",
    )
    assert base64.b64decode(restored["data"]["password"]).decode() == password


SLOW = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
  rollout:
    autoRollback: {{maxLatencyMs: 0.001, failureThreshold: 2, rollbackOnLatency: {opt_in}}}
"""


def test_latency_is_a_warning_unless_opted_in(
    kube_cluster: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    """Every PING is above a 1 µs threshold: a warning that holds, a rollback only by choice.

    Once the warning stands, further slow probes write nothing (no status flapping on a
    busy node).
    """
    ns = namespace
    for name, opt_in in (("warned", "false"), ("opted", "true")):
        kubectl_apply(kube_cluster, SLOW.format(name=name, ns=ns, opt_in=opt_in))

    def get(name: str) -> dict[str, Any]:
        return get_json(kube_cluster, "cachetier", ns, name) or {}

    def warned() -> dict[str, Any] | None:
        tier = get("warned")
        return tier if condition(tier, "HighLatency").get("status") == "True" else None

    tier = wait_for(warned, timeout=120, what="HighLatency on the warned tier")
    assert condition(tier, "HighLatency")["reason"] == "LatencyAboveThreshold"
    assert condition(tier, "RolledBack").get("status") == "False"
    assert tier["status"]["rollout"]["effectivePercent"] == 100
    assert tier["status"]["health"]["slow"] is True
    assert kstatus(tier)["status"] == "Current"  # a warning, not a failure
    assert event_messages(kube_cluster, ns, "HighLatency"), "no HighLatency Event"
    exported = generate_latest(metrics.REGISTRY).decode()
    assert f'cachetier_redis_slow{{namespace="{ns}",tier="warned"}} 1.0' in exported

    # Still slow on every probe, but the verdict does not change: no more writes.
    writes = operator.write_count(ns, "warned")
    version = tier["metadata"]["resourceVersion"]
    seen: set[float | None] = set()

    def more_probes() -> bool:
        labels = {"namespace": ns, "tier": "warned"}
        seen.add(metrics.REGISTRY.get_sample_value("cachetier_probe_latency_ms", labels))
        return len(seen) >= 4  # the current value and three more probes

    wait_for(more_probes, timeout=90, what="three more probes")
    assert operator.write_count(ns, "warned") == writes
    assert get("warned")["metadata"]["resourceVersion"] == version

    def opted_rolled_back() -> dict[str, Any] | None:
        tier = get("opted")
        return tier if condition(tier, "RolledBack").get("status") == "True" else None

    tier = wait_for(opted_rolled_back, timeout=120, what="the opted-in tier rolled back")
    assert "PING latency" in condition(tier, "RolledBack")["message"]
