"""Health probes against a real redis-server: latency, error rate window, unreachable."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cachetier.redis.options import quiet_handshake
from cachetier.redis.probe import MIN_COMMANDS_FOR_ERROR_RATE, Target, enforce_config, probe

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Target]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            "pw",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = Target(host="127.0.0.1", port=port, password="pw")
    try:
        deadline = time.monotonic() + 20
        while not probe(target, None).up:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield target
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_probe_measures_and_counts_only_clients_errors(server: Target) -> None:
    first = probe(server, None)
    assert first.up and first.latency_ms is not None and first.latency_ms >= 0
    assert first.counters is not None
    # Probes alone make no error replies (no CLIENT SETINFO on old servers).
    second = probe(server, first.counters)
    assert second.counters is not None
    assert second.counters.errors == first.counters.errors

    client = redis.Redis(host=server.host, port=server.port, password="pw", **quiet_handshake())
    client.set("k", "v")
    for _ in range(MIN_COMMANDS_FOR_ERROR_RATE):
        client.get("k")
    for _ in range(50):
        with pytest.raises(redis.ResponseError):
            client.lpush("k", "x")  # WRONGTYPE: an error reply
    client.get("missing")
    client.close()
    third = probe(server, second.counters)
    assert third.error_rate is not None and 0.25 < third.error_rate < 0.4
    assert third.hit_rate is not None and third.hit_rate > 0.9


def test_small_window_has_no_error_rate(server: Target) -> None:
    base = probe(server, None).counters
    client = redis.Redis(host=server.host, port=server.port, password="pw", **quiet_handshake())
    with pytest.raises(redis.ResponseError):
        client.execute_command("NOSUCHCOMMAND")
    client.close()
    assert probe(server, base).error_rate is None


def test_unreachable_and_wrong_password() -> None:
    down = probe(Target(host="127.0.0.1", port=_free_port()), None, timeout=0.5)
    assert not down.up and "ConnectionError" in down.error


def test_wrong_password_is_down(server: Target) -> None:
    bad = probe(Target(host=server.host, port=server.port, password="nope"), None)
    assert not bad.up and bad.error


def test_enforce_config_puts_back_what_was_changed_live(server: Target) -> None:
    wanted = {"maxmemory": str(32 * 1024 * 1024), "maxmemory-policy": "allkeys-lru"}
    first = enforce_config(server, wanted)  # the server started without them
    assert first == {
        "maxmemory": ("0", wanted["maxmemory"]),
        "maxmemory-policy": ("noeviction", "allkeys-lru"),
    }
    assert enforce_config(server, wanted) == {}  # nothing differs: nothing written
    client = redis.Redis(host=server.host, port=server.port, password="pw", **quiet_handshake())
    client.config_set("maxmemory", "1mb")
    assert enforce_config(server, wanted) == {"maxmemory": ("1048576", wanted["maxmemory"])}
    assert client.config_get("maxmemory")["maxmemory"] == wanted["maxmemory"]
    client.close()


def test_failed_administrative_commands_are_not_application_errors(server: Target) -> None:
    """Sentinel's CONFIG REWRITE after a failover fails on a read-only redis.conf (here:
    no config file at all); such failures of commands the application may not run do
    not count against the error rate that rolls consumers back."""
    base = probe(server, None).counters
    client = redis.Redis(host=server.host, port=server.port, password="pw", **quiet_handshake())
    for _ in range(MIN_COMMANDS_FOR_ERROR_RATE):
        client.get("k")
    for _ in range(20):
        with pytest.raises(redis.ResponseError):
            client.execute_command("CONFIG", "REWRITE")
    client.close()
    after = probe(server, base)
    assert after.error_rate == 0.0, after
    assert not (after.error_classes or {}).get("ERR"), after.error_classes
