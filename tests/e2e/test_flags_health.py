"""Live flags and health on a real control plane (SPEC section 4, issue 6).

- pod granularity: exactly the SPEC-chosen pods of the demo app use Redis, and a
  rollback reaches the running pods through the downward-API flag file, with no
  restart (same pod names, restartCount 0);
- auto-rollback: the tier's redis-server is stopped (SIGSTOP), the prober rolls
  the tier back after ``failureThreshold`` bad probes (condition, Event, consumer
  switched off); a spec change re-enables it once Redis is back;
- steps advance while the tier is healthy and hold (``HoldingUnhealthy``) while not;
- the metrics endpoint serves the rollout and probe series.

The operator runs in-process (session fixture); its probe interval is shortened
to 1 s for this module. The node agent runs redis images as real redis-server
processes and ``cachetier/demo-app:*`` as examples/demo-app/app.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
import redis
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from cachetier import metrics, names
from cachetier.handlers import tier as tier_handlers
from tests.conftest import KubeCluster
from tests.e2e.helpers import Operator, wait_for

pytestmark = pytest.mark.timeout(600)

Obj = dict[str, Any]
LABEL = "cache.example/flags"
DEMO_IMAGE = "cachetier/demo-app:0.1.0"
NO_PROCESS_IMAGE = "registry.example/app:1"
TIMEOUT = 90.0


# -- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def fast_probes() -> Iterator[None]:
    """Probe every second in this module (the loop reads the global on each sleep)."""
    saved = tier_handlers.PROBE_SECONDS
    tier_handlers.PROBE_SECONDS = 1.0
    try:
        yield
    finally:
        tier_handlers.PROBE_SECONDS = saved


@pytest.fixture(scope="module")
def api(kube_cluster: KubeCluster, kube_api: client.ApiClient) -> client.ApiClient:
    """The API client, once the node agent's Node exists (skips without one)."""
    nodes = client.CoreV1Api(kube_api).list_node(label_selector="cachetier.io/node-agent=true")
    if not nodes.items:
        pytest.skip("the cluster has no cachetier node agent (tests need real local processes)")
    return kube_api


# -- manifests -------------------------------------------------------------------


def tier_manifest(ns: str, name: str, rollout: Obj, label_value: str | None = None) -> Obj:
    return {
        "apiVersion": "cachetier.io/v1alpha1",
        "kind": "CacheTier",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "mode": "standalone",
            "redis": {"maxmemory": "32mb", "persistence": {"mode": "none"}},
            "auth": {"enabled": True},
            "consumers": {"selector": {"matchLabels": {LABEL: label_value or name}}},
            "rollout": rollout,
        },
    }


def deployment_manifest(
    name: str, label_value: str, *, replicas: int = 1, image: str = NO_PROCESS_IMAGE
) -> Obj:
    container: Obj = {"name": "app", "image": image}
    if image == DEMO_IMAGE:
        container["ports"] = [{"name": "http", "containerPort": 8080}]
        container["env"] = [
            {"name": "PORT", "value": "8080"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]
        container["readinessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, LABEL: label_value}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
            },
        },
    }


# -- API helpers -----------------------------------------------------------------


def create_tier(api: client.ApiClient, ns: str, body: Obj) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, ns, names.PLURAL, body
    )


def get_tier(api: client.ApiClient, ns: str, name: str) -> Obj:
    obj: Obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        names.GROUP, names.VERSION, ns, names.PLURAL, name
    )
    return obj


def patch_rollout(api: client.ApiClient, ns: str, name: str, rollout: Obj) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        names.GROUP, names.VERSION, ns, names.PLURAL, name, {"spec": {"rollout": rollout}}
    )


def status_of(api: client.ApiClient, ns: str, name: str) -> Obj:
    return dict(get_tier(api, ns, name).get("status") or {})


def condition(status: Obj, ctype: str) -> Obj | None:
    for c in status.get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return None


def create_deployment(api: client.ApiClient, ns: str, body: Obj) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(ns, body)


def deployments(api: client.ApiClient, ns: str) -> dict[str, Obj]:
    resp = client.AppsV1Api(api).list_namespaced_deployment(ns, _preload_content=False)
    return {d["metadata"]["name"]: d for d in json.loads(resp.data)["items"]}


def pods(api: client.ApiClient, ns: str, selector: str) -> list[Obj]:
    resp = client.CoreV1Api(api).list_namespaced_pod(
        ns, label_selector=selector, _preload_content=False
    )
    return list(json.loads(resp.data)["items"])


def template_flag(dep: Obj) -> str | None:
    for c in dep["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env") or []:
            if e["name"] == names.ENV_REDIS_ENABLED:
                return str(e.get("value"))
    return None


