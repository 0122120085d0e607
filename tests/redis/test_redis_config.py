"""spec.redis.config against a real redis-server: the directive tables are Redis's own,
rendered settings load, live ones apply with CONFIG SET (once, even when Redis prints
them otherwise), restart-only ones are refused at runtime as the table says."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cachetier.api import redis_config
from cachetier.api.models import parse_spec
from cachetier.ports import Target
from cachetier.redis.probe import enforce_config
from cachetier.render._conf import user_config_lines

SETTINGS = {
    "timeout": "300",
    "notify-keyspace-events": "Ex",
    "slowlog-log-slower-than": "5000",
    "hz": "20",
    "client-output-buffer-limit": "pubsub 64mb 16mb 90",
    "databases": "4",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """redis-server loading the redis.conf lines rendered from SETTINGS."""
    tmp: Path = tmp_path_factory.mktemp("config")
    conf = tmp / "redis.conf"
    spec = parse_spec({"redis": {"config": SETTINGS}})
    conf.write_text("\n".join(user_config_lines(spec)) + "\n")
    port = _free_port()
    proc = subprocess.Popen(
        [
            *("redis-server", str(conf), "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, "redis-server refused the rendered settings"
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_known_directives_are_exactly_what_redis_answers(server: int) -> None:
    names = set(redis.Redis(port=server, decode_responses=True).config_get("*"))
    assert names == set(redis_config.KNOWN)


def test_rendered_settings_are_what_redis_runs_with(server: int) -> None:
    live = redis.Redis(port=server, decode_responses=True).config_get(*SETTINGS)
    assert live["timeout"] == "300"
    assert live["notify-keyspace-events"] == "xE"  # Redis prints its flags its own way
    assert live["slowlog-log-slower-than"] == "5000"
    assert live["hz"] == "20"
    assert live["databases"] == "4"
    assert "pubsub 67108864 16777216 90" in live["client-output-buffer-limit"]


def test_restart_only_directives_are_refused_at_runtime_and_live_ones_are_not(
    server: int,
) -> None:
    client = redis.Redis(port=server, decode_responses=True)
    current = client.config_get("*")
    for name in sorted(redis_config.KNOWN - set(redis_config.owned_names())):
        try:
            client.config_set(name, current[name])
            refused = False
        except redis.ResponseError as exc:
            assert "immutable" in str(exc) or "protected" in str(exc), (name, exc)
            refused = True
        assert refused == (name in redis_config.RESTART_ONLY), name
        assert redis_config.live(name) == (not refused), name


def test_live_settings_apply_once_even_when_redis_prints_them_otherwise(server: int) -> None:
    target = Target("127.0.0.1", server)
    wanted = {"timeout": "120", "notify-keyspace-events": "KEA"}
    assert enforce_config(target, wanted) == {
        "timeout": ("300", "120"),
        "notify-keyspace-events": ("xE", "KEA"),
    }
    live = redis.Redis(port=server, decode_responses=True).config_get(*wanted)
    assert live == {"timeout": "120", "notify-keyspace-events": "AKE"}
    assert enforce_config(target, wanted) == {}  # "KEA" reads back "AKE": nothing to do


def test_a_value_redis_refuses_is_skipped_and_the_rest_applied(server: int) -> None:
    target = Target("127.0.0.1", server)
    fixed = enforce_config(target, {"hz": "not-a-number", "slowlog-max-len": "256"})
    assert fixed == {"slowlog-max-len": ("128", "256")}
