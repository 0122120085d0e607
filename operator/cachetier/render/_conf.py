"""redis.conf and auth.conf (the ACL users) rendered from a CacheTier spec.

Pure: no I/O, no randomness, no clock. redis.conf holds no secret and goes into
the ConfigMap; auth.conf holds the passwords and goes into the <tier>-auth Secret,
and redis.conf includes it last.
"""

from __future__ import annotations

import re

from cachetier import names
from cachetier.api import redis_config
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile

from ._types import TierSecrets

# Where the pod mounts things; redis.conf and the StatefulSet must agree.
CONFIG_DIR = "/etc/redis"
AUTH_DIR = f"{CONFIG_DIR}/auth"
AUTH_CONF_PATH = f"{AUTH_DIR}/{names.AUTH_CONF_KEY}"
TLS_DIR = f"{CONFIG_DIR}/tls"
TLS_CERT_PATH = f"{TLS_DIR}/tls.crt"
TLS_KEY_PATH = f"{TLS_DIR}/tls.key"
TLS_CA_PATH = f"{TLS_DIR}/ca.crt"
DATA_DIR = "/data"
TMP_DIR = "/tmp"
NODES_CONF_PATH = f"{DATA_DIR}/nodes.conf"

# Milliseconds a cluster node may be unreachable before it is considered failing.
CLUSTER_NODE_TIMEOUT_MS = 5000

HEADER = "# Rendered by cachetier-operator from the CacheTier spec; edits are overwritten."

