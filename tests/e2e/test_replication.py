"""mode replication on the local control plane: real redis-server and Sentinel processes.

One tier (1 primary + 2 replicas + 3 Sentinels) serves a plain ``redis.from_url``
client on the connection Secret's URL and a Sentinel-aware client on its
``sentinels``/``masterName``. Then, while a writer loops on the same URL: the primary's
process is frozen (SIGSTOP, a hung machine) until the Sentinels elect a new primary —
the operator moves the role label (demotion first), the client Service follows,
writes resume on the unchanged URL, and the old primary, woken, rejoins as a replica;
then the new primary's pod is deleted and the tier settles again with one primary.
Lost acknowledged writes and the seconds without a write are printed (asynchronous
replication may lose the last ones).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cachetier import names
from cachetier.redis.options import quiet_handshake
from tests.e2e.helpers import Operator, event_messages, get_json, kubectl_apply, wait_for

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: sessions, namespace: {ns}}}
spec:
  mode: replication
  replication: {{replicas: 2, sentinels: 3, downAfterMilliseconds: 2000, failoverTimeout: 10000}}
  redis: {{maxmemory: 32mb, persistence: {{mode: aof, size: 64Mi}}}}
  rollout: {{autoRollback: {{enabled: false}}}}
"""
"""The health prober's auto-rollback is off: the failover freezes the primary for the
Sentinels' down-after time, and whether the prober counts 3 bad probes before they
promote a replica is a race (when it won, the phase stayed ``RolledBack`` and the
``Ready again`` wait timed out). Auto-rollback has its own tests in test_flags_health."""


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
        self.times: list[float] = []
        """When each acknowledged write returned (monotonic)."""
        self.failures: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import redis

        # No CLIENT SETINFO greeting: the Redis 7.0 here answers it with an error reply,
        # and a writer that reconnects through a failover would send dozens, enough for
        # the probe to roll the tier back (Redis >= 7.2 knows the command).
        def connect() -> redis.Redis:
            return redis.from_url(
                self.url, socket_timeout=1, socket_connect_timeout=1, **quiet_handshake()
            )

        client = connect()
        i = 0
        while not self.stop.is_set():
            try:
                client.set(f"k{i}", str(i))
                self.acked.append(i)
                self.times.append(time.monotonic())
                i += 1
            except redis.RedisError:
                self.failures.append(time.monotonic())
                client.close()
                client = connect()
                time.sleep(0.05)
            time.sleep(0.01)
        client.close()


