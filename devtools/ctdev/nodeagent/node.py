"""The agent's Node: registration, the Ready heartbeat, and the Lease in kube-node-lease.

The node-lifecycle controller treats a node as healthy while its Lease is renewed (every
``lease_interval`` seconds, duration 40 s); the Ready condition's heartbeat is refreshed
less often, as the kubelet does (``status_interval``).
"""

from __future__ import annotations

import platform
import threading

from .kube import STRATEGIC, ApiError, Kube, api_path
from .log import Log
from .objects import Obj, now_micro, now_rfc3339

_log = Log("nodeagent.node")
LEASE_DURATION = 40
KUBELET_VERSION = "v1.36.3"


def build_node(
    name: str,
    host_ip: str,
    capacity: dict[str, str],
    labels: dict[str, str] | None = None,
    taints: tuple[dict[str, str], ...] = (),
) -> Obj:
    """The Node object the agent registers (with status, accepted on create)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "node.kubernetes.io/instance-type": "cachetier-local",
                "cachetier.io/node-agent": "true",
                **(labels or {}),
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": [dict(t) for t in taints]} if taints else {},
        "status": build_node_status(name, host_ip, capacity, now_rfc3339())["status"],
    }


def build_node_status(name: str, host_ip: str, capacity: dict[str, str], since: str) -> Obj:
    """A status patch: Ready with a fresh heartbeat, no pressure, capacity, addresses."""
    now = now_rfc3339()

    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        }

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "cachetier node agent is posting ready"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": host_ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": platform.release(),
                "osImage": "cachetier node agent (local processes)",
                "containerRuntimeVersion": "cachetier-local://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": arch,
            },
        }
    }


class NodeHeartbeat:
    """Registers the Node and keeps it healthy from a daemon thread."""

    def __init__(
        self,
        kube: Kube,
        name: str,
        host_ip: str,
        capacity: dict[str, str],
        *,
        labels: dict[str, str] | None = None,
        taints: tuple[dict[str, str], ...] = (),
        lease_interval: float = 5.0,
        status_interval: float = 20.0,
    ) -> None:
        self._kube = kube
        self._labels = dict(labels or {})
        self._taints = taints
        self.name = name
        self._host_ip = host_ip
        self._capacity = capacity
        self._lease_interval = lease_interval
        self._status_interval = status_interval
        self._since = now_rfc3339()
        self._uid = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-heartbeat", daemon=True)

    def register(self) -> None:
        """Create the Node, or refresh its status when it exists."""
        path = api_path("nodes", name=self.name)
        try:
            body = build_node(self.name, self._host_ip, self._capacity, self._labels, self._taints)
            node = self._kube.create(api_path("nodes"), body)
            _log.info("node registered", node=self.name)
        except ApiError as err:
            if err.status != 409:
                raise
            node = self._kube.get(path) or {}
            _log.info("node exists; taking it over", node=self.name)
            if self._labels:
                node = self._kube.patch(path, {"metadata": {"labels": self._labels}}) or node
        self._uid = str(node.get("metadata", {}).get("uid", ""))
        self._patch_status()
        self._renew_lease()

    def _patch_status(self) -> None:
        body = build_node_status(self.name, self._host_ip, self._capacity, self._since)
        self._kube.patch(api_path("nodes", name=self.name, sub="status"), body, STRATEGIC)

    def _renew_lease(self) -> None:
        group = "coordination.k8s.io/v1"
        path = api_path("leases", "kube-node-lease", self.name, group=group)
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_DURATION,
            "renewTime": now_micro(),
        }
        if self._kube.get(path) is None:
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self._uid}
            body = {
                "metadata": {"name": self.name, "ownerReferences": [owner] if self._uid else []},
                "spec": spec,
            }
            self._kube.create(api_path("leases", "kube-node-lease", group=group), body)
        else:
            self._kube.patch(path, {"spec": spec})

    def start(self) -> None:
        """Start the heartbeat thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop heartbeats (the node goes NotReady after the lease expires)."""
        self._stop.set()

    def _run(self) -> None:
        last_status = 0.0
        elapsed = 0.0
        while not self._stop.wait(self._lease_interval):
            elapsed += self._lease_interval
            try:
                self._renew_lease()
                if elapsed - last_status >= self._status_interval:
                    self._patch_status()
                    last_status = elapsed
            except ApiError as err:
                _log.warning("heartbeat failed", node=self.name, error=str(err))
                if err.status == 404:  # someone deleted the Node: register again
                    self._safe_register()
            except Exception as err:
                _log.warning("heartbeat failed", node=self.name, error=str(err))

    def _safe_register(self) -> None:
        try:
            self.register()
        except Exception as err:
            _log.warning("re-registration failed", node=self.name, error=str(err))
