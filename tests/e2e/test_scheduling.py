"""spec.scheduling and spec.podMetadata on a real API server, scheduler and node agent.

A standalone tier pinned to the node by ``nodeSelector``, with a toleration, a
PriorityClass and extra pod labels/annotations: its Redis pod is scheduled, runs, and
carries every field (the PriorityClass resolved by the API server into a priority);
the tier goes Ready. The default spreading of multi-pod modes is exercised by the
replication and cluster tests on the same one-node cluster (``ScheduleAnyway``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cachetier import names
from tests.e2e.helpers import Operator, get_json, kubectl_apply, wait_for

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: placed, namespace: {ns}}}
spec:
  redis: {{maxmemory: 16mb, persistence: {{mode: none}}}}
  scheduling:
    nodeSelector: {{kubernetes.io/hostname: {node}}}
    tolerations:
    - {{key: dedicated, operator: Equal, value: cache, effect: NoSchedule}}
    priorityClassName: {priority}
  podMetadata:
    labels: {{team: checkout}}
    annotations: {{owner: sre}}
"""


@pytest.fixture
def priority_class(kube_cluster: Any, namespace: str) -> Iterator[str]:
    name = f"{namespace}-cache"[:63]
    kubectl_apply(
        kube_cluster,
        json.dumps({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": 1000,
            "description": "e2e: a tier's pods",
        }),
    )  # fmt: skip
    yield name
    kube_cluster.run_kubectl("delete", "priorityclass", name, "--wait=false", check=False)


def test_scheduling_fields_reach_the_running_pod(
    kube_cluster: Any, namespace: str, operator: Operator, priority_class: str
) -> None:
    ns = namespace
    node = json.loads(kube_cluster.run_kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
    hostname = node["metadata"]["labels"]["kubernetes.io/hostname"]
    kubectl_apply(kube_cluster, TIER.format(ns=ns, node=hostname, priority=priority_class))

    def running() -> dict[str, Any] | None:
        pod = get_json(kube_cluster, "pod", ns, f"{names.statefulset('placed')}-0")
        ok = pod and (pod.get("status") or {}).get("phase") == "Running"
        return pod if ok else None

    pod = wait_for(running, timeout=180, what="the Redis pod running")
    spec, meta = pod["spec"], pod["metadata"]
    assert spec["nodeName"] == node["metadata"]["name"]
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": hostname}
    assert {"key": "dedicated", "operator": "Equal", "value": "cache",
            "effect": "NoSchedule"} in spec["tolerations"]  # fmt: skip
    assert spec["priorityClassName"] == priority_class
    assert spec.get("priority") == 1000  # resolved by the API server's Priority admission
    assert meta["labels"]["team"] == "checkout"
    assert meta["labels"][names.LABEL_INSTANCE] == "placed"  # the operator's labels stay
    assert meta["annotations"]["owner"] == "sre"

    def ready() -> bool:
        st = (get_json(kube_cluster, names.PLURAL, ns, "placed") or {}).get("status") or {}
        return st.get("phase") == "Ready"

    wait_for(ready, timeout=120, what="the tier Ready")
