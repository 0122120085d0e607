"""Semantic validation of a spec (what the API server cannot check, and its mirrors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cachetier.api.models import CacheTierSpec
from cachetier.api.validate import Problem, check_spec, validate_spec

INVALID_DIR = Path(__file__).resolve().parents[1] / "data" / "invalid"
CASES = sorted(INVALID_DIR.glob("*.yaml"))
# Cases only the API server can refuse: they are not about the spec's content.
SERVER_ONLY = {"name-too-long"}


def spec(**raw: Any) -> CacheTierSpec:
    return CacheTierSpec.model_validate(raw)


def fields(problems: list[Problem]) -> list[str]:
    return [problem.field for problem in problems]


def test_defaults_are_valid() -> None:
    assert validate_spec(CacheTierSpec()) == []


def test_the_spec_example_is_valid() -> None:
    example = spec(
        redis={"maxmemory": "2gb", "persistence": {"mode": "rdb"}},
        resources={"requests": {"cpu": "100m", "memory": "2560Mi"}, "limits": {"memory": "3Gi"}},
        consumers={"selector": {"matchLabels": {"cache.ordo.dev/tasks": "true"}}},
        rollout={"percent": 50, "steps": [10, 25, 50], "stepInterval": "10m"},
    )
    assert validate_spec(example) == []


def test_cluster_mode_without_persistence_is_fine() -> None:
    assert validate_spec(spec(mode="cluster", redis={"persistence": {"mode": "none"}})) == []


def test_maxmemory_above_the_memory_limit() -> None:
    problems = validate_spec(
        spec(redis={"maxmemory": "4gb"}, resources={"limits": {"memory": "3Gi"}})
    )

    assert fields(problems) == ["spec.redis.maxmemory"]
    message = problems[0].message
    assert "4gb" in message and "3Gi" in message and "resources.limits.memory" in message
    assert "e.g. maxmemory 2304mb" in message  # three quarters of the limit


def test_maxmemory_equal_to_the_limit_leaves_no_headroom() -> None:
    problems = validate_spec(
        spec(redis={"maxmemory": "3gb"}, resources={"limits": {"memory": "3Gi"}})
    )
    assert fields(problems) == ["spec.redis.maxmemory"]


def test_maxmemory_units_are_compared_in_bytes() -> None:
    # 3g is 3 * 10^9 bytes, less than 3Gi; 3200mb is more.
    fits = spec(redis={"maxmemory": "3g"}, resources={"limits": {"memory": "3Gi"}})
    too_big = spec(redis={"maxmemory": "3200mb"}, resources={"limits": {"memory": "3Gi"}})

    assert validate_spec(fits) == []
    assert fields(validate_spec(too_big)) == ["spec.redis.maxmemory"]


def test_unlimited_maxmemory_under_a_memory_limit() -> None:
    problems = validate_spec(
        spec(redis={"maxmemory": "0"}, resources={"limits": {"memory": "1Gi"}})
    )

    assert fields(problems) == ["spec.redis.maxmemory"]
    assert "OOM" in problems[0].message


def test_maxmemory_is_not_checked_without_a_memory_limit_or_in_external_mode() -> None:
    assert validate_spec(spec(redis={"maxmemory": "64gb"})) == []
    external = spec(
        mode="external",
        external={"urlSecretRef": {"name": "managed", "key": "url"}},
        redis={"maxmemory": "64gb"},
        resources={"limits": {"memory": "1Gi"}},
    )
    assert validate_spec(external) == []


def test_request_above_limit() -> None:
    problems = validate_spec(
        spec(resources={"requests": {"cpu": 2, "memory": "1Gi"}, "limits": {"cpu": "1500m"}})
    )
    assert fields(problems) == ["spec.resources.requests.cpu"]
    assert "2 is more than the limit 1500m" in problems[0].message


def test_zero_sizes() -> None:
    problems = validate_spec(
        spec(redis={"persistence": {"size": "0"}}, resources={"limits": {"memory": "0"}})
    )
    assert "spec.redis.persistence.size" in fields(problems)
    assert "spec.resources.limits.memory" in fields(problems)
    assert validate_spec(spec(redis={"persistence": {"mode": "none", "size": "0"}})) == []


def test_rdb_without_schedule() -> None:
    problems = validate_spec(spec(redis={"persistence": {"mode": "rdb", "rdbSchedule": []}}))
    assert fields(problems) == ["spec.redis.persistence.rdbSchedule"]
    assert validate_spec(spec(redis={"persistence": {"mode": "aof", "rdbSchedule": []}})) == []


def test_disabled_commands_are_case_insensitive() -> None:
    problems = validate_spec(spec(redis={"disabledCommands": ["KEYS", "FLUSHALL", "keys"]}))
    assert fields(problems) == ["spec.redis.disabledCommands[2]"]


@pytest.mark.parametrize(
    ("rollout", "field", "text"),
    [
        ({"steps": [10, 50, 25]}, "spec.rollout.steps", "increasing"),
        ({"steps": [10, 10, 50]}, "spec.rollout.steps", "increasing"),
        ({"percent": 25, "steps": [10, 50]}, "spec.rollout.steps", "past rollout.percent 25"),
        ({"steps": [10, 50], "stepInterval": "0s"}, "spec.rollout.stepInterval", "more than 0s"),
    ],
)
def test_rollout_steps(rollout: dict[str, Any], field: str, text: str) -> None:
    problems = validate_spec(spec(rollout=rollout))

    assert fields(problems) == [field]
    assert text in problems[0].message


def test_zero_step_interval_without_steps_is_harmless() -> None:
    assert validate_spec(spec(rollout={"stepInterval": "0s"})) == []


def test_tls() -> None:
    assert fields(validate_spec(spec(tls={"enabled": True}))) == ["spec.tls.secretName"]
    assert validate_spec(spec(tls={"enabled": True, "secretName": "redis-tls"})) == []
    external = spec(
        mode="external",
        external={"urlSecretRef": {"name": "managed", "key": "url"}},
        tls={"enabled": True, "secretName": "redis-tls"},
    )
    problems = validate_spec(external)
    assert fields(problems) == ["spec.tls.enabled"]
    assert "rediss://" in problems[0].message


def test_external_url() -> None:
    ref = {"name": "managed", "key": "url"}
    assert fields(validate_spec(spec(mode="external"))) == ["spec.external.urlSecretRef"]
    assert validate_spec(spec(mode="external", external={"urlSecretRef": ref})) == []
    problems = validate_spec(spec(mode="cluster", external={"urlSecretRef": ref}))
    assert fields(problems) == ["spec.external.urlSecretRef"]
    assert "only valid" in problems[0].message


def test_password_ref_needs_auth() -> None:
    ref = {"name": "pw", "key": "password"}
    problems = validate_spec(spec(auth={"enabled": False, "passwordSecretRef": ref}))
    assert fields(problems) == ["spec.auth.passwordSecretRef"]
    assert validate_spec(spec(auth={"enabled": True, "passwordSecretRef": ref})) == []


def test_consumer_selector() -> None:
    assert fields(validate_spec(spec(consumers={"selector": {}}))) == ["spec.consumers.selector"]
    expressions = [
        {"key": "a", "operator": "In"},
        {"key": "b", "operator": "Exists", "values": ["x"]},
        {"key": "c", "operator": "NotIn", "values": ["x"]},
    ]
    problems = validate_spec(spec(consumers={"selector": {"matchExpressions": expressions}}))
    assert fields(problems) == [
        "spec.consumers.selector.matchExpressions[0].values",
        "spec.consumers.selector.matchExpressions[1].values",
    ]
    assert "non-empty for operator In" in problems[0].message
    assert "empty for operator Exists" in problems[1].message


def test_every_problem_is_reported_not_only_the_first() -> None:
    problems = validate_spec(
        spec(mode="external", tls={"enabled": True}, rollout={"steps": [5, 1]})
    )
    assert set(fields(problems)) == {
        "spec.tls.enabled",
        "spec.external.urlSecretRef",
        "spec.rollout.steps",
    }


def test_problem_reads_as_path_and_message() -> None:
    field, message = problem = Problem("spec.redis.maxmemory", "is too big")
    assert (field, message) == ("spec.redis.maxmemory", "is too big")
    assert str(problem) == "spec.redis.maxmemory: is too big"


def test_check_spec_reports_pydantic_errors_with_api_paths() -> None:
    parsed, problems = check_spec({"rollout": {"percent": 150, "steps": [10, "x"]}})

    assert parsed is None
    assert "spec.rollout.percent" in fields(problems)
    assert "spec.rollout.steps[1]" in fields(problems)


def test_check_spec_runs_the_semantic_checks() -> None:
    parsed, problems = check_spec({"mode": "external"})
    assert parsed is not None and parsed.mode == "external"
    assert fields(problems) == ["spec.external.urlSecretRef"]
    assert check_spec(None) == (CacheTierSpec(), [])


def test_invalid_corpus_is_big_enough() -> None:
    assert len(CASES) >= 14


@pytest.mark.parametrize("case", CASES, ids=[path.stem for path in CASES])
def test_invalid_corpus_is_refused_by_the_operator_too(case: Path) -> None:
    # The e2e test proves the API server refuses each case; if one ever got past
    # it (an older CRD), the operator must refuse it as well, not act on it.
    manifest = yaml.safe_load(case.read_text())
    assert manifest["apiVersion"] == "cachetier.io/v1alpha1"
    assert manifest["kind"] == "CacheTier"
    assert "# expect: " in case.read_text()
    if case.stem in SERVER_ONLY:
        return
    assert manifest["metadata"]["name"] == case.stem
    _, problems = check_spec(manifest.get("spec"))
    assert problems, f"{case.name} passes the operator's own checks"


def test_values_out_of_bounds_are_invalid_and_cheap() -> None:
    huge = spec(redis={"maxmemory": "99999999999gb"})
    assert fields(validate_spec(huge)) == ["spec.redis.maxmemory"]
    assert "1 PiB" in validate_spec(huge)[0].message
    # 1e99 passes the schema's pattern (two exponent digits) but not the bounds; it is
    # refused without ever being turned into a 100-digit int.
    raw = {"redis": {"persistence": {"size": "1e99"}}}
    parsed, problems = check_spec(raw)
    assert parsed is not None
    assert fields(problems) == ["spec.redis.persistence.size"]
    assert "too large" in problems[0].message


def test_external_url_with_a_bad_percent_escape_is_refused() -> None:
    from cachetier.render import parse_redis_url

    with pytest.raises(ValueError, match="malformed percent-escape"):
        parse_redis_url("rediss://user:p%zz@h:6379")
    assert parse_redis_url("rediss://user:p%25zz@h:6379")[3] == "p%zz"


def test_disabled_commands_must_be_redis_commands() -> None:
    problems = validate_spec(spec(redis={"disabledCommands": ["KEYS", "NOSUCHCMD", "config|set"]}))
    assert fields(problems) == ["spec.redis.disabledCommands[1]"]
    assert "NOSUCHCMD is not a Redis command" in problems[0].message
    assert validate_spec(spec(redis={"disabledCommands": ["CLIENT|SETINFO", "hexpire"]})) == []
