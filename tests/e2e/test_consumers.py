"""Consumers of a tier on a real control plane: injection, the percentage rollout, rollback.

The operator runs in-process (KopfRunner); the controller manager makes the
consumers' ReplicaSets, and the node agent reports the consumers' unknown image
Running without a process, so consumer pods are cheap. The enabled sets are
computed here independently, straight from SPEC section 4's bucket formula.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from typing import Any

import pytest

from tests.e2e.helpers import Operator, wait_for
from tests.e2e.test_cli import cachetier_command

pytestmark = pytest.mark.timeout(420)

TIER = "tasks-cache"
LABEL = "cache.ordo.dev/tasks"
IMAGE = "registry.example/app:1"
TIMEOUT = 60.0
EXTERNAL_URL = "rediss://user:pw@redis.example.invalid:6380/0"


# -- manifests -----------------------------------------------------------------


def deployment_manifest(
    ns: str,
    name: str,
    *,
    labelled: bool = True,
    env: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A consumer's original manifest, as its owners keep it in Git."""
    labels = {"app": name}
    if labelled:
        labels[LABEL] = "true"
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": IMAGE,
                            "env": env
                            if env is not None
                            else [{"name": "APP_MODE", "value": "web"}],
                        }
                    ]
                },
            },
        },
    }


def standalone_tier(ns: str, name: str, percent: int) -> dict[str, Any]:
    return {
        "apiVersion": "cachetier.io/v1alpha1",
        "kind": "CacheTier",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "mode": "standalone",
            "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
            "consumers": {"selector": {"matchLabels": {LABEL: "true"}}},
            # Health probes on a busy 2-core test machine must not roll the ramp back.
            "rollout": {
                "enabled": True,
                "percent": percent,
                "autoRollback": {"enabled": False, "maxLatencyMs": 60000},
            },
        },
    }


def external_tier(ns: str, name: str, percent: int) -> dict[str, Any]:
    return {
        "apiVersion": "cachetier.io/v1alpha1",
        "kind": "CacheTier",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "mode": "external",
            "external": {"urlSecretRef": {"name": f"{name}-url", "key": "url"}},
            "consumers": {"selector": {"matchLabels": {LABEL: "true"}}},
            # redis.example.invalid never answers the health probes: no auto-rollback.
            "rollout": {"enabled": True, "percent": percent, "autoRollback": {"enabled": False}},
        },
    }


def url_secret(ns: str, tier: str, url: str = EXTERNAL_URL) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{tier}-url", "namespace": ns},
        "stringData": {"url": url},
    }


# -- cluster helpers -----------------------------------------------------------


def kubectl_apply(cluster: Any, *objs: dict[str, Any], extra: tuple[str, ...] = ()) -> str:
    """`kubectl apply -f -` of these objects (a List), as a person or CI would."""
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)})
    proc = subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "apply", *extra, "-f", "-"],
        input=doc,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl apply failed: {proc.stderr}"
    return proc.stdout


def get_json(cluster: Any, *args: str) -> dict[str, Any] | None:
    proc = cluster.run_kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def deployments(kube_api: Any, ns: str) -> dict[str, dict[str, Any]]:
    """Every Deployment of the namespace, as raw JSON, by name (one list call)."""
    from kubernetes import client

    resp = client.AppsV1Api(kube_api).list_namespaced_deployment(ns, _preload_content=False)
    return {d["metadata"]["name"]: d for d in json.loads(resp.data)["items"]}


def get_tier(kube_api: Any, ns: str, name: str) -> dict[str, Any] | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        obj: dict[str, Any] = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "cachetier.io", "v1alpha1", ns, "cachetiers", name
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return obj


def patch_tier(cluster: Any, ns: str, name: str, rollout: dict[str, Any]) -> None:
    cluster.run_kubectl(
        "patch",
        "cachetier",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"rollout": rollout}}),
    )


