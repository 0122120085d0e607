"""A standalone CacheTier on a real control plane, reconciled by the operator (KopfRunner)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.e2e.helpers import CHILDREN, Operator, get_json, kubectl_apply, wait_for

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  redis:
    maxmemory: {maxmemory}
    persistence: {{mode: aof, size: 64Mi, retainOnDelete: {retain}}}
"""


def condition(tier: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (tier.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return None


def test_standalone_lifecycle(
    kube_cluster: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns, name = namespace, "tasks-cache"
    kubectl_apply(kube_cluster, TIER.format(name=name, ns=ns, maxmemory="64mb", retain="true"))

    tier = wait_for(
        lambda: _status_written(kube_cluster, ns, name),
        timeout=60,
        what="status with conditions",
    )
    # Every child exists, owned by the tier, with the SPEC labels.
    uid = tier["metadata"]["uid"]
    for kind, pattern in CHILDREN:
        obj = wait_for(
            lambda k=kind, p=pattern: get_json(kube_cluster, k, ns, p.format(t=name)),
            timeout=30,
            what=f"{kind} {pattern}",
        )
        owners = obj["metadata"].get("ownerReferences") or []
        assert [(o["kind"], o["uid"], o.get("controller")) for o in owners] == [
            ("CacheTier", uid, True)
        ], f"{kind} owner references"
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "cachetier"
        assert labels["app.kubernetes.io/instance"] == name
        assert labels["app.kubernetes.io/managed-by"] == "cachetier-operator"

    # Status: generation observed, endpoint, connection Secret, kstatus conditions.
    status = tier["status"]
    assert status["observedGeneration"] == tier["metadata"]["generation"]
    assert status["endpoint"] == {"host": f"{name}.{ns}.svc", "port": 6379}
    assert status["connectionSecret"] == f"{name}-connection"
    assert status["phase"] in {"Pending", "Provisioning", "Ready"}
    for ctype in ("Ready", "Progressing", "Degraded"):
        c = condition(tier, ctype)
        assert c is not None, ctype
        assert c["observedGeneration"] == tier["metadata"]["generation"]

    # Content: the ConfigMap has no password; the connection Secret carries SPEC's keys.
    conf = get_json(kube_cluster, "configmap", ns, f"{name}-config")
    assert conf is not None
    redis_conf = conf["data"]["redis.conf"]
    assert "maxmemory 64mb" in redis_conf
    assert "appendonly yes" in redis_conf
    password = _secret(kube_cluster, ns, f"{name}-auth")["password"]
    assert password not in json.dumps(conf)
    connection = _secret(kube_cluster, ns, f"{name}-connection")
    assert connection["url"] == f"redis://:{password}@{name}.{ns}.svc:6379/0"
    assert connection["host"] == f"{name}.{ns}.svc"
    assert connection["port"] == "6379"
    assert connection["password"] == password
    assert connection["type"] == "redis"
    assert connection["provider"] == "cachetier"
    sts = get_json(kube_cluster, "statefulset", ns, name)
    assert sts is not None
    assert password not in json.dumps(sts), "a literal password in the workload"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    hash_before = sts["spec"]["template"]["metadata"]["annotations"]["cachetier.io/config-hash"]

    # The node agent (or a real cluster's kubelet) runs the pod: the tier goes Ready.
    wait_for(
        lambda: _with_condition(kube_cluster, ns, name, "Ready", "Ready"),
        timeout=120,
        what="Ready=True",
    )

    # The health prober records its first verdict once (status.health); after that a
    # healthy idle tier is written only when something changes.
    wait_for(
        lambda: (
            ((get_json(kube_cluster, "cachetier", ns, name) or {}).get("status") or {})
            .get("health", {})
            .get("up")
        ),
        timeout=60,
        what="first health probe recorded",
    )

    # A reconcile with nothing to do writes nothing: the tier's resourceVersion and
    # every child's stay put while the operator re-runs (status events, resync).
    # (Only objects that no controller writes are compared: the StatefulSet's and
    # the PDB's status belong to their controllers.) The count is read first, so a
    # write by any part of the operator in between is caught by one check or the other.
    writes_before = operator.write_count(ns, name)
    versions = _versions(kube_cluster, ns, name)
    operator.reconcile_now(ns, name)
    operator.reconcile_now(ns, name)
    assert operator.write_count(ns, name) == writes_before
    assert _versions(kube_cluster, ns, name) == versions

    # maxmemory change: ConfigMap and pod-template hash change, the password stays.
    kubectl_apply(kube_cluster, TIER.format(name=name, ns=ns, maxmemory="128mb", retain="true"))
    wait_for(
        lambda: (
            "maxmemory 128mb"
            in (
                (get_json(kube_cluster, "configmap", ns, f"{name}-config") or {}).get("data") or {}
            ).get("redis.conf", "")
        ),
        timeout=30,
        what="ConfigMap update",
    )
    sts = wait_for(
        lambda: _sts_with_new_hash(kube_cluster, ns, name, hash_before),
        timeout=30,
        what="pod template hash change",
    )
    assert _secret(kube_cluster, ns, f"{name}-auth")["password"] == password
    assert _secret(kube_cluster, ns, f"{name}-connection")["password"] == password
    wait_for(
        lambda: (
            (get_json(kube_cluster, "cachetier", ns, name) or {})
            .get("status", {})
            .get("observedGeneration")
            == 2
        ),
        timeout=30,
        what="observedGeneration 2",
    )

    # The StatefulSet controller made the claim; deletion keeps it (retainOnDelete).
    wait_for(
        lambda: get_json(kube_cluster, "pvc", ns, f"data-{name}-0"), timeout=30, what="PVC created"
    )
    kube_cluster.run_kubectl("delete", "cachetier", name, "-n", ns, "--wait=true", timeout=90)
    for kind, pattern in CHILDREN:
        wait_for(
            lambda k=kind, p=pattern: get_json(kube_cluster, k, ns, p.format(t=name)) is None,
            timeout=90,
            what=f"garbage collection of {kind}",
        )
    assert get_json(kube_cluster, "pvc", ns, f"data-{name}-0") is not None, "PVC must be retained"


def test_invalid_semantics_reported_not_retried(
    kube_cluster: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    """maxmemory above the memory limit: the API server accepts it, the operator refuses."""
    ns, name = namespace, "too-big"
    kubectl_apply(
        kube_cluster,
        f"""
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: {name}, namespace: {ns}}}
spec:
  redis: {{maxmemory: 4gb}}
  resources: {{limits: {{memory: 1Gi}}}}
""",
    )
    tier = wait_for(
        lambda: _with_condition(kube_cluster, ns, name, "Ready", "InvalidSpec"),
        timeout=60,
        what="Ready=False InvalidSpec",
    )
    ready = condition(tier, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert "maxmemory" in ready["message"]
    assert get_json(kube_cluster, "statefulset", ns, name) is None
    # No hot loop: further reconciles write nothing.
    before = operator.write_count(ns, name)
    rv = tier["metadata"]["resourceVersion"]
    operator.reconcile_now(ns, name)
    time.sleep(2)
    assert operator.write_count(ns, name) == before
    again = get_json(kube_cluster, "cachetier", ns, name)
    assert again is not None
    assert again["metadata"]["resourceVersion"] == rv


def _status_written(cluster: Any, ns: str, name: str) -> dict[str, Any] | None:
    tier = get_json(cluster, "cachetier", ns, name)
    if tier and condition(tier, "Ready") and (tier.get("status") or {}).get("endpoint"):
        return tier
    return None


def _with_condition(
    cluster: Any, ns: str, name: str, ctype: str, reason: str
) -> dict[str, Any] | None:
    tier = get_json(cluster, "cachetier", ns, name)
    c = condition(tier, ctype) if tier else None
    return tier if c and c.get("reason") == reason else None


def _secret(cluster: Any, ns: str, name: str) -> dict[str, str]:
    obj = get_json(cluster, "secret", ns, name)
    assert obj is not None, name
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


def _versions(cluster: Any, ns: str, name: str) -> dict[str, str]:
    out = {}
    tier = get_json(cluster, "cachetier", ns, name)
    assert tier is not None
    out["cachetier"] = tier["metadata"]["resourceVersion"]
    for kind, pattern in CHILDREN:
        if kind in ("statefulset", "poddisruptionbudget"):
            continue
        obj = get_json(cluster, kind, ns, pattern.format(t=name))
        assert obj is not None
        out[f"{kind}/{pattern}"] = obj["metadata"]["resourceVersion"]
    return out


def _sts_with_new_hash(cluster: Any, ns: str, name: str, old: str) -> dict[str, Any] | None:
    sts = get_json(cluster, "statefulset", ns, name)
    if (
        sts
        and sts["spec"]["template"]["metadata"]["annotations"]["cachetier.io/config-hash"] != old
    ):
        return sts
    return None


pytestmark = pytest.mark.timeout(300)