# Tokens made only of these characters are written bare; anything else is
# double-quoted, because redis.conf splits lines on whitespace and gives quotes
# and backslashes a meaning (sdssplitargs).
_BARE_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&()*+,./:;<=>?@\[\]^_`{|}~-]+$")


def quote_conf(token: str) -> str:
    """A token as redis.conf reads it back verbatim (sdssplitargs syntax)."""
    if _BARE_TOKEN.match(token):
        return token
    out = []
    for char in token:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    return '"' + "".join(out) + '"'


def user_config_lines(spec: CacheTierSpec, *, live: bool | None = None) -> list[str]:
    """spec.redis.config as redis.conf lines, sorted by name; ``live``: only the
    directives Redis changes at runtime (True) or only the restart-only ones (False)."""
    lines = []
    for name, value in sorted(spec.redis.config.items()):
        if live is not None and redis_config.live(name) != live:
            continue
        if name in redis_config.MULTI_ARG and value.split():
            args = " ".join(quote_conf(token) for token in value.split())
        else:
            args = quote_conf(value) if value else '""'
        lines.append(f"{name} {args}")
    return lines


def render_redis_conf(spec: CacheTierSpec, *, live_user_settings: bool = True) -> str:
    """redis.conf for ``spec`` (the ConfigMap key names.REDIS_CONF_KEY). No secrets.

    spec.redis.config comes first, so the operator's own lines after it win;
    ``live_user_settings=False`` leaves out the user's settings that are applied live
    (what the pod-template hash covers: changing those restarts nothing).
    """
    lines = [HEADER]
    extra = user_config_lines(spec, live=None if live_user_settings else False)
    if extra:
        lines += ["", "# spec.redis.config", *extra]
    lines += ["", "# Network"]
    lines.append("bind * -::*")
    if spec.tls.enabled:
        lines += [
            "port 0",
            f"tls-port {names.REDIS_PORT}",
            f"tls-cert-file {TLS_CERT_PATH}",
            f"tls-key-file {TLS_KEY_PATH}",
            f"tls-ca-cert-file {TLS_CA_PATH}",
            # Clients authenticate with a password; a client certificate is not required.
            "tls-auth-clients no",
            "tls-replication yes",
        ]
        if profile(spec).cluster_protocol:
            lines.append("tls-cluster yes")
    else:
        lines.append(f"port {names.REDIS_PORT}")
    # Protected mode refuses non-loopback clients while the default user has no
    # password; with auth disabled that would refuse everybody.
    lines.append(f"protected-mode {'yes' if spec.auth.enabled else 'no'}")

    lines += ["", "# Memory"]
    lines.append(f"maxmemory {spec.redis.maxmemory}")
    lines.append(f"maxmemory-policy {spec.redis.maxmemory_policy}")

    lines += ["", "# Persistence"]
    lines += _persistence_lines(spec)
    lines.append(f"dir {DATA_DIR}")

    if profile(spec).sentinel:
        lines += ["", "# Replication (the operator and Sentinel set the primary at run time)"]
        lines.append("replica-read-only yes")
        # The full sync of a new replica starts at once (not after 5 s of waiting for
        # more replicas to share the snapshot).
        lines.append("repl-diskless-sync-delay 1")
        if spec.replication.min_replicas_to_write:
            lines.append(f"min-replicas-to-write {spec.replication.min_replicas_to_write}")
            lines.append("min-replicas-max-lag 10")

    lines += ["", "# Logging (stdout)"]
    lines.append(f"loglevel {spec.redis.log_level}")
    lines.append('logfile ""')

    if profile(spec).cluster_protocol:
        lines += ["", "# Cluster"]
        lines += [
            "cluster-enabled yes",
            # On the data volume, so a restarted pod rejoins with its node ID.
            f"cluster-config-file {NODES_CONF_PATH}",
            f"cluster-port {names.REDIS_BUS_PORT}",
            f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
            # A cache should keep serving the slots it still has while one shard
            # is down: clients of the missing slots get errors and fall back to
            # their in-memory cache, everybody else keeps hitting Redis.
            "cluster-require-full-coverage no",
            # Clients are sent to pods by name (cluster-announce-hostname, set per pod
            # on the command line), which survives pod replacement; an IP does not.
            "cluster-preferred-endpoint-type hostname",
        ]

    # Last, so nothing above can override the users.
    lines += ["", "# ACL users and replication credentials (Secret, not ConfigMap)"]
    lines.append(f"include {AUTH_CONF_PATH}")
    return "\n".join(lines) + "\n"


def _persistence_lines(spec: CacheTierSpec) -> list[str]:
    persistence = spec.redis.persistence
    if persistence.mode == "none" or not persistence.rdb_schedule:
        save = ['save ""']
    else:
        save = [f"save {rule}" for rule in persistence.rdb_schedule]
    if persistence.mode == "aof":
        return [*save, "appendonly yes", "appendfsync everysec"]
    return [*save, "appendonly no"]


APP_REALLOWED = ("+info", "+sort", "+sort_ro", "+keys", "+flushdb", "+flushall")
"""Commands of ``@dangerous`` that are about the application's own data, not the server:
INFO (ioredis' ready check and monitoring read it; it holds no secret), SORT/SORT_RO,
and KEYS/FLUSHDB/FLUSHALL, which ``disabledCommands`` denies again by default — so a
tier that removes them from ``disabledCommands`` gets them back, and nothing else."""

APP_USER_RULES = (
    "+@all",
    "-@admin",
    "-@dangerous",
    *APP_REALLOWED,
)
"""The application user's command rules, before ``disabledCommands`` are denied.

Every command except the Redis ACL categories ``@admin`` and ``@dangerous``
(ACL SETUSER/LIST/LOG, CONFIG, DEBUG, SHUTDOWN, MONITOR, REPLICAOF, FAILOVER,
CLIENT KILL/LIST/PAUSE, CLUSTER MEET/RESET/FORGET/FAILOVER/SETSLOT..., SAVE,
MIGRATE, RESTORE, SWAPDB, MODULE, LATENCY, SLOWLOG, ...), then four data
commands of ``@dangerous`` given back (see ``APP_REALLOWED``). What client
libraries need stays: HELLO, AUTH, CLIENT SETNAME/SETINFO/ID/GETNAME, READONLY,
ASKING, and the read-only CLUSTER SLOTS/SHARDS/NODES/MYID/INFO/KEYSLOT (all
outside both categories).
"""


def acl_denied(spec: CacheTierSpec) -> list[str]:
    """ACL rules that deny spec.redis.disabledCommands (lowercase, duplicates dropped)."""
    seen: dict[str, None] = {}
    for command in spec.redis.disabled_commands:
        seen.setdefault(command.lower(), None)
    return [f"-{command}" for command in seen]


def operator_acl_user(secrets: TierSecrets) -> str:
    """The ACL line of the operator's own user (every command), in redis.conf syntax."""
    passwords = [quote_conf(">" + pw) for pw in secrets.operator_passwords()]
    return " ".join(["user", names.OPERATOR_USER, "on", *passwords, "~*", "&*", "+@all"])


PROBE_USER_RULES = ("-@all", "+ping")
"""The probe user may PING and nothing else (AUTH and HELLO are always allowed)."""


def probe_acl_user(secrets: TierSecrets) -> list[str]:
    """The readiness probes' ACL line (none for a tier whose probes predate it)."""
    if not secrets.probe_password:
        return []
    password = quote_conf(">" + secrets.probe_password)
    return [" ".join(["user", names.PROBE_USER, "on", password, *PROBE_USER_RULES])]


def render_auth_conf(spec: CacheTierSpec, secrets: TierSecrets) -> str:
    """auth.conf: the ACL users and replication credentials (the Secret key names.AUTH_CONF_KEY).

    Raises ValueError when auth is enabled without an app password, or when the
    operator password is empty.
    """
    if not secrets.operator_password:
        raise ValueError("operator_password must not be empty")
    if spec.auth.enabled:
        if not secrets.app_password:
            raise ValueError("auth.enabled is true but no app password was given")
        default_auth = " ".join(quote_conf(">" + pw) for pw in secrets.accepted())
    else:
        default_auth = "nopass"
    default_user = [
        "user",
        "default",
        "on",
        default_auth,
        "~*",
        "&*",
        *APP_USER_RULES,
        *acl_denied(spec),
    ]
    lines = [
        HEADER,
        "",
        "# The application's user: no administrative command, none of the disabled ones.",
        " ".join(default_user),
        "# The operator's own user: health probes, cluster formation and healing.",
        operator_acl_user(secrets),
        *probe_acl_user(secrets),
        # (The text of this comment is in every auth.conf hash: changing it would
        # restart every tier's pods on upgrade.)
        "# Replicas (cluster mode) authenticate to their master as the operator's user."
        if not profile(spec).sentinel
        else "# Replicas authenticate to their primary as the operator's user.",
        f"masteruser {names.OPERATOR_USER}",
        f"masterauth {quote_conf(secrets.operator_password)}",
    ]
    return "\n".join(lines) + "\n"
