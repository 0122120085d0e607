"""Unit tests for the loopback Service proxy and the PATH shims (svcproxy, shim).

Everything listens on loopback addresses only.
"""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import ctdev
from ctdev.nodeagent.ipam import AddressPool
from ctdev.nodeagent.launch import CONTEXT_ENV, LaunchContext
from ctdev.nodeagent.objects import Obj
from ctdev.nodeagent.shim import write_shims
from ctdev.nodeagent.svcproxy import ServiceProxy


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def roundtrip(addr: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((addr, port), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def rejected(addr: str, port: int) -> bool:
    with socket.create_connection((addr, port), timeout=5) as conn:
        try:
            return conn.recv(1) == b""
        except ConnectionResetError:
            return True


def test_proxy_forwards_to_ready_endpoints_and_follows_changes(echo: int) -> None:
    endpoints: list[tuple[str, int]] = []
    seen: list[Obj] = []

    def lookup(svc: Obj, port: Obj) -> list[tuple[str, int]]:
        seen.append(port)
        return list(endpoints)

    pool = AddressPool("127.12.0.0/24")
    proxy = ServiceProxy(pool, lookup)
    proxy.start()
    try:
        port = free_port("127.12.0.1")
        svc = {
            "metadata": {"uid": "svc-1", "name": "redis", "namespace": "ns"},
            "spec": {"ports": [{"name": "redis", "port": port, "targetPort": "redis"}]},
        }
        assert proxy.reserve("ns", "redis") == "127.12.0.1"  # before the Service exists
        with pytest.raises(OSError):
            roundtrip("127.12.0.1", port, b"early")
        proxy.update(svc)  # the Service appears (informer event): now it listens
        for _ in range(100):
            try:
                assert rejected("127.12.0.1", port)  # listening, but no Ready pod yet
                break
            except ConnectionRefusedError:
                threading.Event().wait(0.02)
        addr = proxy.ensure(svc)
        assert addr == "127.12.0.1" and proxy.address("ns", "redis") == addr
        endpoints.append(("127.0.0.1", echo))
        assert roundtrip(addr, port, b"ping" * 10000) == b"ping" * 10000
        assert seen[-1]["targetPort"] == "redis"
        endpoints.insert(0, ("127.0.0.1", free_port("127.0.0.1")))  # a dead one is skipped
        assert roundtrip(addr, port, b"x") == b"x"
        assert roundtrip(addr, port, b"y") == b"y"
        proxy.remove(svc)
        with pytest.raises(OSError):
            for _ in range(50):
                roundtrip(addr, port, b"z")
                threading.Event().wait(0.05)
        assert pool.get("svc:ns/redis") is None
    finally:
        proxy.stop()


def test_a_proxy_never_started_stops_quietly() -> None:
    """A worker node agent (--role node) runs no proxy but stops it at shutdown."""
    ServiceProxy(AddressPool("127.12.1.0/24"), lambda svc, port: []).stop()


def test_shims_rewrite_inside_shell_scripts(tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    devtools = str(Path(ctdev.__file__).resolve().parent.parent)
    write_shims(str(shims), sys.executable, devtools)
    write_shims(str(shims), sys.executable, devtools)  # idempotent
    ctx = LaunchContext(
        pod_ip="127.10.0.7",
        mounts=[("/data", str(tmp_path / "data"))],
        keep=[str(tmp_path)],
        run_dir=str(tmp_path / "run"),
        redis_cli="/bin/echo",
        redis_server="/bin/echo",
    )
    ctx.save(tmp_path / "ctx.json")
    env = {
        "PATH": f"{shims}:/usr/bin:/bin",
        CONTEXT_ENV: str(tmp_path / "ctx.json"),
    }
    script = "redis-cli -h localhost ping && valkey-server --dir /data && docker-entrypoint.sh"
    out = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()
    tail = "--bind 127.10.0.7 --daemonize no --supervised no --logfile  --pidfile "
    assert out == [
        "-h 127.10.0.7 ping",
        f"--dir {tmp_path}/data {tail}",
        tail,
    ]
    assert os.access(shims / "redis-server", os.X_OK)