def wait_ready(api: client.ApiClient, ns: str, name: str) -> Obj:
    def ready() -> Obj | None:
        status = status_of(api, ns, name)
        ok = status.get("phase") == "Ready" and (status.get("health") or {}).get("up")
        return status if ok else None

    result: Obj = wait_for(ready, timeout=TIMEOUT * 2, what=f"tier {name} Ready and up")
    return result


def events(api: client.ApiClient, ns: str, reason: str) -> list[Obj]:
    resp = client.CoreV1Api(api).list_namespaced_event(ns, _preload_content=False)
    return [e for e in json.loads(resp.data)["items"] if e.get("reason") == reason]


def spec_pods(names_: list[str], percent: int) -> set[str]:
    """SPEC section 4, written out again: floor(n*p/100+0.5) lowest sha256(pod name)."""
    count = int(len(names_) * percent / 100 + 0.5)
    ranked = sorted(names_, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return set(ranked[:count])


def http_json(url: str) -> Obj:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def redis_server_pid(api: client.ApiClient, ns: str, tier: str) -> int:
    """The pid of the tier's redis-server, as it reports itself (INFO server)."""
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(tier).items())
    tier_pods = [p for p in pods(api, ns, selector) if (p.get("status") or {}).get("podIP")]
    assert tier_pods, f"tier {tier} has no pod with an IP"
    secret = client.CoreV1Api(api).read_namespaced_secret(names.auth_secret(tier), ns)
    password = base64.b64decode(secret.data[names.OPERATOR_PASSWORD_KEY]).decode()
    conn = redis.Redis(
        host=tier_pods[0]["status"]["podIP"],
        port=names.REDIS_PORT,
        username=names.OPERATOR_USER,
        password=password,
        socket_timeout=5,
    )
    try:
        info = conn.info("server")
    finally:
        conn.close()
    pid = int(info["process_id"])
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        assert b"redis-server" in fh.read(), f"pid {pid} is not a redis-server"
    return pid


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the duration; SIGCONT always (it may have been restarted)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# -- tests -----------------------------------------------------------------------


def test_pod_granularity_and_live_rollback(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    ns, tier = namespace, "flags"
    create_tier(
        api, ns, tier_manifest(ns, tier, {"enabled": True, "percent": 50, "granularity": "pod"})
    )
    create_deployment(api, ns, deployment_manifest("demo", tier, replicas=4, image=DEMO_IMAGE))
    wait_ready(api, ns, tier)

    def settled() -> list[Obj] | None:
        """4 live pods of the injected template, Ready, each with its flag annotation."""
        live = [p for p in pods(api, ns, "app=demo") if not p["metadata"].get("deletionTimestamp")]
        if len(live) != 4:
            return None
        for p in live:
            env = {e["name"] for e in p["spec"]["containers"][0].get("env") or []}
            ann = p["metadata"].get("annotations") or {}
            conds = (p.get("status") or {}).get("conditions") or []
            if names.ENV_REDIS_FLAG_FILE not in env or names.ANNOTATION_REDIS_ENABLED not in ann:
                return None
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                return None
        return live

    live = wait_for(settled, timeout=TIMEOUT * 2, what="4 injected demo pods Ready")
    pod_names = sorted(p["metadata"]["name"] for p in live)
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in live}
    want = spec_pods(pod_names, 50)
    assert len(want) == 2

    def enabled() -> set[str]:
        now = {p["metadata"]["name"]: p for p in pods(api, ns, "app=demo")}
        return {
            n
            for n in pod_names
            if ((now.get(n) or {}).get("metadata", {}).get("annotations") or {}).get(
                names.ANNOTATION_REDIS_ENABLED
            )
            == "true"
        }

    # The pod set just settled: the operator's next pass (a pod event away) flags exactly
    # the pods the spec picks among these; a flag of the set before may linger until then.
    wait_for(lambda: enabled() == want, timeout=TIMEOUT, what=f"exactly {sorted(want)} flagged")

    def caches() -> dict[str, str]:
        out = {}
        for n, ip in ips.items():
            http_json(f"http://{ip}:8080/")  # touch the cache
            out[n] = http_json(f"http://{ip}:8080/status")["cache"]
        return out

    expected = {n: "redis" if n in want else "memory" for n in pod_names}
    wait_for(lambda: caches() == expected, timeout=TIMEOUT, what=f"caches {expected}")

    # Instant rollback: every running pod switches to memory, without a restart.
    patch_rollout(api, ns, tier, {"enabled": False})
    all_memory = dict.fromkeys(pod_names, "memory")
    wait_for(lambda: caches() == all_memory, timeout=30, what="all pods on memory", interval=0.2)
    after = [p for p in pods(api, ns, "app=demo") if not p["metadata"].get("deletionTimestamp")]
    assert sorted(p["metadata"]["name"] for p in after) == pod_names
    for p in after:
        assert p["metadata"]["annotations"][names.ANNOTATION_REDIS_ENABLED] == "false"
        for cs in p["status"].get("containerStatuses") or []:
            assert cs["restartCount"] == 0, p["metadata"]["name"]
    # The template keeps the capability gate "true" (no rolling restart).
    assert template_flag(deployments(api, ns)["demo"]) == "true"
    status = status_of(api, ns, tier)
    rolled = condition(status, "RolledBack")
    assert rolled and rolled["status"] == "True" and rolled["reason"] == "Manual", rolled
    assert status["rollout"]["effectivePercent"] == 0


