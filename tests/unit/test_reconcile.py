"""The reconcile of one tier, per mode, against an in-memory API (tests/fakes).

Each case is asserted as data: which objects exist, which writes were sent, what
status says. The same paths run on a real control plane in tests/e2e; these pin
the decisions without one (new tier, converged, drifted child, rollback, invalid
spec, missing dependency) for every mode.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from cachetier import names
from cachetier.reconcile.tier import TierReconciler
from tests.fakes.kube import MemoryKube

NS = "shop"


def tier(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


def consumer(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            },
        },
    }


STANDALONE = {
    "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
    "consumers": {"selector": {"matchLabels": {"cache": "on"}}},
    "rollout": {"enabled": True, "percent": 100},
}
CLUSTER = {
    "mode": "cluster",
    "cluster": {"shards": 3, "replicasPerShard": 0},
    "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
}
EXTERNAL = {
    "mode": "external",
    "external": {"urlSecretRef": {"name": "ext-url", "key": "url"}},
    "consumers": {"selector": {"matchLabels": {"cache": "on"}}},
}


class World:
    """A MemoryKube, a reconciler on it, and the Events it posted."""

    def __init__(self) -> None:
        self.kube = MemoryKube()
        self.events: list[tuple[str, str]] = []
        self.reconciler = TierReconciler(
            self.kube,  # type: ignore[arg-type]
            event=lambda body, etype, reason, message: self.events.append((reason, message)),
        )

    def run(self, name: str) -> dict[str, Any]:
        """One reconcile of the stored tier; returns the stored tier afterwards."""
        body = self.kube.get(names.KIND, NS, name)
        assert body is not None
        self.reconciler.reconcile(body)
        after = self.kube.get(names.KIND, NS, name)
        assert after is not None
        return after

    def ready_pods(self, name: str, count: int) -> None:
        """What the StatefulSet controller would report once ``count`` pods are ready."""
        key = ("StatefulSet", NS, names.statefulset(name))
        sts = self.kube.objects[key]
        sts["status"] = {
            "observedGeneration": sts["metadata"]["generation"],
            "replicas": count,
            "readyReplicas": count,
            "updatedReplicas": count,
        }


def condition(t: dict[str, Any], ctype: str) -> tuple[str, str]:
    for c in t["status"]["conditions"]:
        if c["type"] == ctype:
            return c["status"], c["reason"]
    raise AssertionError(f"no condition {ctype}: {t['status']['conditions']}")


def flag(world: World, name: str) -> str | None:
    dep = world.kube.get("Deployment", NS, name) or {}
    for c in dep["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env") or []:
            if e["name"] == names.ENV_REDIS_ENABLED:
                return str(e.get("value"))
    return None


# -- standalone ----------------------------------------------------------------------


def test_a_new_standalone_tier_gets_its_children_and_waits_for_its_pod() -> None:
    w = World()
    w.kube.put(tier("cache", STANDALONE))
    w.kube.put(consumer("api", {"cache": "on"}))
    t = w.run("cache")
    kinds = sorted(o[1] for o in w.kube.writes if o[0] == "apply")
    assert kinds.count("StatefulSet") == 1 and kinds.count("Secret") >= 2
    assert t["status"]["phase"] == "Provisioning"
    assert condition(t, "Ready")[0] == "False"
    assert t["metadata"]["finalizers"] == [names.FINALIZER]
    # Nothing is injected before the tier has served once.
    assert flag(w, "api") is None


def test_a_settled_standalone_tier_costs_no_write() -> None:
    w = World()
    w.kube.put(tier("cache", STANDALONE))
    w.kube.put(consumer("api", {"cache": "on"}))
    w.run("cache")
    w.ready_pods("cache", 1)
    t = w.run("cache")
    assert t["status"]["phase"] == "Ready", t["status"]
    w.run("cache")  # consumers switched on, status recorded
    assert flag(w, "api") == "true"
    w.kube.writes.clear()
    w.run("cache")
    assert w.kube.writes == []


def test_a_drifted_child_is_put_back_with_an_event() -> None:
    w = World()
    w.kube.put(tier("cache", STANDALONE))
    w.run("cache")
    w.ready_pods("cache", 1)
    w.run("cache")
    sts = w.kube.objects[("StatefulSet", NS, names.statefulset("cache"))]
    sts["spec"]["replicas"] = 3  # scaled by hand
    w.kube.writes.clear()
    t = w.run("cache")
    assert ("apply", "StatefulSet", names.statefulset("cache")) in w.kube.writes
    assert w.kube.objects[("StatefulSet", NS, names.statefulset("cache"))]["spec"]["replicas"] == 1
    assert any(reason == "DriftRepaired" for reason, _ in w.events)
    assert t["status"]["phase"] != "Failed"


def test_rollback_switches_every_consumer_off_first() -> None:
    w = World()
    w.kube.put(tier("cache", STANDALONE))
    for n in ("api", "worker"):
        w.kube.put(consumer(n, {"cache": "on"}))
    w.run("cache")
    w.ready_pods("cache", 1)
    w.run("cache")
    w.run("cache")
    assert {flag(w, "api"), flag(w, "worker")} == {"true"}
    body = w.kube.objects[(names.KIND, NS, "cache")]
    body["spec"]["rollout"]["enabled"] = False
    body["metadata"]["generation"] += 1
    t = w.run("cache")
    assert {flag(w, "api"), flag(w, "worker")} == {"false"}
    assert condition(t, "RolledBack") == ("True", "Manual")
    assert t["status"]["consumers"]["enabled"] == 0
    assert any(reason == "RolledBack" for reason, _ in w.events)


def test_an_invalid_spec_is_invalid_spec_naming_the_field_and_writes_no_child() -> None:
    w = World()
    bad = copy.deepcopy(STANDALONE)
    bad["redis"]["disabledCommands"] = ["NOSUCHCMD"]
    w.kube.put(tier("cache", bad))
    t = w.run("cache")
    assert condition(t, "Ready") == ("False", "InvalidSpec")
    assert "disabledCommands" in str(t["status"]["conditions"])
    assert not w.kube.of_kind("StatefulSet")


def test_a_missing_tls_secret_is_dependency_missing() -> None:
    w = World()
    spec = copy.deepcopy(STANDALONE)
    spec["tls"] = {"enabled": True, "secretName": "redis-tls"}
    w.kube.put(tier("cache", spec))
    t = w.run("cache")
    assert condition(t, "Ready") == ("False", "DependencyMissing")
    assert "redis-tls" in str(t["status"]["conditions"])
    assert not w.kube.of_kind("StatefulSet")


# -- cluster -------------------------------------------------------------------------


def test_a_cluster_tier_renders_every_node_and_waits_for_the_pods() -> None:
    w = World()
    w.kube.put(tier("shards", CLUSTER))
    w.run("shards")
    t = w.run("shards")
    sts = w.kube.get("StatefulSet", NS, names.statefulset("shards")) or {}
    assert sts["spec"]["replicas"] == 3
    assert t["status"]["phase"] == "Provisioning"
    assert t["status"]["cluster"]["state"] == "unknown"
    assert "waiting for Redis pods: 0/3" in t["status"]["cluster"]["message"]


# -- external ------------------------------------------------------------------------


def _url_secret(w: World, url: str) -> None:
    w.kube.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ext-url", "namespace": NS},
            "data": {"url": base64.b64encode(url.encode()).decode()},
        }
    )


def test_an_external_tier_is_ready_with_its_connection_secret_and_runs_no_pod() -> None:
    w = World()
    _url_secret(w, "rediss://app:s3cret@redis.example.com:6380/0")
    w.kube.put(tier("ext", EXTERNAL))
    t = w.run("ext")
    assert t["status"]["phase"] == "Ready"
    assert t["status"]["endpoint"] == {"host": "redis.example.com", "port": 6380}
    assert w.kube.get("Secret", NS, names.connection_secret("ext")) is not None
    assert not w.kube.of_kind("StatefulSet")
    w.kube.writes.clear()
    w.run("ext")
    w.run("ext")
    assert [x for x in w.kube.writes if x[1] != "Deployment"] == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [("rediss://user:p%zz@h:6379", "InvalidSpec"), (None, "DependencyMissing")],
)
def test_an_external_tier_with_a_bad_or_missing_url(url: str | None, reason: str) -> None:
    w = World()
    if url is not None:
        _url_secret(w, url)
    w.kube.put(tier("ext", EXTERNAL))
    t = w.run("ext")
    assert condition(t, "Ready") == ("False", reason)
    assert "spec.external.urlSecretRef" in str(t["status"]["conditions"])