def test_replication_serves_one_url_and_follows_sentinel_through_a_failover(
    kube_cluster: Any, namespace: str, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from redis.sentinel import Sentinel

    ns = namespace
    kubectl_apply(kube_cluster, TIER.format(ns=ns))
    try:
        status = wait_for(lambda: _ready(kube_cluster, ns), timeout=240, what="the tier Ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {json.dumps(_status(kube_cluster, ns))}") from None
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
    operator_pw = _secret(kube_cluster, ns, "sessions-auth")["operator-password"]
    assert sentinel.discover_master(conn["masterName"])[0] == primary_ip
    # The application's Sentinel user may discover, not steer.
    try:
        sentinel.sentinels[0].execute_command("SENTINEL", "FAILOVER", "sessions")
        raise AssertionError("the application user could ask Sentinel for a failover")
    except redis.ResponseError as exc:
        assert "NOPERM" in str(exc) or "no permissions" in str(exc).lower(), exc

    # -- the primary freezes (SIGSTOP: a hung machine) while a writer loops on the URL --
    writer = Writer(conn["url"])
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, timeout=30, what="the writer going")
    pid = _redis_pid(primary_ip)
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        new = wait_for(
            lambda: (
                (p := (_status(kube_cluster, ns).get("replication") or {}).get("primary"))
                and p != primary
                and p
            ),
            timeout=90,
            what="a new primary elected by the Sentinels",
        )
        before = len(writer.acked)
        wait_for(lambda: len(writer.acked) > before + 50, timeout=60, what="writes resumed")
        resumed_at = time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)
    # The old primary wakes up, is turned into a replica; one primary label at the end.
    want = {f"sessions-{i}": "replica" for i in range(3)} | {new: "primary"}
    wait_for(lambda: _roles(kube_cluster, ns) == want, timeout=60, what="the roles relabelled")
    wait_for(lambda: _ready(kube_cluster, ns), timeout=120, what="Ready again")
    wait_for(
        lambda: _role_of(primary_ip, operator_pw) == "slave",
        timeout=60,
        what="the old primary rejoined as a replica",
    )
    assert any(primary in m and new in m for m in event_messages(kube_cluster, ns, "Failover"))
    frozen = _lost(conn["url"], writer, stopped_at, resumed_at)

    # -- the new primary's pod is deleted: writes resume on the same URL ------------------
    writer = Writer(conn["url"])
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, timeout=30, what="the writer going")
    kube_cluster.run_kubectl("delete", "pod", new, "-n", ns, "--wait=false")
    deleted_at = time.monotonic()
    before = len(writer.acked)
    wait_for(
        lambda: len(writer.acked) > before + 200, timeout=120, what="writes on after the delete"
    )
    writer.stop.set()
    writer.join(timeout=10)

    def settled() -> bool:
        roles = _roles(kube_cluster, ns)
        primaries = [p for p, r in roles.items() if r == "primary"]
        st = _ready(kube_cluster, ns)
        return (
            len(roles) == 3
            and len(primaries) == 1
            and None not in roles.values()
            and bool(st and st["replication"]["primary"] == primaries[0])
        )

    try:
        wait_for(settled, timeout=180, what="one primary, every pod labelled, Ready")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; status {json.dumps(_status(kube_cluster, ns))[:2000]}; "
            f"errors {_errors(kube_cluster, ns, operator_pw)}"
        ) from None
    deleted = _lost(conn["url"], writer, deleted_at, time.monotonic())
    with redis.from_url(conn["url"], socket_timeout=5) as client:
        assert client.get("greeting") == b"hello"  # replicated before both faults
    killed = _sigkill_restarts_in_place(kube_cluster, ns, conn["url"], settled)
    _operator_away_during_a_failover(kube_cluster, ns, conn, operator, monkeypatch, settled)
    _scale_out_and_in_keeps_the_keys(kube_cluster, ns, conn["url"], settled, operator, monkeypatch)
    whole = _every_pod_deleted_at_once(kube_cluster, ns, conn["url"])
    result = json.dumps({
        "sigstop_of_the_primary": frozen, "delete_of_the_primary_pod": deleted,
        "sigkill_of_the_primary": killed, "every_redis_pod_deleted": whole,
    })  # fmt: skip
    print(result, file=sys.__stdout__)


def _primary(cluster: Any, ns: str) -> tuple[str, str]:
    """(pod, IP) of the pod labelled primary; ("", "") while no single pod is (the
    operator demotes the old primary before it labels the new one)."""
    roles = _roles(cluster, ns)
    primaries = [p for p, r in roles.items() if r == "primary"]
    if len(primaries) != 1:
        return "", ""
    pod = primaries[0]
    return pod, ((get_json(cluster, "pod", ns, pod) or {}).get("status") or {}).get("podIP", "")


def _sigkill_restarts_in_place(
    cluster: Any, ns: str, url: str, settled: Callable[[], bool]
) -> dict[str, Any]:
    """SIGKILL of the primary's process: the node agent restarts it at once (as the
    kubelet would), faster than down-after-milliseconds, so Sentinel keeps it primary
    (its AOF brings the data back); writes resume on the URL, roles unchanged."""
    pod, ip = _primary(cluster, ns)
    writer = Writer(url)
    writer.start()
    wait_for(lambda: len(writer.acked) > 50, timeout=30, what="the writer going")
    os.kill(_redis_pid(ip), signal.SIGKILL)
    killed_at = time.monotonic()
    before = len(writer.acked)
    wait_for(lambda: len(writer.acked) > before + 100, timeout=120, what="writes after SIGKILL")
    wait_for(settled, timeout=180, what="one primary, every pod labelled, Ready")
    result = _lost(url, writer, killed_at, time.monotonic())
    result["primary_kept"] = _primary(cluster, ns)[0] == pod
    return result


