"""End-to-end tests of the local node agent (ctdev.nodeagent): pods become real processes.

Plain Pods (no operator): a Redis pod with a ConfigMap-mounted redis.conf and a password
from a Secret becomes Ready and really serves on its pod IP; killing its redis-server
restarts the container; a PVC-backed /data keeps AOF data across pod re-creation;
downward-API files follow annotation changes live; the demo app reaches Redis through
the Service name; deletion honours the grace period; a missing Secret holds the
container in CreateContainerConfigError until it appears; pod DNS names of a headless
Service resolve. Needs the agent's Node (skipped on clusters without it, e.g. kind).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import KubeCluster
from tests.e2e.helpers import wait_for

Obj = dict[str, Any]
PASSWORD = "e2e-Secret-pass"
REDIS_CONF = 'port 6379\ndir /data\nsave ""\nappendonly no\n'


@pytest.fixture(scope="module")
def core(kube_cluster: KubeCluster, kube_api: client.ApiClient) -> client.CoreV1Api:
    """CoreV1Api, once the node agent's Node is Ready (skips without a node agent)."""
    api = client.CoreV1Api(kube_api)
    nodes = api.list_node(label_selector="cachetier.io/node-agent=true").items
    if not nodes:
        pytest.skip("the cluster has no cachetier node agent (tests need real local processes)")
    return api


def as_dict(api: client.CoreV1Api, obj: object) -> Obj:
    return dict(api.api_client.sanitize_for_serialization(obj))


def get_pod(core: client.CoreV1Api, ns: str, name: str) -> Obj | None:
    try:
        return as_dict(core, core.read_namespaced_pod(name, ns))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def is_ready(pod: Obj | None) -> bool:
    conds = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def wait_ready(core: client.CoreV1Api, ns: str, name: str, timeout: float = 60) -> Obj:
    pod = wait_for(
        lambda: (p := get_pod(core, ns, name)) and is_ready(p) and p,
        timeout=timeout,
        what=f"pod {ns}/{name} Ready",
        interval=0.2,
    )
    assert isinstance(pod, dict)
    return pod


def redis_cli(ip: str, *args: str, password: str | None = PASSWORD) -> str:
    auth = ["-a", password, "--no-auth-warning"] if password else []
    proc = subprocess.run(
        ["redis-cli", "-h", ip, *auth, *args], capture_output=True, text=True, timeout=15
    )
    return (proc.stdout + proc.stderr).strip()


def redis_pid(ip: str) -> int:
    """The pid redis-server reports for itself (INFO server)."""
    match = re.search(r"process_id:(\d+)", redis_cli(ip, "INFO", "server"))
    assert match, "no process_id in INFO server"
    return int(match.group(1))


def http_json(url: str) -> Obj:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def redis_pod(name: str, *, args: list[str] | None = None, **extra: Any) -> Obj:
    """A redis:7.2-alpine pod: config from ConfigMap ``redis-config``, password from Secret."""
    container: Obj = {
        "name": "redis",
        "image": "redis:7.2-alpine",
        "command": ["redis-server", "/usr/local/etc/redis/redis.conf"],
        "args": ["--requirepass", "$(REDIS_PASSWORD)", *(args or [])],
        "env": [
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}},
            }
        ],
        "ports": [{"name": "redis", "containerPort": 6379}],
        "readinessProbe": {
            "exec": {
                "command": ["sh", "-c", 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning ping'],
            },
            "periodSeconds": 2,
        },
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
        "volumeMounts": [{"name": "config", "mountPath": "/usr/local/etc/redis"}],
    }
    spec: Obj = {
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": "redis-config"}}],
    }
    for key in ("volumes", "volumeMounts"):
        more = extra.pop(key, [])
        (spec if key == "volumes" else container)[key] += more
    spec.update(extra.pop("spec", {}))
    return {
        "metadata": {"name": name, "labels": {"app": name}, **extra.pop("metadata", {})},
        "spec": spec,
    }


@pytest.fixture
def redis_basics(core: client.CoreV1Api, namespace: str) -> str:
    """The Secret and ConfigMap every Redis pod here uses."""
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "redis-auth"}, "stringData": {"password": PASSWORD}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "redis-config"}, "data": {"redis.conf": REDIS_CONF}}
    )
    return namespace


