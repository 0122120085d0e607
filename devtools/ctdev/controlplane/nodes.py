"""The cluster's nodes: one node agent process per Node.

One node (``cachetier-local``) is the cluster agent (``--role all``): besides its pods
it runs the Service proxy, keeps the cluster's names and provisions volumes. With
worker nodes (``ControlPlane(nodes=3)``, ``make cluster-up NODES=3``) that node is
tainted ``node-role.kubernetes.io/control-plane:NoSchedule`` -- as kind and kubeadm do
-- and the workers ``cachetier-a``, ``-b``, ``-c`` (zones ``a``, ``b``, ``c``) run
``--role node``: their own pods and heartbeats only.

Stopping a worker (:meth:`ControlPlane.stop_node`) is how a machine dies: the agent and
every process of its pods get SIGKILL at once, the Lease is no longer renewed, and the
node-lifecycle controller marks the Node NotReady and taints it; its pods are evicted
per their tolerations. Volumes live on this one machine's disk, so a pod that is
recreated on another node finds its data (as with network-attached storage).
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ctdev.nodeagent import NODE_NAME

from .common import CONTROL_PLANE_TAINT, NODE_AGENT

WORKER_PREFIX = "cachetier-"


@dataclass(frozen=True)
class NodeSpec:
    """One node agent to run."""

    name: str
    zone: str = ""
    role: str = "all"
    taints: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def component(self) -> str:
        """Its name among the cluster's processes (pid and log files)."""
        return NODE_AGENT if self.role == "all" else f"{NODE_AGENT}-{self.name}"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "zone": self.zone,
            "role": self.role,
            "taints": list(self.taints),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> NodeSpec:
        taints = data.get("taints") or []
        assert isinstance(taints, list)
        return cls(
            name=str(data["name"]),
            zone=str(data.get("zone") or ""),
            role=str(data.get("role") or "node"),
            taints=tuple(dict(t) for t in taints),
        )


def layout(workers: int) -> list[NodeSpec]:
    """The nodes of a cluster with ``workers`` worker nodes (0 or 1: one node does all)."""
    if workers <= 1:
        return [NodeSpec(NODE_NAME)]
    if workers > len(string.ascii_lowercase):
        raise ValueError("at most 26 nodes")
    cluster_node = NodeSpec(NODE_NAME, taints=(dict(CONTROL_PLANE_TAINT),))
    return [cluster_node, *(worker(letter) for letter in string.ascii_lowercase[:workers])]


def worker(zone: str, name: str | None = None) -> NodeSpec:
    """A worker node in ``zone`` (named ``cachetier-<zone>`` unless given a name)."""
    return NodeSpec(name or f"{WORKER_PREFIX}{zone}", zone=zone, role="node")


def agent_argv(spec: NodeSpec, kubeconfig: Path, state_dir: Path, names_file: Path) -> list[str]:
    """The node agent's command line."""
    argv = [
        sys.executable,
        "-m",
        "ctdev.nodeagent",
        "--kubeconfig",
        str(kubeconfig),
        "--state-dir",
        str(state_dir),
        "--node-name",
        spec.name,
        "--role",
        spec.role,
        "--names-file",
        str(names_file),
    ]
    if spec.zone:
        argv += ["--zone", spec.zone]
    for taint in spec.taints:
        value = f"={taint['value']}" if taint.get("value") else ""
        argv += ["--taint", f"{taint['key']}{value}:{taint['effect']}"]
    return argv
