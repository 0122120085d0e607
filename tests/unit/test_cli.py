"""The ``cachetier`` CLI: argument parsing, patches, tables and one-line errors (no cluster)."""

from __future__ import annotations

import argparse
import json
import socket
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cachetier import cli, names
from cachetier.cli_format import (
    api_error_message,
    format_table,
    format_tier_detail,
    format_tiers,
    human_duration,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def kubeconfig(tmp_path: Path, server: str, namespace: str | None = "ordo") -> Path:
    context = {"cluster": "c", "user": "u"} | ({"namespace": namespace} if namespace else {})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": context}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- parsing ---------------------------------------------------------------


def test_parses_every_command() -> None:
    args = parse("-n", "ordo", "--kubeconfig", "/k", "rollout", "set", "tasks", "25")
    assert (args.namespace, args.kubeconfig, args.command, args.action) == (
        "ordo",
        "/k",
        "rollout",
        "set",
    )
    assert (args.tier, args.percent) == ("tasks", "25")
    assert parse("status").tier is None
    assert parse("status", "tasks", "-A").all_namespaces
    assert parse("rollout", "pause", "tasks").action == "pause"
    assert parse("rollout", "resume", "tasks").action == "resume"
    assert parse("rollback", "tasks").command == "rollback"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["rollout"],
        ["rollout", "set", "tasks"],
        ["rollback"],
        ["frobnicate"],
        ["status", "a", "b"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("25", 25), ("100", 100), ("50%", 50)])
def test_parse_percent(text: str, value: int) -> None:
    assert cli.parse_percent(text) == value


@pytest.mark.parametrize("text", ["101", "-1", "abc", "2.5", "", "1e2", "%"])
def test_parse_percent_rejects(text: str) -> None:
    with pytest.raises(cli.CliError, match="0 to 100"):
        cli.parse_percent(text)


def test_default_kubeconfig() -> None:
    assert cli.default_kubeconfig({"KUBECONFIG": "/a:/b"}) == "/a:/b"
    assert cli.default_kubeconfig({}).endswith("/.kube/config")


# --- patches ---------------------------------------------------------------


def test_patches() -> None:
    assert cli.build_patch(parse("rollout", "set", "t", "25")) == {
        "spec": {"rollout": {"percent": 25, "enabled": True}}
    }
    assert cli.build_patch(parse("rollback", "t")) == {"spec": {"rollout": {"enabled": False}}}
    annotation = names.ANNOTATION_ROLLOUT_PAUSED
    assert annotation == "cachetier.io/rollout-paused"
    assert cli.build_patch(parse("rollout", "pause", "t")) == {
        "metadata": {"annotations": {annotation: "true"}}
    }
    assert cli.build_patch(parse("rollout", "resume", "t")) == {
        "metadata": {"annotations": {annotation: None}}
    }


def test_change_messages() -> None:
    result = {"spec": {"rollout": {"percent": 40, "enabled": False}}}
    assert cli.describe_change(parse("rollback", "t"), result) == (
        'cachetier "t" rolled back: rollout.enabled=false, percent 40 kept'
    )
    assert cli.describe_change(parse("rollout", "set", "t", "40"), result) == (
        'cachetier "t" rollout set to 40% (enabled)'
    )


def test_set_says_when_nothing_changed_and_when_it_re_arms() -> None:
    args = parse("rollout", "set", "t", "100")
    before = {"spec": {"rollout": {"percent": 100}}}
    after = {"spec": {"rollout": {"percent": 100, "enabled": True}}}
    assert cli.describe_change(args, after, before) == (
        'cachetier "t" rollout already at 100% (enabled): nothing changed'
    )
    assert cli.describe_change(args, after, before, rearmed=True) == (
        'cachetier "t" rollout stays at 100% (enabled) and re-armed after the automatic '
        "rollback (cachetier.io/rearm)"
    )
    lower = {"spec": {"rollout": {"percent": 50, "enabled": True}}}
    assert cli.describe_change(args, after, lower, rearmed=True).startswith(
        'cachetier "t" rollout set to 100% (enabled) and re-armed'
    )


