"""One pathological tier does not slow another tier's instant rollback.

The poison is the worst a valid spec can do to the operator: a tier that selects
many consumers and is fought over by two writers (its percent flipped between 0 and
100 several times a second, as two GitOps controllers fighting would), so the
operator keeps rolling a large consumer set out and back. Beside it, a healthy
tier with two consumers is rolled back and forward a few times, first with the
poison quiet, then with the fight on; the test compares the two median rollback
times as a ratio (no wall-clock threshold: the machine is shared and noisy).

A rollback is timed from the tier's spec write to the moment both consumers
carry ``REDIS_ENABLED=false`` in the API.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import Any

import pytest

from tests.e2e.helpers import Operator, wait_for
from tests.e2e.test_consumers import (
    deployment_manifest,
    external_tier,
    flag,
    kubectl_apply,
    url_secret,
    wait_enabled_set,
)

pytestmark = pytest.mark.timeout(600)

POISON_CONSUMERS = 60
ROUNDS = 3
MAX_RATIO = 3.0
"""A rollback with the fight on may take this many times the quiet one (median over
``ROUNDS``). Before the rollback lane, the fight's consumer writes and reconciles
shared the healthy tier's queues."""


def _tier(ns: str, name: str, label: str, percent: int) -> dict[str, Any]:
    body = external_tier(ns, name, percent)
    body["spec"]["consumers"] = {"selector": {"matchLabels": {"poison-test": label}}}
    return body


def _consumer(ns: str, name: str, label: str) -> dict[str, Any]:
    dep = deployment_manifest(ns, name, labelled=False)
    dep["metadata"]["labels"]["poison-test"] = label
    dep["spec"]["replicas"] = 0
    return dep


def _set_percent(custom: Any, ns: str, name: str, percent: int) -> None:
    custom.patch_namespaced_custom_object(
        "cachetier.io",
        "v1alpha1",
        ns,
        "cachetiers",
        name,
        {"spec": {"rollout": {"percent": percent}}},
    )


def _flags(apps: Any, ns: str, names_: list[str]) -> list[str | None]:
    return [
        flag(json.loads(apps.read_namespaced_deployment(n, ns, _preload_content=False).data))
        for n in names_
    ]


def _rollback_seconds(apps: Any, custom: Any, ns: str, consumers: list[str]) -> float:
    """Time from the percent-0 write to every consumer off; then ramp back to 100."""
    started = time.monotonic()
    _set_percent(custom, ns, "steady", 0)
    deadline = started + 120
    while _flags(apps, ns, consumers) != ["false"] * len(consumers):
        assert time.monotonic() < deadline, "the healthy tier's rollback never happened"
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    _set_percent(custom, ns, "steady", 100)
    wait_for(
        lambda: _flags(apps, ns, consumers) == ["true"] * len(consumers),
        timeout=120,
        what="steady consumers back on",
        interval=0.1,
    )
    return elapsed


def test_poison_tier_does_not_slow_another_tiers_rollback(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator
) -> None:
    from kubernetes import client

    apps, custom = client.AppsV1Api(kube_api), client.CustomObjectsApi(kube_api)
    ns = namespace
    steady = ["steady-a", "steady-b"]
    storm = [f"storm-{i:03d}" for i in range(POISON_CONSUMERS)]
    kubectl_apply(
        kube_cluster,
        url_secret(ns, "steady"),
        url_secret(ns, "storm"),
        *(_consumer(ns, n, "steady") for n in steady),
        *(_consumer(ns, n, "storm") for n in storm),
    )
    kubectl_apply(
        kube_cluster, _tier(ns, "steady", "steady", 100), _tier(ns, "storm", "storm", 100)
    )
    wait_enabled_set(kube_api, ns, steady, set(steady), "steady consumers on")
    wait_enabled_set(kube_api, ns, storm, set(storm), "storm consumers on")

    quiet = [_rollback_seconds(apps, custom, ns, steady) for _ in range(ROUNDS)]

    stop = threading.Event()
    flips = [0]
    failures: list[BaseException] = []

    def fight() -> None:
        percent = 0
        try:
            while not stop.is_set():
                _set_percent(custom, ns, "storm", percent)
                flips[0] += 1
                percent = 100 - percent
                stop.wait(0.25)
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    fighter = threading.Thread(target=fight, name="gitops-fight", daemon=True)
    fighter.start()
    try:
        time.sleep(2.0)  # the fight is in full swing before the first measurement
        poisoned = [_rollback_seconds(apps, custom, ns, steady) for _ in range(ROUNDS)]
    finally:
        stop.set()
        fighter.join(timeout=30)
    assert not failures, failures

    # The poison really was churning: its consumers were switched while we measured.
    rt = operator.runtime()
    result = {
        "quiet_s": [round(x, 3) for x in quiet],
        "poisoned_s": [round(x, 3) for x in poisoned],
        "ratio": round(statistics.median(poisoned) / statistics.median(quiet), 2),
        "storm_flips": flips[0],
        "lane_rollbacks": rt.rollbacks,
    }
    print(json.dumps(result))
    assert flips[0] >= 10, result
    assert result["ratio"] <= MAX_RATIO, result