def _operator_away_during_a_failover(
    cluster: Any,
    ns: str,
    conn: dict[str, str],
    operator: Operator,
    monkeypatch: pytest.MonkeyPatch,
    settled: Callable[[], bool],
) -> None:
    """The operator does nothing for the tier (its reconciles and probes skip it) while
    the primary freezes: Sentinel fails over alone; the labels stay behind; once the
    operator is back it relabels from what the Sentinels say and the URL works."""
    import redis
    from redis.sentinel import Sentinel

    rt = operator.runtime()
    away = _away(rt, ns, monkeypatch)
    old, old_ip = _primary(cluster, ns)
    host, port = conn["sentinels"].rsplit(":", 1)
    sentinel = Sentinel(
        [(host, int(port))], socket_timeout=2, sentinel_kwargs={"password": conn["password"]}
    )
    pid = _redis_pid(old_ip)
    os.kill(pid, signal.SIGSTOP)
    try:

        def elected() -> str | None:
            try:
                addr = sentinel.discover_master(conn["masterName"])[0]
            except redis.RedisError:
                return None
            return str(addr) if addr != old_ip else None

        new_ip = wait_for(elected, timeout=90, what="the Sentinels failing over on their own")
        assert _roles(cluster, ns)[old] == "primary", "the operator was meant to be away"
    finally:
        away()
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _primary(cluster, ns)[1] == new_ip, timeout=60, what="relabelled")
    wait_for(settled, timeout=180, what="one primary, every pod labelled, Ready")
    with redis.from_url(conn["url"], socket_timeout=5) as client:
        client.set("after-the-operator-came-back", "1")
        assert client.info("replication")["role"] == "master"


def _away(rt: Any, ns: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Keep the operator from acting on ``ns`` (reconciles and probes skip it) until the
    returned function is called (which also queues a reconcile of the tier)."""
    reconcile, probe = rt.reconcile, rt.probe
    monkeypatch.setattr(rt, "reconcile", lambda n, t: None if n == ns else reconcile(n, t))
    monkeypatch.setattr(rt, "probe", lambda n, t: None if n == ns else probe(n, t))

    def back() -> None:
        monkeypatch.setattr(rt, "reconcile", reconcile)
        monkeypatch.setattr(rt, "probe", probe)
        rt.schedule((ns, "sessions"), 0.0)

    return back


def _move_primary_to(
    cluster: Any, ns: str, pod: str, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the operator away, make Sentinel promote ``pod`` (the others at priority 0,
    then SENTINEL FAILOVER, then their priority back): a test's set-up, not the operator's."""
    import redis

    password = _secret(cluster, ns, "sessions-auth")["operator-password"]
    auth = {"username": names.OPERATOR_USER, "password": password, "socket_timeout": 2}
    ips = {
        p: (get_json(cluster, "pod", ns, p) or {})["status"]["podIP"] for p in _roles(cluster, ns)
    }
    sentinel_ip = (get_json(cluster, "pod", ns, "sessions-sentinel-0") or {})["status"]["podIP"]
    back = _away(operator.runtime(), ns, monkeypatch)
    try:
        for other, ip in ips.items():
            if other != pod:
                with redis.Redis(host=ip, port=6379, **auth) as node:
                    node.config_set("replica-priority", 0)

        def promoted() -> bool:
            with redis.Redis(host=sentinel_ip, port=26379, **auth) as s:
                if s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "sessions")[0] == (
                    ips[pod].encode()
                ):
                    return True
                with contextlib.suppress(redis.ResponseError):  # INPROG, or not seen yet
                    s.execute_command("SENTINEL", "FAILOVER", "sessions")
            return False

        time.sleep(11)  # Sentinel reads the replicas' priority from INFO every 10 s
        wait_for(promoted, timeout=90, what=f"Sentinel promoting {pod}", interval=3)
    finally:
        for ip in ips.values():
            with (
                contextlib.suppress(redis.RedisError),
                redis.Redis(host=ip, port=6379, **auth) as n,
            ):
                n.config_set("replica-priority", 100)
        back()
    wait_for(lambda: _primary(cluster, ns)[0] == pod, timeout=60, what=f"{pod} labelled primary")