def test_rearm_only_when_an_automatic_rollback_holds_this_generation() -> None:
    held = {"metadata": {"generation": 4}, "status": {"rollout": {"rolledBackGeneration": 4}}}
    assert cli.auto_rolled_back(held)
    assert not cli.auto_rolled_back({**held, "metadata": {"generation": 5}})
    assert not cli.auto_rolled_back({"metadata": {"generation": 4}, "status": {}})
    now = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
    patch = cli.rearm_patch(cli.build_patch(parse("rollout", "set", "t", "100")), now)
    assert patch == {
        "spec": {"rollout": {"percent": 100, "enabled": True}},
        "metadata": {"annotations": {"cachetier.io/rearm": "2026-12-01T12:00:00.123456Z"}},
    }


# --- tables ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (190, "3m10s"),
        (600, "10m"),
        (70 * 60, "70m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 20 * 60, "3h20m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (49 * 3600, "2d1h"),
        (8 * 86400, "8d"),
        (367 * 86400, "367d"),
        (730 * 86400, "2y"),
        (731 * 86400, "2y1d"),
        (8 * 365 * 86400, "8y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_format_table_aligns_columns() -> None:
    assert format_table(("A", "LONGER"), [["xyz", "1"], ["", "22"]]) == (
        "A     LONGER\nxyz   1\n      22"
    )


def tier(name: str, **status: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ordo",
            "creationTimestamp": (NOW - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        },
        "spec": {"mode": "cluster", "rollout": {"percent": 50, "steps": [10, 25, 50]}},
        "status": status,
    }


FULL = tier(
    "tasks",
    phase="Ready",
    conditions=[
        {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "message": "3 shards,\n  16384 slots",
            "lastTransitionTime": "2026-03-01T11:58:00Z",
        }
    ],
    rollout={"effectivePercent": 25, "targetPercent": 50, "step": 1, "reason": "Stepping"},
    consumers={
        "selected": 3,
        "enabled": 1,
        "workloads": [
            {"kind": "Deployment", "name": "api", "enabled": True, "pinned": False},
            {"kind": "StatefulSet", "name": "worker", "enabled": False, "pinned": True},
        ],
    },
    health={"up": True, "latencyMs": 0.42, "hitRate": 0.93, "checkedAt": "2026-03-01T11:59:50Z"},
)


def test_status_table() -> None:
    fresh = {"metadata": {"name": "new"}, "spec": {"rollout": {"enabled": False}}}
    paused = tier("p", health={"up": False, "checkedAt": "2026-03-01T11:59:50Z"})
    paused["metadata"]["annotations"] = {names.ANNOTATION_ROLLOUT_PAUSED: "true"}  # type: ignore[index]
    assert format_tiers([FULL, fresh, paused], NOW) == textwrap.dedent(
        """\
        NAME    MODE         PHASE   READY   ROLLOUT           CONSUMERS   HEALTH     AGE
        tasks   cluster      Ready   True    25/50% on         1/3         up 0.4ms   5m
        new     standalone   -       -       -/100% off        -           -          -
        p       cluster      -       -       -/50% on paused   -           down       5m"""
    )


def test_status_table_all_namespaces() -> None:
    assert (
        format_tiers([FULL], NOW, namespaces=True).splitlines()[1].startswith("ordo        tasks")
    )


def test_status_detail_shows_conditions_and_consumers() -> None:
    text = format_tier_detail(FULL, NOW)
    assert (
        "Rollout:  enabled, target 50%, granularity workload, steps [10, 25, 50] every 10m" in text
    )
    assert "effective 25%, step 1, reason Stepping" in text
    assert "Health:   up, latency 0.42 ms, hit rate 93%, checked 10s ago" in text
    assert "Ready   True     Ready    2m    3 shards, 16384 slots" in text
    assert "Deployment    api      true            no" in text
    assert "StatefulSet   worker   false           yes" in text


# --- errors ----------------------------------------------------------------


def status_body(message: str, **details: str) -> str:
    return json.dumps({"kind": "Status", "message": message, "details": details})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            404,
            status_body('cachetiers.cachetier.io "x" not found', name="x", kind="cachetiers"),
            'CacheTier "x" not found in namespace "ordo"',
        ),
        (
            404,
            "404 page not found",
            "the API server does not serve cachetiers.cachetier.io: "
            "is the CacheTier CRD installed?",
        ),
        (403, status_body('User "bob" cannot patch'), 'forbidden: User "bob" cannot patch'),
        (
            422,
            status_body("spec.rollout: Invalid value:\n steps must not go past percent"),
            "rejected by the API server: "
            "spec.rollout: Invalid value: steps must not go past percent",
        ),
        (500, "", "API server answered 500: no details"),
    ],
)
def test_api_error_messages_are_one_line(status: int, body: str, expected: str) -> None:
    message = api_error_message(status, body, name="x", namespace="ordo")
    assert message == expected
    assert "\n" not in message


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_percent_is_one_line_before_any_api_call(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        ["--kubeconfig", "/nonexistent", "rollout", "set", "t", "150"], capsys
    )
    assert (code, out) == (2, "")
    assert err == "cachetier: error: percent must be a whole number from 0 to 100, got '150'\n"


