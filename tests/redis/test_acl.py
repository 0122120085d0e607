"""The application user's ACL, judged by a real redis-server command by command.

redis-server is started with the auth.conf the operator renders. Every command and
subcommand the server knows is put to ``ACL DRYRUN default ...``: it must be allowed
exactly when it is outside the categories @admin and @dangerous (or one of the data
commands given back), and not in ``disabledCommands``. Then the commands the issue
named are run for real, and the health probe must name the error class and the
denied command.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.redis.options import quiet_handshake
from cachetier.redis.probe import Target, probe
from cachetier.render import TierSecrets
from cachetier.render._conf import APP_REALLOWED, render_auth_conf

pytestmark = pytest.mark.redis

APP_PW = "app-pw"
OP_PW = "op-pw"
REALLOWED = {rule.removeprefix("+") for rule in APP_REALLOWED}
DISABLED_BY_DEFAULT = {"flushdb", "flushall", "keys"}
NEEDED_BY_CLIENTS = {
    "hello",
    "auth",
    "ping",
    "info",
    "readonly",
    "asking",
    "client|setname",
    "client|setinfo",
    "client|id",
    "client|getname",
    "cluster|slots",
    "cluster|shards",
    "cluster|nodes",
    "cluster|myid",
    "cluster|info",
    "cluster|keyslot",
    "subscribe",
    "publish",
    "scan",
}
ADMIN = {
    "acl|setuser",
    "acl|list",
    "acl|getuser",
    "acl|log",
    "acl|deluser",
    "config|set",
    "config|get",
    "config|rewrite",
    "debug",
    "shutdown",
    "monitor",
    "replicaof",
    "slaveof",
    "failover",
    "client|kill",
    "client|list",
    "client|pause",
    "cluster|reset",
    "cluster|forget",
    "cluster|failover",
    "cluster|meet",
    "cluster|setslot",
    "save",
    "bgsave",
    "module|load",
    "flushall",
    "flushdb",
    "keys",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """redis-server with the rendered auth.conf of a default CacheTier."""
    tmp = tmp_path_factory.mktemp("acl")
    auth = tmp / "auth.conf"
    auth.write_text(render_auth_conf(CacheTierSpec(), TierSecrets(APP_PW, OP_PW, True)))
    port = _free_port()
    proc = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(tmp), "--include", str(auth)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not probe(_operator_target(port), None).up:
            assert proc.poll() is None, "redis-server refused the rendered auth.conf"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _operator_target(port: int) -> Target:
    return Target("127.0.0.1", port, username=names.OPERATOR_USER, password=OP_PW)


def _operator(port: int) -> redis.Redis:
    return redis.Redis(
        port=port,
        username=names.OPERATOR_USER,
        password=OP_PW,
        decode_responses=True,
        **quiet_handshake(),
    )


def _app(port: int) -> redis.Redis:
    return redis.Redis(port=port, password=APP_PW, decode_responses=True, **quiet_handshake())


ARITY: dict[str, int] = {}


def _commands(op: redis.Redis) -> dict[str, set[str]]:
    """Every command and subcommand (``container|sub``) with its ACL categories."""
    out: dict[str, set[str]] = {}

    def walk(entry: list[Any]) -> None:
        name = _text(entry[0]).lower()
        categories = {_text(c).lstrip("@").lower() for c in entry[6]}
        subcommands = entry[9] if len(entry) > 9 else []
        if subcommands:
            for sub in subcommands:
                walk(sub)
        else:
            out[name] = categories
            ARITY[name] = int(entry[1])

    # The raw reply: redis-py's COMMAND parser drops the categories and subcommands.
    conn = op.connection_pool.get_connection()
    try:
        conn.send_command("COMMAND")
        reply = conn.read_response()
    finally:
        op.connection_pool.release(conn)
    for entry in reply:
        walk(entry)
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dryrun(op: redis.Redis, command: str) -> bool:
    """Whether ACL DRYRUN lets ``default`` run ``command`` (arguments to its arity)."""
    words = command.split("|")
    arity = ARITY.get(command, -len(words))
    args = ["x"] * max(abs(arity) - len(words), 0)
    answer = op.execute_command("ACL", "DRYRUN", "default", *words, *args)
    if _text(answer) == "OK":
        return True
    assert "no permissions" in _text(answer), answer
    return False


def test_every_command_is_allowed_exactly_by_the_rule(server: int) -> None:
    op = _operator(server)
    commands = _commands(op)
    assert len(commands) > 200
    wrong = []
    for command, categories in sorted(commands.items()):
        privileged = bool(categories & {"admin", "dangerous"})
        expected = (not privileged or command in REALLOWED) and command not in DISABLED_BY_DEFAULT
        if _dryrun(op, command) != expected:
            wrong.append(f"{command} {sorted(categories)}: expected allowed={expected}")
    assert not wrong, "\n".join(wrong)
    # (CLIENT SETINFO exists from Redis 7.2 on; the rule covers it either way.)
    for command in sorted(NEEDED_BY_CLIENTS & set(commands)):
        assert _dryrun(op, command), f"{command} must stay allowed for client libraries"
    assert len(NEEDED_BY_CLIENTS - set(commands)) <= 1
    for command in sorted(ADMIN):
        assert command in commands, command
        assert not _dryrun(op, command), f"{command} must be refused to the application"


def test_the_application_cannot_lift_its_restrictions(server: int) -> None:
    app = _app(server)
    app.set("k", "v")
    for args in (
        ("ACL", "SETUSER", "default", "+flushall"),
        ("ACL", "SETUSER", "default", "+@all"),
        ("ACL", "LIST"),
        ("CONFIG", "SET", "maxmemory", "1"),
        ("FLUSHALL",),
        ("KEYS", "*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*args)
    assert app.get("k") == "v"
    assert app.info("server")["redis_version"]  # INFO stays (ioredis' ready check)
    assert app.execute_command("CLIENT", "ID")


def test_probe_names_the_error_class_and_the_denied_command(server: int) -> None:
    target = _operator_target(server)
    base = probe(target, None)
    app = _app(server)
    for i in range(150):
        app.set(f"k{i}", "v")
    for _ in range(12):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.keys("k*")
    result = probe(target, base.counters)
    assert result.error_classes is not None and result.error_classes.get("NOPERM") == 12
    assert result.denied_commands == {"KEYS": 12}
    assert result.error_rate is not None and result.error_rate > 0.05


def test_the_command_table_knows_every_command_of_this_redis(server: int) -> None:
    """``api.redis_commands`` (disabledCommands are checked against it) is not behind."""
    from cachetier.api.redis_commands import is_known

    unknown = sorted(c for c in _commands(_operator(server)) if not is_known(c))
    assert not unknown, f"add to operator/cachetier/api/redis_commands.py: {unknown}"


def test_an_unknown_command_in_an_acl_rule_stops_redis(tmp_path: Path) -> None:
    """Why disabledCommands are checked: redis-server refuses to start."""
    proc = subprocess.run(
        [
            *("redis-server", "--port", str(_free_port()), "--bind", "127.0.0.1"),
            *("--save", "", "--user", "default on nopass ~* +@all -nosuchcmd"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0


def test_rotation_adds_and_removes_passwords_live_on_redis_and_sentinel(
    server: int, tmp_path: Path
) -> None:
    """RedisAclAdmin on a real redis-server and a real Sentinel: the hashes it reads are
    what the pure rotation compares, a password added is accepted at once beside the
    old one, a password removed is refused, and a Sentinel keeps the change across a
    restart (its config flushed)."""
    from cachetier.ports import AclUpdate
    from cachetier.reconcile.rotation import password_hash
    from cachetier.redis.acl import RedisAclAdmin
    from cachetier.render._replication import render_sentinel_conf

    admin = RedisAclAdmin()
    target = _operator_target(server)
    assert admin.password_hashes(target, "default") == {password_hash(APP_PW)}
    admin.update(AclUpdate(target, "default", add=("rotated-pw", APP_PW)))
    assert admin.password_hashes(target, "default") == {
        password_hash(APP_PW), password_hash("rotated-pw")
    }  # fmt: skip
    for pw in (APP_PW, "rotated-pw"):
        with redis.Redis(port=server, password=pw, **quiet_handshake()) as c:
            assert c.ping()
    admin.update(AclUpdate(target, "default", remove=(APP_PW,)))
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server, password=APP_PW, **quiet_handshake()).ping()
    # Put the module's server back as the other tests expect it.
    admin.update(AclUpdate(target, "default", add=(APP_PW,), remove=("rotated-pw",)))
    assert admin.password_hashes(target, "default") == {password_hash(APP_PW)}
    assert admin.password_hashes(Target("127.0.0.1", _free_port()), "default") is None

    spec = CacheTierSpec.model_validate(
        {"mode": "replication", "redis": {"persistence": {"mode": "aof"}}}
    )
    conf = tmp_path / "sentinel.conf"
    conf.write_text(render_sentinel_conf(spec, TierSecrets(APP_PW, OP_PW, True)))
    port = _free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel", "--port", str(port), "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while admin.password_hashes(sentinel, "default") is None:
            assert proc.poll() is None, "Sentinel refused the rendered sentinel.conf"
            assert time.monotonic() < deadline, "Sentinel did not start"
            time.sleep(0.05)
        return proc

    sentinel = Target("127.0.0.1", port, username=names.OPERATOR_USER, password=OP_PW)
    proc = start()
    try:
        admin.update(AclUpdate(sentinel, "default", add=("rotated-pw", APP_PW), sentinel=True))
        admin.update(AclUpdate(sentinel, "default", remove=(APP_PW,), sentinel=True))
        proc.terminate()
        proc.wait(timeout=10)
        proc = start()
        assert admin.password_hashes(sentinel, "default") == {password_hash("rotated-pw")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_operator_password_rotates_live_on_primary_replica_and_sentinel(tmp_path: Path) -> None:
    """The operator password's stages on real processes: a primary, its replica and a
    Sentinel monitoring them, rendered as the operator renders them (with the probe
    user). The new password is added, every server switched to it (masterauth,
    auth-pass, sentinel-pass), the old one removed; then every connection the old one
    authenticated is cut, and the replica's link and the Sentinel's come back with the
    new one. The probe user can PING and nothing else."""
    from cachetier.ports import AclUpdate, OperatorSwitch
    from cachetier.reconcile.rotation import password_hash
    from cachetier.redis.acl import RedisAclAdmin
    from cachetier.render._replication import render_sentinel_conf

    new_pw, probe_pw = "op-pw-2", "probe-pw"
    secrets = TierSecrets(APP_PW, OP_PW, True, probe_password=probe_pw)
    spec = CacheTierSpec.model_validate({"mode": "replication"})
    (tmp_path / "auth.conf").write_text(render_auth_conf(spec, secrets))
    (tmp_path / "sentinel.conf").write_text(render_sentinel_conf(spec, secrets))
    procs: list[subprocess.Popen[bytes]] = []

    def redis_server(port: int, *extra: str) -> None:
        data = tmp_path / str(port)
        data.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                    *("--dir", str(data), "--include", str(tmp_path / "auth.conf"), *extra),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def wait(check: Any, what: str) -> None:
        deadline = time.monotonic() + 20
        while not check():
            assert all(p.poll() is None for p in procs), f"a server exited: {what}"
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    admin = RedisAclAdmin()
    primary, replica, sentinel = _free_port(), _free_port(), _free_port()
    try:
        redis_server(primary)
        redis_server(replica, "--replicaof", "127.0.0.1", str(primary))
        procs.append(
            subprocess.Popen(
                [
                    *("redis-server", str(tmp_path / "sentinel.conf"), "--sentinel"),
                    *("--port", str(sentinel), "--bind", "127.0.0.1"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        old = {
            p: Target("127.0.0.1", p, names.OPERATOR_USER, OP_PW)
            for p in (primary, replica, sentinel)
        }
        for port, target in old.items():
            wait(lambda t=target: admin.password_hashes(t, "default") is not None, f"{port} up")

        def client(port: int, password: str) -> redis.Redis:
            return redis.Redis(
                port=port, username=names.OPERATOR_USER, password=password, **quiet_handshake()
            )

        def link_up() -> bool:
            info = client(replica, new_pw).info("replication")
            return bool(info.get("master_link_status") == "up")

        with client(sentinel, OP_PW) as s:
            s.execute_command("SENTINEL", "MONITOR", "m", "127.0.0.1", primary, 1)
            s.execute_command("SENTINEL", "SET", "m", "auth-user", names.OPERATOR_USER)
            s.execute_command("SENTINEL", "SET", "m", "auth-pass", OP_PW)
        for port in (primary, replica, sentinel):  # the probe user: PING, nothing else
            with redis.Redis(
                port=port, username=names.PROBE_USER, password=probe_pw, **quiet_handshake()
            ) as c:
                assert c.ping()
                with pytest.raises(redis.exceptions.NoPermissionError):
                    c.execute_command("INFO")

        for port, target in old.items():  # Adding
            admin.update(
                AclUpdate(target, names.OPERATOR_USER, add=(new_pw,), sentinel=port == sentinel)
            )
            assert admin.password_hashes(target, names.OPERATOR_USER) == {
                password_hash(OP_PW), password_hash(new_pw)
            }  # fmt: skip
        new = {p: Target("127.0.0.1", p, names.OPERATOR_USER, new_pw) for p in old}
        for port, target in new.items():  # Switching
            assert admin.switched(target, port == sentinel) is False
            admin.switch(OperatorSwitch(target, port == sentinel, "m"))
            assert admin.switched(target, port == sentinel) is True
        for port, target in new.items():  # Removing
            admin.update(
                AclUpdate(target, names.OPERATOR_USER, remove=(OP_PW,), sentinel=port == sentinel)
            )
            assert admin.password_hashes(target, names.OPERATOR_USER) == {password_hash(new_pw)}
            with pytest.raises(redis.AuthenticationError):
                client(port, OP_PW).ping()
        # Cut every connection the old password opened: they come back with the new one.
        with client(primary, new_pw) as p:
            p.execute_command("CLIENT", "KILL", "USER", names.OPERATOR_USER)
        wait(link_up, "the replica's link came back")

        def sentinel_reconnected() -> bool:
            # The Sentinel's own connections (CLIENT SETNAME sentinel-<id>-cmd/pubsub),
            # logged in again as the operator's user, with the new password.
            with client(primary, new_pw) as p:
                users = {c["user"] for c in p.client_list() if c["name"].startswith("sentinel-")}
            with client(sentinel, new_pw) as s:
                replicas = s.execute_command("SENTINEL", "REPLICAS", "m")
            return users == {names.OPERATOR_USER} and len(replicas) == 1

        wait(sentinel_reconnected, "the Sentinel reconnected with the new password")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