def _scale_out_and_in_keeps_the_keys(
    cluster: Any,
    ns: str,
    url: str,
    settled: Callable[[], bool],
    operator: Operator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """replicas 2 -> 3 -> 1: a fourth pod joins as a replica; then two pods go — if the
    primary is one of them it is switched over first — and every key is still there."""
    import redis

    with redis.from_url(url, socket_timeout=5) as client:
        client.mset({f"scale{i}": str(i) for i in range(1000)})

    def scale(replicas: int) -> None:
        cluster.run_kubectl(
            "patch", names.PLURAL, "sessions", "-n", ns, "--type", "merge",
            "-p", json.dumps({"spec": {"replication": {"replicas": replicas}}}),
        )  # fmt: skip

    def pods_are(count: int) -> bool:
        return _settled_with(cluster, ns, count)

    scale(3)
    wait_for(lambda: pods_are(4), timeout=180, what="4 Redis pods, Ready")
    # The highest pod becomes the primary: the scale-in must move it off first.
    _move_primary_to(cluster, ns, "sessions-3", operator, monkeypatch)
    wait_for(lambda: pods_are(4), timeout=180, what="4 Redis pods, Ready")
    scale(1)
    wait_for(lambda: pods_are(2), timeout=240, what="2 Redis pods, Ready")
    assert set(_roles(cluster, ns)) == {"sessions-0", "sessions-1"}
    with redis.from_url(url, socket_timeout=5) as client:
        values = client.mget([f"scale{i}" for i in range(1000)])
    assert values == [str(i).encode() for i in range(1000)]
    assert _primary(cluster, ns)[0] in ("sessions-0", "sessions-1")


def _settled_with(cluster: Any, ns: str, count: int) -> bool:
    """``count`` Redis pods: one labelled primary, the others replicas, Ready, every
    replica's link up."""
    roles = list(_roles(cluster, ns).values())
    st = _ready(cluster, ns)
    return bool(
        st
        and len(roles) == count
        and roles.count("primary") == 1
        and roles.count("replica") == count - 1
        and len(st["replication"]["replicas"]) == count - 1
        and all(r["linkUp"] for r in st["replication"]["replicas"])
    )


def _every_pod_deleted_at_once(cluster: Any, ns: str, url: str) -> dict[str, Any]:
    """Every Redis pod deleted at once (a power cut, ``kubectl delete pods -l``): they come
    back with new addresses, the Sentinels' primary is gone and they know no replica to
    promote. The operator re-forms the topology on the last primary's pod (its volume has
    the newest data), the others follow it, the Sentinels watch it; the keys stay."""
    import redis

    count = len(_roles(cluster, ns))  # what the scale steps before left

    def settled() -> bool:
        return _settled_with(cluster, ns, count)

    with redis.from_url(url, socket_timeout=10) as client:
        for i in range(500):
            client.set(f"whole:{i}", str(i))
        client.execute_command("WAIT", count - 1, 3000)  # on the replicas too (not asserted)
    primary, _ = _primary(cluster, ns)
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels("sessions").items())
    cluster.run_kubectl("delete", "pods", "-n", ns, "-l", selector, "--wait=false")
    deleted_at = time.monotonic()
    try:
        wait_for(settled, timeout=240, what="one primary again after every pod was replaced")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; status {json.dumps(_status(cluster, ns))[:2000]}; "
            f"servers {_topology(cluster, ns)}"
        ) from None
    took = round(time.monotonic() - deleted_at, 1)
    assert _primary(cluster, ns)[0] == primary, "the last primary's pod leads again"
    with redis.from_url(url, socket_timeout=5) as client:
        lost = sum(client.get(f"whole:{i}") != str(i).encode() for i in range(500))
        assert client.get("greeting") == b"hello"
    assert lost == 0
    assert any(primary in m for m in event_messages(cluster, ns, "PrimaryReformed"))
    return {"settled_seconds": took, "keys_lost": lost}


