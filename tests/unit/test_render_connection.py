"""Connection URLs, the connection Secret and external URL parsing."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from cachetier import names
from cachetier.api.models import CacheTierSpec, parse_spec
from cachetier.render import (
    TierRef,
    build_connection_secret,
    build_external_connection_secret,
    connection_url,
    parse_redis_url,
    spec_hash,
)

REF = TierRef(name="tasks-cache", namespace="ordo", uid="uid-1")


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_url_with_password() -> None:
    url = connection_url(REF, CacheTierSpec(), "app-pw")
    assert url == "redis://:app-pw@tasks-cache.ordo.svc:6379/0"


def test_url_with_tls_is_rediss() -> None:
    spec = parse_spec({"tls": {"enabled": True, "secretName": "t"}})
    assert connection_url(REF, spec, "pw") == "rediss://:pw@tasks-cache.ordo.svc:6379/0"


def test_url_without_auth_has_no_credentials() -> None:
    spec = parse_spec({"auth": {"enabled": False}})
    assert connection_url(REF, spec, None) == "redis://tasks-cache.ordo.svc:6379/0"


def test_url_percent_encodes_the_password() -> None:
    url = connection_url(REF, CacheTierSpec(), "p@ss:w/rd#?% ")
    assert url == "redis://:p%40ss%3Aw%2Frd%23%3F%25%20@tasks-cache.ordo.svc:6379/0"
    assert parse_redis_url(url)[3] == "p@ss:w/rd#?% "


def test_url_for_external_mode_is_refused() -> None:
    spec = parse_spec({"mode": "external", "external": {"urlSecretRef": {"name": "s", "key": "k"}}})
    with pytest.raises(ValueError, match="external"):
        connection_url(REF, spec, None)


def test_connection_secret_keys() -> None:
    secret = build_connection_secret(
        REF,
        url="redis://:pw@h:6379/0",
        host="h",
        port=6379,
        password="pw",
        mode="cluster",
    )
    assert secret["metadata"]["name"] == names.connection_secret(REF.name)
    assert secret["type"] == "servicebinding.io/redis"
    assert _decoded(secret) == {
        "url": "redis://:pw@h:6379/0",
        "uri": "redis://:pw@h:6379/0",
        "host": "h",
        "port": "6379",
        "password": "pw",
        "type": "redis",
        "provider": "cachetier",
        "mode": "cluster",
    }
    assert set(names.CONNECTION_KEYS) <= set(secret["data"])
    assert secret["metadata"]["annotations"][names.ANNOTATION_SPEC_HASH] == spec_hash(secret)


def test_connection_secret_without_password_has_no_password_key() -> None:
    secret = build_connection_secret(
        REF, url="redis://h:6379/0", host="h", port=6379, password=None
    )
    assert "password" not in secret["data"]
    assert _decoded(secret)["mode"] == "standalone"


def test_parse_plain_url() -> None:
    assert parse_redis_url("redis://cache.example.com:6380/2") == (
        "cache.example.com",
        6380,
        None,
        None,
        False,
    )


def test_parse_rediss_stays_tls_with_default_port() -> None:
    host, port, username, password, tls = parse_redis_url("rediss://user:secret@redis.cloud")
    assert (host, port, username, password, tls) == ("redis.cloud", 6379, "user", "secret", True)


def test_parse_percent_decodes_credentials() -> None:
    _, _, username, password, _ = parse_redis_url("redis://us%40er:p%40ss%3Aw%2F%25d@h:1/0")
    assert username == "us@er"
    assert password == "p@ss:w/%d"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:pw@:6379/0", "no host"),
        ("redis://", "no host"),
        ("", "scheme"),
        ("http://h:6379", "scheme"),
        ("h:6379", "scheme"),
        ("redis://h:notaport/0", "malformed"),
        ("redis://h:99999/0", "malformed"),
        ("redis://h:6379/cache", "database number"),
    ],
)
def test_parse_rejects_malformed_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redis_url(url)


def test_parse_errors_never_echo_the_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_redis_url("http://user:hunter2@h:6379")
    assert "hunter2" not in str(info.value)


def test_external_connection_secret() -> None:
    url = "rediss://default:s%3Acret@redis-123.cloud.example:12000/0"
    secret = build_external_connection_secret(REF, url)
    assert secret["metadata"]["name"] == "tasks-cache-connection"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert _decoded(secret) == {
        "url": url,
        "uri": url,
        "host": "redis-123.cloud.example",
        "port": "12000",
        "username": "default",
        "password": "s:cret",
        "type": "redis",
        "provider": "cachetier",
        "mode": "external",
    }


def test_external_connection_secret_rejects_a_bad_url() -> None:
    with pytest.raises(ValueError, match="no host"):
        build_external_connection_secret(REF, "rediss://user:pw@/0")