def test_missing_kubeconfig_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["--kubeconfig", "/nonexistent", "status"], capsys)
    assert code == 1
    assert err == (
        "cachetier: error: no kubeconfig at /nonexistent (set KUBECONFIG or --kubeconfig)\n"
    )


def test_unreachable_api_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, out, err = run_main(["--kubeconfig", str(kubeconfig(tmp_path, server)), "status"], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"cachetier: error: cannot reach the Kubernetes API at {server}: ")
    assert "refused" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("context_namespace", "expected"), [("ordo", "ordo"), (None, "default")])
def test_namespace_comes_from_the_kubeconfig_context(
    tmp_path: Path, context_namespace: str | None, expected: str
) -> None:
    path = kubeconfig(tmp_path, "http://127.0.0.1:1", context_namespace)
    _, namespace = cli.connect(str(path))
    assert namespace == expected


def test_namespace_and_kubeconfig_may_follow_the_command() -> None:
    from cachetier.cli import build_parser

    args = build_parser().parse_args(["status", "-n", "ordo", "--kubeconfig", "/k"])
    assert (args.namespace, args.kubeconfig) == ("ordo", "/k")
    args = build_parser().parse_args(["-n", "a", "rollback", "t"])
    assert args.namespace == "a"
    args = build_parser().parse_args(["rollout", "set", "t", "5", "-n", "b"])
    assert (args.namespace, args.percent) == ("b", "5")


def test_rotate_password_sets_the_annotation_of_the_password_asked_for() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    app = cli.rotate_patch(now)["metadata"]["annotations"]
    operator = cli.rotate_patch(now, operator=True)["metadata"]["annotations"]
    assert list(app) == [names.ANNOTATION_ROTATE_PASSWORD]
    assert list(operator) == [names.ANNOTATION_ROTATE_OPERATOR_PASSWORD]
    args = cli.build_parser().parse_args(["rotate-password", "cache", "--operator"])
    assert args.operator and "status.auth.operator" in cli.describe_change(args, {})


def test_the_watch_view_shows_the_rollout_as_a_bar_and_the_last_events() -> None:
    from cachetier.cli_format import format_watch, percent_bar

    assert percent_bar(0, 100, width=10) == "[..........]"
    assert percent_bar(50, 100, width=10) == "[#####.....]"
    assert percent_bar(20, 50, width=10) == "[##...|....]"
    assert percent_bar(100, 100, width=10) == "[##########]"
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    tier = {
        "metadata": {"name": "c", "namespace": "ns", "generation": 3},
        "spec": {"mode": "replication", "rollout": {"percent": 50}},
        "status": {
            "phase": "Ready",
            "observedGeneration": 3,
            "rollout": {"effectivePercent": 20},
            "consumers": {"enabled": 2, "selected": 5},
            "health": {"up": True, "latencyMs": 0.5, "hitRate": 0.9, "errorRate": 0.0,
                       "checkedAt": "2026-12-03T11:59:55Z"},
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "Progressing", "status": "True", "reason": "PasswordRotation",
                            "message": "rotating the operator's password: Switching"}],
            "auth": {"operator": {"rotation": "InProgress", "stage": "Switching",
                                  "since": "2026-12-03T11:59:00Z"}},
        },
    }  # fmt: skip
    events = [
        {"type": "Normal", "reason": f"R{i}", "message": f"m{i}",
         "lastTimestamp": f"2026-12-03T11:5{i}:00Z"}
        for i in range(9)
    ]  # fmt: skip
    view = format_watch(tier, events, now)
    assert view.splitlines()[0].startswith("CacheTier ns/c  mode replication  phase Ready")
    assert "Rollout    [######.........|..............] 20% of 50%" in view
    assert "Consumers  2/5 enabled/selected" in view
    assert "latency 0.50 ms, hit rate 90%" in view
    assert "Operator   rotation InProgress (Switching)" in view
    assert "R8" in view and "R2" not in view  # the last six, newest last
    assert view.index("R3") < view.index("R8")
