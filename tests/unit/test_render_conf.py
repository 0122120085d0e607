"""redis.conf and auth.conf rendering."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachetier import names
from cachetier.api.models import CacheTierSpec, parse_spec
from cachetier.render import TierSecrets, render_auth_conf, render_redis_conf
from cachetier.render._conf import quote_conf

SECRETS = TierSecrets(app_password="app-pw", operator_password="op-pw", app_password_generated=True)


def _spec(**raw: Any) -> CacheTierSpec:
    return parse_spec(raw)


def _lines(conf: str) -> list[str]:
    return [line for line in conf.splitlines() if line and not line.startswith("#")]


def _persistence(mode: str, schedule: list[str] | None = None) -> CacheTierSpec:
    persistence: dict[str, Any] = {"mode": mode}
    if schedule is not None:
        persistence["rdbSchedule"] = schedule
    return _spec(redis={"persistence": persistence})


def test_defaults_follow_the_seed_guide() -> None:
    lines = _lines(render_redis_conf(CacheTierSpec()))
    for expected in (
        "bind * -::*",
        "port 6379",
        "protected-mode yes",
        "maxmemory 2gb",
        "maxmemory-policy allkeys-lru",
        "appendonly yes",
        "appendfsync everysec",
        "save 900 1",
        "save 300 10",
        "save 60 10000",
        "dir /data",
        "loglevel notice",
        'logfile ""',
    ):
        assert expected in lines
    assert not any(line.startswith(("requirepass", "rename-command", "user ")) for line in lines)


def test_persistence_none_disables_snapshots_and_aof() -> None:
    lines = _lines(render_redis_conf(_persistence("none")))
    assert [line for line in lines if line.startswith(("save", "append"))] == [
        'save ""',
        "appendonly no",
    ]


def test_persistence_rdb_uses_the_schedule() -> None:
    lines = _lines(render_redis_conf(_persistence("rdb", ["3600 1", "300 100"])))
    assert [line for line in lines if line.startswith(("save", "append"))] == [
        "save 3600 1",
        "save 300 100",
        "appendonly no",
    ]


def test_persistence_aof_keeps_the_snapshots_too() -> None:
    lines = _lines(render_redis_conf(_persistence("aof", ["60 5"])))
    assert [line for line in lines if line.startswith(("save", "append"))] == [
        "save 60 5",
        "appendonly yes",
        "appendfsync everysec",
    ]


def test_empty_schedule_means_no_snapshots() -> None:
    lines = _lines(render_redis_conf(_persistence("rdb", [])))
    assert 'save ""' in lines
    assert not [line for line in lines if line.startswith("save ") and line != 'save ""']


def test_custom_memory_policy_and_loglevel() -> None:
    spec = _spec(
        redis={"maxmemory": "512mb", "maxmemoryPolicy": "volatile-lru", "logLevel": "warning"}
    )
    lines = _lines(render_redis_conf(spec))
    assert {"maxmemory 512mb", "maxmemory-policy volatile-lru", "loglevel warning"} <= set(lines)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"mode": "cluster"},
        {"tls": {"enabled": True, "secretName": "t"}},
        {
            "mode": "cluster",
            "tls": {"enabled": True, "secretName": "t"},
            "auth": {"enabled": False},
        },
    ],
)
def test_include_is_last_and_no_secret_in_redis_conf(raw: dict[str, Any]) -> None:
    conf = render_redis_conf(_spec(**raw))
    assert _lines(conf)[-1] == "include /etc/redis/auth/auth.conf"
    assert conf.count("include ") == 1
    assert "app-pw" not in conf and "op-pw" not in conf
    assert conf.endswith("\n")


def test_protected_mode_off_only_without_auth() -> None:
    lines = _lines(render_redis_conf(_spec(auth={"enabled": False})))
    assert "protected-mode no" in lines


def test_tls_serves_tls_only() -> None:
    lines = _lines(render_redis_conf(_spec(tls={"enabled": True, "secretName": "t"})))
    assert "port 0" in lines
    assert "tls-port 6379" in lines
    assert "port 6379" not in lines
    assert {
        "tls-cert-file /etc/redis/tls/tls.crt",
        "tls-key-file /etc/redis/tls/tls.key",
        "tls-ca-cert-file /etc/redis/tls/ca.crt",
        "tls-auth-clients no",
        "tls-replication yes",
    } <= set(lines)
    assert "tls-cluster yes" not in lines


def test_cluster_mode() -> None:
    lines = _lines(
        render_redis_conf(_spec(mode="cluster", tls={"enabled": True, "secretName": "t"}))
    )
    assert {
        "cluster-enabled yes",
        "cluster-config-file /data/nodes.conf",
        "cluster-port 16379",
        "cluster-node-timeout 5000",
        "cluster-require-full-coverage no",
        "tls-cluster yes",
    } <= set(lines)
    assert not any("cluster" in line for line in _lines(render_redis_conf(CacheTierSpec())))


APP_RULES = "+@all -@admin -@dangerous +info +sort +sort_ro +keys +flushdb +flushall"


def test_auth_conf_users() -> None:
    lines = _lines(render_auth_conf(CacheTierSpec(), SECRETS))
    assert lines == [
        "user default on >app-pw ~* &* " + APP_RULES + " -flushdb -flushall -keys",
        f"user {names.OPERATOR_USER} on >op-pw ~* &* +@all",
        f"masteruser {names.OPERATOR_USER}",
        "masterauth op-pw",
    ]


def test_disabled_commands_become_lowercase_acl_denials() -> None:
    spec = _spec(redis={"disabledCommands": ["FLUSHALL", "Debug", "CONFIG|SET", "flushall"]})
    default_user = _lines(render_auth_conf(spec, SECRETS))[0]
    assert default_user.endswith(APP_RULES + " -flushall -debug -config|set")


def test_no_disabled_commands() -> None:
    default_user = _lines(render_auth_conf(_spec(redis={"disabledCommands": []}), SECRETS))[0]
    assert default_user.endswith(APP_RULES)


def test_operator_user_is_never_restricted() -> None:
    spec = _spec(redis={"disabledCommands": ["CLUSTER", "INFO"]})
    operator_user = _lines(render_auth_conf(spec, SECRETS))[1]
    assert operator_user.endswith("+@all")


def test_auth_disabled_means_nopass_for_the_app_user_only() -> None:
    secrets = TierSecrets(
        app_password=None, operator_password="op-pw", app_password_generated=False
    )
    lines = _lines(render_auth_conf(_spec(auth={"enabled": False}), secrets))
    assert lines[0].startswith("user default on nopass ~* &* " + APP_RULES)
    assert lines[1].startswith(f"user {names.OPERATOR_USER} on >op-pw ")


def test_auth_enabled_without_password_is_refused() -> None:
    secrets = TierSecrets(
        app_password=None, operator_password="op-pw", app_password_generated=False
    )
    with pytest.raises(ValueError, match="app password"):
        render_auth_conf(CacheTierSpec(), secrets)


def test_empty_operator_password_is_refused() -> None:
    secrets = TierSecrets(app_password="a", operator_password="", app_password_generated=True)
    with pytest.raises(ValueError, match="operator_password"):
        render_auth_conf(CacheTierSpec(), secrets)


def test_password_with_spaces_and_quotes_is_quoted() -> None:
    secrets = TierSecrets(
        app_password='a b"c\\d', operator_password="op-pw", app_password_generated=False
    )
    default_user = _lines(render_auth_conf(CacheTierSpec(), secrets))[0]
    assert default_user.startswith('user default on ">a b\\"c\\\\d" ~* ')


def _sdssplitargs(line: str) -> list[str]:
    """Port of Redis' sdssplitargs (how redis.conf lines are tokenised)."""
    out: list[str] = []
    raw = line.encode("utf-8")
    i = 0
    while True:
        while i < len(raw) and raw[i : i + 1].isspace():
            i += 1
        if i >= len(raw):
            return out
        token = bytearray()
        in_quotes = False
        while True:
            if in_quotes:
                assert i < len(raw), "unterminated quotes"
                char = raw[i : i + 1]
                if char == b"\\" and raw[i + 1 : i + 2] == b"x" and i + 3 < len(raw):
                    token += bytes([int(raw[i + 2 : i + 4], 16)])
                    i += 3
                elif char == b"\\" and i + 1 < len(raw):
                    escaped = raw[i + 1 : i + 2]
                    token += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}.get(
                        escaped, escaped
                    )
                    i += 1
                elif char == b'"':
                    assert i + 1 >= len(raw) or raw[i + 1 : i + 2].isspace()
                    i += 1
                    break
                else:
                    token += char
            else:
                if i >= len(raw) or raw[i : i + 1].isspace():
                    break
                char = raw[i : i + 1]
                if char == b'"':
                    in_quotes = True
                else:
                    assert char != b"'", "single quotes would be interpreted"
                    token += char
            i += 1
        out.append(token.decode("utf-8"))


@given(st.text(min_size=1))
def test_quoted_tokens_read_back_verbatim(token: str) -> None:
    assert _sdssplitargs(f"masterauth {quote_conf(token)}") == ["masterauth", token]