def test_redis_pod_serves_with_auth_and_restarts_after_kill(
    core: client.CoreV1Api, redis_basics: str
) -> None:
    ns = redis_basics
    core.create_namespaced_pod(ns, redis_pod("redis"))
    pod = wait_ready(core, ns, "redis")
    status = pod["status"]
    ip = status["podIP"]
    assert ip.startswith("127.10.") and status["podIPs"] == [{"ip": ip}]
    assert status["hostIP"] == "127.0.0.1" and status["phase"] == "Running"
    cstatus = status["containerStatuses"][0]
    assert cstatus["containerID"].startswith("cachetier://") and cstatus["restartCount"] == 0

    assert redis_cli(ip, "SET", "greeting", "hello") == "OK"
    assert redis_cli(ip, "GET", "greeting") == "hello"
    assert "NOAUTH" in redis_cli(ip, "GET", "greeting", password=None)

    pid = redis_pid(ip)
    subprocess.run(["kill", "-KILL", str(pid)], check=True)

    def restarted() -> Obj | None:
        p = get_pod(core, ns, "redis")
        cs = (p or {}).get("status", {}).get("containerStatuses") or [{}]
        return p if cs[0].get("restartCount", 0) >= 1 and is_ready(p) else None

    pod = wait_for(restarted, timeout=60, what="restart after kill", interval=0.2)
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error"
    assert pod["status"]["podIP"] == ip
    assert redis_pid(ip) != pid


def test_pvc_data_survives_pod_recreation(core: client.CoreV1Api, redis_basics: str) -> None:
    ns = redis_basics
    core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": "redis-data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    spec = redis_pod(
        "redis",
        args=["--appendonly", "yes"],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "redis-data"}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    core.create_namespaced_pod(ns, spec)
    ip = wait_ready(core, ns, "redis")["status"]["podIP"]
    pvc = as_dict(core, core.read_namespaced_persistent_volume_claim("redis-data", ns))
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["storageClassName"] == "cachetier-local"
    pv = as_dict(core, core.read_persistent_volume(pvc["spec"]["volumeName"]))
    assert pv["spec"]["hostPath"]["path"].endswith(f"/pv/{ns}-redis-data")
    assert redis_cli(ip, "SET", "durable", "yes-it-is") == "OK"

    core.delete_namespaced_pod("redis", ns)
    wait_for(lambda: get_pod(core, ns, "redis") is None, timeout=60, what="pod deleted")
    core.create_namespaced_pod(ns, spec)
    ip = wait_ready(core, ns, "redis")["status"]["podIP"]
    assert redis_cli(ip, "GET", "durable") == "yes-it-is"


def test_downward_api_annotations_follow_the_pod(core: client.CoreV1Api, namespace: str) -> None:
    # The readiness probe reads the annotations file, so Ready shows what the process sees.
    probe = "grep -q '^gate=\"open\"$' /etc/podinfo/annotations"
    pod = {
        "metadata": {"name": "gated", "annotations": {"gate": "closed"}},
        "spec": {
            "containers": [
                {
                    "name": "redis",
                    "image": "valkey/valkey:8",
                    "readinessProbe": {
                        "exec": {"command": ["sh", "-c", probe]},
                        "periodSeconds": 1,
                    },
                    "volumeMounts": [{"name": "podinfo", "mountPath": "/etc/podinfo"}],
                }
            ],
            "volumes": [
                {
                    "name": "podinfo",
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "annotations",
                                "fieldRef": {"fieldPath": "metadata.annotations"},
                            }
                        ]
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: (p := get_pod(core, namespace, "gated")) and p["status"].get("phase") == "Running",
        timeout=60,
        what="pod running",
    )
    time.sleep(2)  # a few probe periods: it must stay unready
    assert not is_ready(get_pod(core, namespace, "gated"))
    core.patch_namespaced_pod("gated", namespace, {"metadata": {"annotations": {"gate": "open"}}})
    wait_ready(core, namespace, "gated", timeout=20)
    core.patch_namespaced_pod("gated", namespace, {"metadata": {"annotations": {"gate": "shut"}}})
    wait_for(
        lambda: not is_ready(get_pod(core, namespace, "gated")),
        timeout=20,
        what="pod unready after the annotation changed back",
    )


def test_demo_app_uses_redis_through_the_service_name(
    core: client.CoreV1Api, redis_basics: str
) -> None:
    ns = redis_basics
    core.create_namespaced_pod(ns, redis_pod("redis"))
    flag = "metadata.annotations['cachetier.io/redis-enabled']"
    env = [
        {
            "name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}},
        },
        {"name": "REDIS_URL", "value": f"redis://:$(REDIS_PASSWORD)@redis.{ns}.svc:6379/0"},
        {"name": "REDIS_ENABLED", "value": "true"},
        {"name": "REDIS_FLAG_FILE", "value": "/etc/flags/redis-enabled"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "demo", "annotations": {"cachetier.io/redis-enabled": "true"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "cachetier/demo-app:0.1.0",
                        "env": env,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        "volumeMounts": [{"name": "flags", "mountPath": "/etc/flags"}],
                    }
                ],
                "volumes": [
                    {
                        "name": "flags",
                        "downwardAPI": {
                            "items": [{"path": "redis-enabled", "fieldRef": {"fieldPath": flag}}]
                        },
                    }
                ],
            },
        },
    )
    redis_ip = wait_ready(core, ns, "redis")["status"]["podIP"]
    app = f"http://{wait_ready(core, ns, 'demo')['status']['podIP']}:8080"
    # The app started before its Service existed: it falls back to memory...
    assert http_json(f"{app}/status")["cache"] == "memory"
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "redis"},
            "spec": {
                "selector": {"app": "redis"},
                "ports": [{"port": 6379, "targetPort": "redis"}],
            },
        },
    )
    # ... and uses Redis once the name resolves, without a restart.
    wait_for(lambda: http_json(f"{app}/status")["cache"] == "redis", timeout=20, what="redis")
    assert http_json(f"{app}/")["cache"] == "redis"
    status = http_json(f"{app}/status")
    assert status["cache"] == "redis" and status["pod"] == "demo" and status["misses"] >= 1
    assert json.loads(redis_cli(redis_ip, "GET", "demo-app:report:v1"))["primes_below_20000"]
    assert http_json(f"{app}/")["cache"] == "redis"
    assert http_json(f"{app}/status")["hits"] >= 1

    # The live flag file: no restart needed either way.
    patch = {"metadata": {"annotations": {"cachetier.io/redis-enabled": "false"}}}
    core.patch_namespaced_pod("demo", ns, patch)
    wait_for(lambda: http_json(f"{app}/status")["cache"] == "memory", timeout=20, what="memory")
    assert http_json(f"{app}/")["cache"] == "memory"
    patch["metadata"]["annotations"]["cachetier.io/redis-enabled"] = "true"
    core.patch_namespaced_pod("demo", ns, patch)
    wait_for(lambda: http_json(f"{app}/status")["cache"] == "redis", timeout=20, what="redis")
    demo = get_pod(core, ns, "demo")
    assert demo is not None and demo["status"]["containerStatuses"][0]["restartCount"] == 0


