"""spec.redis.config: refused names, rendering, what restarts pods and what is set live."""

from __future__ import annotations

from typing import Any

import pytest

from cachetier import names
from cachetier.api import redis_config, validate
from cachetier.api.models import parse_spec
from cachetier.render import TierSecrets, render_redis_conf, render_tier
from cachetier.render._types import TierRef

SECRETS = TierSecrets(app_password="app-pw", operator_password="op-pw", app_password_generated=True)


def _hash(config: dict[str, str], **extra: Any) -> str:
    spec = parse_spec({"redis": {"config": config}, **extra})
    objects = render_tier(TierRef("cache", "ns", "uid-1"), spec, SECRETS)
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    return str(sts["spec"]["template"]["metadata"]["annotations"][names.ANNOTATION_CONFIG_HASH])


def test_user_settings_are_written_first_so_the_operators_lines_win() -> None:
    spec = parse_spec(
        {"redis": {"config": {"timeout": "300", "notify-keyspace-events": "Ex", "hz": "20"}}}
    )
    conf = render_redis_conf(spec)
    lines = conf.splitlines()
    user = lines.index("# spec.redis.config")
    assert lines[user + 1 : user + 4] == ["hz 20", "notify-keyspace-events Ex", "timeout 300"]
    assert user < lines.index("# Network")


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("", 'notify-keyspace-events ""'),
        ("K E x", 'notify-keyspace-events "K E x"'),
        ('a"b', 'notify-keyspace-events "a\\"b"'),
    ],
)
def test_values_are_quoted_as_one_argument(value: str, line: str) -> None:
    spec = parse_spec({"redis": {"config": {"notify-keyspace-events": value}}})
    assert line in render_redis_conf(spec).splitlines()


def test_multi_argument_directives_keep_their_arguments() -> None:
    spec = parse_spec({"redis": {"config": {"client-output-buffer-limit": "pubsub 64mb 16mb 90"}}})
    assert "client-output-buffer-limit pubsub 64mb 16mb 90" in render_redis_conf(spec)


def test_a_live_setting_restarts_nothing_a_restart_only_one_does() -> None:
    base = _hash({})
    assert _hash({"timeout": "300", "notify-keyspace-events": "Ex"}) == base
    assert _hash({"databases": "32"}) != base
    assert _hash({"databases": "32"}) != _hash({"databases": "16"})


@pytest.mark.parametrize(
    "name", ["requirepass", "port", "dir", "save", "cluster-node-timeout", "tls-port", "user"]
)
def test_owned_directives_are_refused_naming_them(name: str) -> None:
    _, problems = validate.check_spec({"redis": {"config": {name: "1"}}})
    assert [str(p) for p in problems] == [
        f"spec.redis.config.{name}: {name} is set by the operator, not by redis.config"
    ]


def test_an_unknown_directive_is_refused_before_redis_would_refuse_to_start() -> None:
    _, problems = validate.check_spec({"redis": {"config": {"timeot": "300"}}})
    assert len(problems) == 1 and problems[0].field == "spec.redis.config.timeot"
    assert "not a redis.conf directive" in problems[0].message


def test_newlines_cannot_smuggle_a_second_directive() -> None:
    spec, problems = validate.check_spec({"redis": {"config": {"timeout": "1\nrequirepass x"}}})
    assert spec is None and problems


def test_the_tables_agree() -> None:
    assert set(redis_config.RESTART_ONLY) <= redis_config.KNOWN
    assert not any(redis_config.owned(n) for n in redis_config.RESTART_ONLY)
    assert redis_config.live("timeout") and not redis_config.live("databases")
    assert not redis_config.live("requirepass")
