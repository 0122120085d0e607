"""Cluster DNS names in a hosts file, for runtime name resolution on one machine.

Rewriting names in a process's arguments, environment and config files (see ``names``)
covers the names a process is *given*; it cannot cover names a process *learns* while it
runs — a Redis Cluster client that gets ``<pod>.<tier>-headless.<ns>.svc`` from CLUSTER
SLOTS or a MOVED reply, and must reach the pod behind that name after the pod was
replaced and got a new address. Real clusters answer those from DNS. Here, when the agent
is given a hosts file (``CTDEV_HOSTS_FILE``: normally ``/etc/hosts`` inside a private
mount namespace, where it is a bind-mounted copy — see ``hack/private-hosts.sh``), it
keeps these names in it, and glibc (and so Python, Node.js and redis-server) reads them on
every lookup:

- ``<hostname>.<subdomain>.<ns>.svc[.cluster.local]`` -> the pod's IP, for pods with
  ``spec.hostname`` and ``spec.subdomain`` (every StatefulSet pod);
- ``<service>.<ns>.svc[.cluster.local]`` -> the Service's loopback proxy address (a ready
  pod's IP for a headless Service).

The file is rewritten in place (the bind mount pins its inode): the lines it had when
the agent started, then the agent's block. ``render`` is pure.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .log import Log

MARK = "# --- ctdev node agent: cluster names (rewritten on every change) ---"
_log = Log("nodeagent.hosts")


def names_for(name: str, namespace: str, host: str | None = None) -> list[str]:
    """The DNS names of a Service (or of a pod ``host`` behind a headless Service)."""
    base = f"{name}.{namespace}.svc" if host is None else f"{host}.{name}.{namespace}.svc"
    return [base, f"{base}.cluster.local"]


def render(base: str, entries: dict[str, str]) -> str:
    """``base`` (without any earlier block of ours) plus one line per name, sorted."""
    kept = base.split(MARK, 1)[0].rstrip("\n")
    lines = [kept, MARK] if kept else [MARK]
    by_ip: dict[str, list[str]] = {}
    for name, ip in sorted(entries.items()):
        by_ip.setdefault(ip, []).append(name)
    for ip in sorted(by_ip):
        lines.append(f"{ip} {' '.join(by_ip[ip])}")
    return "\n".join(lines) + "\n"


class HostsFile:
    """The hosts file the agent keeps; ``update`` writes only when the content changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._base = path.read_text() if path.exists() else ""
        self._last = ""
        self._lock = threading.Lock()

    def update(self, entries: dict[str, str]) -> None:
        """Write ``entries`` (name -> IP) below the file's original lines."""
        content = render(self._base, entries)
        with self._lock:
            if content == self._last:
                return
            # In place: a rename would leave the bind-mounted inode behind.
            with self.path.open("r+" if self.path.exists() else "w") as f:
                f.write(content)
                f.truncate()
            self._last = content
        _log.info("hosts file updated", path=str(self.path), names=len(entries))

    def restore(self) -> None:
        """Put the original lines back."""
        with self._lock, self.path.open("r+") as f:
            f.write(self._base)
            f.truncate()
            self._last = self._base
