"""The settings of one node agent (pure data; every other module may import it)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import NODE_NAME
from .container import Backoff
from .provisioner import STORAGE_CLASS

REPO_ROOT = Path(__file__).resolve().parents[3]
DEVTOOLS = Path(__file__).resolve().parents[2]

Role = Literal["all", "node"]
"""``all``: the node plus the cluster's services (Service proxy, names, storage
provisioner) -- the single node of a one-node cluster, or the control-plane node of a
larger one; ``node``: a worker that only runs its pods and heartbeats, and reads Service
and pod names from the names file the ``all`` agent keeps."""


def _default_capacity() -> dict[str, str]:
    return {"cpu": "2", "memory": "24Gi", "pods": "250", "ephemeral-storage": "100Gi"}


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one agent."""

    kubeconfig: str
    """Admin kubeconfig of the cluster."""
    state_dir: Path
    """Pod volumes, logs, claim directories, address assignments."""
    node_name: str = NODE_NAME
    """The Node to register."""
    host_ip: str = "127.0.0.1"
    """The node's address (status.hostIP of its pods)."""
    pod_cidr: str = "127.10.0.0/16"
    """Pod addresses."""
    service_cidr: str = "127.11.0.0/16"
    """Service proxy addresses."""
    capacity: dict[str, str] = field(default_factory=_default_capacity)
    """Node capacity (= allocatable)."""
    backoff: Backoff = field(default_factory=Backoff)
    """Container restart back-off."""
    fast_probe: float = 0.1
    """Probe retry interval until a readiness/startup probe first succeeds."""
    storage_class: str = STORAGE_CLASS
    """Name of the local StorageClass."""
    python: str = sys.executable
    """Interpreter for the demo app and the shims."""
    demo_app: Path = REPO_ROOT / "examples" / "demo-app" / "app.py"
    """The demo app's script."""
    role: Role = "all"
    """What this agent runs besides its pods (see ``Role``)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels of the Node (e.g. ``topology.kubernetes.io/zone``)."""
    taints: tuple[dict[str, str], ...] = ()
    """Taints of the Node (``{"key", "value", "effect"}``), set at registration."""
    names_file: Path | None = None
    """The cluster's names (``<name> -> address`` JSON): written by the ``all`` agent,
    read by ``node`` agents to resolve Service and pod names."""
    hosts_file: Path | None = None
    """A hosts file to keep pod and Service names in (see ``hostsfile``); with it, pod
    names (``<pod>.<svc>.<ns>.svc``) are resolved at run time instead of rewritten."""

    @property
    def allocatable(self) -> dict[str, str]:
        """Allocatable resources (same as capacity)."""
        return self.capacity

    @property
    def shim_dir(self) -> Path:
        """Directory of the PATH shims."""
        return self.state_dir / "shims"