def _topology(cluster: Any, ns: str) -> dict[str, Any]:
    """Per pod: its address and what it says (role and master; a Sentinel: the master it
    watches, its flags and the replicas it knows) -- diagnostics."""
    import redis

    password = _secret(cluster, ns, "sessions-auth")["operator-password"]
    out: dict[str, Any] = {}
    pods = json.loads(cluster.run_kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        sentinel = "sentinel" in pod["metadata"]["name"]
        try:
            with redis.Redis(
                host=ip, port=26379 if sentinel else 6379, username=names.OPERATOR_USER,
                password=password, socket_timeout=2, decode_responses=True,
            ) as c:  # fmt: skip
                if sentinel:
                    m = c.execute_command("SENTINEL", "MASTER", "sessions")
                    m = dict(zip(m[::2], m[1::2], strict=False)) if isinstance(m, list) else m
                    known = [r["ip"] for r in c.sentinel_slaves("sessions")]
                    out[pod["metadata"]["name"]] = [ip, m.get("ip"), m.get("flags"), known]
                else:
                    info = c.info("replication")
                    out[pod["metadata"]["name"]] = [
                        ip, info.get("role"), info.get("master_host"),
                        info.get("master_link_status"),
                    ]  # fmt: skip
        except (redis.RedisError, OSError) as exc:
            out[pod["metadata"]["name"]] = [ip, type(exc).__name__]
    return out


def _redis_pid(ip: str) -> int:
    """The redis-server process the node agent runs for the pod at ``ip`` (Redis sets
    its process title to ``redis-server <bind>:<port>``)."""
    out = subprocess.run(
        ["pgrep", "-f", f"redis-server {ip}:6379"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def _errors(cluster: Any, ns: str, password: str) -> dict[str, Any]:
    """Per pod: error replies by class and the commands that failed (diagnostics)."""
    import redis

    out: dict[str, Any] = {}
    for pod in _roles(cluster, ns):
        ip = ((get_json(cluster, "pod", ns, pod) or {}).get("status") or {}).get("podIP")
        try:
            with redis.Redis(host=ip, port=6379, username=names.OPERATOR_USER,
                             password=password, socket_timeout=2) as node:  # fmt: skip
                failed = {
                    k: v for k, v in node.info("commandstats").items()
                    if isinstance(v, dict) and (v.get("failed_calls") or v.get("rejected_calls"))
                }  # fmt: skip
                out[pod] = {"errorstats": node.info("errorstats"), "failed": failed}
        except redis.RedisError as exc:
            out[pod] = str(exc)
    return out


def _role_of(ip: str, password: str) -> str | None:
    import redis

    try:
        with redis.Redis(host=ip, port=6379, username=names.OPERATOR_USER, password=password,
                         socket_timeout=2) as node:  # fmt: skip
            return str(node.info("replication")["role"])
    except redis.RedisError:
        return None


def _lost(url: str, writer: Writer, fault_at: float, resumed_at: float) -> dict[str, Any]:
    """Acknowledged writes missing now, and the writer's longest time without a write."""
    import redis

    writer.stop.set()
    writer.join(timeout=10)
    with redis.from_url(url, socket_timeout=5) as client:
        values = client.mget([f"k{i}" for i in writer.acked]) if writer.acked else []
    failed = [t for t in writer.failures if t >= fault_at]
    return {
        "acked_writes": len(writer.acked),
        "lost_acked_writes": sum(1 for v in values if v is None),
        "seconds_without_a_write": round((max(failed) - fault_at) if failed else 0.0, 2),
        "seconds_until_resumed": round(resumed_at - fault_at, 2),
    }