def test_deletion_waits_for_the_grace_period(core: client.CoreV1Api, namespace: str) -> None:
    stubborn = "trap '' TERM; while true; do sleep 0.2; done"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "stubborn"},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [
                    {"name": "main", "image": "redis:7", "command": ["sh", "-c", stubborn]},
                    {"name": "sidecar", "image": "registry.invalid/no-such-image:1"},
                ],
            },
        },
    )
    pod = wait_ready(core, namespace, "stubborn")
    states = {c["name"]: c["state"] for c in pod["status"]["containerStatuses"]}
    assert "running" in states["main"] and "running" in states["sidecar"]
    began = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)
    wait_for(lambda: get_pod(core, namespace, "stubborn") is None, timeout=60, what="pod gone")
    assert time.monotonic() - began >= 1.5  # SIGTERM was ignored: SIGKILL after the grace


def test_missing_secret_holds_the_container_until_it_exists(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "redis-config"}, "data": {"redis.conf": REDIS_CONF}}
    )
    core.create_namespaced_pod(namespace, redis_pod("late"))

    def config_error() -> bool:
        pod = get_pod(core, namespace, "late") or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        waiting = (statuses[0].get("state") or {}).get("waiting") or {}
        return waiting.get("reason") == "CreateContainerConfigError"

    wait_for(config_error, timeout=60, what="CreateContainerConfigError")
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "redis-auth"}, "stringData": {"password": PASSWORD}}
    )
    ip = wait_ready(core, namespace, "late")["status"]["podIP"]
    assert redis_cli(ip, "PING") == "PONG"


def test_pod_names_of_a_headless_service_resolve(core: client.CoreV1Api, redis_basics: str) -> None:
    ns = redis_basics
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "nodes"},
            "spec": {"clusterIP": "None", "selector": {"tier": "e2e"}, "ports": [{"port": 6379}]},
        },
    )
    for name, args in (
        ("primary", []),
        (
            "replica",
            [
                "--replicaof",
                f"primary.nodes.{ns}.svc.cluster.local",
                "6379",
                "--masterauth",
                "$(REDIS_PASSWORD)",
            ],
        ),
    ):
        pod = redis_pod(
            name,
            args=args,
            metadata={"labels": {"tier": "e2e"}},
            spec={"hostname": name, "subdomain": "nodes"},
        )
        core.create_namespaced_pod(ns, pod)
        if name == "primary":
            primary_ip = wait_ready(core, ns, name)["status"]["podIP"]
    replica_ip = wait_ready(core, ns, "replica")["status"]["podIP"]
    info = wait_for(
        lambda: (
            "master_link_status:up" in (i := redis_cli(replica_ip, "INFO", "replication")) and i
        ),
        timeout=30,
        what="replication link up",
    )
    if os.environ.get("CTDEV_HOSTS_FILE"):
        # The agent keeps pod names in the hosts file: Redis resolves the name itself
        # (and so follows a replaced pod), the argument is left as written.
        assert f"master_host:primary.nodes.{ns}.svc.cluster.local" in info
        assert socket.gethostbyname(f"primary.nodes.{ns}.svc.cluster.local") == primary_ip
    else:
        assert f"master_host:{primary_ip}" in info
