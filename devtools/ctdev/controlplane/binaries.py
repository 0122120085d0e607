"""The Kubernetes and etcd binaries: located in the cache, built when missing."""

from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import BUILD_SCRIPT, ETCD, K8S_BINARIES, REPO_ROOT, ControlPlaneError


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
