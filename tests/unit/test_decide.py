"""``decide`` as data: every mode x {new tier, converged, drifted child, rollback,
auto-rollback, steps, invalid spec, missing dependency}, and two properties.

The snapshots are gathered from an in-memory API (tests/fakes) by the real gather
step, and worlds are advanced by the real act step; what is asserted is the pure
decision: which children it applies, which consumers it switches, the status it
builds, the Events it posts. No control plane, no Redis.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachetier import names
from cachetier.reconcile.decide import Decision, decide
from cachetier.reconcile.observed import ClusterView, Observed
from cachetier.reconcile.tier import TierReconciler, status_dict
from tests.fakes.kube import MemoryKube

NS = "shop"
NOW = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)

STANDALONE: dict[str, Any] = {
    "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
    "consumers": {"selector": {"matchLabels": {"cache": "on"}}},
    "rollout": {"enabled": True, "percent": 100},
}
CLUSTER: dict[str, Any] = {
    "mode": "cluster",
    "cluster": {"shards": 3, "replicasPerShard": 0},
    "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
    "consumers": {"selector": {"matchLabels": {"cache": "on"}}},
    "rollout": {"enabled": True, "percent": 100},
}
EXTERNAL: dict[str, Any] = {
    "mode": "external",
    "external": {"urlSecretRef": {"name": "ext-url", "key": "url"}},
    "consumers": {"selector": {"matchLabels": {"cache": "on"}}},
    "rollout": {"enabled": True, "percent": 100},
}
SPECS = {"standalone": STANDALONE, "cluster": CLUSTER, "external": EXTERNAL}
CHILDREN = {"standalone": 9, "cluster": 9, "external": 1}
CONVERGED = ClusterView(
    converged=True,
    status={"state": "ok", "slotsAssigned": 16384, "shards": 3, "nodes": 3, "message": "ok"},
    message="ok",
    drained_beyond=None,
)


def tier_obj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": copy.deepcopy(spec),
    }


def consumer(name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> Any:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels, **(
            {"annotations": annotations} if annotations else {}
        )},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            },
        },
    }  # fmt: skip


class World:
    """An in-memory API, the real gather/act around the pure decide, a fixed clock."""

    def __init__(self, mode: str, spec: dict[str, Any] | None = None, consumers: int = 2) -> None:
        self.mode = mode
        self.kube = MemoryKube()
        self.now = NOW
        self.events: list[tuple[str, str]] = []
        self.reconciler = TierReconciler(
            self.kube,  # type: ignore[arg-type]
            event=lambda body, etype, reason, message: self.events.append((reason, message)),
            clock=lambda: self.now,
        )
        self.cluster: ClusterView | None = None
        if mode == "external":
            url = "redis://app:s3cret@redis.example.com:6380/0"
            self.kube.put(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "ext-url", "namespace": NS},
                    "data": {"url": base64.b64encode(url.encode()).decode()},
                }
            )
        self.kube.put(tier_obj("cache", spec or SPECS[mode]))
        for i in range(consumers):
            self.kube.put(consumer(f"app{i}", {"cache": "on"}))

    @property
    def tier(self) -> dict[str, Any]:
        body = self.kube.get(names.KIND, NS, "cache")
        assert body is not None
        return body

    def observe(self) -> Observed:
        obs = self.reconciler.gather(self.tier)
        if self.mode == "cluster" and self.cluster is not None:
            obs = replace(obs, cluster=self.cluster)
        return obs

    def decide(self) -> Decision:
        return decide(self.observe(), self.now)

    def step(self) -> Decision:
        """One pass: gather, decide, act (the converge request is not run)."""
        obs = self.observe()
        decision = decide(obs, self.now)
        self.reconciler.act(obs, replace(decision, converge=None))
        return decision

    def pods_ready(self) -> None:
        """What the StatefulSet controller and the kubelet would report."""
        sts = self.kube.objects.get(("StatefulSet", NS, names.statefulset("cache")))
        if sts is None:
            return
        count = int(sts["spec"]["replicas"])
        sts["status"] = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": count,
            "readyReplicas": count,
            "updatedReplicas": count,
        }
        for i in range(count):
            self.kube.put(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{names.statefulset('cache')}-{i}",
                        "namespace": NS,
                        "labels": names.selector_labels("cache"),
                    },
                    "status": {
                        "podIP": f"10.0.0.{i + 1}",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            )
        self.cluster = CONVERGED

    def settle(self, passes: int = 6) -> None:
        """Run passes (pods ready after the first) until one decides no write at all."""
        for _ in range(passes):
            before = self.tier.get("status")
            decision = self.step()
            self.pods_ready()
            if decision.writes_nothing and status_dict(decision) == before:
                return
        raise AssertionError(f"did not settle: {self.tier.get('status')}")

    def edit_spec(self, change: dict[str, Any]) -> None:
        body = self.kube.objects[(names.KIND, NS, "cache")]
        for key, value in change.items():
            body["spec"].setdefault(key, {}).update(value)
        body["metadata"]["generation"] += 1


def applied(decision: Decision) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in decision.applies]


def switched(decision: Decision) -> dict[str, bool]:
    plan = decision.consumers.plan if decision.consumers else None
    return {o["metadata"]["name"]: i.redis_enabled for o, i in (plan.injects if plan else [])}


def cond_of(decision: Decision, ctype: str) -> tuple[str, str]:
    for c in decision.status.conditions:
        if c.type == ctype:
            return c.status, c.reason
    raise AssertionError(f"no {ctype} in {decision.status.conditions}")


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


MODES = ["standalone", "cluster", "external"]


# -- per mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_new_tier(mode: str) -> None:
    d = World(mode).decide()
    assert d.add_finalizer
    assert len(d.applies) == CHILDREN[mode]
    assert (d.seed is not None) == (mode != "external")
    assert d.converge is None  # no pod yet
    if mode == "external":  # Ready at once: its connection Secret is applied first
        assert switched(d) == {"app0": True, "app1": True}
    else:  # nothing is injected before the tier serves
        assert switched(d) == {}
    assert d.status.observed_generation == 1
    assert d.status.phase == ("Ready" if mode == "external" else "Provisioning")
    # One Event for a new tier: its phase and what was created (no separate Applied).
    assert "Applied" not in reasons(d)
    (first,) = [e for e in d.events if e.message.startswith("phase ")]
    assert "Created StatefulSet" in first.message or mode == "external"
    if mode != "external":
        assert d.requeue == 10.0
    assert d.status.rollout is not None
    assert d.status.rollout.effective_percent == (100 if mode == "external" else 0)


@pytest.mark.parametrize("mode", MODES)
def test_converged_means_no_action_at_all(mode: str) -> None:
    w = World(mode)
    w.settle()
    d = w.decide()
    assert d.writes_nothing
    assert d.events == ()
    assert status_dict(d) == w.tier["status"]
    assert d.status.phase == "Ready"
    assert switched(d) == {}
    assert d.consumers is not None and d.consumers.plan.enabled == 2
    if mode == "cluster":
        assert d.converge is not None and len(d.converge.addresses) == 3
        assert d.status.cluster is not None and d.status.cluster.state == "ok"


@pytest.mark.parametrize("mode", MODES)
def test_a_drifted_child_is_applied_alone_with_an_event(mode: str) -> None:
    w = World(mode)
    w.settle()
    if mode == "external":
        key = ("Secret", NS, names.connection_secret("cache"))
        w.kube.objects[key]["data"]["host"] = base64.b64encode(b"elsewhere").decode()
    else:
        key = ("Service", NS, names.client_service("cache"))
        w.kube.objects[key]["spec"]["ports"][0]["port"] = 7000
    d = w.decide()
    assert applied(d) == [(key[0], key[2])]
    assert reasons(d) == ["DriftRepaired", "Applied"]
    assert d.status.phase == "Ready"
    assert switched(d) == {}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["disabled", "zero"])
def test_rollback_switches_every_consumer_off_first(mode: str, how: str) -> None:
    w = World(mode)
    w.settle()
    if how == "disabled":
        w.edit_spec({"rollout": {"enabled": False}})
    else:
        w.edit_spec({"rollout": {"percent": 0}})
    d = w.decide()
    assert d.consumers_first and d.consumers is not None and d.consumers.off
    assert switched(d) == {"app0": False, "app1": False}
    assert d.status.rollout is not None and d.status.rollout.effective_percent == 0
    assert d.status.consumers is not None and d.status.consumers.enabled == 0
    assert "RolledBack" in reasons(d)
    if how == "disabled":
        assert cond_of(d, "RolledBack") == ("True", "Manual")
        assert d.status.phase == "RolledBack"
    else:
        assert cond_of(d, "RolledBack") == ("False", "Enabled")
    assert d.applies == ()  # the rollback touches nothing else


@pytest.mark.parametrize("mode", MODES)
def test_auto_rollback_holds_consumers_off_until_rearmed(mode: str) -> None:
    w = World(mode)
    w.settle()
    body = w.kube.objects[(names.KIND, NS, "cache")]
    body["status"]["rollout"]["rolledBackGeneration"] = 1  # the prober's record
    d = w.decide()
    assert d.consumers is not None and d.consumers.off
    assert switched(d) == {"app0": False, "app1": False}
    assert cond_of(d, "RolledBack") == ("True", "AutoRollback")
    assert cond_of(d, "Stalled") == ("True", "AutoRollback")
    assert d.status.phase == "RolledBack"
    w.reconciler.act(w.observe(), d)
    body["metadata"]["annotations"] = {names.ANNOTATION_REARM: "r1"}
    d = w.decide()
    assert switched(d) == {"app0": True, "app1": True}
    assert "Rearmed" in reasons(d)
    assert cond_of(d, "RolledBack") == ("False", "Enabled")


@pytest.mark.parametrize("mode", MODES)
def test_steps_climb_one_interval_at_a_time_on_a_healthy_tier(mode: str) -> None:
    spec = copy.deepcopy(SPECS[mode])
    spec["rollout"] = {"enabled": True, "percent": 100, "steps": [50], "stepInterval": "1m"}
    w = World(mode, spec, consumers=8)
    w.settle()
    d = w.decide()
    assert d.status.rollout is not None
    assert (d.status.rollout.effective_percent, d.status.rollout.reason) == (50, "Stepping")
    assert d.requeue == 5.0
    w.now = NOW + timedelta(seconds=30)
    assert w.decide().status.rollout.effective_percent == 50  # type: ignore[union-attr]
    w.now = NOW + timedelta(minutes=2)
    d = w.decide()
    assert d.status.rollout is not None and d.status.rollout.effective_percent == 100
    assert d.consumers is not None and d.consumers.plan.enabled == 8
    # An unhealthy tier holds its step.
    body = w.kube.objects[(names.KIND, NS, "cache")]
    body["status"]["health"] = {"up": False, "consecutiveFailures": 1}
    held = w.decide()
    assert held.status.rollout is not None and held.status.rollout.reason == "HoldingUnhealthy"
    assert held.status.rollout.effective_percent == 50


@pytest.mark.parametrize("mode", MODES)
def test_an_invalid_spec_writes_nothing_but_status(mode: str) -> None:
    spec = copy.deepcopy(SPECS[mode])
    spec["redis"] = {"maxmemory": "lots"}
    d = World(mode, spec).decide()
    assert d.writes_nothing and d.applies == () and d.seed is None
    assert cond_of(d, "Ready") == ("False", "InvalidSpec")
    assert cond_of(d, "Stalled") == ("True", "InvalidSpec")
    assert d.status.phase == "Failed"
    assert d.requeue is None  # permanent until the spec changes


@pytest.mark.parametrize(
    ("mode", "change", "named"),
    [
        ("standalone", {"auth": {"passwordSecretRef": {"name": "mine", "key": "pw"}}}, "mine"),
        ("standalone", {"tls": {"enabled": True, "secretName": "redis-tls"}}, "redis-tls"),
        ("cluster", {"tls": {"enabled": True, "secretName": "redis-tls"}}, "redis-tls"),
        ("external", {"external": {"urlSecretRef": {"name": "gone", "key": "url"}}}, "gone"),
    ],
)
def test_a_missing_dependency_blocks_with_its_name(
    mode: str, change: dict[str, Any], named: str
) -> None:
    spec = copy.deepcopy(SPECS[mode])
    spec.update(change)
    d = World(mode, spec).decide()
    assert cond_of(d, "Ready") == ("False", "DependencyMissing")
    assert named in d.status.conditions[0].message
    assert d.status.phase == "Pending"
    assert d.requeue == 30
    assert not any(kind == "StatefulSet" for kind, _ in applied(d))


# -- properties ------------------------------------------------------------------------------

workload_states = st.lists(
    st.tuples(
        st.booleans(),  # matches the selector
        st.sampled_from([None, "true", "false"]),  # a pin annotation
        st.booleans(),  # switched on by an earlier pass
    ),
    min_size=0,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    states=workload_states,
    how=st.sampled_from(["disabled", "zero", "auto"]),
)
def test_property_rollback_leaves_no_consumer_enabled(
    mode: str, states: list[tuple[bool, str | None, bool]], how: str
) -> None:
    """``enabled: false`` and an automatic rollback switch every consumer off, pins
    included; ``percent: 0`` every one but those pinned ``"true"`` (a pin overrides
    the percent, README "Pins")."""
    w = World(mode, consumers=0)
    for i, (matches, pin, _) in enumerate(states):
        labels = {"cache": "on" if matches else "off"}
        pins = {names.ANNOTATION_REDIS_ENABLED: pin} if pin else None
        w.kube.put(consumer(f"w{i}", labels, pins))
    w.settle()
    if how == "disabled":
        w.edit_spec({"rollout": {"enabled": False}})
    elif how == "zero":
        w.edit_spec({"rollout": {"percent": 0}})
    else:
        w.kube.objects[(names.KIND, NS, "cache")]["status"]["rollout"]["rolledBackGeneration"] = 1
    pinned_on = {f"w{i}" for i, (matches, pin, _) in enumerate(states) if matches and pin == "true"}
    allowed = pinned_on if how == "zero" else set()
    d = w.decide()
    assert d.consumers is not None and d.consumers.off
    plan = d.consumers.plan
    assert {n.split("/")[1] for n in plan.enabled_set} == allowed
    assert not any(i.redis_enabled for o, i in plan.injects if o["metadata"]["name"] not in allowed)
    assert {wl["name"] for wl in plan.workloads if wl["enabled"]} == allowed
    # ... and once carried out (the fast lane first, then the pass), nothing else is on.
    spec = w.observe().spec
    assert spec is not None
    w.reconciler.rollback_now(w.tier, spec)
    w.reconciler.act(w.observe(), w.decide())
    for i in range(len(states)):
        dep = w.kube.get("Deployment", NS, f"w{i}") or {}
        env = dep["spec"]["template"]["spec"]["containers"][0].get("env") or []
        on = {"name": names.ENV_REDIS_ENABLED, "value": "true"} in env
        assert on == (f"w{i}" in allowed), (f"w{i}", env)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    percent=st.integers(min_value=0, max_value=100),
    consumers=st.integers(min_value=0, max_value=6),
    policy=st.sampled_from(["allkeys-lru", "noeviction", "volatile-ttl"]),
    persistence=st.sampled_from(["none", "aof", "rdb"]),
    auth=st.booleans(),
    shards=st.integers(min_value=3, max_value=5),
)
def test_property_a_converged_observation_yields_an_empty_decision(
    mode: str,
    percent: int,
    consumers: int,
    policy: str,
    persistence: str,
    auth: bool,
    shards: int,
) -> None:
    spec = copy.deepcopy(SPECS[mode])
    spec["rollout"]["percent"] = percent
    if mode != "external":
        spec["redis"] = {
            "maxmemory": "32mb",
            "maxmemoryPolicy": policy,
            "persistence": {"mode": persistence},
        }
        spec["auth"] = {"enabled": auth}
    if mode == "cluster":
        spec["cluster"]["shards"] = shards
    w = World(mode, spec, consumers=consumers)
    w.settle()
    for _ in range(2):  # and it stays so
        d = w.decide()
        assert d.writes_nothing, (applied(d), switched(d))
        assert d.events == ()
        assert status_dict(d) == w.tier["status"]
