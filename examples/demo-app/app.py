#!/usr/bin/env python3
"""CacheTier demo consumer: a small web app that caches a computed report in Redis.

Standard library plus redis-py. Environment:

- ``REDIS_URL``: where Redis is (``redis://:PASSWORD@host:6379/0``; injected by the
  operator from the tier's connection Secret). ``REDIS_PASSWORD`` is used when the URL
  has none.
- ``REDIS_ENABLED``: ``"true"`` or ``"false"`` (unset: false).
- ``REDIS_FLAG_FILE``: a file whose content (``true``/``false``) decides whenever it is set
  and readable, read again on every request, so a downward-API annotation flips the cache
  without a restart. ``REDIS_ENABLED=false`` still wins over the file: it is the rollback
  switch, and a stale ``true`` file must not keep a rolled-back pod on Redis.
- ``PORT`` (default 8080), ``POD_IP`` (bind address, default 0.0.0.0), ``POD_NAME``.

Endpoints: ``GET /`` returns the report (cached for 300 s in Redis, or in memory when
Redis is disabled or failing); ``GET /status`` returns
``{"cache": "redis"|"memory", "hits": n, "misses": n, "pod": POD_NAME, ...}``;
``GET /healthz`` returns ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.maint_notifications import MaintNotificationsConfig

TTL_SECONDS = 300
CACHE_KEY = "demo-app:report:v1"


class MemoryCache:
    """A tiny thread-safe TTL cache (the fallback when Redis is off or failing)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        """The value, unless missing or expired."""
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] < time.monotonic():
                self._data.pop(key, None)
                return None
            return item[1]

    def set(self, key: str, value: str, ttl: float) -> None:
        """Store a value for ``ttl`` seconds."""
        with self._lock:
            self._data[key] = (time.monotonic() + ttl, value)


def compute_report() -> dict[str, Any]:
    """The "expensive" computation whose result is cached."""
    digest = b"cachetier"
    for _ in range(20000):
        digest = hashlib.sha256(digest).digest()
    sieve = bytearray([1]) * 20000
    sieve[0:2] = b"\x00\x00"
    for i in range(2, 142):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return {"digest": digest.hex(), "primes_below_20000": sum(sieve), "computed_at": time.time()}


class App:
    """Cache selection, counters, and the cached computation."""

    def __init__(self, env: dict[str, str]) -> None:
        self.redis_url = env.get("REDIS_URL", "")
        self.password = env.get("REDIS_PASSWORD") or None
        enabled = env.get("REDIS_ENABLED", "").strip().lower()
        self.enabled_env = enabled == "true"
        self.disabled_env = enabled == "false"
        self.flag_file = env.get("REDIS_FLAG_FILE", "")
        self.pod = env.get("POD_NAME") or env.get("HOSTNAME", "")
        self.memory = MemoryCache()
        self.hits = 0
        self.misses = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None

    def flag(self) -> tuple[bool, str]:
        """Whether Redis should be used, and where that came from (file or env).

        ``REDIS_ENABLED=false`` always wins (it is the rollback switch); otherwise a
        readable flag file decides (``true`` enables, anything else, even empty, does not);
        otherwise ``REDIS_ENABLED``.
        """
        if self.disabled_env:
            return False, "env"
        if self.flag_file:
            try:
                with open(self.flag_file) as fh:
                    return fh.read().strip().lower() == "true", "file"
            except OSError:
                pass
        return self.enabled_env, "env"

    def client(self) -> redis.Redis | None:
        """The Redis client (created once), or None without a URL."""
        if not self.redis_url:
            return None
        with self._lock:
            if self._client is None:
                has_password = urlsplit(self.redis_url).password is not None
                self._client = redis.Redis.from_url(
                    self.redis_url,
                    password=None if has_password else self.password,
                    socket_timeout=1.0,
                    socket_connect_timeout=1.0,
                    # No CLIENT SETINFO / MAINT_NOTIFICATIONS: error replies on Redis < 7.2.
                    driver_info=None,
                    maint_notifications_config=MaintNotificationsConfig(enabled=False),
                    decode_responses=True,
                )
            return self._client

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def report(self) -> tuple[dict[str, Any], str]:
        """The report and the cache that served it ("redis" or "memory")."""
        wanted, _ = self.flag()
        client = self.client() if wanted else None
        if client is not None:
            try:
                raw = client.get(CACHE_KEY)
                if raw is not None:
                    self._count(True)
                    return json.loads(str(raw)), "redis"
                value = compute_report()
                client.set(CACHE_KEY, json.dumps(value), ex=TTL_SECONDS)
                self._count(False)
                return value, "redis"
            except redis.RedisError as err:
                self.last_error = f"{type(err).__name__}: {err}"
        raw = self.memory.get(CACHE_KEY)
        if raw is not None:
            self._count(True)
            return json.loads(raw), "memory"
        value = compute_report()
        self.memory.set(CACHE_KEY, json.dumps(value), TTL_SECONDS)
        self._count(False)
        return value, "memory"

    def status(self) -> dict[str, Any]:
        """What /status reports: the cache in use now (Redis only if it answers)."""
        wanted, source = self.flag()
        cache = "memory"
        client = self.client() if wanted else None
        if client is not None:
            try:
                client.ping()
                cache = "redis"
            except redis.RedisError as err:
                self.last_error = f"{type(err).__name__}: {err}"
        with self._lock:
            hits, misses = self.hits, self.misses
        return {
            "cache": cache,
            "hits": hits,
            "misses": misses,
            "pod": self.pod,
            "redis_enabled": wanted,
            "flag_source": source,
            "last_error": self.last_error,
        }


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``app``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "cachetier-demo/0.1"

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/status":
                self._send(200, app.status())
            elif path == "/":
                value, cache = app.report()
                self._send(200, {"cache": cache, "report": value, "pod": app.pod})
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, format: str, *args: Any) -> None:
            if os.environ.get("DEMO_ACCESS_LOG") == "true":
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def main() -> int:
    """Serve until SIGTERM/SIGINT."""
    env = dict(os.environ)
    host = env.get("POD_IP") or "0.0.0.0"
    port = int(env.get("PORT", "8080"))
    app = App(env)
    server = ThreadingHTTPServer((host, port), make_handler(app))
    server.daemon_threads = True

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wanted, source = app.flag()
    print(
        json.dumps(
            {
                "msg": "demo app listening",
                "addr": f"{host}:{port}",
                "redis_enabled": wanted,
                "flag_source": source,
                "pod": app.pod,
            }
        ),
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
