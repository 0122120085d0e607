"""Password rotation with zero downtime (real redis-server, real consumer pods).

A standalone tier and a consumer Deployment (the demo app, a real redis-py process the
node agent runs, with ``REDIS_URL`` injected from the connection Secret). While three
clients run — a client that keeps the old password and connects anew for every command
(a consumer pod that has not restarted yet), a client that reads the connection Secret
for every command (a consumer pod that starts now), and a poller of every demo pod's
``/status`` — ``cachetier rotate-password`` is run. Checked: ``status.auth`` goes
InProgress -> Done; the demo pod is replaced (a rolling restart) and its successor uses
Redis with no error; the Redis pod is not restarted; neither the Secret-reading client
nor any demo pod ever sees ``WRONGPASS``/``NOAUTH``; the old-password client sees none
until every consumer pod runs the new password; at the end the old password is refused.
A second tier takes its password from a Secret of the user's: changing that Secret's
content rotates the same way.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest
import redis

from cachetier import names
from cachetier.redis.options import quiet_handshake
from tests.e2e.helpers import Operator, event_messages, get_json, kubectl_apply, wait_for
from tests.e2e.test_cli import run_cli

pytestmark = pytest.mark.timeout(600)

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: rot, namespace: {ns}}}
spec:
  mode: standalone
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
  consumers: {{selector: {{matchLabels: {{app: rot-demo}}}}}}
  rollout: {{enabled: true, percent: 100}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: rot-demo, namespace: {ns}, labels: {{app: rot-demo}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: rot-demo}}}}
  template:
    metadata: {{labels: {{app: rot-demo}}}}
    spec:
      containers:
        - name: app
          image: cachetier/demo-app:0.1.0
          env:
            - {{name: PORT, value: "8080"}}
            - name: POD_IP
              valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
          readinessProbe:
            httpGet: {{path: /healthz, port: 8080}}
            periodSeconds: 1
"""

BYO = """
apiVersion: v1
kind: Secret
metadata: {{name: their-password, namespace: {ns}}}
stringData: {{password: {password}}}
---
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: rot-byo, namespace: {ns}}}
spec:
  mode: standalone
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
  auth: {{passwordSecretRef: {{name: their-password, key: password}}}}
"""

AUTH_ERRORS = ("WRONGPASS", "NOAUTH", "invalid username-password", "Authentication")


