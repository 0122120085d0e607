"""A real, local Kubernetes control plane for development and end-to-end tests.

It runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler as
ordinary background processes bound to 127.0.0.1 only (no Docker, no kind),
plus the project's node agent (``python -m ctdev.nodeagent``) when that module
exists. The binaries come from ``hack/build-control-plane.sh``, which builds
them from the Go module proxy into a cache outside the repository and is a
no-op once they exist.

Command line::

    python -m ctdev.controlplane up [--dir .local] [--nodes 3] [--keep-data] [--no-node-agent]
    python -m ctdev.controlplane status [--dir .local]
    python -m ctdev.controlplane node stop|start cachetier-a [--dir .local]
    python -m ctdev.controlplane down [--dir .local]

``up`` prints progress on stderr and ``export KUBECONFIG=<dir>/kubeconfig``
on stdout, so ``eval "$(python -m ctdev.controlplane up)"`` works. It is
idempotent: a healthy control plane is left alone. ``down`` stops everything
``up`` started (SIGTERM, then SIGKILL) and is idempotent too.

State directory layout (default ``<repo>/.local``)::

    kubeconfig            admin kubeconfig (O=system:masters), certificates embedded
    state.json            ports, binaries and URLs of the running control plane
    pki/                  CA, serving and client certificates, service-account keys
    etcd-data/            etcd data (wiped on a fresh ``up`` unless --keep-data)
    logs/<component>.log  one log per component
    pids/<component>.pid  one pid per component
    nodeagent/            the cluster agent's state directory (cluster-names.json)
    nodeagent-<node>/     a worker node's agent state directory

Modules: ``common`` (names, paths, the error type), ``binaries`` (cache and build),
``pki`` (certificates, kubeconfigs), ``procs`` (ports, /proc, stopping process groups),
``http`` (health GETs), ``components`` (each component's command line), ``nodes`` (the
node agents: one per Node, roles, zones), ``cluster`` (``ControlPlane``), ``cli``.

Python API (for tests)::

    with ControlPlane(Path(".local/e2e")) as cp:
        subprocess.run([cp.kubectl_path, "--kubeconfig", cp.kubeconfig, "get", "ns"])
"""

from .binaries import Binaries, kubectl_binary, locate_binaries
from .cluster import ControlPlane
from .common import DEFAULT_STATE_DIR, REPO_ROOT, ZONE_LABEL, ControlPlaneError
from .nodes import NodeSpec, worker

__all__ = [
    "DEFAULT_STATE_DIR",
    "REPO_ROOT",
    "ZONE_LABEL",
    "Binaries",
    "ControlPlane",
    "ControlPlaneError",
    "NodeSpec",
    "kubectl_binary",
    "locate_binaries",
    "worker",
]
