"""Helpers for the e2e tests: polling, and a handle on the operator running in-process."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from cachetier.handlers import tier as tier_handlers

T = TypeVar("T")

CHILDREN = [
    ("secret", "{t}-auth"),
    ("secret", "{t}-auth-recovery"),
    ("secret", "{t}-connection"),
    ("configmap", "{t}-config"),
    ("service", "{t}"),
    ("service", "{t}-headless"),
    ("statefulset", "{t}"),
    ("poddisruptionbudget", "{t}"),
    ("networkpolicy", "{t}"),
]
"""(kubectl kind, name pattern) of every child of a standalone tier ``t``."""


def kubectl_apply(cluster: Any, manifest: str) -> subprocess.CompletedProcess[str]:
    """``kubectl apply -f -`` of ``manifest``, as an SRE would; raises on failure."""
    return subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "apply", "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def get_json(cluster: Any, kind: str, ns: str, name: str) -> dict[str, Any] | None:
    """``kubectl get -o json`` of one object, or None when it does not exist."""
    proc = cluster.run_kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def event_messages(cluster: Any, ns: str, reason: str) -> list[str]:
    """Messages of the namespace's Events with ``reason``."""
    items = json.loads(
        cluster.run_kubectl(
            "get", "events", "-n", ns, "--field-selector", f"reason={reason}", "-o", "json"
        ).stdout
    )["items"]
    return [str(e.get("message", "")) for e in items]


def pod_ips(cluster: Any, ns: str, tier: str) -> list[str]:
    """IPs of the tier's Redis pods that have one."""
    pods = json.loads(
        cluster.run_kubectl(
            "get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={tier}", "-o", "json"
        ).stdout
    )["items"]
    return [p["status"]["podIP"] for p in pods if p["status"].get("podIP")]


def wait_for(
    probe: Callable[[], T | bool | None], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Operator:
    """The operator running in this process under kopf.testing.KopfRunner."""

    def runtime(self) -> tier_handlers.Runtime:
        rt = tier_handlers.CURRENT
        assert rt is not None, "the operator has not started"
        return rt

    def write_count(self, namespace: str, name: str) -> int:
        """API write requests the operator sent while reconciling this tier."""
        return self.runtime().kube.writes_for(f"{namespace}/{name}")

    def reconcile_now(self, namespace: str, name: str) -> None:
        """Run one reconcile of the tier synchronously (as a watch event would)."""
        self.runtime().reconcile(namespace, name)


class ErrorLog(logging.Handler):
    """Every ERROR (or worse) record logged in this process, with its traceback.

    The e2e tier fails a test during which the operator logged one it did not expect
    (``@pytest.mark.operator_errors(regex, ...)`` names the expected ones).
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        with self.guard:
            self.records.append(text)

    def since(self, index: int) -> list[str]:
        with self.guard:
            return self.records[index:]

    def mark(self) -> int:
        with self.guard:
            return len(self.records)


ERRORS = ErrorLog()


def unexpected(records: list[str], allowed: list[str]) -> list[str]:
    """The records that match none of the ``allowed`` regular expressions."""
    return [r for r in records if not any(re.search(a, r) for a in allowed)]


def start_operator() -> Iterator[Operator]:
    """Run the operator in a thread (kopf.testing.KopfRunner) against KUBECONFIG."""
    from kopf.testing import KopfRunner

    root = logging.getLogger()
    if ERRORS not in root.handlers:
        root.addHandler(ERRORS)
    tier_handlers.CURRENT = None
    args = ["run", "--standalone", "--all-namespaces", "-m", "cachetier.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        wait_for(lambda: tier_handlers.CURRENT, timeout=60, what="operator start-up")
        yield Operator()
    tier_handlers.CURRENT = None
    assert runner.exception is None, runner.exception


class ClusterWriter(threading.Thread):
    """SET w<i> through a Redis Cluster client in a loop: the acknowledged indexes, the
    errors, and the longest time between two acknowledged writes."""

    def __init__(self, startup: list[Any], password: str) -> None:
        super().__init__(daemon=True)
        self.startup, self.password = startup, password
        self.acked: list[int] = []
        self.errors = 0
        self.gap = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        import redis
        from redis.cluster import RedisCluster

        from cachetier.redis.options import quiet_handshake

        client = RedisCluster(
            startup_nodes=self.startup, password=self.password, socket_timeout=1,
            socket_connect_timeout=1, **quiet_handshake(),
        )  # fmt: skip
        last = time.monotonic()
        i = 0
        while not self.stop.is_set():
            try:
                client.set(f"w{i}", str(i))
                now = time.monotonic()
                self.gap = max(self.gap, now - last)
                self.acked.append(i)
                last, i = now, i + 1
            except redis.RedisError:
                self.errors += 1
                time.sleep(0.05)
            time.sleep(0.005)
        client.close()