def _secret(cluster: Any, ns: str, name: str) -> dict[str, str]:
    data = (get_json(cluster, "secret", ns, name) or {}).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _status(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    return dict((get_json(cluster, names.PLURAL, ns, name) or {}).get("status") or {})


def _pods(cluster: Any, ns: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.run_kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json")
    return list(json.loads(out.stdout)["items"])


def _auth_fails(url: str) -> str:
    """The error a fresh connection on ``url`` gets ("" when it authenticates)."""
    try:
        with redis.from_url(url, socket_timeout=2, **quiet_handshake()) as client:
            client.set("rotation:probe", "1")
        return ""
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"


class Clients:
    """The three observers, each in a thread, each recording (time, error)."""

    def __init__(self, cluster: Any, ns: str, old_url: str) -> None:
        self.cluster, self.ns, self.old_url = cluster, ns, old_url
        self.stop = threading.Event()
        self.old: list[tuple[float, str]] = []
        self.new: list[tuple[float, str]] = []
        self.pods: list[tuple[float, str]] = []
        self.ops = {"old": 0, "new": 0, "pods": 0}
        self.first_pod_uid = ""
        self.first_pod_gone: float | None = None
        """When the first demo pod was no longer listed (deleted for good)."""
        self.watch: subprocess.Popen[str] | None = None
        self.deleted_event = False
        self.threads = [
            threading.Thread(target=self._old, daemon=True),
            threading.Thread(target=self._new, daemon=True),
            threading.Thread(target=self._poll_pods, daemon=True),
            threading.Thread(target=self._watch_deleted, daemon=True),
        ]

    def _gone(self) -> None:
        if self.first_pod_gone is None:
            self.first_pod_gone = time.monotonic()

    def _watch_deleted(self) -> None:
        """The first demo pod's DELETED event, from a watch: the moment it is gone, not
        when a poll that also calls every pod over HTTP happens to notice."""
        self.watch = subprocess.Popen(
            [
                self.cluster.kubectl, "--kubeconfig", self.cluster.kubeconfig, "get", "pods",
                "-n", self.ns, "-l", "app=rot-demo", "--watch", "--output-watch-events",
                "-o", "json",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        decoder, buffer = json.JSONDecoder(), ""
        for line in self.watch.stdout or ():
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue  # the object is not complete yet
            buffer = buffer.lstrip()[end:]
            uid = ((event.get("object") or {}).get("metadata") or {}).get("uid")
            if event.get("type") == "DELETED" and uid == self.first_pod_uid:
                self.deleted_event = True
                self._gone()

    def _old(self) -> None:
        while not self.stop.is_set():
            error = _auth_fails(self.old_url)
            self.ops["old"] += 1
            if error:
                self.old.append((time.monotonic(), error))
            time.sleep(0.02)

    def _new(self) -> None:
        while not self.stop.is_set():
            url = _secret(self.cluster, self.ns, names.connection_secret("rot"))["url"]
            error = _auth_fails(url)
            self.ops["new"] += 1
            if error:
                self.new.append((time.monotonic(), error))

    def _poll_pods(self) -> None:
        while not self.stop.is_set():
            pods = _pods(self.cluster, self.ns, "app=rot-demo")
            listed = {p["metadata"]["uid"] for p in pods}
            if self.first_pod_uid not in listed:
                self._gone()
            for pod in pods:
                ip = (pod.get("status") or {}).get("podIP")
                if not ip or pod["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    # GET / uses Redis (the report), /status says the last error.
                    urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).read()
                    body = urllib.request.urlopen(f"http://{ip}:8080/status", timeout=2).read()
                except OSError:
                    continue  # starting or stopping
                self.ops["pods"] += 1
                error = str(json.loads(body).get("last_error") or "")
                if any(e in error for e in AUTH_ERRORS):
                    self.pods.append((time.monotonic(), f"{pod['metadata']['name']}: {error}"))
            time.sleep(0.2)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.watch is not None:
            self.watch.terminate()
        for t in self.threads:
            t.join(timeout=10)
        if self.watch is not None:  # reaped and its pipe closed: no ResourceWarning later
            self.watch.wait(timeout=10)
            if self.watch.stdout is not None:
                self.watch.stdout.close()


def test_rotate_password_with_consumers_running_old_and_new(
    kube_cluster: Any, namespace: str, operator: Operator
) -> None:
    ns = namespace
    kubectl_apply(kube_cluster, TIER.format(ns=ns))
    wait_for(
        lambda: _status(kube_cluster, ns, "rot").get("phase") == "Ready",
        timeout=180,
        what="the tier Ready",
    )

    def demo_on_redis() -> dict[str, Any] | None:
        for pod in _pods(kube_cluster, ns, "app=rot-demo"):
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or pod["metadata"].get("deletionTimestamp"):
                continue
            try:
                urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).read()
                body = json.loads(urllib.request.urlopen(f"http://{ip}:8080/status").read())
            except OSError:
                continue
            if body.get("cache") == "redis" and not body.get("last_error"):
                return pod
        return None

    demo = wait_for(demo_on_redis, timeout=180, what="the demo pod using Redis")
    old_url = _secret(kube_cluster, ns, names.connection_secret("rot"))["url"]
    old_pw = _secret(kube_cluster, ns, names.auth_secret("rot"))["password"]
    redis_selector = ",".join(
        f"{k}={v}" for k, v in names.component_labels("rot", names.COMPONENT_REDIS).items()
    )
    redis_uids = {p["metadata"]["uid"] for p in _pods(kube_cluster, ns, redis_selector)}

    clients = Clients(kube_cluster, ns, old_url)
    clients.first_pod_uid = demo["metadata"]["uid"]
    with clients:
        wait_for(lambda: all(clients.ops.values()), timeout=30, what="every client going")
        started = time.monotonic()
        out = run_cli(kube_cluster.kubeconfig, "rotate-password", "rot", namespace=ns)
        assert out.returncode == 0 and "rotation requested" in out.stdout, out

        def done() -> bool:
            auth = _status(kube_cluster, ns, "rot").get("auth") or {}
            return auth.get("rotation") == "Done"

        try:
            wait_for(done, timeout=240, what="status.auth.rotation Done", interval=0.2)
        except AssertionError as exc:
            st = _status(kube_cluster, ns, "rot")
            raise AssertionError(f"{exc}; status {json.dumps(st)[:2000]}") from None
        took = time.monotonic() - started
        # Observe a little longer: the new pod keeps working after the old password goes.
        time.sleep(2)
    gone = clients.first_pod_gone
    assert gone is not None, "the old demo pod was never replaced"
    assert clients.deleted_event, "the watch saw no DELETED event of the old demo pod"
    new_pw = _secret(kube_cluster, ns, names.auth_secret("rot"))["password"]
    assert new_pw != old_pw
    assert names.PREVIOUS_PASSWORD_KEY not in _secret(kube_cluster, ns, names.auth_secret("rot"))
    # The old password may go only once no consumer pod runs with it any more.
    early = [e for t, e in clients.old if t < gone]
    print(
        f"\npassword rotation: Done after {took:.1f}s (the old demo pod gone after "
        f"{gone - started:.1f}s); ops {clients.ops}; old-password client errors "
        f"{len(early)} before the old pod was gone, {len(clients.old) - len(early)} after; "
        f"Secret-reading client errors {len(clients.new)}; demo pod auth errors "
        f"{len(clients.pods)}",
        file=sys.__stdout__,
        flush=True,
    )
    assert clients.new == [], clients.new[:3]
    assert clients.pods == [], clients.pods[:3]
    assert early == [], early[:3]
    # The old password is refused now, the new one accepted; no Redis pod restarted.
    assert "WRONGPASS" in _auth_fails(old_url) or "invalid" in _auth_fails(old_url)
    assert _auth_fails(_secret(kube_cluster, ns, names.connection_secret("rot"))["url"]) == ""
    assert {p["metadata"]["uid"] for p in _pods(kube_cluster, ns, redis_selector)} == redis_uids
    # The demo pod was replaced (a rolling restart) and its successor uses Redis.
    successor = wait_for(demo_on_redis, timeout=60, what="the new demo pod using Redis")
    assert successor["metadata"]["uid"] != demo["metadata"]["uid"]
    template = (get_json(kube_cluster, "deployment", ns, "rot-demo") or {})["spec"]["template"]
    revision = _status(kube_cluster, ns, "rot")["auth"]["revision"]
    assert template["metadata"]["annotations"][names.ANNOTATION_AUTH_REVISION] == revision
    reasons = " ".join(event_messages(kube_cluster, ns, "PasswordRotated"))
    assert "password rotated" in reasons


def test_a_changed_password_secret_is_rotated_to(
    kube_cluster: Any, namespace: str, operator: Operator
) -> None:
    ns = namespace
    kubectl_apply(kube_cluster, BYO.format(ns=ns, password="first-password-0123"))
    wait_for(
        lambda: _status(kube_cluster, ns, "rot-byo").get("phase") == "Ready",
        timeout=180,
        what="the BYO tier Ready",
    )
    url_of = lambda: _secret(kube_cluster, ns, names.connection_secret("rot-byo"))["url"]  # noqa: E731
    old_url = url_of()
    assert _auth_fails(old_url) == ""
    kubectl_apply(kube_cluster, BYO.format(ns=ns, password="second-password-4567"))
    wait_for(
        lambda: (_status(kube_cluster, ns, "rot-byo").get("auth") or {}).get("rotation") == "Done",
        timeout=120,
        what="the rotation to the Secret's new password Done",
    )
    assert "second-password-4567" in url_of() and _auth_fails(url_of()) == ""
    assert _auth_fails(old_url) != ""


REPLICATION = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: rot-r, namespace: {ns}}}
spec:
  mode: replication
  replication: {{replicas: 1, sentinels: 3}}
  redis: {{maxmemory: 32mb, persistence: {{mode: aof, size: 64Mi}}}}
"""


def test_a_replication_tier_rotates_on_every_redis_and_sentinel(
    kube_cluster: Any, namespace: str, operator: Operator
) -> None:
    """The annotation (the GitOps way): the new password on both Redis pods and the
    three Sentinels (Sentinel-aware clients authenticate to them too), the old one
    refused by all of them at the end, no pod restarted."""
    ns = namespace
    kubectl_apply(kube_cluster, REPLICATION.format(ns=ns))
    wait_for(
        lambda: _status(kube_cluster, ns, "rot-r").get("phase") == "Ready",
        timeout=240,
        what="the replication tier Ready",
    )
    old_pw = _secret(kube_cluster, ns, names.auth_secret("rot-r"))["password"]
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels("rot-r").items())
    sentinels = ",".join(f"{k}={v}" for k, v in names.sentinel_selector_labels("rot-r").items())

    def pods() -> list[dict[str, Any]]:
        return _pods(kube_cluster, ns, selector) + _pods(kube_cluster, ns, sentinels)

    before = {p["metadata"]["uid"]: p for p in pods()}
    assert len(before) == 5
    kube_cluster.run_kubectl(
        "annotate", names.PLURAL, "rot-r", "-n", ns,
        f"{names.ANNOTATION_ROTATE_PASSWORD}=gitops-1", "--overwrite",
    )  # fmt: skip
    wait_for(
        lambda: (_status(kube_cluster, ns, "rot-r").get("auth") or {}).get("rotation") == "Done",
        timeout=120,
        what="the rotation Done",
    )
    new_pw = _secret(kube_cluster, ns, names.auth_secret("rot-r"))["password"]
    assert new_pw != old_pw
    assert _secret(kube_cluster, ns, names.connection_secret("rot-r"))["password"] == new_pw
    for pod in before.values():
        port = names.REDIS_PORT
        if pod["metadata"]["labels"].get(names.LABEL_COMPONENT) == names.COMPONENT_SENTINEL:
            port = names.SENTINEL_PORT
        ip = pod["status"]["podIP"]
        with redis.Redis(host=ip, port=port, password=new_pw, **quiet_handshake()) as c:
            assert c.ping(), pod["metadata"]["name"]
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=ip, port=port, password=old_pw, **quiet_handshake()).ping()
    assert {p["metadata"]["uid"] for p in pods()} == set(before)

    # -- then the operator's own password (the CLI), on the same tier ---------------------
    auth_before = _secret(kube_cluster, ns, names.auth_secret("rot-r"))
    old_op = auth_before[names.OPERATOR_PASSWORD_KEY]
    assert names.PROBE_PASSWORD_KEY in auth_before, "a new tier's probes log in as the probe user"
    done = run_cli(kube_cluster.kubeconfig, "rotate-password", "rot-r", "--operator", namespace=ns)
    assert done.returncode == 0, done.stderr
    assert "operator password rotation requested" in done.stdout
    started = time.monotonic()
    wait_for(
        lambda: (
            ((_status(kube_cluster, ns, "rot-r").get("auth") or {}).get("operator") or {}).get(
                "rotation"
            )
            == "Done"
        ),
        timeout=120,
        what="the operator password rotation Done",
    )
    print(
        f"\noperator password rotation Done in {time.monotonic() - started:.1f}s",
        file=sys.__stdout__,
    )
    auth = _secret(kube_cluster, ns, names.auth_secret("rot-r"))
    new_op = auth[names.OPERATOR_PASSWORD_KEY]
    assert new_op != old_op
    assert names.PREVIOUS_OPERATOR_PASSWORD_KEY not in auth
    assert auth["password"] == new_pw, "the application's password is untouched"
    assert {p["metadata"]["uid"] for p in pods()} == set(before), "no pod restarted"

    def login(pod: dict[str, Any], password: str) -> redis.Redis:
        sentinel = pod["metadata"]["labels"].get(names.LABEL_COMPONENT) == names.COMPONENT_SENTINEL
        return redis.Redis(
            host=pod["status"]["podIP"],
            port=names.SENTINEL_PORT if sentinel else names.REDIS_PORT,
            username=names.OPERATOR_USER,
            password=password,
            **quiet_handshake(),
        )

    for pod in before.values():
        with login(pod, new_op) as c:
            assert c.ping(), pod["metadata"]["name"]
        with pytest.raises(redis.AuthenticationError):
            login(pod, old_op).ping()
    # The new password works where it matters: the Sentinels fail the primary over (they
    # log in to the Redis pods and to each other with it) and the old primary follows the
    # new one as a replica (masterauth).
    primary = _status(kube_cluster, ns, "rot-r")["replication"]["primary"]
    sentinel_pod = next(
        p
        for p in pods()
        if p["metadata"]["labels"].get(names.LABEL_COMPONENT) == names.COMPONENT_SENTINEL
    )
    with login(sentinel_pod, new_op) as s:
        s.execute_command("SENTINEL", "FAILOVER", names.sentinel_master("rot-r"))

    def settled_elsewhere() -> bool:
        st = _status(kube_cluster, ns, "rot-r")
        rs = st.get("replication") or {}
        return st.get("phase") == "Ready" and rs.get("primary") not in ("", None, primary)

    wait_for(settled_elsewhere, timeout=120, what="a failover with the new operator password")
    old_primary = next(p for p in pods() if p["metadata"]["name"] == primary)

    def follows() -> bool:
        with login(old_primary, new_op) as c:
            info = c.info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    wait_for(follows, timeout=60, what="the old primary replicating from the new one")
