"""Unit tests for Service host names in text (ctdev.nodeagent.names)."""

from __future__ import annotations

import pytest

from ctdev.nodeagent.names import ServiceName, find, parse, rewrite


def test_find_full_names_and_url_hosts() -> None:
    text = (
        "redis://:pw@tasks-cache.ordo.svc:6379/0 replicaof r-0.r-h.ordo.svc.cluster.local 6379 "
        "x.y.svc.cluster.local. http://api:8080/x https://www.example.com/ not.a.svc.example"
    )
    assert find(text) == {
        "tasks-cache.ordo.svc",
        "r-0.r-h.ordo.svc.cluster.local",
        "x.y.svc.cluster.local",
        "api",
    }


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("redis.ordo.svc", ServiceName("redis", "ordo")),
        ("redis.ordo.svc.cluster.local", ServiceName("redis", "ordo")),
        ("redis.ordo.svc.cluster.local.", ServiceName("redis", "ordo")),
        ("r-0.r-headless.ordo.svc", ServiceName("r-headless", "ordo", "r-0")),
        ("redis", ServiceName("redis", "default-ns")),
        ("redis.other", ServiceName("redis", "other")),
        ("a.b.c.d.svc", None),
        ("a.b.c", None),
    ],
)
def test_parse(name: str, parsed: ServiceName | None) -> None:
    assert parse(name, "default-ns") == parsed


def test_rewrite_replaces_only_mapped_names() -> None:
    mapping = {"redis.ordo.svc": "127.11.0.1", "api": "127.11.0.2"}
    text = "redis.ordo.svc:6379 myredis.ordo.svc http://api:80 api redis.ordo.svc.example.com"
    assert rewrite(text, mapping) == (
        "127.11.0.1:6379 myredis.ordo.svc http://127.11.0.2:80 api redis.ordo.svc.example.com"
    )
    assert rewrite(text, {}) == text
