"""Client conformance for redis-py, connected the way the README says (REDIS_URL, REDIS_MODE).

    python conformance_py.py check        -> one JSON object {"client", "mode", "checks"}
    python conformance_py.py loop SECONDS -> one JSON line per second {"t", "ok", ...}

The same checks as ``conformance.js`` (node-redis, ioredis); run by tests/e2e/test_clients.py.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

MODE = os.environ.get("REDIS_MODE", "standalone")
CLUSTER = MODE == "cluster"


def connect() -> Any:
    """The README's redis-py setup for each mode."""
    url = os.environ["REDIS_URL"]
    if CLUSTER:
        return RedisCluster.from_url(url, decode_responses=True, socket_timeout=2)
    return redis.from_url(url, decode_responses=True, socket_timeout=2)


def expect_refused(client: Any, *args: str) -> None:
    try:
        if CLUSTER:  # a keyless command: on one node, as the cluster client connects
            client.get_redis_connection(client.get_random_node()).execute_command(*args)
        else:
            client.execute_command(*args)
    except redis.exceptions.NoPermissionError:
        return
    except redis.RedisError as exc:
        # DEBUG is refused before the ACL is consulted (enable-debug-command no).
        if args[0] == "DEBUG" and "not allowed" in str(exc):
            return
        raise AssertionError(f"{' '.join(args)}: expected NOPERM, got {exc}") from None
    raise AssertionError(f"{' '.join(args)}: expected NOPERM, but it ran")


def pubsub(client: Any) -> None:
    channel = f"ct-conformance-redis-py-{os.getpid()}"
    sub = client.pubsub()
    sub.subscribe(channel)
    try:
        deadline = time.monotonic() + 10
        got = None
        while time.monotonic() < deadline and got is None:
            client.publish(channel, "hello")
            message = sub.get_message(timeout=0.5)
            while message is not None and message.get("type") != "message":
                message = sub.get_message(timeout=0.5)
            if message is not None:
                got = message["data"]
        if got != "hello":
            raise AssertionError(f"no message on {channel} within 10 s (got {got!r})")
    finally:
        sub.close()


def scan_all(client: Any, pattern: str) -> set[str]:
    if CLUSTER:
        return set(client.scan_iter(match=pattern, count=100, target_nodes=RedisCluster.PRIMARIES))
    return set(client.scan_iter(match=pattern, count=100))


def check() -> dict[str, Any]:
    checks: dict[str, str] = {}

    def run(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {exc}"

    client = connect()
    prefix = f"ct:redis-py:{os.getpid()}:"

    def set_get_ttl() -> None:
        client.set(f"{prefix}k", "v", ex=60)
        value, ttl = client.get(f"{prefix}k"), client.ttl(f"{prefix}k")
        assert value == "v" and 0 < ttl <= 60, (value, ttl)

    def scan() -> None:
        for i in range(30):
            client.set(f"{prefix}scan:{i}", str(i))
        found = scan_all(client, f"{prefix}scan:*")
        assert len(found) == 30, f"SCAN found {len(found)} of 30 keys"

    run("set_get_ttl", set_get_ttl)
    run("pubsub", lambda: pubsub(client))
    run("scan", scan)
    refused = json.loads((Path(__file__).parent / "commands.json").read_text())
    for args in refused["disabled"]:
        run(f"disabled {args[0]}", lambda a=args: expect_refused(client, *a))  # type: ignore[misc]
    admin = refused["admin"] + (refused["cluster_admin"] if CLUSTER else [])
    for args in admin:
        run(f"admin {' '.join(args[:2])}", lambda a=args: expect_refused(client, *a))  # type: ignore[misc]
    client.close()
    return {"client": "redis-py", "mode": MODE, "checks": checks}


def loop(seconds: float) -> None:
    client = connect()
    keys = [f"ct:loop:redis-py:{i}" for i in range(24)]
    end = time.monotonic() + seconds
    t = 0
    while time.monotonic() < end:
        window_end = time.monotonic() + 1
        ok = errors = 0
        last = ""
        while time.monotonic() < window_end:
            for key in keys:
                if time.monotonic() >= window_end:
                    break  # one line a second, even while failing
                try:
                    value = str(time.time())
                    client.set(key, value)
                    got = client.get(key)
                    if got != value:
                        raise AssertionError(f"read {got!r}")
                    ok += 1
                except Exception as exc:
                    errors += 1
                    last = f"{type(exc).__name__}: {exc}"[:200]
                    time.sleep(0.05)
        t += 1
        print(json.dumps({"t": t, "ok": ok, "errors": errors, "last_error": last}), flush=True)


def main() -> int:
    if sys.argv[1:2] == ["check"]:
        print(json.dumps(check()))
        return 0
    if sys.argv[1:2] == ["loop"]:
        # A hung connection must not outlive the run.
        threading.Timer(float(sys.argv[2]) + 30, lambda: os._exit(3)).start()
        loop(float(sys.argv[2]))
        os._exit(0)
    print("usage: conformance_py.py check | loop SECONDS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
