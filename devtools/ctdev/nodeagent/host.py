"""What a pod worker needs from its agent, as a Protocol (so ``pod`` does not import
``agent``, which creates the workers)."""

from __future__ import annotations

from typing import Protocol

from .config import AgentConfig
from .ipam import AddressPool
from .kube import Kube
from .volumes import VolumeLookup


class PodHost(Protocol):
    """The agent, as seen by one of its pod workers."""

    config: AgentConfig
    kube: Kube
    pod_ips: AddressPool

    lookup: VolumeLookup
    """ConfigMaps, Secrets, claims and volumes from the agent's caches."""

    def resolve_hosts(self, namespace: str, candidates: set[str]) -> dict[str, str]:
        """Addresses for Service names a process is given."""
        ...

    def run_exec(self, argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> bool:
        """Run an exec probe's command; True on exit code 0."""
        ...

    def worker_done(self, uid: str) -> None:
        """The worker of pod ``uid`` ended."""
        ...