def _consumer_name(ns: str, tier: str, below: int) -> str:
    """A Deployment name whose SPEC bucket is below ``below`` (so percent 99 enables it)."""
    for i in range(100):
        name = f"consumer-{i}"
        digest = hashlib.sha256(f"{ns}/{tier}/Deployment/{name}".encode()).digest()
        if int.from_bytes(digest[:8], "big") % 100 < below:
            return name
    raise AssertionError("no consumer name found")


def test_auto_rollback_on_stopped_redis(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    ns, tier = namespace, "health"
    rollout = {
        "enabled": True,
        "percent": 100,
        # A loaded CI host can exceed the 10 ms default: only unreachability counts here.
        "autoRollback": {"enabled": True, "failureThreshold": 2, "maxLatencyMs": 2000},
    }
    create_tier(api, ns, tier_manifest(ns, tier, rollout))
    consumer = _consumer_name(ns, tier, 99)
    create_deployment(api, ns, deployment_manifest(consumer, tier))
    wait_ready(api, ns, tier)
    wait_for(
        lambda: template_flag(deployments(api, ns)[consumer]) == "true",
        timeout=TIMEOUT,
        what="consumer enabled",
    )
    pid = redis_server_pid(api, ns, tier)

    with stopped(pid):

        def rolled_back() -> Obj | None:
            c = condition(status_of(api, ns, tier), "RolledBack")
            return c if c and c["status"] == "True" and c["reason"] == "AutoRollback" else None

        rolled = wait_for(rolled_back, timeout=TIMEOUT, what="RolledBack AutoRollback")
        # The message names what was measured and the threshold.
        assert "Redis unreachable" in rolled["message"], rolled
        assert "threshold 2" in rolled["message"], rolled
        status = status_of(api, ns, tier)
        gen = get_tier(api, ns, tier)["metadata"]["generation"]
        assert status["rollout"]["rolledBackGeneration"] == gen
        assert status["rollout"]["effectivePercent"] == 0  # written with the condition
        assert status["health"]["consecutiveFailures"] >= 2
        evs = wait_for(
            lambda: events(api, ns, "AutoRollback"), timeout=30, what="AutoRollback Event"
        )
        assert evs[0]["type"] == "Warning" and "threshold 2" in evs[0]["message"], evs[0]
        wait_for(
            lambda: template_flag(deployments(api, ns)[consumer]) == "false",
            timeout=30,
            what="consumer REDIS_ENABLED=false",
        )

    # Redis is back: the rollback stays until a person changes the spec.
    wait_for(
        lambda: (status_of(api, ns, tier).get("health") or {}).get("consecutiveFailures") == 0,
        timeout=TIMEOUT,
        what="healthy probes again",
    )
    assert template_flag(deployments(api, ns)[consumer]) == "false"
    assert status_of(api, ns, tier)["rollout"]["effectivePercent"] == 0

    patch_rollout(api, ns, tier, {"percent": 99})
    wait_for(
        lambda: template_flag(deployments(api, ns)[consumer]) == "true",
        timeout=TIMEOUT,
        what="consumer re-enabled",
    )
    status = wait_for(
        lambda: (s := status_of(api, ns, tier))["rollout"].get("effectivePercent") == 99 and s,
        timeout=TIMEOUT,
        what="effectivePercent 99",
    )
    rolled = condition(status, "RolledBack")
    assert rolled and rolled["status"] == "False", rolled


def _watch_percents(
    api: client.ApiClient, ns: str, tier: str, until: int, timeout: float = TIMEOUT
) -> list[int]:
    """The distinct effective percents seen, in order, until ``until`` is reached."""
    seen: list[int] = []

    def probe() -> bool:
        pct = int((status_of(api, ns, tier).get("rollout") or {}).get("effectivePercent") or 0)
        if not seen or seen[-1] != pct:
            seen.append(pct)
        return pct == until

    wait_for(probe, timeout=timeout, what=f"effectivePercent {until} (seen {seen})", interval=0.2)
    return seen


def test_steps_advance_while_healthy_and_hold_while_not(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    ns = namespace
    stepped = {
        "enabled": True,
        "percent": 100,
        "steps": [10, 50],
        "stepInterval": "2s",
        "autoRollback": {"maxLatencyMs": 2000},
    }
    create_tier(api, ns, tier_manifest(ns, "steps", stepped))
    for i in range(10):
        create_deployment(api, ns, deployment_manifest(f"app-{i}", "steps"))
    seen = [p for p in _watch_percents(api, ns, "steps", 100, TIMEOUT * 2) if p]
    assert seen == [10, 50, 100], seen
    status = status_of(api, ns, "steps")
    assert status["rollout"]["reason"] == "Complete"
    assert status["consumers"]["enabled"] == 10

    # A second tier, auto-rollback off: with Redis stopped it holds on its step.
    # Its interval is long enough that Redis is stopped while still on the first
    # step, whatever the machine's load; the hold is then watched past two intervals.
    held = {
        "enabled": True,
        "percent": 100,
        "steps": [10, 50],
        "stepInterval": "15s",
        "autoRollback": {"enabled": False, "maxLatencyMs": 2000},
    }
    create_tier(api, ns, tier_manifest(ns, "held", held))
    wait_ready(api, ns, "held")
    pid = redis_server_pid(api, ns, "held")
    with stopped(pid):

        def holding() -> Obj | None:
            rollout = status_of(api, ns, "held").get("rollout") or {}
            return rollout if rollout.get("reason") == "HoldingUnhealthy" else None

        hold = wait_for(holding, timeout=TIMEOUT, what="reason HoldingUnhealthy")
        assert hold["effectivePercent"] in (10, 50), hold
        # Several step intervals later it still holds on the same step.
        ticks: list[int] = []

        def watched() -> bool:
            rollout = status_of(api, ns, "held").get("rollout") or {}
            ticks.append(int(rollout.get("effectivePercent") or 0))
            assert rollout.get("reason") == "HoldingUnhealthy", rollout
            return len(ticks) >= 70  # 0.5 s apart: past two step intervals

        wait_for(watched, timeout=TIMEOUT, what="holding through several intervals")
        assert set(ticks) == {hold["effectivePercent"]}, ticks
    _watch_percents(api, ns, "held", 100)
    assert status_of(api, ns, "held")["rollout"]["reason"] == "Complete"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, metric: str, ns: str, tier: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric and s.labels == {"namespace": ns, "tier": tier}:
                return float(s.value)
    return None


def test_metrics_endpoint(api: client.ApiClient, namespace: str, operator: Operator) -> None:
    ns, tier = namespace, "metered"
    create_tier(api, ns, tier_manifest(ns, tier, {"enabled": True, "percent": 40}))
    wait_ready(api, ns, tier)
    # The session operator may share the default port with other operators on this
    # host; serve the operator's own registry (this process) on a free port too.
    port = _free_port()
    server, thread = prometheus_client.start_http_server(
        port, addr="127.0.0.1", registry=metrics.REGISTRY
    )
    try:
        _check_metrics(api, ns, tier, port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    with contextlib.suppress(ApiException):
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            names.GROUP, names.VERSION, ns, names.PLURAL, tier
        )


def _check_metrics(api: client.ApiClient, ns: str, tier: str, port: int) -> None:

    def scrape() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        ok = (
            _sample(text, "cachetier_rollout_effective_percent", ns, tier) == 40
            and _sample(text, "cachetier_rollout_target_percent", ns, tier) == 40
            and _sample(text, "cachetier_redis_up", ns, tier) == 1
        )
        return text if ok else None

    text = wait_for(scrape, timeout=TIMEOUT, what="metrics series")
    latency = _sample(text, "cachetier_probe_latency_ms", ns, tier)
    assert latency is not None and latency >= 0
    assert "cachetier_reconciles_total" in text
    # Same values as the in-process registry.
    local = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    assert _sample(local, "cachetier_rollout_effective_percent", ns, tier) == 40

    patch_rollout(api, ns, tier, {"enabled": False})
    wait_for(
        lambda: (
            _sample(
                prometheus_client.generate_latest(metrics.REGISTRY).decode(),
                "cachetier_rollout_effective_percent",
                ns,
                tier,
            )
            == 0
        ),
        timeout=TIMEOUT,
        what="effective percent 0 after rollback",
    )
