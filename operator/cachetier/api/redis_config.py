"""spec.redis.config: which redis.conf directives a user may set, and how each applies.

Pure data. ``KNOWN`` is every directive Redis 7.0 answers to ``CONFIG GET *``
(``tests/redis/test_redis_config.py`` checks that against the running redis-server);
``OWNED`` and ``OWNED_PREFIXES`` are what the operator writes itself or what would
break what it promises (networking, files, passwords and users, persistence, cluster
and TLS wiring, replication roles, logging, memory); ``RESTART_ONLY`` is what Redis
refuses to change at runtime (``CONFIG SET``: "can't set immutable config"), so a change
restarts the pods; every other user setting is applied live and written to redis.conf.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


KNOWN: frozenset[str] = _words(
    """
    acl-pubsub-default aclfile acllog-max-len active-defrag-cycle-max active-defrag-cycle-min
    active-defrag-ignore-bytes active-defrag-max-scan-fields active-defrag-threshold-lower
    active-defrag-threshold-upper active-expire-effort activedefrag activerehashing
    always-show-logo aof-disable-auto-gc aof-load-truncated aof-rewrite-incremental-fsync
    aof-timestamp-enabled aof-use-rdb-preamble aof_rewrite_cpulist appenddirname
    appendfilename appendfsync appendonly auto-aof-rewrite-min-size
    auto-aof-rewrite-percentage bgsave_cpulist bind bind-source-addr bio_cpulist
    busy-reply-threshold client-output-buffer-limit client-query-buffer-limit
    cluster-allow-pubsubshard-when-down cluster-allow-reads-when-down
    cluster-allow-replica-migration cluster-announce-bus-port cluster-announce-hostname
    cluster-announce-ip cluster-announce-port cluster-announce-tls-port cluster-config-file
    cluster-enabled cluster-link-sendbuf-limit cluster-migration-barrier cluster-node-timeout
    cluster-port cluster-preferred-endpoint-type cluster-replica-no-failover
    cluster-replica-validity-factor cluster-require-full-coverage cluster-slave-no-failover
    cluster-slave-validity-factor crash-log-enabled crash-memcheck-enabled daemonize
    databases dbfilename dir disable-thp dynamic-hz enable-debug-command
    enable-module-command enable-protected-configs hash-max-listpack-entries
    hash-max-listpack-value hash-max-ziplist-entries hash-max-ziplist-value
    hll-sparse-max-bytes hz ignore-warnings io-threads io-threads-do-reads jemalloc-bg-thread
    latency-monitor-threshold latency-tracking latency-tracking-info-percentiles
    lazyfree-lazy-eviction lazyfree-lazy-expire lazyfree-lazy-server-del
    lazyfree-lazy-user-del lazyfree-lazy-user-flush lfu-decay-time lfu-log-factor
    list-compress-depth list-max-listpack-size list-max-ziplist-size logfile loglevel
    lua-time-limit masterauth masteruser maxclients maxmemory maxmemory-clients
    maxmemory-eviction-tenacity maxmemory-policy maxmemory-samples min-replicas-max-lag
    min-replicas-to-write min-slaves-max-lag min-slaves-to-write no-appendfsync-on-rewrite
    notify-keyspace-events oom-score-adj oom-score-adj-values pidfile port
    proc-title-template propagation-error-behavior protected-mode proto-max-bulk-len
    rdb-del-sync-files rdb-save-incremental-fsync rdbchecksum rdbcompression
    repl-backlog-size repl-backlog-ttl repl-disable-tcp-nodelay repl-diskless-load
    repl-diskless-sync repl-diskless-sync-delay repl-diskless-sync-max-replicas
    repl-ping-replica-period repl-ping-slave-period repl-timeout replica-announce-ip
    replica-announce-port replica-announced replica-ignore-disk-write-errors
    replica-ignore-maxmemory replica-lazy-flush replica-priority replica-read-only
    replica-serve-stale-data replicaof requirepass sanitize-dump-payload save
    server_cpulist set-max-intset-entries set-proc-title shutdown-on-sigint
    shutdown-on-sigterm shutdown-timeout slave-announce-ip slave-announce-port
    slave-ignore-maxmemory slave-lazy-flush slave-priority slave-read-only
    slave-serve-stale-data slaveof slowlog-log-slower-than slowlog-max-len socket-mark-id
    stop-writes-on-bgsave-error stream-node-max-bytes stream-node-max-entries supervised
    syslog-enabled syslog-facility syslog-ident tcp-backlog tcp-keepalive timeout
    tls-auth-clients tls-ca-cert-dir tls-ca-cert-file tls-cert-file tls-ciphers
    tls-ciphersuites tls-client-cert-file tls-client-key-file tls-client-key-file-pass
    tls-cluster tls-dh-params-file tls-key-file tls-key-file-pass tls-port
    tls-prefer-server-ciphers tls-protocols tls-replication tls-session-cache-size
    tls-session-cache-timeout tls-session-caching tracking-table-max-keys unixsocket
    unixsocketperm zset-max-listpack-entries zset-max-listpack-value
    zset-max-ziplist-entries zset-max-ziplist-value
    """
)

OWNED: tuple[str, ...] = tuple(
    sorted(
        _words(
            """
        port bind bind-source-addr dir dbfilename appendfilename appenddirname appendonly
        appendfsync save requirepass masterauth masteruser include aclfile user
        rename-command loadmodule unixsocket unixsocketperm protected-mode daemonize
        supervised pidfile logfile loglevel maxmemory maxmemory-policy replicaof slaveof
        replica-announce-ip replica-announce-port slave-announce-ip slave-announce-port
        replica-announced replica-read-only slave-read-only replica-priority slave-priority
        min-replicas-to-write min-replicas-max-lag min-slaves-to-write min-slaves-max-lag
        repl-diskless-sync-delay enable-debug-command enable-module-command
        enable-protected-configs acl-pubsub-default sentinel
        """
        )
    )
)
"""Directives the operator writes or that would undo what it guarantees (refused)."""

OWNED_PREFIXES: tuple[str, ...] = ("cluster-", "tls-")
"""Whole families the operator owns: cluster wiring and TLS files."""

RESTART_ONLY: frozenset[str] = _words(
    """
    always-show-logo aof_rewrite_cpulist bgsave_cpulist bio_cpulist databases disable-thp
    io-threads io-threads-do-reads rdbchecksum server_cpulist set-proc-title socket-mark-id
    syslog-enabled syslog-facility syslog-ident tcp-backlog
    """
)
"""User-settable directives Redis reads only at start (a change restarts the pods)."""

MULTI_ARG: frozenset[str] = frozenset({"client-output-buffer-limit", "oom-score-adj-values"})
"""Directives whose value is several redis.conf arguments (split on whitespace)."""

NAME_PATTERN = "^[a-z][a-z0-9_-]*$"


def owned(name: str) -> bool:
    """Whether the operator owns ``name`` (a user may not set it)."""
    return name in OWNED or name.startswith(OWNED_PREFIXES)


def unknown(name: str) -> bool:
    """Whether ``name`` is no directive Redis knows (redis-server would not start)."""
    return name not in KNOWN


def live(name: str) -> bool:
    """Whether a change of ``name`` is applied with CONFIG SET (no restart)."""
    return not owned(name) and name in KNOWN and name not in RESTART_ONLY


def owned_names() -> tuple[str, ...]:
    """Every owned name: OWNED and the known names of the owned families (what the API
    server's rule looks up; an unknown ``cluster-foo`` is refused as unknown)."""
    family = sorted(n for n in KNOWN if n.startswith(OWNED_PREFIXES))
    return tuple(sorted({*OWNED, *family}))
