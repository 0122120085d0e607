"""Names, paths and constants of the local cluster, and its error type."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[3]
BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-control-plane.sh"
DEFAULT_STATE_DIR: Final = REPO_ROOT / ".local"
NODE_AGENT_MAIN: Final = Path(__file__).resolve().parents[1] / "nodeagent" / "__main__.py"

HOST: Final = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE: Final = "10.0.0.0/16"  # room for thousands of Services (bench_scale)
FIRST_SERVICE_IP: Final = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
CLUSTER_NAME: Final = "cachetier-local"
ADMIN_USER: Final = "cachetier-admin"

ETCD: Final = "etcd"
APISERVER: Final = "kube-apiserver"
CONTROLLER_MANAGER: Final = "kube-controller-manager"
SCHEDULER: Final = "kube-scheduler"
NODE_AGENT: Final = "nodeagent"
CONTROL_PLANE_COMPONENTS: Final = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)
# Stop order: dependants first, etcd last.
STOP_ORDER: Final = (NODE_AGENT, SCHEDULER, CONTROLLER_MANAGER, APISERVER, ETCD)
K8S_BINARIES: Final = (APISERVER, CONTROLLER_MANAGER, SCHEDULER, "kubectl")

# Ports that state.json records, in the order they are allocated.
PORT_NAMES: Final = ("etcd-client", "etcd-peer", "apiserver", "controller-manager", "scheduler")


NODE_LEASE_GRACE: Final = "20s"
"""kube-controller-manager's --node-monitor-grace-period: a node whose Lease is not
renewed for this long is marked NotReady and tainted (the agents renew every 5 s)."""
CONTROL_PLANE_TAINT: Final = {
    "key": "node-role.kubernetes.io/control-plane",
    "effect": "NoSchedule",
}
"""Set on the cluster agent's node when worker nodes exist (as kind and kubeadm do)."""
ZONE_LABEL: Final = "topology.kubernetes.io/zone"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started, or checked."""


def say(message: str) -> None:
    """Progress on stderr."""
    print(f"[control-plane {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
