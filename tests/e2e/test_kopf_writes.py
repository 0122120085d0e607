"""What kopf's per-object tools would write: the reason the runtime is our own.

A throwaway kopf operator (a subprocess, its own registry) with a ``@kopf.timer`` and an
``@kopf.on.update`` handler serves ConfigMaps of a test namespace. kopf then writes to
every object it serves: a finalizer of its own (timers and daemons require one) and a
diff-base annotation on each handled change. CacheTier's handlers are plain event
handlers: a tier carries only ``cachetier.io/finalizer`` and no kopf annotation
(asserted here on a real tier), and an idle tier costs no write
(``test_gitops_status.py``). README "Concurrency".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from cachetier import names
from tests.e2e.helpers import get_json, kubectl_apply, wait_for

PROBE_OPERATOR = textwrap.dedent(
    """
    import kopf

    @kopf.timer("configmaps", interval=1.0, labels={"kopf-writes": "probe"})
    def tick(**_):
        pass

    @kopf.on.update("configmaps", labels={"kopf-writes": "probe"})
    def changed(**_):
        pass
    """
)
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
KOPF_DIFF_BASE = "kopf.zalando.org/last-handled-configuration"


def _configmap(cluster: Any, ns: str) -> dict[str, Any]:
    return get_json(cluster, "configmap", ns, "probe") or {"metadata": {}}


def _finalizers(cluster: Any, ns: str) -> list[str]:
    return list(_configmap(cluster, ns)["metadata"].get("finalizers") or [])


def _annotations(cluster: Any, ns: str) -> dict[str, str]:
    return dict(_configmap(cluster, ns)["metadata"].get("annotations") or {})


def _observed(cluster: Any, ns: str, name: str) -> Any:
    return ((get_json(cluster, names.PLURAL, ns, name) or {}).get("status") or {}).get(
        "observedGeneration"
    )


def test_kopf_timers_and_change_handlers_write_to_every_object(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    script = tmp_path / "probe_operator.py"
    script.write_text(PROBE_OPERATOR)
    log = (tmp_path / "kopf.log").open("w")
    env = {**os.environ, "KUBECONFIG": kube_cluster.kubeconfig}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "--namespace",
            namespace,
            str(script),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        kube_cluster.run_kubectl(
            "-n", namespace, "create", "configmap", "probe", "--from-literal=k=v1"
        )
        kube_cluster.run_kubectl(
            "-n", namespace, "label", "configmap", "probe", "kopf-writes=probe"
        )
        wait_for(
            lambda: KOPF_FINALIZER in _finalizers(kube_cluster, namespace),
            timeout=60,
            what="kopf's own finalizer on the object its timer serves",
        )  # fmt: skip
        patch = json.dumps({"data": {"k": "v2"}})
        kube_cluster.run_kubectl("-n", namespace, "patch", "configmap", "probe", "-p", patch)
        wait_for(
            lambda: KOPF_DIFF_BASE in _annotations(kube_cluster, namespace),
            timeout=60,
            what="kopf's diff-base annotation after a handled change",
        )  # fmt: skip
        # Deleted while kopf runs, so kopf releases its finalizer.
        kube_cluster.run_kubectl("-n", namespace, "delete", "configmap", "probe", "--wait=false")
        wait_for(
            lambda: get_json(kube_cluster, "configmap", namespace, "probe") is None,
            timeout=60,
            what="the probe ConfigMap gone",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if get_json(kube_cluster, "configmap", namespace, "probe") is not None:
            # A failed run leaves kopf's finalizer: drop it, or the namespace never goes.
            kube_cluster.run_kubectl(
                "-n", namespace, "patch", "configmap", "probe", "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False,
            )  # fmt: skip


def test_a_tier_carries_no_kopf_state(kube_cluster: Any, namespace: str, operator: Any) -> None:
    kubectl_apply(
        kube_cluster,
        f"""
apiVersion: {names.API_VERSION}
kind: {names.KIND}
metadata: {{name: plain, namespace: {namespace}}}
spec:
  mode: external
  external: {{urlSecretRef: {{name: plain-url, key: url}}}}
""",
    )
    wait_for(
        lambda: _observed(kube_cluster, namespace, "plain") == 1,
        timeout=60,
        what="the tier reconciled",
    )  # fmt: skip
    tier = get_json(kube_cluster, names.PLURAL, namespace, "plain") or {}
    assert tier["metadata"].get("finalizers") == [names.FINALIZER]
    kopf_marks = [a for a in tier["metadata"].get("annotations") or {} if "kopf" in a]
    assert kopf_marks == []
    assert "kopf" not in (tier.get("status") or {})
