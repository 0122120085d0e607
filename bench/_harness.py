"""Shared set-up of the benchmarks: a private control plane, the CRD, the operator, output.

The scripts in ``bench/`` are run as files (``python bench/bench_x.py``), so their own
directory is first on ``sys.path`` and they import this module as ``_harness``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cachetier import names
from cachetier.handlers import tier as tier_handlers
from ctdev.controlplane import ControlPlane

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def say(message: str) -> None:
    """A timestamped progress line on the real stderr (KopfRunner swaps sys.stdout/stderr)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.__stderr__, flush=True)


def utc_now() -> str:
    """The current time as an RFC 3339 UTC timestamp with seconds precision."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait(
    what: str, probe: Callable[[], T | bool | None], timeout: float, interval: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something truthy (returned); SystemExit on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def private_cluster(node_agent: bool, prefix: str = "bench") -> Iterator[ControlPlane]:
    """A local control plane of its own in a temp dir ``.local/<prefix>-<pid>-*/``.

    ``KUBECONFIG`` points at it while it runs; on exit it is stopped and its dir removed.
    """
    (REPO_ROOT / ".local").mkdir(exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=REPO_ROOT / ".local"))
    cp = ControlPlane(state_dir, node_agent=node_agent)
    try:
        cp.start()
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        yield cp
    finally:
        cp.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def in_private_hosts() -> None:
    """Re-run this script inside ``hack/private-hosts.sh`` (a private /etc/hosts the node
    agent keeps cluster names in, so clients resolve Service names as a pod would)."""
    if not os.environ.get("CTDEV_HOSTS_FILE"):
        script = str(REPO_ROOT / "hack" / "private-hosts.sh")
        os.execvp("bash", ["bash", script, sys.executable, *sys.argv])
    (REPO_ROOT / ".local").mkdir(exist_ok=True)


def install_crd(cp: ControlPlane) -> None:
    """Apply ``crds/cachetier.yaml`` with kubectl, wait for Established and until it is served."""
    kubectl = [str(cp.kubectl_path), "--kubeconfig", str(cp.kubeconfig)]
    crd = f"{names.PLURAL}.{names.GROUP}"
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "cachetier.yaml")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s"],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while subprocess.run([*kubectl, "get", names.PLURAL, "-A"], capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise SystemExit(f"{crd} is not served")
        time.sleep(0.5)


@contextmanager
def running_operator(namespace: str | None = None) -> Iterator[tier_handlers.Runtime]:
    """The operator in this process (kopf.testing.KopfRunner, quiet): every namespace,
    or only ``namespace`` (as ``--namespace`` would).

    Yields its Runtime once started (SystemExit if it does not start within 60 s); after
    the block it is stopped, and SystemExit is raised if it failed.
    """
    from kopf.testing import KopfRunner

    tier_handlers.CURRENT = None
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    args = ["run", "--standalone", *scope, "--quiet", "-m", "cachetier.handlers"]
    previous = os.environ.get("WATCH_NAMESPACES")
    os.environ["WATCH_NAMESPACES"] = namespace or ""
    try:
        with KopfRunner(args, timeout=60) as runner:
            deadline = time.monotonic() + 60
            while tier_handlers.CURRENT is None:
                if time.monotonic() > deadline or runner.future.done():
                    raise SystemExit("the operator did not start")
                time.sleep(0.1)
            yield tier_handlers.CURRENT
    finally:
        tier_handlers.CURRENT = None
        if previous is None:
            os.environ.pop("WATCH_NAMESPACES", None)
        else:
            os.environ["WATCH_NAMESPACES"] = previous
    if runner.exception is not None:
        raise SystemExit(f"operator failed: {runner.exception!r}")


def settle(rt: tier_handlers.Runtime, quiet: float = 3.0, limit: float = 30.0) -> None:
    """Until the operator has sent no write for ``quiet`` seconds (at most ``limit``)."""
    last, quiet_since, t0 = rt.kube.write_count, time.monotonic(), time.monotonic()
    while time.monotonic() - quiet_since < quiet and time.monotonic() - t0 < limit:
        time.sleep(0.2)
        now = rt.kube.write_count
        if now != last:
            last, quiet_since = now, time.monotonic()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    t = os.times()
    return t.user + t.system


def rss_mb(pid: int | str = "self") -> float:
    """A process's (default: this one's) resident set size now, in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def child_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_serving_metrics(
    argv: list[str], env: dict[str, str], log: Path, port: int
) -> subprocess.Popen[Any]:
    """Start a process (output to ``log``); return once its /metrics on ``port`` answers."""
    import urllib.request

    proc = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5):
                return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{argv[0]} did not start; see {log}") from None
            time.sleep(0.2)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, 20 s to exit, then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


OPERATOR_PYTHONPATH = f"{REPO_ROOT / 'operator'}:{REPO_ROOT / 'devtools'}"


def operator_argv(
    kubeconfig: Path, namespace: str, metrics_port: str, liveness_port: int
) -> list[str]:
    """The command line of the operator as its own process, watching ``namespace``
    (with ``PYTHONPATH=OPERATOR_PYTHONPATH``)."""
    return [
        sys.executable,
        "-m",
        "cachetier.main",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        "--metrics-port",
        metrics_port,
        "--liveness",
        f"http://127.0.0.1:{liveness_port}/healthz",
    ]


class ServedProcess:
    """A process started by `start_serving_metrics` (``self.proc``): its CPU, RSS, stop."""

    proc: subprocess.Popen[Any]

    def cpu(self) -> float:
        return child_cpu_seconds(self.proc.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)


@contextmanager
def profiled(label: str) -> Iterator[Path | None]:
    """A sampling profile of this process (every thread) while the block runs.

    Opt-in: ``BENCH_PROFILE=1`` and a ``py-spy`` on PATH (or named by ``BENCH_PYSPY``).
    Writes ``bench/results/<label>.profile.txt`` (collapsed stacks, one per line with
    its sample count, for flame-graph tools or ``sort -k2``); nothing when not asked.
    """
    tool = os.environ.get("BENCH_PYSPY") or shutil.which("py-spy")
    if os.environ.get("BENCH_PROFILE") != "1" or not tool:
        yield None
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{label}.profile.txt"
    proc = subprocess.Popen(
        [tool, "record", "--pid", str(os.getpid()), "--rate", "250", "--threads",
         "--nonblocking", "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    try:
        yield out
    finally:
        proc.send_signal(2)  # SIGINT: py-spy writes the file and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        say(f"profile: {out}")


def machine() -> dict[str, Any]:
    """The trailing keys of every result: ``cpus``, ``python`` and ``date``."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "date": utc_now()}


def emit(name: str, result: dict[str, Any], indent: int | None = None) -> None:
    """Write ``result`` to ``bench/results/<name>.json`` and print it (one line by default)."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=indent) + "\n")
    sys.stdout.flush()
