"""Loopback address pools: one address per key (a pod or Service uid), stable while held.

Addresses are handed out round-robin from a CIDR (skipping those ending in .0 or .255), so
an address freed by a deleted pod is not reused at once, as on a real cluster. The
assignments can be persisted to a JSON file so that a restarted agent keeps them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from pathlib import Path


class PoolExhausted(Exception):
    """Every address of the pool is in use."""


class AddressPool:
    """Allocates IPv4 addresses of one network to keys."""

    def __init__(self, cidr: str, path: Path | None = None) -> None:
        self.network = ipaddress.IPv4Network(cidr)
        self._path = path
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = {}
        self._cursor = 0
        if path is not None and path.exists():
            data = json.loads(path.read_text() or "{}")
            self._by_key = {str(k): str(v) for k, v in data.get("addresses", {}).items()}
            self._cursor = int(data.get("cursor", 0))

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
            ):
                self._by_key[key] = prefer
                self._save()
                return prefer
            size = self.network.num_addresses
            base = int(self.network.network_address)
            for step in range(size):
                offset = (self._cursor + step) % size
                addr = ipaddress.IPv4Address(base + offset)
                if self.usable(addr) and str(addr) not in used:
                    self._cursor = (offset + 1) % size
                    self._by_key[key] = str(addr)
                    self._save()
                    return str(addr)
            raise PoolExhausted(f"no free address in {self.network}")

    def release(self, key: str) -> None:
        """Free the address of ``key`` (no-op when it holds none)."""
        with self._lock:
            if self._by_key.pop(key, None) is not None:
                self._save()

    def keys(self) -> list[str]:
        """Keys that hold an address."""
        with self._lock:
            return list(self._by_key)
