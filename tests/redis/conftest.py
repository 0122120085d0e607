"""Real redis-server processes for the cluster tests.

`redis_nodes(n)` starts `n` cluster-enabled nodes on free loopback ports, each
with its own directory (so a restart reuses its nodes.conf), `requirepass`
and `masterauth`, and kills them when the test ends.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cachetier.topology import NodeAddress

PASSWORD = "cachetier-test-password"
NODE_TIMEOUT_MS = 1500
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int]) -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 55000 or port in taken or port + 10000 in taken:
            continue
        if _port_free(port + 10000):
            taken.update({port, port + 10000})
            return port
    raise RuntimeError("no free port pair")


class RedisNode:
    """One redis-server process with its own directory."""

    def __init__(self, directory: Path, port: int, node_timeout_ms: int) -> None:
        self.directory = directory
        self.address = NodeAddress("127.0.0.1", port)
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "redis.conf").write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {node_timeout_ms}",
                    f"dir {directory}",
                    f"requirepass {PASSWORD}",
                    f"masterauth {PASSWORD}",
                    'save ""',
                    "appendonly yes",  # the product default; a full restart keeps data
                    "repl-diskless-sync-delay 0",
                    "daemonize no",
                    f"logfile {directory / 'redis.log'}",
                    "",
                ]
            )
        )

    def move_to(self, port: int) -> None:
        """Use another port from the next start on, as a pod that comes back with a new IP."""
        conf = self.directory / "redis.conf"
        lines = conf.read_text().splitlines()
        conf.write_text("\n".join(f"port {port}" if x.startswith("port ") else x for x in lines))
        self.address = NodeAddress(self.address.host, port)

    def client(self) -> redis.Redis:
        """A plain client to this node."""
        return redis.Redis(
            host=self.address.host,
            port=self.address.port,
            password=PASSWORD,
            socket_timeout=5,
            socket_connect_timeout=2,
        )

    def start(self) -> None:
        """Start the process (reusing nodes.conf if present) and wait for PING."""
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(self.directory / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        with self.client() as c:
            while True:
                try:
                    if c.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def taken_ports() -> set[int]:
    """Ports handed out in this test (client ports and their bus ports)."""
    return set()


@pytest.fixture
def new_port(taken_ports: set[int]) -> Callable[[], int]:
    """Factory of free ports, e.g. for a node that comes back at a new address."""
    return lambda: free_port(taken_ports)


@pytest.fixture
def redis_nodes(
    tmp_path: Path, taken_ports: set[int]
) -> Iterator[Callable[[int], list[RedisNode]]]:
    """Factory: `redis_nodes(n)` starts n empty cluster-enabled nodes."""
    started: list[RedisNode] = []

    def make(n: int) -> list[RedisNode]:
        batch = []
        for _ in range(n):
            directory = tmp_path / f"node{len(started)}"
            node = RedisNode(directory, free_port(taken_ports), NODE_TIMEOUT_MS)
            started.append(node)
            node.start()
            batch.append(node)
        return batch

    yield make
    for node in started:
        node.kill()
