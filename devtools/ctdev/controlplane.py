"""A real, local Kubernetes control plane for development and end-to-end tests.

It runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler as
ordinary background processes bound to 127.0.0.1 only (no Docker, no kind),
plus the project's node agent (``python -m ctdev.nodeagent``) when that module
exists. The binaries come from ``hack/build-control-plane.sh``, which builds
them from the Go module proxy into a cache outside the repository and is a
no-op once they exist.

Command line::

    python -m ctdev.controlplane up [--dir .local] [--keep-data] [--no-node-agent]
    python -m ctdev.controlplane status [--dir .local]
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
    nodeagent/            the node agent's state directory

Python API (for tests)::

    with ControlPlane(Path(".local/e2e")) as cp:
        subprocess.run([cp.kubectl_path, "--kubeconfig", cp.kubeconfig, "get", "ns"])
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import yaml

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-control-plane.sh"
DEFAULT_STATE_DIR: Final = REPO_ROOT / ".local"
NODE_AGENT_MAIN: Final = Path(__file__).resolve().parent / "nodeagent" / "__main__.py"

HOST: Final = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE: Final = "10.0.0.0/24"
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


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started, or checked."""


def _say(message: str) -> None:
    print(f"[control-plane {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class Binaries:
    """Directories holding the Kubernetes and etcd binaries."""

    k8s_bin: Path
    etcd_bin: Path

    def path(self, name: str) -> Path:
        """Absolute path of one binary (``etcd``, ``kube-apiserver``, ``kubectl``, ...)."""
        return (self.etcd_bin if name == ETCD else self.k8s_bin) / name

    def missing(self) -> list[str]:
        """Names of the binaries that are not present and executable."""
        names = [ETCD, *K8S_BINARIES]
        return [n for n in names if not os.access(self.path(n), os.X_OK)]


def _cache_dir() -> Path:
    return Path(os.environ.get("CACHETIER_CACHE", str(Path.home() / ".cache" / "cachetier")))


def locate_binaries() -> Binaries:
    """Return the binary directories, building the binaries first if they are missing.

    Runs ``hack/build-control-plane.sh`` (a no-op when everything is cached; a cold
    build takes tens of minutes and prints progress on stderr). Concurrent callers
    are serialised with a lock file in the cache directory.
    """
    if not BUILD_SCRIPT.is_file():
        raise ControlPlaneError(f"build script not found: {BUILD_SCRIPT}")
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines or ":" not in lines[-1]:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed (exit {proc.returncode}); "
            "the Kubernetes binaries are missing and could not be built (needs Go >= 1.26 "
            "and access to the Go module proxy); see its output above"
        )
    k8s_bin, _, etcd_bin = lines[-1].rpartition(":")
    binaries = Binaries(Path(k8s_bin), Path(etcd_bin))
    if missing := binaries.missing():
        raise ControlPlaneError(
            f"build script reported {lines[-1]} but these binaries are missing: "
            + ", ".join(missing)
        )
    return binaries


def kubectl_binary() -> Path:
    """Path of the kubectl built together with the control plane (built if missing)."""
    return locate_binaries().path("kubectl")


# --------------------------------------------------------------------------- PKI

