"""A userspace kube-proxy for ClusterIP Services, on loopback addresses.

Endpoints and EndpointSlices reject loopback pod addresses, so a Service here never gets
endpoints and its ClusterIP (10.0.0.x) is unreachable anyway. For the processes the agent
runs, ``<service>.<namespace>.svc`` names are rewritten to a stable loopback address per
Service (from 127.11.0.0/16 by default); this proxy listens there on every TCP port of the
Service and forwards each connection to a Ready pod behind the selector (round-robin),
re-evaluated per connection, so clients follow pod replacement like they would through
a real ClusterIP. With no Ready pod the connection is closed at once.

One asyncio event loop in one daemon thread serves every Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .ipam import AddressPool
from .log import Log
from .objects import Obj, name_of, namespace_of

Endpoints = Callable[[Obj, Obj], list[tuple[str, int]]]
"""(service, service port) -> Ready (pod IP, target port) pairs."""
_log = Log("nodeagent.svcproxy")
CONNECT_TIMEOUT = 2.0


@dataclass
class _Entry:
    svc: Obj | None
    """None while the name is only reserved (the Service does not exist yet)."""
    addr: str
    servers: dict[int, asyncio.Server] = field(default_factory=dict)
    rr: itertools.count[int] = field(default_factory=itertools.count)


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class ServiceProxy:
    """Listeners for ClusterIP Services that processes on this node refer to by name.

    Addresses are kept per namespace/name, and can be reserved before the Service
    exists: a process that starts before its Service gets a working address as soon as
    the Service is created (connections are refused until then), as DNS would catch up.
    """

    def __init__(self, pool: AddressPool, endpoints: Endpoints) -> None:
        self._pool = pool
        self._endpoints = endpoints
        self._entries: dict[str, _Entry] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="svcproxy", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def start(self) -> None:
        """Start the event loop thread."""
        self._thread.start()

    def stop(self) -> None:
        """Close every listener and stop the loop (nothing to do if never started)."""
        if self._thread.ident is None:
            self._loop.close()
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def address(self, namespace: str, name: str) -> str | None:
        """The proxy address of a Service name, if it has one."""
        with self._lock:
            entry = self._entries.get(_key(namespace, name))
            return entry.addr if entry else None

    def reserve(self, namespace: str, name: str) -> str:
        """An address for a Service name (served once the Service exists)."""
        key = _key(namespace, name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(None, self._pool.allocate(f"svc:{key}"))
                self._entries[key] = entry
            return entry.addr

    def ensure(self, svc: Obj) -> str:
        """Serve the Service (idempotent); returns its loopback address once listening."""
        key = _key(namespace_of(svc), name_of(svc))
        addr = self.reserve(namespace_of(svc), name_of(svc))
        with self._lock:
            self._entries[key].svc = svc
        fut = asyncio.run_coroutine_threadsafe(self._reconcile(key), self._loop)
        fut.result(10)
        return addr

    def update(self, svc: Obj) -> None:
        """A Service was created or changed: serve it if its name is in use."""
        key = _key(namespace_of(svc), name_of(svc))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.svc = svc
        asyncio.run_coroutine_threadsafe(self._reconcile(key), self._loop)

    def remove(self, svc: Obj) -> None:
        """The Service is gone: close its listeners and free its address."""
        key = _key(namespace_of(svc), name_of(svc))
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            # Wait: a connection racing with close() trips an asyncio 3.11 assertion.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._close(entry), self._loop).result(5)
            self._pool.release(f"svc:{key}")

    async def _close(self, entry: _Entry) -> None:
        # Stop listening; open connections carry on until they end (as with kube-proxy).
        for server in entry.servers.values():
            server.close()
        entry.servers.clear()

    async def _close_all(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            await self._close(entry)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(3):  # let closed transports release their sockets
            await asyncio.sleep(0)

    async def _reconcile(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return
        svc = entry.svc or {}
        ports = {
            int(p["port"])
            for p in (svc.get("spec") or {}).get("ports") or []
            if str(p.get("protocol", "TCP")) == "TCP"
        }
        for port in set(entry.servers) - ports:
            entry.servers.pop(port).close()
        for port in ports - set(entry.servers):
            try:
                entry.servers[port] = await asyncio.start_server(
                    functools.partial(self._handle, entry, port),
                    host=entry.addr,
                    port=port,
                    reuse_address=True,
                )
                _log.info("serving service", service=key, addr=entry.addr, port=port)
            except OSError as err:
                _log.warning("cannot listen", service=key, port=port, error=str(err))

    async def _handle(
        self, entry: _Entry, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream: asyncio.StreamWriter | None = None
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            svc = entry.svc or {}
            svc_port = next(
                (p for p in svc.get("spec", {}).get("ports") or [] if p["port"] == port),
                {"port": port},
            )
            endpoints = self._endpoints(svc, svc_port) if svc else []
            if endpoints:
                start = next(entry.rr) % len(endpoints)
                endpoints = endpoints[start:] + endpoints[:start]
            for ip, target in endpoints:
                try:
                    up_reader, upstream = await asyncio.wait_for(
                        asyncio.open_connection(ip, target), CONNECT_TIMEOUT
                    )
                    break
                except (OSError, TimeoutError):
                    continue
            if upstream is None:
                return
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                for w in (writer, upstream):
                    if w is not None:
                        await w.wait_closed()
            if task is not None:
                self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError, RuntimeError):
        writer.close()
