"""Loopback address pools: one address per key (a pod or Service uid), stable while held.

Addresses are handed out round-robin from a CIDR (skipping those ending in .0 or .255), so
an address freed by a deleted pod is not reused at once, as on a real cluster. The
assignments can be persisted to a JSON file so that a restarted agent keeps them.

Several agents may run on one machine (one per local cluster, e.g. concurrent e2e runs),
all drawing from 127.10.0.0/16. With a ``lease_dir``, each address is also claimed
machine-wide by creating ``<lease_dir>/<address>`` exclusively (owner and pid inside);
claims of agents that are no longer running are taken over.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
import threading
from pathlib import Path


class PoolExhausted(Exception):
    """Every address of the pool is in use."""


class AddressPool:
    """Allocates IPv4 addresses of one network to keys."""

    def __init__(
        self,
        cidr: str,
        path: Path | None = None,
        *,
        lease_dir: Path | None = None,
        owner: str = "",
    ) -> None:
        self.network = ipaddress.IPv4Network(cidr)
        self._path = path
        self._lease_dir = lease_dir
        self._owner = owner or (str(path) if path else f"pid-{os.getpid()}")
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = {}
        self._cursor = 0
        if lease_dir is not None:
            lease_dir.mkdir(parents=True, exist_ok=True)
        if path is not None and path.exists():
            data = json.loads(path.read_text() or "{}")
            self._by_key = {str(k): str(v) for k, v in data.get("addresses", {}).items()}
            self._cursor = int(data.get("cursor", 0))
            for ip in self._by_key.values():
                self._claim(ip)

    def _claim(self, ip: str) -> bool:
        """Claim ``ip`` machine-wide (True when it is now ours)."""
        if self._lease_dir is None:
            return True
        lease = self._lease_dir / ip
        mine = json.dumps({"owner": self._owner, "pid": os.getpid()})
        for _ in range(2):
            try:
                fd = os.open(lease, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(lease.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                if holder.get("owner") != self._owner and _alive(int(holder.get("pid") or 0)):
                    return False
                lease.unlink(missing_ok=True)  # ours from before, or its agent is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(mine)
            return True
        return False

    def _unclaim(self, ip: str) -> None:
        if self._lease_dir is None:
            return
        lease = self._lease_dir / ip
        try:
            if json.loads(lease.read_text() or "{}").get("owner") == self._owner:
                lease.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass

    def _save(self) -> None:
        if self._path is None:
            return
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cursor": self._cursor, "addresses": self._by_key}))
        os.replace(tmp, self._path)

    @staticmethod
    def usable(addr: ipaddress.IPv4Address) -> bool:
        """Addresses ending in .0 or .255 are never handed out."""
        return int(addr) & 0xFF not in (0, 255)

    def contains(self, ip: str) -> bool:
        """The address belongs to this pool's network."""
        try:
            return ipaddress.IPv4Address(ip) in self.network
        except ValueError:
            return False

    def get(self, key: str) -> str | None:
        """The address held by ``key``, if any."""
        with self._lock:
            return self._by_key.get(key)

    def allocate(self, key: str, prefer: str | None = None) -> str:
        """The address of ``key``: its current one, ``prefer`` if free and valid, or the next."""
        with self._lock:
            if key in self._by_key:
                return self._by_key[key]
            used = set(self._by_key.values())
            if (
                prefer
                and self.contains(prefer)
                and prefer not in used
                and self.usable(ipaddress.IPv4Address(prefer))
                and self._claim(prefer)
            ):
                self._by_key[key] = prefer
                self._save()
                return prefer
            size = self.network.num_addresses
            base = int(self.network.network_address)
            for step in range(size):
                offset = (self._cursor + step) % size
                addr = ipaddress.IPv4Address(base + offset)
                if self.usable(addr) and str(addr) not in used and self._claim(str(addr)):
                    self._cursor = (offset + 1) % size
                    self._by_key[key] = str(addr)
                    self._save()
                    return str(addr)
            raise PoolExhausted(f"no free address in {self.network}")

    def release(self, key: str) -> None:
        """Free the address of ``key`` (no-op when it holds none)."""
        with self._lock:
            ip = self._by_key.pop(key, None)
            if ip is not None:
                self._unclaim(ip)
                self._save()

    def keys(self) -> list[str]:
        """Keys that hold an address."""
        with self._lock:
            return list(self._by_key)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_lease_dir() -> Path:
    """The machine-wide lease directory (``$CTDEV_ADDRESS_LEASES`` overrides it)."""
    env = os.environ.get("CTDEV_ADDRESS_LEASES")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"cachetier-addresses-{os.getuid()}"