# Bump when the set of files ensure_pki() creates changes: older PKI is then recreated.
_PKI_LAYOUT: Final = "2"

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
"""

_APISERVER_SANS = (
    "IP:127.0.0.1",
    f"IP:{FIRST_SERVICE_IP}",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)

# name -> (issuing CA, subject, extendedKeyUsage, subjectAltName or "")
_LEAF_CERTS: Final = {
    "apiserver": ("ca", "/CN=kube-apiserver", "serverAuth", ",".join(_APISERVER_SANS)),
    "admin": ("ca", f"/O=system:masters/CN={ADMIN_USER}", "clientAuth", ""),
    CONTROLLER_MANAGER: ("ca", "/CN=system:kube-controller-manager", "clientAuth", ""),
    SCHEDULER: ("ca", "/CN=system:kube-scheduler", "clientAuth", ""),
    # The API server's identity towards aggregated API servers (request-header auth).
    "front-proxy-client": ("front-proxy-ca", "/CN=front-proxy-client", "clientAuth", ""),
}


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def ensure_pki(pki: Path) -> None:
    """Create the CA, certificates and service-account keys in ``pki`` unless present."""
    marker = pki / ".complete"
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == _PKI_LAYOUT:
            return
    if shutil.which("openssl") is None:
        raise ControlPlaneError("the openssl command is required to create certificates")
    _say(f"creating certificates in {pki}")
    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True)
    os.chmod(pki, 0o700)
    (pki / "openssl.cnf").write_text(_OPENSSL_CONFIG)
    days = "3650"
    for ca, cn in (("ca", "cachetier-local-ca"), ("front-proxy-ca", "cachetier-front-proxy-ca")):
        _openssl("genrsa", "-out", f"{ca}.key", "2048", cwd=pki)
        _openssl(
            "req", "-x509", "-new", "-sha256", "-key", f"{ca}.key", "-days", days,
            "-subj", f"/CN={cn}", "-config", "openssl.cnf", "-extensions", "v3_ca",
            "-out", f"{ca}.crt", cwd=pki,
        )  # fmt: skip
    for name, (ca, subject, usage, sans) in _LEAF_CERTS.items():
        ext = [
            "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage = {usage}",
            "authorityKeyIdentifier = keyid",
        ]
        if sans:
            ext.append(f"subjectAltName = {sans}")
        (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
        _openssl(
            "req", "-new", "-key", f"{name}.key", "-subj", subject, "-config", "openssl.cnf",
            "-out", f"{name}.csr", cwd=pki,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-sha256", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
            "-CAkey", f"{ca}.key", "-set_serial", str(secrets.randbits(63)), "-days", days,
            "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki,
        )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        os.chmod(key, 0o600)
    marker.write_text(_PKI_LAYOUT + "\n")


# --------------------------------------------------------------------------- helpers


def _free_ports(count: int, preferred: Sequence[int] = ()) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1, reusing ``preferred`` if free."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sockets.append(sock)
            want = preferred[i] if i < len(preferred) else 0
            try:
                sock.bind((HOST, want))
            except OSError:
                sock.bind((HOST, 0))
            sock.listen(1)
            ports.append(int(sock.getsockname()[1]))
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _proc_cmdline(pid: int) -> list[str] | None:
    """Command line of a live (non-zombie) process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_component(pid: int, name: str) -> bool:
    """True if ``pid`` is alive and is the component ``name`` (guards against pid reuse)."""
    argv = _proc_cmdline(pid)
    if not argv:
        return False
    if name == NODE_AGENT:
        return "ctdev.nodeagent" in argv
    return Path(argv[0]).name == name


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _http_get(url: str, context: ssl.SSLContext | None, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` without any proxy; returns (status, body), status 0 on connection errors."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        with contextlib.closing(err):
            return int(err.code), err.read()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _kubeconfig(server: str, pki: Path, user: str, cert: str) -> dict[str, Any]:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(f"{cert}.crt"),
                    "client-key-data": b64(f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- control plane


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler (and the node agent).

    ``start()`` is idempotent (a healthy control plane in the same state directory is
    reused); ``stop()`` stops every process recorded in the state directory, including
    ones started by another process (e.g. ``python -m ctdev.controlplane up``).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        node_agent: bool = True,
        keep_data: bool = False,
        timeout: float = 180.0,
        node_timeout: float = 60.0,
        log: Callable[[str], None] = _say,
    ) -> None:
        self.state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        self.node_agent = node_agent
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
        return pid if _is_component(pid, name) else None

    def running(self) -> dict[str, int]:
        """Components that run now, with their pids."""
        found = {name: self.pid(name) for name in STOP_ORDER}
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
                + _tail(self.log_path(name))
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
        _terminate_pid(pid, proc, grace)
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
                d / NODE_AGENT,
            )
        )
        known = set(self.running().values())
        strays = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in known | {os.getpid()}:
                continue
            argv = _proc_cmdline(int(entry.name))
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
        return _http_get(self.api_url + path, self._ca_context(client_cert=True), timeout)

    def apiserver_ready(self) -> bool:
        """True if ``GET /readyz`` answers ``ok`` (anonymously, CA-verified)."""
        if "apiserver" not in self.ports or not (self.pki_dir / "ca.crt").exists():
            return False
        status, body = _http_get(self.api_url + "/readyz", self._ca_context())
        return status == 200 and body.strip() == b"ok"

    def _healthz(self, port_name: str) -> bool:
        status, body = _http_get(
            f"https://{HOST}:{self.ports[port_name]}/healthz", _insecure_context()
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
                    self._ensure_node_agent()
                except BaseException:
                    self._terminate(NODE_AGENT)  # leave the running control plane alone
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
        previous = self._read_state()
        data_dir = self.state_dir / "etcd-data"
        if not self.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
        prev_ports = previous.get("ports", {})
        allocated = _free_ports(len(PORT_NAMES), [int(prev_ports.get(n, 0)) for n in PORT_NAMES])
        self._ports = dict(zip(PORT_NAMES, allocated, strict=True))
        self.state_file.unlink(missing_ok=True)
        self._write_kubeconfigs()
        pki = self.pki_dir
        p = self._ports
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

        etcd_client = f"http://{HOST}:{p['etcd-client']}"
        etcd_peer = f"http://{HOST}:{p['etcd-peer']}"
        self._log(f"starting etcd on {etcd_client}")
        self._spawn(
            ETCD,
            [
                str(binaries.path(ETCD)),
                "--name=default",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_client}",
                f"--advertise-client-urls={etcd_client}",
                f"--listen-peer-urls={etcd_peer}",
                f"--initial-advertise-peer-urls={etcd_peer}",
                f"--initial-cluster=default={etcd_peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            env,
        )
        self._wait_for(
            "etcd",
            lambda: _http_get(etcd_client + "/health", None)[0] == 200,
            [ETCD],
            self.timeout,
        )

        self._log(f"starting kube-apiserver on https://{HOST}:{p['apiserver']}")
        self._spawn(
            APISERVER,
            [
                str(binaries.path(APISERVER)),
                f"--etcd-servers={etcd_client}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={p['apiserver']}",
                f"--cert-dir={pki / 'apiserver-generated'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=true",
                "--endpoint-reconciler-type=none",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                "--allow-privileged=true",
                "--profiling=false",
            ],
            env,
        )
        self._wait_for(
            "kube-apiserver /readyz", self.apiserver_ready, [ETCD, APISERVER], self.timeout
        )
        self._log("kube-apiserver is ready")

        self._log(f"starting kube-controller-manager (healthz port {p['controller-manager']})")
        kcm_kubeconfig = str(self.state_dir / f"{CONTROLLER_MANAGER}.kubeconfig")
        self._spawn(
            CONTROLLER_MANAGER,
            [
                str(binaries.path(CONTROLLER_MANAGER)),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={p['controller-manager']}",
                f"--cert-dir={pki / 'controller-manager-generated'}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--flex-volume-plugin-dir={self.state_dir / 'flexvolume'}",
                "--controllers=*",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--profiling=false",
            ],
            env,
        )
        self._log(f"starting kube-scheduler (healthz port {p['scheduler']})")
        sched_kubeconfig = str(self.state_dir / f"{SCHEDULER}.kubeconfig")
        self._spawn(
            SCHEDULER,
            [
                str(binaries.path(SCHEDULER)),
                f"--kubeconfig={sched_kubeconfig}",
                f"--authentication-kubeconfig={sched_kubeconfig}",
                f"--authorization-kubeconfig={sched_kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={p['scheduler']}",
                f"--cert-dir={pki / 'scheduler-generated'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            env,
        )
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
        self._ensure_node_agent()

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
            config = _kubeconfig(server, self.pki_dir, user, cert)
            _write_private(self.state_dir / filename, yaml.safe_dump(config, sort_keys=False))

    def _write_state(self, binaries: Binaries) -> None:
        state = {
            "apiserver": self.api_url,
            "kubeconfig": str(self.kubeconfig),
            "ports": self._ports,
            "binaries": {"k8s": str(binaries.k8s_bin), "etcd": str(binaries.etcd_bin)},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_private(self.state_file, json.dumps(state, indent=2) + "\n")

    def _ensure_node_agent(self) -> None:
        if not self.node_agent or not self.node_agent_available:
            return
        if self.pid(NODE_AGENT) is not None:
            return
        agent_dir = self.state_dir / NODE_AGENT
        agent_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        self._log(f"starting node agent (log {self.log_path(NODE_AGENT)})")
        argv = [sys.executable, "-m", "ctdev.nodeagent", "--kubeconfig", str(self.kubeconfig)]
        self._spawn(NODE_AGENT, [*argv, "--state-dir", str(agent_dir)], env)
        try:
            self._wait_for(
                "a Ready node", lambda: bool(self.ready_nodes()), [NODE_AGENT], self.node_timeout
            )
        except ControlPlaneError as err:
            if self.pid(NODE_AGENT) is None:
                raise
            self._log(f"warning: node agent runs but {err}")
        else:
            self._log(f"node ready: {', '.join(self.ready_nodes())}")

    def stop(self) -> None:
        """Stop every component recorded in the state directory; idempotent."""
        with self._locked():
            self._stop()

    def _stop(self) -> None:
        for name in STOP_ORDER:
            self._terminate(name)
        for name, pid in self._stray_pids():
            self._log(f"stopping stray {name} (pid {pid}; its pid file was lost)")
            _terminate_pid(pid, None, 15.0)
        self._procs.clear()

    def status(self) -> dict[str, Any]:
        """A summary of what runs (components, pids, ports, readiness, nodes)."""
        running = self.running()
        ready = self.apiserver_ready()
        summary: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig),
            "components": {name: running.get(name) for name in STOP_ORDER},
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


def _terminate_pid(pid: int, proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM the process group led by ``pid``, wait, then SIGKILL what is left."""

    def signal_group(sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def gone(wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
                if proc.returncode is not None:
                    return True
            elif _proc_cmdline(pid) is None:
                return True
            else:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                return False

    signal_group(signal.SIGTERM)
    if not gone(grace):
        signal_group(signal.SIGKILL)
        gone(5.0)
    # Children left in the group (e.g. the node agent's processes) get a short grace.
    deadline = time.monotonic() + 5.0
    while _group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for member in _group_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in "ZX" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ctdev.controlplane``."""
    parser = argparse.ArgumentParser(
        prog="python -m ctdev.controlplane", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir", default=str(DEFAULT_STATE_DIR), help="state directory (default: <repo>/.local)"
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="up: keep the etcd data of a previous run"
    )
    parser.add_argument(
        "--no-node-agent", action="store_true", help="up: do not start the node agent"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="up: seconds to wait for each step"
    )
    args = parser.parse_args(argv)
    cp = ControlPlane(
        args.dir, node_agent=not args.no_node_agent, keep_data=args.keep_data, timeout=args.timeout
    )
    try:
        if args.command == "up":
            cp.start()
            print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
            return 0
        if args.command == "down":
            if not cp.running() and not cp._stray_pids():
                _say("nothing running")
            cp.stop()
            return 0
        summary = cp.status()
        for name, pid in summary["components"].items():
            print(f"{name:24} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
        for name, pid in summary["strays"]:
            print(f"{name:24} running (pid {pid}) WITHOUT a pid file; `down` stops it")
        api = cp.api_url if summary["ports"] else "-"
        print(f"{'apiserver':24} {api} ready={summary['apiserver_ready']}")
        print(f"{'ready nodes':24} {', '.join(summary['ready_nodes']) or '-'}")
        print(f"{'kubeconfig':24} {summary['kubeconfig']}")
        return 0 if cp.is_healthy() else 3
    except ControlPlaneError as err:
        _say(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
