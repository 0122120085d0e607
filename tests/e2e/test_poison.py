"""One pathological tier does not slow another tier's instant rollback.

The poison is the worst a valid spec can do to the operator: a tier that selects
many consumers and is fought over by two writers (its percent flipped between 0 and
100 several times a second, as two GitOps controllers fighting would), so the
operator keeps rolling a large consumer set out and back. Beside it, a healthy
tier with two consumers is rolled back and forward a few times, first with the
poison quiet, then with the fight on; the test compares the two median rollback
times as a ratio (no wall-clock threshold: the machine is shared and noisy).

The fight also loads the API server and the machine (two cores), which slows any
client: so beside each rollback the test times a floor — the same two workloads'
``REDIS_ENABLED=false`` written by the test itself, straight to the API — and asks
that the poison slow the operator's rollback at most ``MAX_RATIO`` times as much as
it slows the floor (and at least as much as nothing: ratios below 1 count as 1).

A rollback is timed from the tier's spec write to the moment both consumers
carry ``REDIS_ENABLED=false`` in the API.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
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
ROUNDS = 7
MAX_RATIO = 3.0
"""The poison may slow the operator's rollback (median over ``ROUNDS``) this many
times as much as it slows the floor, both timed right after a flip of the fight.
Measured here: 0.19-0.74 (the storm's burst of writes slows the API server for both
alike). What may legitimately remain: the lane waits for at most one consumer pass of
its own tier (passes of a tier take turns). A rollback that queued behind the other
tier's work took seconds (before the lane: ~1 s behind its own queued events, a
slowdown of ~20 against a floor's 6-9 here; before the bounds of the self-healing
issue: 62 s against 0.5 s)."""


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


def _floor_seconds(apps: Any, ns: str, workloads: list[str]) -> float:
    """The same writes without the operator: REDIS_ENABLED=false on both, in parallel."""

    def write(name: str, value: str) -> None:
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "REDIS_ENABLED", "value": value}]}
        ]}}}}  # fmt: skip
        apps.patch_namespaced_deployment(name, ns, patch)

    started = time.monotonic()
    threads = [threading.Thread(target=write, args=(n, "false")) for n in workloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while _flags(apps, ns, workloads) != ["false"] * len(workloads):
        assert time.monotonic() < started + 120, "the floor's writes never showed"
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    for name in workloads:
        write(name, "true")
    return elapsed


def _phase(
    apps: Any,
    custom: Any,
    ns: str,
    steady: list[str],
    floor: list[str],
    before_round: Callable[[], None] | None = None,
) -> dict[str, float]:
    op, bare = [], []
    for _ in range(ROUNDS):
        # The floor is timed at the same point of the fight as the rollback (right
        # after a flip, when the storm's writes load the API server): timed after the
        # rollback's ramp-back instead, it fell in the quiet between two flips.
        if before_round is not None:
            before_round()
        op.append(_rollback_seconds(apps, custom, ns, steady))
        if before_round is not None:
            before_round()
        bare.append(_floor_seconds(apps, ns, floor))
    return {"operator": statistics.median(op), "floor": statistics.median(bare)}


def test_poison_tier_does_not_slow_another_tiers_rollback(
    kube_cluster: Any, kube_api: Any, namespace: str, operator: Operator
) -> None:
    from kubernetes import client

    apps, custom = client.AppsV1Api(kube_api), client.CustomObjectsApi(kube_api)
    ns = namespace
    steady = ["steady-a", "steady-b"]
    floor = ["floor-a", "floor-b"]
    storm = [f"storm-{i:03d}" for i in range(POISON_CONSUMERS)]
    kubectl_apply(
        kube_cluster,
        url_secret(ns, "steady"),
        url_secret(ns, "storm"),
        *(_consumer(ns, n, "steady") for n in steady),
        *(_consumer(ns, n, "none") for n in floor),
        *(_consumer(ns, n, "storm") for n in storm),
    )
    kubectl_apply(
        kube_cluster, _tier(ns, "steady", "steady", 100), _tier(ns, "storm", "storm", 100)
    )
    wait_enabled_set(kube_api, ns, steady, set(steady), "steady consumers on")
    wait_enabled_set(kube_api, ns, storm, set(storm), "storm consumers on")

    quiet = _phase(apps, custom, ns, steady, floor)

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
                stop.wait(0.5)
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    def churned() -> None:
        """Each round starts after the fighter wrote twice more: the fight spans the
        whole phase however fast the rounds run (a fixed phase length once let a quick
        phase end after 9 flips and fail a count that only measured the machine's
        speed). A fighter that stalls fails here."""
        seen = flips[0]
        wait_for(
            lambda: failures or flips[0] >= seen + 2,
            timeout=60,
            what="the storm tier's percent flipped twice more",
            interval=0.05,
        )

    fighter = threading.Thread(target=fight, name="gitops-fight", daemon=True)
    fighter.start()
    try:
        time.sleep(2.0)  # the fight is in full swing before the first measurement
        poisoned = _phase(apps, custom, ns, steady, floor, before_round=churned)
    finally:
        stop.set()
        fighter.join(timeout=30)
    assert not failures, failures

    # The poison really was churning: its consumers were switched while we measured.
    rt = operator.runtime()
    slowdown = poisoned["operator"] / quiet["operator"]
    floor_slowdown = max(1.0, poisoned["floor"] / quiet["floor"])
    result = {
        "quiet_median_s": {k: round(v, 3) for k, v in quiet.items()},
        "poisoned_median_s": {k: round(v, 3) for k, v in poisoned.items()},
        "operator_slowdown": round(slowdown, 2),
        "floor_slowdown": round(floor_slowdown, 2),
        "ratio": round(slowdown / floor_slowdown, 2),
        "storm_flips": flips[0],
        "lane_rollbacks": rt.rollbacks,
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    assert flips[0] >= 2 * ROUNDS, result  # churned() made every round wait for two
    assert result["ratio"] <= MAX_RATIO, result
