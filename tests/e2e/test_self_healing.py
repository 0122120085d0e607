"""Drift repaired from the live objects, and a deleted auth Secret that changes nothing.

One standalone tier; a redis-py client connected the README's way runs throughout and
must never see WRONGPASS. By hand: the StatefulSet scaled to 3 and to 0 and its pod
template edited, ``CONFIG SET maxmemory`` on the live Redis, the auth Secret and then
every other child deleted. Each is put back (watch events, or the full resync for
objects the operator does not watch), with a Warning Event naming what was restored.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import pytest
import redis

from cachetier.reconcile.health import CONFIG_CHECK_SECONDS
from tests.e2e.conftest import RESYNC_SECONDS
from tests.e2e.helpers import (
    Operator,
    event_messages,
    get_json,
    kubectl_apply,
    pod_ips,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)

TIER = "healing"
MANIFEST = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: healing, namespace: {ns}}}
spec:
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
"""
SPEC_MAXMEMORY = str(32 * 1024 * 1024)


class Client:
    """SET/GET in a loop through the Service name, counting errors by kind."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.wrongpass: list[str] = []
        self.other: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client = redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        while not self.stop.is_set():
            try:
                client.set("healing:k", "v")
                client.get("healing:k")
                self.ok += 1
            except redis.AuthenticationError as exc:
                self.wrongpass.append(str(exc))
            except redis.RedisError as exc:
                self.other.append(str(exc))
                time.sleep(0.1)
            time.sleep(0.02)
        client.close()


def sts(cluster: Any, ns: str) -> dict[str, Any]:
    return get_json(cluster, "statefulset", ns, TIER) or {}


def ready(cluster: Any, ns: str) -> bool:
    tier = get_json(cluster, "cachetier", ns, TIER) or {}
    st = tier.get("status") or {}
    return (
        st.get("phase") == "Ready"
        and st.get("observedGeneration") == (tier["metadata"]["generation"])
    )


def test_drift_is_repaired_and_the_password_survives(
    kube_cluster: Any, namespace: str, operator: Operator, crd_installed: None
) -> None:
    ns = namespace
    kubectl_apply(kube_cluster, MANIFEST.format(ns=ns))
    wait_for(lambda: ready(kube_cluster, ns), timeout=120, what="tier Ready")
    connection = get_json(kube_cluster, "secret", ns, f"{TIER}-connection") or {}
    url = base64.b64decode(connection["data"]["url"]).decode()
    password = base64.b64decode(connection["data"]["password"]).decode()
    client = Client(url)
    try:
        wait_for(lambda: client.ok > 10, timeout=60, what="the client serving")
        image = sts(kube_cluster, ns)["spec"]["template"]["spec"]["containers"][0]["image"]

        # Scaled by hand, up and down: back to the one pod the spec asks for.
        for replicas in ("3", "0"):
            kube_cluster.run_kubectl(
                "scale", "statefulset", TIER, "-n", ns, f"--replicas={replicas}"
            )
            wait_for(
                lambda: (
                    sts(kube_cluster, ns)["spec"]["replicas"] == 1
                    and ready(kube_cluster, ns)
                    and len(pod_ips(kube_cluster, ns, TIER)) == 1
                ),
                timeout=120,
                what=f"one Redis pod again after a scale to {replicas}",
            )
        assert any("spec.replicas" in m for m in event_messages(kube_cluster, ns, "DriftRepaired"))

        # The pod template edited by hand.
        kube_cluster.run_kubectl(
            "set", "image", f"statefulset/{TIER}", "-n", ns, "redis=redis:6.0-alpine"
        )
        wait_for(
            lambda: (
                sts(kube_cluster, ns)["spec"]["template"]["spec"]["containers"][0]["image"] == image
            ),
            timeout=60,
            what="the image restored",
        )

        # A managed setting changed live on the Redis itself.
        auth = get_json(kube_cluster, "secret", ns, f"{TIER}-auth") or {}
        op_pw = base64.b64decode(auth["data"]["operator-password"]).decode()
        # The restored template rolls the pod: wait until the new one has an address.
        ip = wait_for(
            lambda: (pod_ips(kube_cluster, ns, TIER) or [None])[0],
            timeout=120,
            what="the Redis pod's address after the roll",
        )
        with redis.Redis(host=ip, username="cachetier-operator", password=op_pw) as admin:
            admin.config_set("maxmemory", "1mb")
            wait_for(
                lambda: admin.config_get("maxmemory")["maxmemory"] == SPEC_MAXMEMORY,
                timeout=2 * CONFIG_CHECK_SECONDS + 30,
                what="maxmemory restored by the prober",
            )
        assert event_messages(kube_cluster, ns, "ConfigDriftRepaired")

        # The auth Secret deleted: it comes back with the same passwords.
        kube_cluster.run_kubectl("delete", "secret", f"{TIER}-auth", "-n", ns)
        restored = wait_for(
            lambda: get_json(kube_cluster, "secret", ns, f"{TIER}-auth"),
            timeout=2 * RESYNC_SECONDS + 20,
            what="the auth Secret restored",
        )
        assert base64.b64decode(restored["data"]["password"]).decode() == password
        assert base64.b64decode(restored["data"]["operator-password"]).decode() == op_pw
        assert event_messages(kube_cluster, ns, "AuthSecretRestored")

        # Every other child deleted at once: all back within the resync.
        children = [
            ("configmap", f"{TIER}-config"),
            ("service", TIER),
            ("service", f"{TIER}-headless"),
            ("poddisruptionbudget", TIER),
            ("networkpolicy", TIER),
        ]
        for kind, name in children:
            kube_cluster.run_kubectl("delete", kind, name, "-n", ns)
        wait_for(
            lambda: all(get_json(kube_cluster, k, ns, n) for k, n in children),
            timeout=2 * RESYNC_SECONDS + 20,
            what="every child restored",
        )
        wait_for(lambda: ready(kube_cluster, ns), timeout=60, what="tier Ready at the end")
        ok_before = client.ok
        wait_for(lambda: client.ok > ok_before + 10, timeout=60, what="the client serving")
    finally:
        client.stop.set()
        client.thread.join(10)
    assert not client.wrongpass, f"WRONGPASS seen by the client: {client.wrongpass[:3]}"
