"""spec.redis.config on a running tier: live settings without a restart, restart-only
ones through a new pod, the operator's own directives refused by the API server.

A standalone tier is Ready; ``timeout`` and ``notify-keyspace-events`` (the keyspace
events the seed guide's invalidation needs) are added to the spec: ``CONFIG GET`` on
the running Redis shows them while the pod keeps its uid and restart count (a Normal
``ConfigApplied`` Event says what was set). Then ``databases`` (read only at start) is
added: the pod is replaced and the new one runs with it. ``requirepass`` is refused at
``kubectl apply`` with its name.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest
import redis

from cachetier import names
from tests.e2e.helpers import Operator, event_messages, get_json, kubectl_apply, wait_for

pytestmark = pytest.mark.timeout(400)

TIER = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: tuned, namespace: {ns}}}
spec:
  redis:
    maxmemory: 16mb
    persistence: {{mode: none}}
    config: {config}
"""


def _pod(cluster: Any, ns: str) -> dict[str, Any] | None:
    pod = get_json(cluster, "pod", ns, f"{names.statefulset('tuned')}-0")
    if not pod or not (pod.get("status") or {}).get("podIP"):
        return None
    statuses = pod["status"].get("containerStatuses") or [{}]
    return pod if all(c.get("ready") for c in statuses) else None


def _config(ip: str, password: str, *keys: str) -> dict[str, str]:
    with redis.Redis(
        host=ip, username=names.OPERATOR_USER, password=password, decode_responses=True,
        socket_timeout=2,
    ) as r:  # fmt: skip
        return dict(r.config_get(*keys))


def test_live_settings_apply_without_a_restart_and_restart_only_ones_roll_the_pod(
    kube_cluster: Any, namespace: str, operator: Operator
) -> None:
    ns = namespace
    kubectl_apply(kube_cluster, TIER.format(ns=ns, config="{}"))

    def ready() -> bool:
        st = (get_json(kube_cluster, names.PLURAL, ns, "tuned") or {}).get("status") or {}
        return st.get("phase") == "Ready"

    wait_for(ready, timeout=180, what="the tier Ready")
    pod = wait_for(lambda: _pod(kube_cluster, ns), timeout=60, what="the Redis pod")
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    auth = get_json(kube_cluster, "secret", ns, names.auth_secret("tuned")) or {}
    op_pw = base64.b64decode(auth["data"][names.OPERATOR_PASSWORD_KEY]).decode()

    live = json.dumps({"timeout": "300", "notify-keyspace-events": "Ex"})
    kubectl_apply(kube_cluster, TIER.format(ns=ns, config=live))
    wanted = {"timeout": "300", "notify-keyspace-events": "xE"}  # as Redis prints it
    wait_for(
        lambda: _config(ip, op_pw, *wanted) == wanted,
        timeout=90,
        what="the live settings in CONFIG GET",
    )
    pod = _pod(kube_cluster, ns)
    assert pod is not None and pod["metadata"]["uid"] == uid
    assert all(c.get("restartCount", 0) == 0 for c in pod["status"]["containerStatuses"])
    messages = wait_for(
        lambda: event_messages(kube_cluster, ns, "ConfigApplied"), timeout=30, what="the Event"
    )
    assert any("timeout" in m for m in messages), messages
    config_map = get_json(kube_cluster, "configmap", ns, names.config_map("tuned")) or {}
    assert "timeout 300" in config_map["data"][names.REDIS_CONF_KEY]  # for the next start

    restart_only = json.dumps({"timeout": "300", "notify-keyspace-events": "Ex", "databases": "4"})
    kubectl_apply(kube_cluster, TIER.format(ns=ns, config=restart_only))

    def replaced() -> dict[str, Any] | None:
        pod = _pod(kube_cluster, ns)
        return pod if pod and pod["metadata"]["uid"] != uid else None

    pod = wait_for(replaced, timeout=180, what="the pod replaced for a restart-only setting")
    new_ip = pod["status"]["podIP"]
    got = wait_for(
        lambda: _config(new_ip, op_pw, "databases", "timeout"),
        timeout=60,
        what="CONFIG GET on the new pod",
    )
    assert got == {"databases": "4", "timeout": "300"}


def test_a_directive_the_operator_owns_is_refused_with_its_name(
    kube_cluster: Any, namespace: str
) -> None:
    manifest = TIER.format(ns=namespace, config=json.dumps({"requirepass": "x", "hz": "20"}))
    proc = subprocess.run(
        [kube_cluster.kubectl, "--kubeconfig", kube_cluster.kubeconfig, "apply", "-f", "-"],
        input=manifest, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "redis.config: requirepass is set by the operator" in proc.stderr, proc.stderr
