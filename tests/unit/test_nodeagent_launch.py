"""Unit tests for the node agent's command and path rewriting (ctdev.nodeagent.launch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctdev.nodeagent.launch import (
    LaunchContext,
    image_kind,
    local_argv,
    redis_cli_argv,
    redis_container_argv,
    redis_server_argv,
)

TAIL = ["--bind", "127.10.0.7", "--daemonize", "no", "--supervised", "no"]
TAIL += ["--logfile", "", "--pidfile", ""]


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("redis", "redis"),
        ("redis:7.2-alpine", "redis"),
        ("docker.io/library/redis:7.2", "redis"),
        ("registry.local:5000/mirror/valkey/valkey:8@sha256:abc", "redis"),
        ("bitnami/redis-cluster:7", "none"),
        ("cachetier/demo-app:0.1.0", "demo"),
        ("ghcr.io/acme/cachetier/demo-app", "demo"),
        ("acme/demo-app:1", "none"),
        ("oliver006/redis_exporter:v1.62.0", "none"),
    ],
)
def test_image_kind(image: str, kind: str) -> None:
    assert image_kind(image) == kind


def ctx_for(tmp_path: Path, **kw: object) -> LaunchContext:
    state = tmp_path / "state"
    mounts = [
        ("/data", str(state / "pv" / "ns-data")),
        ("/usr/local/etc/redis/", str(state / "pods" / "u" / "volumes" / "config")),
        ("/usr/local/etc/redis/users.acl", str(state / "pods" / "u" / "volumes" / "acl" / "u")),
    ]
    args: dict[str, object] = {
        "pod_ip": "127.10.0.7",
        "mounts": mounts,
        "keep": [str(state)],
        "run_dir": str(state / "pods" / "u" / "run" / "redis"),
    }
    args.update(kw)
    return LaunchContext(**args)  # type: ignore[arg-type]


def test_map_path_longest_prefix_and_exact(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    state = tmp_path / "state"
    assert ctx.map_path("/data") == str(state / "pv" / "ns-data")
    assert ctx.map_path("/data/nodes.conf") == str(state / "pv" / "ns-data" / "nodes.conf")
    assert ctx.map_path("/database") == "/database"
    assert ctx.map_path("/usr/local/etc/redis/users.acl") == str(
        state / "pods" / "u" / "volumes" / "acl" / "u"
    )
    assert ctx.map_path("/usr/local/etc/redis/redis.conf").endswith("volumes/config/redis.conf")
    assert ctx.map_path("/etc/hosts") == "/etc/hosts"


def test_rewrite_only_whole_paths_and_is_idempotent(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    data = str(tmp_path / "state" / "pv" / "ns-data")
    text = 'dir /data\nx=/data/a "/data" /var/data /data2 --dir=/data ./data'
    once = ctx.rewrite(text)
    assert once == (f'dir {data}\nx={data}/a "{data}" /var/data /data2 --dir={data} ./data')
    assert ctx.rewrite(once) == once


def test_rewrite_keeps_state_paths_even_under_a_mount_name(tmp_path: Path) -> None:
    # The state directory itself lives under /tmp here: a /tmp mount must not touch it.
    ctx = ctx_for(tmp_path, mounts=[("/tmp", str(tmp_path / "state" / "tmp"))])
    host = str(tmp_path / "state" / "x.conf")
    assert ctx.rewrite(f"cat {host} /tmp/y") == f"cat {host} {tmp_path}/state/tmp/y"


def test_rewrite_service_names(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, hosts={"redis.ns.svc": "127.11.0.1", "redis": "127.11.0.1"})
    assert ctx.rewrite("redis://:pw@redis.ns.svc:6379/0") == "redis://:pw@127.11.0.1:6379/0"
    assert ctx.rewrite("redis://redis:6379") == "redis://127.11.0.1:6379"
    assert ctx.rewrite("use redis here") == "use redis here"


def test_redis_server_copies_and_rewrites_config(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, hosts={"r-0.r-headless.ns.svc.cluster.local": "127.10.0.3"})
    config = tmp_path / "state" / "pods" / "u" / "volumes" / "config"
    config.mkdir(parents=True)
    (config / "redis.conf").write_text(
        "port 7000\ndir /data\ninclude /usr/local/etc/redis/extra.conf\n"
        "aclfile /usr/local/etc/redis/users.acl\n"
    )
    (config / "extra.conf").write_text("replicaof r-0.r-headless.ns.svc.cluster.local 7000\n")
    argv = redis_server_argv(["/usr/local/etc/redis/redis.conf", "--appendonly", "yes"], ctx)
    assert argv[0] == "/usr/bin/redis-server"
    assert argv[2:] == ["--appendonly", "yes", *TAIL]
    copy = Path(argv[1])
    assert copy.parent == Path(ctx.run_dir)
    text = copy.read_text()
    assert f"dir {tmp_path}/state/pv/ns-data" in text
    assert "aclfile " + str(tmp_path / "state" / "pods" / "u" / "volumes" / "acl" / "u") in text
    include = next(line.split()[1] for line in text.splitlines() if line.startswith("include"))
    assert Path(include).parent == Path(ctx.run_dir)
    assert Path(include).read_text() == "replicaof 127.10.0.3 7000\n"


def test_redis_server_missing_config_fails_truthfully(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    argv = redis_server_argv(["/etc/nowhere/redis.conf"], ctx)
    assert argv == ["/usr/bin/redis-server", "/etc/nowhere/redis.conf", *TAIL]


def test_redis_container_defaults_follow_the_image_entrypoint(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    assert redis_container_argv([], [], ctx) == ["/usr/bin/redis-server", *TAIL]
    assert redis_container_argv([], ["--port", "7000"], ctx) == [
        "/usr/bin/redis-server",
        "--port",
        "7000",
        *TAIL,
    ]
    assert redis_container_argv(["valkey-server"], ["--port", "1"], ctx)[1:3] == ["--port", "1"]
    argv = redis_container_argv(["/usr/local/bin/redis-sentinel"], [], ctx)
    assert argv == ["/usr/bin/redis-server", "--sentinel", *TAIL]


def test_shell_scripts_are_rewritten(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    argv = local_argv(["sh", "-c", "redis-server /usr/local/etc/redis/redis.conf --dir /data"], ctx)
    assert argv[0] == "/bin/sh"
    assert "/usr/local/etc/redis" not in argv[2] and "--dir /data" not in argv[2]
    assert local_argv(["/bin/bash", "-ec", "true"], ctx) == ["/bin/bash", "-ec", "true"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ping"], ["-h", "127.10.0.7", "ping"]),
        (["-h", "localhost", "ping"], ["-h", "127.10.0.7", "ping"]),
        (["-h", "127.0.0.1", "-p", "7000", "ping"], ["-h", "127.10.0.7", "-p", "7000", "ping"]),
        (
            ["-a", "pw", "--no-auth-warning", "ping"],
            ["-h", "127.10.0.7", "-a", "pw", "--no-auth-warning", "ping"],
        ),
        (["-h", "10.1.2.3", "ping"], ["-h", "10.1.2.3", "ping"]),
        (
            ["-u", "redis://:pw@localhost:6379/0", "ping"],
            ["-u", "redis://:pw@127.10.0.7:6379/0", "ping"],
        ),
        (["config", "set", "dir", "/data"], ["-h", "127.10.0.7", "config", "set", "dir", "DATA"]),
    ],
)
def test_redis_cli_talks_to_the_pod_address(
    tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    ctx = ctx_for(tmp_path)
    data = str(tmp_path / "state" / "pv" / "ns-data")
    assert redis_cli_argv(args, ctx) == [
        "/usr/bin/redis-cli",
        *(data if e == "DATA" else e for e in expected),
    ]


def test_other_programs_keep_their_name_with_mapped_args(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    argv = local_argv(["/data/run.sh", "--conf", "/data/x"], ctx)
    data = str(tmp_path / "state" / "pv" / "ns-data")
    assert argv == [f"{data}/run.sh", "--conf", f"{data}/x"]
    assert local_argv(["env"], ctx) == ["env"]


def test_context_round_trips_as_json(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, hosts={"a.b.svc": "127.11.0.2"})
    path = tmp_path / "ctx.json"
    ctx.save(path)
    again = LaunchContext.load(str(path))
    assert again.mounts == ctx.mounts and again.hosts == ctx.hosts
    assert again.rewrite("/data a.b.svc") == ctx.rewrite("/data a.b.svc")
