"""Bad input is refused by the API server itself, as an SRE meets it: ``kubectl apply -f``.

Each ``tests/data/invalid/<case>.yaml`` is a whole CacheTier manifest with one
or more ``# expect: <text>`` lines; ``kubectl apply`` must fail, its stderr
must contain every expected text (which names the field), and no CacheTier
may exist afterwards. No operator runs here: the API server alone refuses.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cachetier.api.models import (
    CacheTierStatus,
    ClusterStatus,
    Condition,
    ConsumersStatus,
    Endpoint,
    HealthStatus,
    RolloutStatus,
    WorkloadStatus,
)
from tests.conftest import KubeCluster

INVALID_DIR = Path(__file__).resolve().parents[1] / "data" / "invalid"
CASES = sorted(INVALID_DIR.glob("*.yaml"))

pytestmark = pytest.mark.usefixtures("crd_installed")


def expectations(path: Path) -> list[str]:
    """The ``# expect:`` texts of a corpus file."""
    return [
        line.removeprefix("# expect:").strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


def kubectl_apply(
    cluster: KubeCluster, namespace: str, manifest: str | Path
) -> subprocess.CompletedProcess[str]:
    """``kubectl apply -f`` a file or a manifest text (plain client-side apply)."""
    if isinstance(manifest, Path):
        return cluster.run_kubectl("apply", "-n", namespace, "-f", str(manifest), check=False)
    return subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "apply", "-n", namespace, "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def tiers_in(cluster: KubeCluster, namespace: str) -> list[str]:
    """Names of the CacheTiers in ``namespace``."""
    listed = cluster.run_kubectl("get", "cachetiers", "-n", namespace, "-o", "name")
    return listed.stdout.split()


def get_tier(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    """A CacheTier as the API server stores it."""
    shown = cluster.run_kubectl("get", "cachetier", name, "-n", namespace, "-o", "json")
    tier: dict[str, Any] = json.loads(shown.stdout)
    return tier


@pytest.mark.parametrize("case", CASES, ids=[path.stem for path in CASES])
def test_invalid_tier_is_refused(kube_cluster: KubeCluster, namespace: str, case: Path) -> None:
    expected = expectations(case)
    assert expected, f"{case.name} has no '# expect:' line"

    result = kubectl_apply(kube_cluster, namespace, case)

    assert result.returncode != 0, f"{case.name} was accepted:\n{result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{case.name}: {text!r} not in:\n{result.stderr}"
    assert tiers_in(kube_cluster, namespace) == []


MINIMAL = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {name: minimal}
"""

# SPEC section 2, every field spelt out (status left to the operator).
SPEC_EXAMPLE = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {name: tasks-cache}
spec:
  mode: standalone
  image: redis:7.2-alpine
  redis:
    maxmemory: 2gb
    maxmemoryPolicy: allkeys-lru
    persistence:
      mode: aof
      rdbSchedule: ["900 1", "300 10", "60 10000"]
      size: 1Gi
      storageClassName: null
      retainOnDelete: true
    disabledCommands: [FLUSHDB, FLUSHALL, KEYS]
    logLevel: notice
  auth:
    enabled: true
    passwordSecretRef: null
  tls:
    enabled: false
    secretName: null
  cluster:
    shards: 3
    replicasPerShard: 1
  resources: {requests: {cpu: 100m, memory: 2560Mi}, limits: {cpu: 1, memory: 3Gi}}
  consumers:
    selector: {matchLabels: {cache.ordo.dev/tasks: "true"}}
    kinds: [Deployment, StatefulSet]
    containers: []
  rollout:
    enabled: true
    percent: 100
    granularity: workload
    steps: [10, 25, 50, 100]
    stepInterval: 10m
    autoRollback:
      enabled: true
      maxLatencyMs: 10
      maxErrorRate: 0.01
      failureThreshold: 3
"""


def test_minimal_tier_is_accepted_with_server_defaults(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    result = kubectl_apply(kube_cluster, namespace, MINIMAL)
    assert result.returncode == 0, result.stderr

    spec = get_tier(kube_cluster, namespace, "minimal")["spec"]

    assert spec["mode"] == "standalone"
    assert spec["redis"]["maxmemory"] == "2gb"
    assert spec["redis"]["maxmemoryPolicy"] == "allkeys-lru"
    assert spec["redis"]["persistence"]["mode"] == "aof"
    assert spec["redis"]["disabledCommands"] == ["FLUSHDB", "FLUSHALL", "KEYS"]
    assert spec["auth"]["enabled"] is True
    assert spec["rollout"]["percent"] == 100
    assert spec["rollout"]["enabled"] is True
    assert spec["rollout"]["autoRollback"]["failureThreshold"] == 3
    assert "consumers" not in spec


def test_spec_example_is_accepted(kube_cluster: KubeCluster, namespace: str) -> None:
    result = kubectl_apply(kube_cluster, namespace, SPEC_EXAMPLE)
    assert result.returncode == 0, result.stderr

    spec = get_tier(kube_cluster, namespace, "tasks-cache")["spec"]

    assert spec["rollout"]["steps"] == [10, 25, 50, 100]
    assert spec["resources"]["limits"] == {"cpu": 1, "memory": "3Gi"}


def test_mode_change_on_update_is_refused(kube_cluster: KubeCluster, namespace: str) -> None:
    created = kubectl_apply(kube_cluster, namespace, MINIMAL + "spec: {mode: standalone}\n")
    assert created.returncode == 0, created.stderr

    changed = kubectl_apply(kube_cluster, namespace, MINIMAL + "spec: {mode: cluster}\n")

    assert changed.returncode != 0, changed.stdout
    assert "spec.mode" in changed.stderr
    assert "mode is immutable" in changed.stderr
    assert get_tier(kube_cluster, namespace, "minimal")["spec"]["mode"] == "standalone"


@pytest.mark.parametrize(
    ("persistence", "message"),
    [
        ("{mode: none}", "persistence.mode cannot change between none"),
        ("{size: 512Mi}", "persistence.size cannot shrink"),
    ],
)
def test_volume_changes_on_update_are_refused_in_words(
    kube_cluster: KubeCluster, namespace: str, persistence: str, message: str
) -> None:
    """Not the StatefulSet API's raw "Forbidden: updates to statefulset spec ...": a
    sentence about the tier, from the API server, before anything is changed."""
    created = kubectl_apply(kube_cluster, namespace, MINIMAL + "spec: {}\n")
    assert created.returncode == 0, created.stderr
    changed = kubectl_apply(
        kube_cluster, namespace, MINIMAL + f"spec: {{redis: {{persistence: {persistence}}}}}\n"
    )
    assert changed.returncode != 0, changed.stdout
    assert message in changed.stderr, changed.stderr
    same = kubectl_apply(
        kube_cluster, namespace, MINIMAL + "spec: {redis: {persistence: {size: 1024Mi}}}\n"
    )
    assert same.returncode == 0, same.stderr  # the same size, spelt otherwise, is fine
    rdb = kubectl_apply(
        kube_cluster, namespace, MINIMAL + "spec: {redis: {persistence: {mode: rdb}}}\n"
    )
    assert rdb.returncode == 0, rdb.stderr  # aof <-> rdb keeps the volume


FULL_STATUS = CacheTierStatus(
    observed_generation=4,
    phase="Ready",
    conditions=[
        Condition(type="Ready", status="True", reason="Ready", message="serving"),
        Condition(type="Progressing", status="False", reason="Stable"),
    ],
    endpoint=Endpoint(host="tasks-cache.ordo.svc", port=6379),
    connection_secret="tasks-cache-connection",
    rollout=RolloutStatus(enabled=True, target_percent=50, effective_percent=25, step=1),
    consumers=ConsumersStatus(
        selected=3,
        enabled=1,
        summary="1/3",
        workloads=[WorkloadStatus(kind="Deployment", name="api", enabled=True)],
    ),
    health=HealthStatus(up=True, latency_ms=0.4, hit_rate=0.93, error_rate=0.0),
    cluster=ClusterStatus(state="ok", slots_assigned=16384, shards=3, nodes=6),
)


@pytest.mark.parametrize(
    "status", [FULL_STATUS, CacheTierStatus()], ids=["populated", "empty-with-nulls"]
)
def test_status_from_the_models_is_accepted(
    kube_cluster: KubeCluster,
    namespace: str,
    status: CacheTierStatus,
    operator_ignores_namespace: object,
) -> None:
    created = kubectl_apply(kube_cluster, namespace, MINIMAL)
    assert created.returncode == 0, created.stderr
    # A JSON patch keeps explicit nulls, unlike a merge patch: the harder case.
    written = status.model_dump(mode="json", by_alias=True)
    ops = json.dumps([{"op": "add", "path": "/status", "value": written}])

    kube_cluster.run_kubectl(
        "patch", "cachetier", "minimal", "-n", namespace,
        "--subresource=status", "--type=json", "-p", ops,
    )  # fmt: skip

    stored = get_tier(kube_cluster, namespace, "minimal")["status"]
    assert CacheTierStatus.model_validate(stored) == status
