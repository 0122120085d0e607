"""TLS end to end: a standalone and a 3x1 cluster tier speaking only TLS.

Certificates are made here with openssl (a CA, and a server certificate naming the
tiers' Service and per-pod names). Both tiers must go Ready — for the cluster that
needs the operator's converge to speak TLS with the CA from the tier's Secret —, the
health probe must report them up (it too connects with that CA), a redis-py client
that follows the README (``from_url(REDIS_URL)`` plus the CA, host names checked)
reads and writes, and a plaintext connection to the same port gets nowhere.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Operator, get_json, kubectl_apply, pod_ips, wait_for

pytestmark = pytest.mark.timeout(600)

TIERS = """
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: tlscache, namespace: {ns}}}
spec:
  tls: {{enabled: true, secretName: redis-tls}}
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
---
apiVersion: cachetier.io/v1alpha1
kind: CacheTier
metadata: {{name: tlscluster, namespace: {ns}}}
spec:
  mode: cluster
  cluster: {{shards: 3, replicasPerShard: 1}}
  tls: {{enabled: true, secretName: redis-tls}}
  redis: {{maxmemory: 32mb, persistence: {{mode: none}}}}
"""


def _certificates(ns: str, out: Path) -> dict[str, str]:
    """A CA and a server certificate for the two tiers' names; PEM text by Secret key."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=cachetier-e2e-ca")  # fmt: skip
    sans = ",".join(
        [
            f"DNS:tlscache.{ns}.svc",
            f"DNS:tlscluster.{ns}.svc",
            f"DNS:*.tlscache-headless.{ns}.svc",
            f"DNS:*.tlscluster-headless.{ns}.svc",
        ]
    )
    (out / "ext.cnf").write_text(f"subjectAltName={sans}\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key",
            "-out", "tls.csr", "-subj", "/CN=redis")  # fmt: skip
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "tls.crt", "-extfile", "ext.cnf")  # fmt: skip
    return {k: (out / k).read_text() for k in ("tls.crt", "tls.key", "ca.crt")}


def _secret_text(cluster: Any, ns: str, name: str, key: str) -> str:
    secret = get_json(cluster, "secret", ns, name) or {}
    return base64.b64decode(secret["data"][key]).decode()


def test_tls_tiers_serve_only_tls_and_the_operator_speaks_it(
    kube_cluster: Any, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    import redis
    from redis.cluster import RedisCluster

    ns = namespace
    pem = _certificates(ns, tmp_path)
    kube_cluster.run_kubectl(
        "create", "secret", "generic", "redis-tls", "-n", ns,
        *(f"--from-file={k}={tmp_path / k}" for k in pem),
    )  # fmt: skip
    kubectl_apply(kube_cluster, TIERS.format(ns=ns))

    def ready(name: str) -> dict[str, Any] | None:
        tier = get_json(kube_cluster, "cachetier", ns, name) or {}
        st = tier.get("status") or {}
        return tier if st.get("phase") == "Ready" else None

    wait_for(lambda: ready("tlscache"), timeout=240, what="the TLS standalone tier Ready")
    tier = wait_for(lambda: ready("tlscluster"), timeout=300, what="the TLS cluster Ready")
    assert (tier["status"].get("cluster") or {}).get("state") == "ok", tier["status"]

    # The probe connects with the tier's CA too: both tiers are reported up.
    for name in ("tlscache", "tlscluster"):
        wait_for(
            lambda name=name: ((ready(name) or {}).get("status") or {}).get("health", {}).get("up"),
            timeout=60,
            what=f"{name} probed up over TLS",
        )

    ca = pem["ca.crt"]
    url = _secret_text(kube_cluster, ns, "tlscache-connection", "url")
    assert url.startswith("rediss://"), url
    with redis.from_url(url, ssl_ca_data=ca, socket_timeout=5) as client:
        client.set("greeting", "over tls", ex=60)
        assert client.get("greeting") == b"over tls"

    cluster_url = _secret_text(kube_cluster, ns, "tlscluster-connection", "url")
    with RedisCluster.from_url(cluster_url, ssl_ca_data=ca, socket_timeout=5) as rc:
        for i in range(50):
            rc.set(f"k{i}", str(i))
        assert all(rc.get(f"k{i}") == str(i).encode() for i in range(50))

    # Plaintext to the same port gets nowhere (the TLS port is the only one).
    password = _secret_text(kube_cluster, ns, "tlscache-connection", "password")
    ip = pod_ips(kube_cluster, ns, "tlscache")[0]
    plain = redis.Redis(host=ip, port=6379, password=password, socket_timeout=3)
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        plain.ping()
