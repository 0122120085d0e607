"""mode replication on the local control plane: real redis-server and Sentinel processes.

One tier (1 primary + 2 replicas + 3 Sentinels) serves a plain ``redis.from_url``
client on the connection Secret's URL and a Sentinel-aware client on its
``sentinels``/``masterName``; then its primary pod is deleted while a writer loops on
the same URL: Sentinel elects a new primary, the operator moves the role label
(demotion first), the client Service follows, writes resume on the unchanged URL and
the old primary's replacement rejoins as a replica.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from cachetier import names
from tests.e2e.helpers import Operator, event_messages, get_json, kubectl_apply, wait_for

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: sessions, namespace: {ns}}}
spec:
  mode: replication
  replication: {{replicas: 2, sentinels: 3, downAfterMilliseconds: 2000, failoverTimeout: 10000}}
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
"""


def _secret(cluster: Any, ns: str, name: str) -> dict[str, str]:
    data = (get_json(cluster, "secret", ns, name) or {}).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _status(cluster: Any, ns: str) -> dict[str, Any]:
    return dict((get_json(cluster, names.PLURAL, ns, "sessions") or {}).get("status") or {})


def _roles(cluster: Any, ns: str) -> dict[str, str | None]:
    pods = json.loads(
        cluster.run_kubectl(
            "get", "pods", "-n", ns, "-l", ",".join(
                f"{k}={v}" for k, v in names.selector_labels("sessions").items()
            ), "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    return {
        p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get(names.LABEL_ROLE)
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    }


def _ready(cluster: Any, ns: str) -> dict[str, Any] | None:
    st = _status(cluster, ns)
    return (
        st if st.get("phase") == "Ready" and (st.get("replication") or {}).get("primary") else None
    )


class Writer(threading.Thread):
    """SET k<i> on the URL in a loop, reconnecting on errors; records what was acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked: list[int] = []
        self.failures: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import redis

        client = redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        i = 0
        while not self.stop.is_set():
            try:
                client.set(f"k{i}", str(i))
                self.acked.append(i)
                i += 1
            except redis.RedisError:
                self.failures.append(time.monotonic())
                client.close()
                client = redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
                time.sleep(0.05)
            time.sleep(0.01)
        client.close()


def test_replication_serves_one_url_and_follows_sentinel_through_a_failover(
    kube_cluster: Any, namespace: str, operator: Operator
) -> None:
    import redis
    from redis.sentinel import Sentinel

    ns = namespace
    kubectl_apply(kube_cluster, TIER.format(ns=ns))
    status = wait_for(lambda: _ready(kube_cluster, ns), timeout=240, what="the tier Ready")
    primary = status["replication"]["primary"]
    assert _roles(kube_cluster, ns) == {
        f"sessions-{i}": ("primary" if f"sessions-{i}" == primary else "replica") for i in range(3)
    }
    assert status["replication"]["sentinels"]["monitoring"] == 3
    assert all(r["linkUp"] for r in status["replication"]["replicas"]), status["replication"]

    conn = _secret(kube_cluster, ns, "sessions-connection")
    assert conn["mode"] == "replication" and conn["masterName"] == "sessions"
    with redis.from_url(conn["url"], socket_timeout=5) as client:
        client.set("greeting", "hello", ex=600)
        assert client.get("greeting") == b"hello"
        assert client.info("replication")["role"] == "master"

    host, port = conn["sentinels"].rsplit(":", 1)
    sentinel = Sentinel(
        [(host, int(port))], socket_timeout=2, sentinel_kwargs={"password": conn["password"]}
    )
    master = sentinel.master_for(conn["masterName"], password=conn["password"], socket_timeout=2)
    assert master.get("greeting") == b"hello"
    primary_ip = (get_json(kube_cluster, "pod", ns, primary) or {})["status"]["podIP"]
    assert sentinel.discover_master(conn["masterName"])[0] == primary_ip
    # The application's Sentinel user may discover, not steer.
    try:
        sentinel.sentinels[0].execute_command("SENTINEL", "FAILOVER", "sessions")
        raise AssertionError("the application user could ask Sentinel for a failover")
    except redis.ResponseError as exc:
        assert "NOPERM" in str(exc) or "no permissions" in str(exc).lower(), exc

    # -- the primary pod is deleted while a writer loops on the unchanged URL ---------
    writer = Writer(conn["url"])
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, timeout=30, what="the writer going")
    kube_cluster.run_kubectl("delete", "pod", primary, "-n", ns, "--wait=false")
    deleted_at = time.monotonic()
    new = wait_for(
        lambda: (
            (p := (_status(kube_cluster, ns).get("replication") or {}).get("primary"))
            and p != primary
            and p
        ),
        timeout=120,
        what="a new primary",
    )
    before = len(writer.acked)
    wait_for(lambda: len(writer.acked) > before + 50, timeout=60, what="writes resumed")
    writer.stop.set()
    writer.join(timeout=10)
    outage = max((t - deleted_at for t in writer.failures), default=0.0)
    # The replacement of the old primary rejoins as a replica; one primary label at the end.
    want = {f"sessions-{i}": "replica" for i in range(3)} | {new: "primary"}
    wait_for(
        lambda: _roles(kube_cluster, ns) == want,
        timeout=120,
        what="every pod labelled, the old primary's pod a replica",
    )
    wait_for(lambda: _ready(kube_cluster, ns), timeout=120, what="Ready again")
    with redis.from_url(conn["url"], socket_timeout=5) as client:
        assert client.info("replication")["role"] == "master"
        acked = writer.acked
        present = client.mget([f"k{i}" for i in acked])
        lost = sum(1 for v in present if v is None)
        assert client.get("greeting") == b"hello"  # what was replicated before survives
    old = wait_for(
        lambda: (get_json(kube_cluster, "pod", ns, primary) or {}).get("status", {}).get("podIP"),
        timeout=60,
        what="the old primary's replacement",
    )
    with redis.Redis(host=old, port=6379, username=names.OPERATOR_USER,
                     password=_secret(kube_cluster, ns, "sessions-auth")["operator-password"],
                     socket_timeout=5) as replica:  # fmt: skip
        assert replica.info("replication")["role"] == "slave"
    assert any(primary in m and new in m for m in event_messages(kube_cluster, ns, "Failover"))
    print(
        json.dumps(
            {
                "acked_writes": len(acked),
                "lost_acked_writes": lost,
                "seconds_until_last_failed_write": round(outage, 2),
            }
        )
    )
