"""``ControlPlane``: start, reuse, inspect and stop one local cluster."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from . import components
from .binaries import Binaries, locate_binaries
from .common import (
    ADMIN_USER,
    APISERVER,
    CONTROL_PLANE_COMPONENTS,
    CONTROLLER_MANAGER,
    DEFAULT_STATE_DIR,
    ETCD,
    HOST,
    NODE_AGENT,
    NODE_AGENT_MAIN,
    PORT_NAMES,
    SCHEDULER,
    STOP_ORDER,
    ControlPlaneError,
    say,
)
from .http import http_get, insecure_context
from .nodes import NodeSpec, agent_argv, layout
from .pki import ensure_pki, kubeconfig, write_private
from .procs import free_ports, is_component, proc_cmdline, tail, terminate_pid


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the node agents.

    ``start()`` is idempotent (a healthy control plane in the same state directory is
    reused); ``stop()`` stops every process recorded in the state directory, including
    ones started by another process (e.g. ``python -m ctdev.controlplane up``).
    ``nodes`` > 1 adds that many worker nodes in zones a, b, c, ... (see ``nodes``).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        node_agent: bool = True,
        nodes: int = 1,
        keep_data: bool = False,
        timeout: float = 180.0,
        node_timeout: float = 60.0,
        log: Callable[[str], None] = say,
    ) -> None:
        self.state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        self.node_agent = node_agent
        self.nodes = nodes
        self.keep_data = keep_data
        self.timeout = timeout
        self.node_timeout = node_timeout
        self._log = log
        self._binaries: Binaries | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}

    # ---- paths and properties

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (``<state dir>/kubeconfig``)."""
        return self.state_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def names_file(self) -> Path:
        """The cluster's names, kept by the cluster agent, read by the workers."""
        return self.state_dir / NODE_AGENT / "cluster-names.json"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = locate_binaries()
        return self._binaries

    @property
    def kubectl_path(self) -> Path:
        """The kubectl built with the control plane."""
        return self.binaries.path("kubectl")

    @property
    def ports(self) -> dict[str, int]:
        """Ports of the running control plane (from state.json)."""
        if not self._ports:
            self._ports = dict(self._read_state().get("ports", {}))
        return self._ports

    @property
    def api_url(self) -> str:
        return f"https://{HOST}:{self.ports['apiserver']}"

    @property
    def node_agent_available(self) -> bool:
        return NODE_AGENT_MAIN.is_file()

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def agent_dir(self, spec: NodeSpec) -> Path:
        """A node agent's state directory."""
        return self.state_dir / spec.component

    def _pid_path(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ---- process bookkeeping

    def pid(self, name: str) -> int | None:
        """Pid of a running component, or None."""
        try:
            pid = int(self._pid_path(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if is_component(pid, name) else None

    def _stop_order(self) -> list[str]:
        """Worker agents first, then the cluster agent and the control plane."""
        workers = sorted(
            p.stem for p in self.pids_dir.glob(f"{NODE_AGENT}-*.pid") if p.stem != NODE_AGENT
        )
        return [*workers, *STOP_ORDER]

    def running(self) -> dict[str, int]:
        """Components that run now, with their pids."""
        found = {name: self.pid(name) for name in self._stop_order()}
        return {name: pid for name, pid in found.items() if pid is not None}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        log_path = self.log_path(name)
        if log_path.exists():
            log_path.replace(log_path.with_name(f"{name}.log.prev"))
        with open(log_path, "wb") as log:
            log.write(f"# {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[name] = proc
        self._pid_path(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def _check_alive(self, name: str) -> None:
        proc = self._procs.get(name)
        dead = proc.poll() is not None if proc is not None else self.pid(name) is None
        if dead:
            raise ControlPlaneError(
                f"{name} exited during startup; last lines of {self.log_path(name)}:\n"
                + tail(self.log_path(name))
            )

    def _wait_for(
        self, what: str, check: Callable[[], bool], watch: Sequence[str], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            if check():
                return
            for name in watch:
                self._check_alive(name)
            if time.monotonic() > deadline:
                logs = ", ".join(str(self.log_path(n)) for n in watch)
                raise ControlPlaneError(
                    f"timed out after {timeout:.0f}s waiting for {what}; see {logs}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _terminate(self, name: str, grace: float = 15.0) -> None:
        pid = self.pid(name)
        proc = self._procs.pop(name, None)
        if pid is None:
            if proc is not None:
                proc.poll()
            self._pid_path(name).unlink(missing_ok=True)
            return
        terminate_pid(pid, proc, grace)
        self._pid_path(name).unlink(missing_ok=True)
        self._log(f"stopped {name} (pid {pid})")

    def _stray_pids(self) -> list[tuple[str, int]]:
        """(component, pid) of live processes whose arguments point into this state
        directory but that no pid file names (pid files lost), in stop order."""
        d = self.state_dir
        prefixes = tuple(
            str(p)
            for p in (
                d / "pki",
                d / "etcd-data",
                d / "kubeconfig",
                d / f"{CONTROLLER_MANAGER}.kubeconfig",
                d / f"{SCHEDULER}.kubeconfig",
                *d.glob(f"{NODE_AGENT}*"),
            )
        )
        known = set(self.running().values())
        strays = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in known | {os.getpid()}:
                continue
            argv = proc_cmdline(int(entry.name))
            if not argv:
                continue
            name = NODE_AGENT if "ctdev.nodeagent" in argv else Path(argv[0]).name
            if name not in STOP_ORDER:
                continue
            values = (arg.split("=", 1)[-1] for arg in argv[1:])
            if any(v == p or v.startswith(p + os.sep) for v in values for p in prefixes):
                strays.append((name, int(entry.name)))
        return sorted(strays, key=lambda stray: STOP_ORDER.index(stray[0]))

    # ---- health

    def _ca_context(self, client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        if client_cert:
            ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def _api_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        return http_get(self.api_url + path, self._ca_context(client_cert=True), timeout)

    def apiserver_ready(self) -> bool:
        """True if ``GET /readyz`` answers ``ok`` (anonymously, CA-verified)."""
        if "apiserver" not in self.ports or not (self.pki_dir / "ca.crt").exists():
            return False
        status, body = http_get(self.api_url + "/readyz", self._ca_context())
        return status == 200 and body.strip() == b"ok"

    def _healthz(self, port_name: str) -> bool:
        status, body = http_get(
            f"https://{HOST}:{self.ports[port_name]}/healthz", insecure_context()
        )
        return status == 200 and body.strip() == b"ok"

    def _default_service_account(self) -> bool:
        status, _ = self._api_get("/api/v1/namespaces/default/serviceaccounts/default")
        return status == 200

    def ready_nodes(self) -> list[str]:
        """Names of the Nodes whose Ready condition is True."""
        status, body = self._api_get("/api/v1/nodes")
        if status != 200:
            return []
        names = []
        for node in json.loads(body).get("items", []):
            conditions = node.get("status", {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                names.append(node["metadata"]["name"])
        return names

    def is_healthy(self) -> bool:
        """All control-plane components run and the API server is ready."""
        running = self.running()
        return all(n in running for n in CONTROL_PLANE_COMPONENTS) and self.apiserver_ready()

    # ---- start / stop

    def start(self) -> Self:
        """Start everything (or reuse a healthy control plane); returns self."""
        with self._locked():
            self._ports = {}
            if self.is_healthy():
                self._log(f"control plane already running ({self.api_url}); nothing to do")
                try:
                    self._ensure_nodes()
                except BaseException:
                    self._terminate_nodes()  # leave the running control plane alone
                    raise
                return self
            try:
                self._start()
            except BaseException:
                self._log("startup failed; stopping what was started")
                self._stop()
                raise
        return self

    def _start(self) -> None:
        began = time.monotonic()
        if self.running() or self._stray_pids():
            self._log("control plane partially running; restarting it")
            self._stop()
        binaries = self.binaries
        for d in (self.logs_dir, self.pids_dir):
            d.mkdir(parents=True, exist_ok=True)
        ensure_pki(self.pki_dir)
        data_dir = self.state_dir / "etcd-data"
        if not self.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
        prev_ports = self._read_state().get("ports", {})
        allocated = free_ports(len(PORT_NAMES), [int(prev_ports.get(n, 0)) for n in PORT_NAMES])
        self._ports = dict(zip(PORT_NAMES, allocated, strict=True))
        self.state_file.unlink(missing_ok=True)
        self._write_kubeconfigs()
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        lay = components.Layout(self.state_dir, binaries, self._ports)
        p = self._ports

        self._log(f"starting etcd on {lay.etcd_url}")
        self._spawn(ETCD, components.etcd(lay, data_dir), env)
        self._wait_for(
            "etcd", lambda: http_get(lay.etcd_url + "/health", None)[0] == 200, [ETCD], self.timeout
        )
        self._log(f"starting kube-apiserver on https://{HOST}:{p['apiserver']}")
        self._spawn(APISERVER, components.apiserver(lay), env)
        self._wait_for(
            "kube-apiserver /readyz", self.apiserver_ready, [ETCD, APISERVER], self.timeout
        )
        self._log("kube-apiserver is ready")
        self._log(f"starting kube-controller-manager (healthz port {p['controller-manager']})")
        self._spawn(CONTROLLER_MANAGER, components.controller_manager(lay), env)
        self._log(f"starting kube-scheduler (healthz port {p['scheduler']})")
        self._spawn(SCHEDULER, components.scheduler(lay), env)
        everything = list(CONTROL_PLANE_COMPONENTS)
        self._wait_for(
            "controller manager and scheduler /healthz",
            lambda: self._healthz("controller-manager") and self._healthz("scheduler"),
            everything,
            self.timeout,
        )
        self._wait_for(
            "the default ServiceAccount (controller manager at work)",
            self._default_service_account,
            everything,
            self.timeout,
        )
        self._write_state(binaries)
        self._log(f"control plane ready in {time.monotonic() - began:.1f}s")
        self._ensure_nodes()

    def _write_kubeconfigs(self) -> None:
        server = f"https://{HOST}:{self._ports['apiserver']}"
        for filename, user, cert in (
            ("kubeconfig", ADMIN_USER, "admin"),
            (
                f"{CONTROLLER_MANAGER}.kubeconfig",
                "system:kube-controller-manager",
                CONTROLLER_MANAGER,
            ),
            (f"{SCHEDULER}.kubeconfig", "system:kube-scheduler", SCHEDULER),
        ):
            config = kubeconfig(server, self.pki_dir, user, cert)
            write_private(self.state_dir / filename, yaml.safe_dump(config, sort_keys=False))

    def _write_state(self, binaries: Binaries) -> None:
        state = {
            "apiserver": self.api_url,
            "kubeconfig": str(self.kubeconfig),
            "ports": self._ports,
            "binaries": {"k8s": str(binaries.k8s_bin), "etcd": str(binaries.etcd_bin)},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_private(self.state_file, json.dumps(state, indent=2) + "\n")

    # ---- nodes

    def node_specs(self) -> list[NodeSpec]:
        """The nodes this cluster runs (recorded at start, or extended by ``add_node``)."""
        recorded = self._read_state().get("nodes")
        if isinstance(recorded, list) and recorded:
            return [NodeSpec.from_json(n) for n in recorded]
        return layout(self.nodes)

    def _record_nodes(self, specs: list[NodeSpec]) -> None:
        state = self._read_state()
        state["nodes"] = [s.to_json() for s in specs]
        write_private(self.state_file, json.dumps(state, indent=2) + "\n")

    def _spec(self, name: str) -> NodeSpec:
        for spec in self.node_specs():
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.node_specs())
        raise ControlPlaneError(f"no node {name!r} in this cluster (nodes: {known})")

    def _ensure_nodes(self) -> None:
        if not self.node_agent or not self.node_agent_available:
            return
        specs = self.node_specs()
        if not self._read_state().get("nodes"):
            self._record_nodes(specs)
        for spec in specs:
            self._start_agent(spec, wait=False)
        try:
            self._wait_for(
                f"{len(specs)} Ready node(s)",
                lambda: {s.name for s in specs} <= set(self.ready_nodes()),
                [s.component for s in specs],
                self.node_timeout,
            )
        except ControlPlaneError as err:
            if any(self.pid(s.component) is None for s in specs):
                raise
            self._log(f"warning: node agents run but {err}")
        else:
            self._log(f"nodes ready: {', '.join(sorted(self.ready_nodes()))}")

    def _start_agent(self, spec: NodeSpec, *, wait: bool) -> None:
        if self.pid(spec.component) is not None:
            return
        agent_dir = self.agent_dir(spec)
        agent_dir.mkdir(parents=True, exist_ok=True)
        self.names_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        self._log(f"starting node agent {spec.name} (log {self.log_path(spec.component)})")
        self._spawn(
            spec.component, agent_argv(spec, self.kubeconfig, agent_dir, self.names_file), env
        )
        if wait:
            self._wait_for(
                f"node {spec.name} Ready",
                lambda: spec.name in self.ready_nodes(),
                [spec.component],
                self.node_timeout,
            )

    def _terminate_nodes(self) -> None:
        for name in self._stop_order():
            if name.startswith(NODE_AGENT):
                self._terminate(name)

    def add_node(self, spec: NodeSpec) -> None:
        """Start one more node agent (e.g. ``nodes.worker("b")``) and wait until Ready."""
        with self._locked():
            specs = [s for s in self.node_specs() if s.name != spec.name]
            self._record_nodes([*specs, spec])
            self._start_agent(spec, wait=True)

    def stop_node(self, name: str) -> None:
        """Stop a node the way a machine dies: SIGKILL its agent and every pod process."""
        from ctdev.nodeagent.process import kill_stale

        spec = self._spec(name)
        pid = self.pid(spec.component)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        kill_stale(self.agent_dir(spec))
        self._pid_path(spec.component).unlink(missing_ok=True)
        proc = self._procs.pop(spec.component, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)  # reaped: no zombie, no "still running" at exit
        self._log(f"node {name} stopped (agent and pod processes killed)")

    def start_node(self, name: str) -> None:
        """Start a stopped node again (its pods' processes restart) and wait until Ready."""
        self._start_agent(self._spec(name), wait=True)

    def remove_node(self, name: str) -> None:
        """Stop a worker's agent (pods' processes end) and forget it (the Node object stays
        until deleted through the API)."""
        spec = self._spec(name)
        with self._locked():
            self._terminate(spec.component)
            self._record_nodes([s for s in self.node_specs() if s.name != name])

    def stop(self) -> None:
        """Stop every component recorded in the state directory; idempotent."""
        with self._locked():
            self._stop()

    def _stop(self) -> None:
        for name in self._stop_order():
            self._terminate(name)
        for name, pid in self._stray_pids():
            self._log(f"stopping stray {name} (pid {pid}; its pid file was lost)")
            terminate_pid(pid, None, 15.0)
        self._procs.clear()

    def status(self) -> dict[str, Any]:
        """A summary of what runs (components, pids, ports, readiness, nodes)."""
        running = self.running()
        ready = self.apiserver_ready()
        summary: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig),
            "components": {name: running.get(name) for name in self._stop_order()},
            "strays": self._stray_pids(),
            "ports": self.ports,
            "apiserver_ready": ready,
            "ready_nodes": self.ready_nodes() if ready else [],
        }
        return summary

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