def env_of(dep: dict[str, Any], container: str = "app") -> dict[str, dict[str, Any]]:
    for c in dep["spec"]["template"]["spec"]["containers"]:
        if c["name"] == container:
            return {e["name"]: e for e in c.get("env") or []}
    raise KeyError(container)


def flag(dep: dict[str, Any]) -> str | None:
    entry = env_of(dep).get("REDIS_ENABLED")
    return None if entry is None else entry.get("value")


def bucket(ns: str, tier: str, name: str, kind: str = "Deployment") -> int:
    """SPEC section 4, written out again on purpose (not imported from the operator)."""
    digest = hashlib.sha256(f"{ns}/{tier}/{kind}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def expected_enabled(ns: str, tier: str, consumers: list[str], percent: int) -> set[str]:
    return {n for n in consumers if bucket(ns, tier, n) < percent}


def condition(tier: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for c in ((tier or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return None


def assert_injected(dep: dict[str, Any], tier: str) -> None:
    """REDIS_URL is a secretKeyRef (never a literal), plus annotation and pod label."""
    name = dep["metadata"]["name"]
    url = env_of(dep).get("REDIS_URL")
    assert url is not None, f"{name}: no REDIS_URL"
    assert "value" not in url, f"{name}: literal REDIS_URL"
    assert url["valueFrom"]["secretKeyRef"]["name"] == f"{tier}-connection", name
    assert url["valueFrom"]["secretKeyRef"]["key"] == "url", name
    assert dep["metadata"]["annotations"]["cachetier.io/tier"] == tier, name
    assert dep["spec"]["template"]["metadata"]["labels"][f"client.cachetier.io/{tier}"] == "true"


def assert_clean(dep: dict[str, Any], tier: str) -> None:
    """Nothing of the operator is left on the workload."""
    name = dep["metadata"]["name"]
    env = env_of(dep)
    assert "REDIS_URL" not in env, name
    assert "REDIS_ENABLED" not in env, name
    assert "cachetier.io/tier" not in (dep["metadata"].get("annotations") or {}), name
    labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    assert f"client.cachetier.io/{tier}" not in labels, name
    managers = {m.get("manager") for m in dep["metadata"].get("managedFields") or []}
    assert "cachetier-operator" not in managers, name


def wait_enabled_set(
    kube_api: Any, ns: str, consumers: list[str], want: set[str], what: str
) -> dict[str, dict[str, Any]]:
    """Until every consumer carries REDIS_ENABLED, "true" exactly on ``want``."""

    def probe() -> dict[str, dict[str, Any]] | None:
        deps = deployments(kube_api, ns)
        flags = {n: flag(deps[n]) for n in consumers if n in deps}
        if len(flags) != len(consumers):
            return None
        if {n for n, v in flags.items() if v == "true"} != want:
            return None
        if any(v != "false" for n, v in flags.items() if n not in want):
            return None
        return deps

    return wait_for(probe, timeout=TIMEOUT, what=what, interval=0.3)


def wait_status(
    kube_api: Any, ns: str, tier: str, percent: int, enabled: int, selected: int
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_tier(kube_api, ns, tier)
        status = (obj or {}).get("status") or {}
        rollout, consumers = status.get("rollout") or {}, status.get("consumers") or {}
        ok = (
            rollout.get("effectivePercent") == percent
            and consumers.get("enabled") == enabled
            and consumers.get("selected") == selected
        )
        return obj if ok else None

    return wait_for(
        probe,
        timeout=TIMEOUT,
        what=f"status effectivePercent={percent} enabled={enabled}/{selected}",
    )


def events(kube_api: Any, ns: str, tier: str) -> list[dict[str, Any]]:
    from kubernetes import client

    resp = client.CoreV1Api(kube_api).list_namespaced_event(ns, _preload_content=False)
    return [
        e
        for e in json.loads(resp.data)["items"]
        if e["involvedObject"].get("kind") == "CacheTier" and e["involvedObject"]["name"] == tier
    ]


def wait_event(kube_api: Any, ns: str, tier: str, reason: str) -> dict[str, Any]:
    return wait_for(
        lambda: next((e for e in events(kube_api, ns, tier) if e["reason"] == reason), None),
        timeout=TIMEOUT,
        what=f"Event {reason}",
    )


def newest_replicaset(kube_api: Any, ns: str, dep: dict[str, Any]) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's current revision."""
    from kubernetes import client

    revision = (dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
    resp = client.AppsV1Api(kube_api).list_namespaced_replica_set(ns, _preload_content=False)
    for rs in json.loads(resp.data)["items"]:
        owners = rs["metadata"].get("ownerReferences") or []
        mine = any(o.get("uid") == dep["metadata"]["uid"] for o in owners)
        rs_rev = (rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
        if mine and revision is not None and rs_rev == revision:
            result: dict[str, Any] = rs
            return result
    return None


def wait_replicasets_carry_flags(kube_api: Any, ns: str, want: dict[str, str], tier: str) -> None:
    """The controller manager rolled the template out: each newest RS carries the env."""

    def probe() -> bool:
        deps = deployments(kube_api, ns)
        for name, value in want.items():
            dep = deps[name]
            if (dep.get("status") or {}).get("observedGeneration") != dep["metadata"]["generation"]:
                return False
            rs = newest_replicaset(kube_api, ns, dep)
            if rs is None or flag(rs) != value:
                return False
            ref = env_of(rs)["REDIS_URL"]["valueFrom"]["secretKeyRef"]
            if (ref.get("name"), ref.get("key")) != (f"{tier}-connection", "url"):
                return False
        return True

    wait_for(probe, timeout=TIMEOUT * 2, what="newest ReplicaSets carrying REDIS_ENABLED")


def wait_ready(kube_api: Any, ns: str, tier: str, timeout: float = 180) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_tier(kube_api, ns, tier)
        ready = condition(obj, "Ready")
        return obj if ready and ready["status"] == "True" else None

    return wait_for(probe, timeout=timeout, what=f"tier {tier} Ready")


def delete_tier_and_wait_clean(
    cluster: Any, kube_api: Any, ns: str, tier: str, consumers: list[str]
) -> None:
    cluster.run_kubectl("delete", "cachetier", tier, "-n", ns, "--wait=false")
    wait_for(
        lambda: get_tier(kube_api, ns, tier) is None,
        timeout=TIMEOUT,
        what="the tier gone (finalizer removed)",
    )
    deps = deployments(kube_api, ns)
    for name in consumers:
        assert_clean(deps[name], tier)


def run_cli(cluster: Any, ns: str, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    proc = subprocess.run(
        [*cachetier_command(), "--kubeconfig", cluster.kubeconfig, "-n", ns, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"cachetier {' '.join(args)}: {proc.stderr}"
    return proc.stdout


# -- tests ---------------------------------------------------------------------


def test_ramp_and_rollback_follow_the_spec_buckets(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns = namespace
    consumers = [f"svc-{i:02d}" for i in range(20)]
    bystander = "unlabelled"
    kubectl_apply(
        kube_cluster,
        *(deployment_manifest(ns, n) for n in consumers),
        deployment_manifest(ns, bystander, labelled=False),
    )
    kubectl_apply(kube_cluster, standalone_tier(ns, TIER, 0))
    wait_ready(kube_api, ns, TIER)

    def check_bystander() -> None:
        dep = deployments(kube_api, ns)[bystander]
        assert_clean(dep, TIER)
        assert dep["metadata"]["generation"] == 1
        assert "REDIS_ENABLED" not in env_of(dep)

    # Percent 0: every consumer injected, switched off.
    deps = wait_enabled_set(kube_api, ns, consumers, set(), "0%: all consumers false")
    for name in consumers:
        assert_injected(deps[name], TIER)
    wait_status(kube_api, ns, TIER, 0, 0, 20)
    check_bystander()

    seen_on: set[str] = set()
    for percent in (25, 50, 100):
        want = expected_enabled(ns, TIER, consumers, percent)
        assert seen_on <= want, "raising the percent disabled a workload"
        patch_tier(kube_cluster, ns, TIER, {"percent": percent})
        deps = wait_enabled_set(kube_api, ns, consumers, want, f"{percent}%: the SPEC buckets")
        for name in consumers:
            assert_injected(deps[name], TIER)
        tier = wait_status(kube_api, ns, TIER, percent, len(want), 20)
        rollout = tier["status"]["rollout"]
        assert rollout["enabled"] is True
        assert rollout["targetPercent"] == percent
        workloads = tier["status"]["consumers"]["workloads"]
        assert {w["name"] for w in workloads if w["enabled"]} == want
        check_bystander()
        seen_on = want
        if percent == 50:
            # The controller manager rolled the new template out to ReplicaSets.
            wait_replicasets_carry_flags(
                kube_api, ns, {n: "true" if n in want else "false" for n in consumers}, TIER
            )
    assert seen_on == set(consumers)
    # Nothing to do: a reconcile of the tier with 20 consumers in place writes nothing.
    writes = operator.write_count(ns, TIER)
    operator.reconcile_now(ns, TIER)
    operator.reconcile_now(ns, TIER)
    assert operator.write_count(ns, TIER) == writes
    changed = wait_event(kube_api, ns, TIER, "RolloutChanged")
    assert changed["type"] == "Normal"

    # Instant rollback: every consumer off; status and an Event record it.
    patch_tier(kube_cluster, ns, TIER, {"enabled": False})
    wait_enabled_set(kube_api, ns, consumers, set(), "rollback: all consumers false")
    # The consumer writes (made from the operator's worker threads) count for the tier.
    assert operator.write_count(ns, TIER) >= writes + len(consumers)
    tier = wait_status(kube_api, ns, TIER, 0, 0, 20)
    assert tier["status"]["rollout"]["enabled"] is False
    assert tier["status"]["rollout"]["targetPercent"] == 100
    assert tier["status"]["rollout"]["reason"] == "RolledBack"
    rolled_back = wait_event(kube_api, ns, TIER, "RolledBack")
    assert rolled_back["type"] == "Warning"
    wait_replicasets_carry_flags(kube_api, ns, dict.fromkeys(consumers, "false"), TIER)
    check_bystander()

    # Deleting the tier releases every consumer and then drops its finalizer.
    delete_tier_and_wait_clean(kube_cluster, kube_api, ns, TIER, consumers)
    check_bystander()


def test_gitops_applies_manual_removal_new_workloads_and_pins(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    """External tier (no Redis pod needed) at 50 %: drift and the owners' own tooling."""
    ns, percent = namespace, 50
    candidates = [f"app-{i:02d}" for i in range(40)]
    low = [n for n in candidates if bucket(ns, TIER, n) < percent]
    high = [n for n in candidates if bucket(ns, TIER, n) >= percent]
    gitops, removed, pinned = low[0], low[1], high[0]
    newcomer = high[1]
    consumers = [gitops, removed, pinned]
    manifests = {n: deployment_manifest(ns, n) for n in [*consumers, newcomer]}
    kubectl_apply(kube_cluster, *(manifests[n] for n in consumers))
    kubectl_apply(kube_cluster, url_secret(ns, TIER), external_tier(ns, TIER, percent))
    wait_ready(kube_api, ns, TIER)
    wait_enabled_set(kube_api, ns, consumers, {gitops, removed}, "50%: the SPEC buckets")

    # A `kubectl apply` of the original manifest keeps the injected env (a no-op
    # apply, then a real change the way a Git commit brings one).
    kubectl_apply(kube_cluster, manifests[gitops])
    changed = deployment_manifest(ns, gitops, env=[{"name": "APP_MODE", "value": "worker"}])
    changed["metadata"]["labels"]["revision"] = "2"
    out = kubectl_apply(kube_cluster, changed)
    assert "configured" in out
    dep = deployments(kube_api, ns)[gitops]
    assert env_of(dep)["APP_MODE"]["value"] == "worker"
    assert flag(dep) == "true"
    assert_injected(dep, TIER)
    # A server-side apply of the original manifest by another field manager (Argo CD).
    kubectl_apply(
        kube_cluster,
        manifests[gitops],
        extra=("--server-side", "--force-conflicts", "--field-manager=argocd-controller"),
    )
    dep = deployments(kube_api, ns)[gitops]
    assert env_of(dep)["APP_MODE"]["value"] == "web"
    assert flag(dep) == "true"
    assert_injected(dep, TIER)
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert "argocd-controller" in managers

    # A manual removal of REDIS_ENABLED is restored within seconds.
    dep = deployments(kube_api, ns)[removed]
    index = [e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]].index(
        "REDIS_ENABLED"
    )
    kube_cluster.run_kubectl(
        "patch",
        "deployment",
        removed,
        "-n",
        ns,
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": f"/spec/template/spec/containers/0/env/{index}"}]),
    )
    wait_for(
        lambda: flag(deployments(kube_api, ns)[removed]) == "true",
        timeout=15,
        what="REDIS_ENABLED restored",
        interval=0.2,
    )

    # A pin wins over the percentage: this workload's bucket is above 50.
    assert flag(deployments(kube_api, ns)[pinned]) == "false"
    kube_cluster.run_kubectl(
        "annotate", "deployment", pinned, "-n", ns, "cachetier.io/redis-enabled=true"
    )
    wait_for(
        lambda: flag(deployments(kube_api, ns)[pinned]) == "true",
        timeout=15,
        what="pinned workload enabled",
        interval=0.2,
    )
    wait_for(
        lambda: any(
            w["name"] == pinned and w["pinned"] and w["enabled"]
            for w in (get_tier(kube_api, ns, TIER) or {})["status"]["consumers"]["workloads"]
        ),
        timeout=15,
        what="status shows the pin",
    )

    # A new matching Deployment is picked up within seconds (its bucket is above 50).
    kubectl_apply(kube_cluster, manifests[newcomer])

    def newcomer_injected() -> dict[str, Any] | None:
        dep = deployments(kube_api, ns).get(newcomer)
        return dep if dep is not None and flag(dep) == "false" else None

    dep = wait_for(
        newcomer_injected,
        timeout=15,
        what="new consumer injected",
        interval=0.2,
    )
    assert_injected(dep, TIER)
    all_consumers = [*consumers, newcomer]
    wait_status(kube_api, ns, TIER, percent, 3, 4)

    # A workload that stops matching is released.
    kube_cluster.run_kubectl("label", "deployment", newcomer, "-n", ns, f"{LABEL}-")
    wait_for(
        lambda: "REDIS_URL" not in env_of(deployments(kube_api, ns)[newcomer]),
        timeout=15,
        what="unlabelled workload released",
        interval=0.2,
    )
    assert_clean(deployments(kube_api, ns)[newcomer], TIER)

    delete_tier_and_wait_clean(kube_cluster, kube_api, ns, TIER, all_consumers)


def test_conflicting_manager_is_reported_not_forced(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns = namespace
    own = [{"name": "APP_MODE", "value": "web"}, {"name": "REDIS_ENABLED", "value": "false"}]
    kubectl_apply(
        kube_cluster,
        deployment_manifest(ns, "owns-flag", env=own),
        deployment_manifest(ns, "plain"),
    )
    before = deployments(kube_api, ns)["owns-flag"]
    kubectl_apply(kube_cluster, url_secret(ns, TIER), external_tier(ns, TIER, 100))
    wait_ready(kube_api, ns, TIER)
    wait_for(
        lambda: flag(deployments(kube_api, ns)["plain"]) == "true",
        timeout=TIMEOUT,
        what="the other consumer enabled",
    )

    def conflict() -> dict[str, Any] | None:
        c = condition(get_tier(kube_api, ns, TIER), "ConsumerConflict")
        return c if c and c["status"] == "True" else None

    c = wait_for(conflict, timeout=TIMEOUT, what="ConsumerConflict=True")
    assert "owns-flag" in c["message"]
    assert "kubectl-client-side-apply" in c["message"]
    assert "REDIS_ENABLED" in c["message"]
    after = deployments(kube_api, ns)["owns-flag"]
    assert flag(after) == "false"
    assert "REDIS_URL" not in env_of(after)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    managers = {m["manager"] for m in after["metadata"].get("managedFields") or []}
    assert "cachetier-operator" not in managers
    wait_event(kube_api, ns, TIER, "ConsumerConflict")


def test_cli_drives_the_rollout(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns = namespace
    consumers = [f"svc-{i:02d}" for i in range(10)]
    kubectl_apply(kube_cluster, *(deployment_manifest(ns, n) for n in consumers))
    kubectl_apply(kube_cluster, url_secret(ns, TIER), external_tier(ns, TIER, 0))
    wait_ready(kube_api, ns, TIER)
    wait_enabled_set(kube_api, ns, consumers, set(), "0%: all false")

    out = run_cli(kube_cluster, ns, "rollout", "set", TIER, "50")
    assert "50%" in out
    want = expected_enabled(ns, TIER, consumers, 50)
    wait_enabled_set(kube_api, ns, consumers, want, "cli 50%: the SPEC buckets")
    wait_status(kube_api, ns, TIER, 50, len(want), 10)
    status = run_cli(kube_cluster, ns, "status")
    assert TIER in status

    out = run_cli(kube_cluster, ns, "rollback", TIER)
    assert "rolled back" in out
    wait_enabled_set(kube_api, ns, consumers, set(), "cli rollback: all false")
    tier = wait_status(kube_api, ns, TIER, 0, 0, 10)
    assert tier["status"]["rollout"]["targetPercent"] == 50
    assert tier["spec"]["rollout"] == {**tier["spec"]["rollout"], "enabled": False, "percent": 50}
    wait_event(kube_api, ns, TIER, "RolledBack")

    # Setting the percent again re-enables the same set.
    run_cli(kube_cluster, ns, "rollout", "set", TIER, "50")
    wait_enabled_set(kube_api, ns, consumers, want, "cli 50% again")


def test_external_tier_injects_its_url_unchanged(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns = namespace
    consumers = ["api", "worker"]
    kubectl_apply(kube_cluster, *(deployment_manifest(ns, n) for n in consumers))
    kubectl_apply(kube_cluster, url_secret(ns, TIER), external_tier(ns, TIER, 100))
    tier = wait_ready(kube_api, ns, TIER, timeout=TIMEOUT)
    assert tier["status"]["connectionSecret"] == f"{TIER}-connection"
    assert tier["status"]["endpoint"] == {"host": "redis.example.invalid", "port": 6380}

    secret = get_json(kube_cluster, "secret", f"{TIER}-connection", "-n", ns)
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["url"] == EXTERNAL_URL  # rediss:// stays TLS, credentials untouched
    assert data["host"] == "redis.example.invalid"
    assert data["port"] == "6380"
    # No workload of its own.
    assert get_json(kube_cluster, "statefulset", TIER, "-n", ns) is None

    deps = wait_enabled_set(kube_api, ns, consumers, set(consumers), "external: all enabled")
    for name in consumers:
        assert_injected(deps[name], TIER)
        assert EXTERNAL_URL not in json.dumps(deps[name]), "literal URL in a workload"
    wait_status(kube_api, ns, TIER, 100, 2, 2)
