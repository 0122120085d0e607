"""The ``cachetier`` CLI against a real API server: it patches CacheTiers as an SRE would.

No operator runs here: the CLI only changes the CacheTier (spec and annotations)
and reads it back; what the operator does with the change is tested elsewhere.
Each command runs as the installed console script in a subprocess, with
``KUBECONFIG`` pointing at the test cluster, exactly as a person runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cachetier import names

# The CLI against the API server alone: if the session's operator runs (an earlier test
# started it), it leaves these namespaces alone, so what the CLI shows is what it wrote.
pytestmark = pytest.mark.usefixtures("crd_installed", "operator_ignores_namespace")

TIER = "tasks-cache"


def cachetier_command() -> list[str]:
    """The console script next to this interpreter, else ``python -m cachetier.cli``."""
    script = Path(sys.executable).with_name("cachetier")
    if script.exists():
        return [str(script)]
    found = shutil.which("cachetier")
    return [found] if found else [sys.executable, "-m", "cachetier.cli"]


def run_cli(
    kubeconfig: str, *args: str, namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    env.pop("CACHETIER_DEBUG", None)
    ns = ["-n", namespace] if namespace else []
    return subprocess.run(
        [*cachetier_command(), *ns, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def custom_objects(kube_api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube_api)


def get_tier(kube_api: Any, namespace: str, name: str = TIER) -> dict[str, Any]:
    tier: dict[str, Any] = custom_objects(kube_api).get_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.PLURAL, name
    )
    return tier


def create_tier(kube_api: Any, namespace: str, rollout: dict[str, Any]) -> None:
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": TIER},
        "spec": {"rollout": rollout},
    }
    custom_objects(kube_api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.PLURAL, body
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    assert proc.stderr == ""
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("cachetier: error: ")
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip()


def test_cli_drives_the_rollout(kube_cluster: Any, kube_api: Any, namespace: str) -> None:
    kubeconfig = kube_cluster.kubeconfig
    create_tier(kube_api, namespace, {"percent": 10})

    out = ok(run_cli(kubeconfig, "rollout", "set", TIER, "25", namespace=namespace))
    assert out == f'cachetier "{TIER}" rollout set to 25% (enabled)\n'
    tier = get_tier(kube_api, namespace)
    assert (tier["spec"]["rollout"]["percent"], tier["spec"]["rollout"]["enabled"]) == (25, True)
    managers = {entry["manager"] for entry in tier["metadata"]["managedFields"]}
    assert names.CLI_FIELD_MANAGER in managers

    out = ok(run_cli(kubeconfig, "rollback", TIER, namespace=namespace))
    assert "rolled back" in out
    rollout = get_tier(kube_api, namespace)["spec"]["rollout"]
    assert (rollout["percent"], rollout["enabled"]) == (25, False)  # the percent is kept

    ok(run_cli(kubeconfig, "rollout", "set", TIER, "50%", namespace=namespace))
    rollout = get_tier(kube_api, namespace)["spec"]["rollout"]
    assert (rollout["percent"], rollout["enabled"]) == (50, True)

    ok(run_cli(kubeconfig, "rollout", "pause", TIER, namespace=namespace))
    annotations = get_tier(kube_api, namespace)["metadata"].get("annotations") or {}
    assert annotations.get(names.ANNOTATION_ROLLOUT_PAUSED) == "true"
    table = ok(run_cli(kubeconfig, "status", namespace=namespace)).splitlines()
    assert table[0].split() == [
        "NAME",
        "MODE",
        "PHASE",
        "READY",
        "ROLLOUT",
        "CONSUMERS",
        "HEALTH",
        "AGE",
    ]
    assert table[1].split()[:8] == [TIER, "standalone", "-", "-", "-/50%", "on", "paused", "-"]

    ok(run_cli(kubeconfig, "rollout", "resume", TIER, namespace=namespace))
    annotations = get_tier(kube_api, namespace)["metadata"].get("annotations") or {}
    assert names.ANNOTATION_ROLLOUT_PAUSED not in annotations
    detail = ok(run_cli(kubeconfig, "status", TIER, namespace=namespace))
    assert detail.splitlines()[1].startswith(TIER)
    assert "Rollout:  enabled, target 50%, granularity workload" in detail
    assert "paused" not in detail
    # The live view (not a terminal here: views separated, not the screen cleared).
    live = ok(
        run_cli(kubeconfig, "status", TIER, "--watch", "--count", "2", "--interval", "0.2",
                namespace=namespace)
    )  # fmt: skip
    views = live.split("\n---\n")
    assert len(views) == 2, live
    for view in views:
        assert view.startswith(f"CacheTier {namespace}/{TIER}  mode standalone"), view
        assert "Rollout    [" in view and "% of 50%" in view and "Events:" in view
    usage = run_cli(kubeconfig, "status", "--watch", namespace=namespace)
    assert usage.returncode == 2 and "needs a TIER" in usage.stderr


def test_namespace_defaults_to_the_kubeconfig_context(
    kube_cluster: Any, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    create_tier(kube_api, namespace, {"percent": 10})
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(kube_cluster.kubeconfig, kubeconfig)
    kube_cluster.run_kubectl(
        "config",
        "set-context",
        "--current",
        f"--namespace={namespace}",
        f"--kubeconfig={kubeconfig}",
    )
    ok(run_cli(str(kubeconfig), "rollback", TIER))
    assert get_tier(kube_api, namespace)["spec"]["rollout"]["enabled"] is False


def test_cli_errors_are_one_line(kube_cluster: Any, kube_api: Any, namespace: str) -> None:
    kubeconfig = kube_cluster.kubeconfig
    message = one_line_error(run_cli(kubeconfig, "rollback", "nope", namespace=namespace))
    assert message == f'cachetier: error: CacheTier "nope" not found in namespace "{namespace}"'
    message = one_line_error(run_cli(kubeconfig, "status", "nope", namespace=namespace))
    assert "not found" in message

    out = ok(run_cli(kubeconfig, "status", namespace=namespace))
    assert out == f"No CacheTiers found in namespace {namespace}.\n"

    create_tier(kube_api, namespace, {"percent": 50, "steps": [10, 50]})
    before = get_tier(kube_api, namespace)["metadata"]["resourceVersion"]
    message = one_line_error(
        run_cli(kubeconfig, "rollout", "set", TIER, "101", namespace=namespace), code=2
    )
    assert "0 to 100" in message
    # The API server's own rule (steps must not pass the target) comes back as one line.
    message = one_line_error(run_cli(kubeconfig, "rollout", "set", TIER, "25", namespace=namespace))
    assert message.startswith("cachetier: error: rejected by the API server: ")
    assert "rollout.steps must not go past rollout.percent" in message
    assert get_tier(kube_api, namespace)["metadata"]["resourceVersion"] == before


def test_forbidden_is_one_line(
    kube_cluster: Any, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    """A user without RBAC on cachetiers (a fresh ServiceAccount) gets one clear line."""
    create_tier(kube_api, namespace, {"percent": 10})
    kube_cluster.run_kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kube_cluster.run_kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    admin = json.loads(
        kube_cluster.run_kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
    )
    cluster = admin["clusters"][0]
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "nobody",
                        "context": {
                            "cluster": cluster["name"],
                            "user": "nobody",
                            "namespace": namespace,
                        },
                    }
                ],
                "current-context": "nobody",
            }
        )
    )
    message = one_line_error(run_cli(str(kubeconfig), "rollback", TIER))
    assert message.startswith("cachetier: error: forbidden: ")
    assert f"system:serviceaccount:{namespace}:nobody" in message
    assert get_tier(kube_api, namespace)["spec"]["rollout"].get("enabled", True) is True
