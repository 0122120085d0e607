"""The agent: wires the Node heartbeat, informers, provisioner, service proxy and pod workers.

Threads: one per informer (pods of this node, ConfigMaps, Secrets, Services, claims,
volumes), the node heartbeat, the service proxy's event loop, and one worker per pod
(plus a reaper per running process). Informer handlers only dispatch to workers.

Service names: processes refer to ``<svc>.<ns>.svc[.cluster.local]`` (or a short name in a
URL); the agent rewrites those names, when it starts a process, to the Service's loopback
proxy address (ClusterIP Services; see ``svcproxy``) or to a pod address (headless
Services, ``<pod>.<svc>.<ns>.svc`` names). A name that does not resolve yet stays as
written; the process fails to resolve it and is restarted with back-off, re-resolving.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from . import names as names_mod
from .config import DEVTOOLS, AgentConfig
from .hostsfile import HostsFile, names_for
from .informer import Handler, Informer
from .ipam import AddressPool, default_lease_dir
from .kube import Kube, api_path
from .log import Log
from .node import NodeHeartbeat
from .objects import Obj, meta, namespace_of, pod_ready, selector_matches, uid_of
from .pod import PodWorker
from .process import MARKER_ENV, kill_stale
from .provisioner import Provisioner
from .shim import write_shims
from .svcproxy import ServiceProxy
from .volumes import VolumeLookup

_log = Log("nodeagent")
__all__ = ["Agent", "AgentConfig"]


class Agent:
    """The node agent."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.kube = Kube(config.kubeconfig)
        leases = default_lease_dir()
        owner = str(config.state_dir)
        self.pod_ips = AddressPool(
            config.pod_cidr, config.state_dir / "pod-ips.json", lease_dir=leases, owner=owner
        )
        self.svc_ips = AddressPool(
            config.service_cidr,
            config.state_dir / "service-ips.json",
            lease_dir=leases,
            owner=owner,
        )
        self.lookup: VolumeLookup = self
        self.serves_cluster = config.role == "all"
        self.node = NodeHeartbeat(
            self.kube,
            config.node_name,
            config.host_ip,
            config.capacity,
            labels=config.labels,
            taints=config.taints,
        )
        self.provisioner = Provisioner(self.kube, config.state_dir, config.storage_class)
        self.proxy = ServiceProxy(self.svc_ips, self.service_endpoints)
        hosts = config.hosts_file if self.serves_cluster else None
        self.hosts = HostsFile(hosts) if hosts else None
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False
        inf = self._informer
        self.configmaps = inf("configmaps", api_path("configmaps"), self._on_dependency)
        self.secrets = inf("secrets", api_path("secrets"), self._on_dependency)
        self.services = inf("services", api_path("services"), self._on_service)
        self.claims = inf("pvcs", api_path("persistentvolumeclaims"), self._on_claim)
        self.volumes = inf("pvs", api_path("persistentvolumes"), self._on_volume)
        mine = config.node_name
        self.pods = Informer(
            self.kube,
            api_path("pods"),
            name="pods",
            # The cluster's services (proxy endpoints, names) need every pod; a worker
            # only its own.
            query={} if self.serves_cluster else {"fieldSelector": f"spec.nodeName={mine}"},
            handler=self._on_pod,
        )

    def _informer(self, name: str, path: str, handler: Handler) -> Informer:
        return Informer(self.kube, path, name=name, handler=handler)

    # ---- lookups (volumes, env)

    def configmap(self, namespace: str, name: str) -> Obj | None:
        """A ConfigMap from the cache."""
        return self.configmaps.get(namespace, name)

    def secret(self, namespace: str, name: str) -> Obj | None:
        """A Secret from the cache."""
        return self.secrets.get(namespace, name)

    def pvc(self, namespace: str, name: str) -> Obj | None:
        """A PersistentVolumeClaim from the cache."""
        return self.claims.get(namespace, name)

    def pv(self, name: str) -> Obj | None:
        """A PersistentVolume from the cache."""
        return self.volumes.get("", name)

    # ---- lifecycle

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then stop every process."""
        cfg = self.config
        kill_stale(cfg.state_dir)
        write_shims(str(cfg.shim_dir), cfg.python, str(DEVTOOLS))
        delay = 0.5
        while not stop.is_set():
            try:
                self.node.register()
                if self.serves_cluster:
                    self.provisioner.ensure_storage_class()
                break
            except Exception as err:
                _log.warning("registration failed; retrying", error=str(err))
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        if stop.is_set():
            return
        self.node.start()
        if self.serves_cluster:
            self.proxy.start()
        deps = [self.configmaps, self.secrets, self.services, self.claims, self.volumes]
        for informer in deps:
            informer.start()
        for informer in deps:
            informer.synced.wait(30)
        self.pods.start()
        if self.pods.synced.wait(30):
            live = {uid_of(p) for p in self.pods.items()}
            for key in self.pod_ips.keys():  # noqa: SIM118 - not a dict
                if key not in live:
                    self.pod_ips.release(key)
            self._refresh_hosts()
        _log.info("agent ready", node=cfg.node_name, state_dir=str(cfg.state_dir))
        stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop pod processes and background threads (pods stay as they are in the API)."""
        with self._lock:
            self._stopping = True
            workers = list(self._workers.values())
        _log.info("agent stopping", pods=len(workers))
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.join(10)
        self.pods.stop()
        self.proxy.stop()
        self.node.stop()
        if self.hosts is not None:
            self.hosts.restore()

    # ---- informer handlers

    def _on_pod(self, kind: str, pod: Obj) -> None:
        self._refresh_hosts()
        if (pod.get("spec") or {}).get("nodeName") != self.config.node_name:
            return  # another node's pod (seen for names and endpoints only)
        uid = uid_of(pod)
        with self._lock:
            if self._stopping:
                return
            worker = self._workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.deleted()
                return
            if worker is not None:
                worker.update(pod)
                return
            if uid in self._finished:
                return
            worker = PodWorker(self, pod)
            self._workers[uid] = worker
        worker.start()

    def worker_done(self, uid: str) -> None:
        """A pod worker ended (pod deleted, or agent stopping)."""
        with self._lock:
            self._workers.pop(uid, None)
            if not self._stopping:
                self._finished.add(uid)
                self.pod_ips.release(uid)

    def _notify(self, namespace: str | None) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            if namespace is None or worker.ns == namespace:
                worker.dependency_changed()

    def _on_dependency(self, kind: str, obj: Obj) -> None:
        self._notify(namespace_of(obj))

    def _on_claim(self, kind: str, pvc: Obj) -> None:
        if self.serves_cluster:
            self.provisioner.on_claim(kind, pvc)
        self._notify(namespace_of(pvc))

    def _on_volume(self, kind: str, pv: Obj) -> None:
        if not self.serves_cluster:
            self._notify(None)
            return
        in_use = {
            str(((v.get("spec") or {}).get("hostPath") or {}).get("path", ""))
            for v in self.volumes.items()
            if uid_of(v) != uid_of(pv)
        }
        self.provisioner.on_volume(kind, pv, in_use)
        self._notify(None)

    def _on_service(self, kind: str, svc: Obj) -> None:
        if not self.serves_cluster:
            return
        if kind == "DELETED":
            self.proxy.remove(svc)
        else:
            if self.hosts is not None and _has_cluster_ip(svc):
                self.proxy.reserve(namespace_of(svc), meta(svc)["name"])
            self.proxy.update(svc)
        self._refresh_hosts()

    def _refresh_hosts(self) -> None:
        """Rewrite the names file and the hosts file (if any) from the caches."""
        if not self.serves_cluster or not self.pods.synced.is_set():
            return
        entries: dict[str, str] = {}
        for pod in self.pods.items():
            spec = pod.get("spec") or {}
            ip = (pod.get("status") or {}).get("podIP")
            named = ip and spec.get("hostname") and spec.get("subdomain")
            if named and not meta(pod).get("deletionTimestamp"):
                host, sub = spec["hostname"], spec["subdomain"]
                for name in names_for(sub, namespace_of(pod), host):
                    entries[name] = str(ip)
        for svc in self.services.items():
            ns, name = namespace_of(svc), meta(svc)["name"]
            addr = (
                self.proxy.reserve(ns, name)
                if _has_cluster_ip(svc)
                else self._headless_address(svc)
            )
            if addr:
                for dns in names_for(name, ns):
                    entries[dns] = addr
        if self.config.names_file is not None:
            _write_names(self.config.names_file, entries)
        if self.hosts is not None:
            self.hosts.update(entries)

    # ---- services and names

    def service_endpoints(self, svc: Obj, port: Obj) -> list[tuple[str, int]]:
        """Ready pods behind a Service's selector, with the port's target port."""
        selector = (svc.get("spec") or {}).get("selector") or {}
        target = port.get("targetPort", port.get("port"))
        out = []
        for pod in self.pods.items(namespace_of(svc)):
            status = pod.get("status") or {}
            if meta(pod).get("deletionTimestamp") or not status.get("podIP"):
                continue
            if not selector_matches(selector, meta(pod).get("labels") or {}) or not pod_ready(pod):
                continue
            number = _container_port(pod, target)
            if number:
                out.append((str(status["podIP"]), number))
        return out

    def resolve_hosts(self, namespace: str, candidates: set[str]) -> dict[str, str]:
        """Addresses for the Service names among ``candidates`` (unresolvable ones omitted)."""
        if not self.serves_cluster:
            return self._resolve_from_names(namespace, candidates)
        out: dict[str, str] = {}
        for candidate in sorted(candidates):
            parsed = names_mod.parse(candidate, namespace)
            if parsed is None:
                continue
            svc = self.services.get(parsed.namespace, parsed.service)
            full = candidate.rstrip(".").endswith((".svc", ".svc.cluster.local"))
            spec = (svc or {}).get("spec") or {}
            ip: str | None = None
            if parsed.host and self.hosts is not None:
                ip = None  # in the hosts file: resolved when used, so it follows the pod
            elif parsed.host:
                ip = self._pod_address(parsed.namespace, parsed.host, parsed.service)
            elif svc is None:
                # Not created yet: reserve its address; it works once the Service exists.
                # (Only full names: a short URL host may not be a Service at all.)
                ip = self.proxy.reserve(parsed.namespace, parsed.service) if full else None
            elif spec.get("type") == "ExternalName":
                ip = None
            elif spec.get("clusterIP") in (None, "", "None"):
                ip = self._headless_address(svc) or self.proxy.ensure(svc)
            else:
                ip = self.proxy.ensure(svc)
            if ip:
                out[candidate] = ip
        if out:
            _log.info("names resolved", namespace=namespace, hosts=out)
        return out

    def _resolve_from_names(self, namespace: str, candidates: set[str]) -> dict[str, str]:
        """A worker's lookup: the names the cluster agent published (pod names stay as
        written when a hosts file resolves them at run time)."""
        names = _read_names(self.config.names_file)
        out: dict[str, str] = {}
        for candidate in sorted(candidates):
            parsed = names_mod.parse(candidate, namespace)
            if parsed is None or (parsed.host and self.config.hosts_file is not None):
                continue
            base = f"{parsed.service}.{parsed.namespace}.svc"
            full = f"{parsed.host}.{base}" if parsed.host else base
            if full in names:
                out[candidate] = names[full]
        if out:
            _log.info("names resolved", namespace=namespace, hosts=out)
        return out

    def _pod_address(self, namespace: str, host: str, subdomain: str) -> str | None:
        for pod in self.pods.items(namespace):
            spec = pod.get("spec") or {}
            named = spec.get("hostname") == host and spec.get("subdomain") == subdomain
            if named or meta(pod).get("name") == host:
                ip = (pod.get("status") or {}).get("podIP")
                if ip and not meta(pod).get("deletionTimestamp"):
                    return str(ip)
        return None

    def _headless_address(self, svc: Obj) -> str | None:
        selector = (svc.get("spec") or {}).get("selector") or {}
        pods = [
            p
            for p in self.pods.items(namespace_of(svc))
            if selector_matches(selector, meta(p).get("labels") or {})
            and (p.get("status") or {}).get("podIP")
            and not meta(p).get("deletionTimestamp")
        ]
        pods.sort(key=lambda p: not pod_ready(p))
        return str(pods[0]["status"]["podIP"]) if pods else None

    # ---- exec probes

    def run_exec(self, argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> bool:
        """Run an exec probe's (already local) command; True on exit code 0."""
        try:
            proc = subprocess.Popen(
                argv,
                env={**env, MARKER_ENV: str(self.config.state_dir)},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            return False
        try:
            return proc.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False


def _container_port(pod: Obj, target: object) -> int:
    if isinstance(target, int):
        return target
    text = str(target)
    if text.isdigit():
        return int(text)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == text:
                return int(port["containerPort"])
    return 0


def _has_cluster_ip(svc: Obj) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") != "ExternalName" and spec.get("clusterIP") not in (None, "", "None")


def _write_names(path: Path, entries: dict[str, str]) -> None:
    text = json.dumps(entries, indent=1, sort_keys=True) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_names(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
