"""Health probes of a tier's Redis: PING latency and INFO stats, through redis-py.

I/O only; the verdict (bad or not, roll back or not) is the pure
``cachetier.rollout.evaluate_probe``. Counters are cumulative in Redis, so the
error rate is computed against the previous probe's counters (passed in).
"""

from __future__ import annotations

import logging
import time

import redis

from cachetier.ports import Counters, ProbeResult, Target
from cachetier.redis.options import quiet_handshake

log = logging.getLogger(__name__)

__all__ = [
    "MIN_COMMANDS_FOR_ERROR_RATE",
    "Counters",
    "ProbeResult",
    "RedisProber",
    "Target",
    "enforce_config",
    "probe",
]

PING_SAMPLES = 3
"""PINGs per probe; the median is the reported latency."""

MIN_COMMANDS_FOR_ERROR_RATE = 100
"""Fewer commands than this between two probes: no error rate is computed."""


def _client(target: Target, timeout: float, *, decode: bool = False) -> redis.Redis:
    return redis.Redis(
        host=target.host,
        port=target.port,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        ssl_ca_certs=target.ca_file,
        ssl_ca_data=target.ca_data,
        ssl_check_hostname=target.check_hostname and target.tls,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=decode,
        # No CLIENT SETINFO: Redis < 7.2 answers it with an error reply, which
        # would count against the very error rate this probe measures.
        **quiet_handshake(),
    )


def connect(target: Target, timeout: float = 2.0) -> redis.Redis:
    """A client for ``target`` (as the prober makes them: TLS, no CLIENT SETINFO)."""
    return _client(target, timeout)


def probe(target: Target, previous: Counters | None, timeout: float = 2.0) -> ProbeResult:
    """PING (timed) then INFO; any connection problem is ``up=False`` with the reason."""
    client = _client(target, timeout)
    try:
        client.ping()  # connect and authenticate outside the timed PINGs
        samples = []
        for _ in range(PING_SAMPLES):
            start = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - start) * 1000.0)
        # The median of a few PINGs: one scheduler hiccup of the operator's own
        # process should not count as a slow Redis.
        latency = sorted(samples)[len(samples) // 2]
        info = client.info()
        errorstats = client.info("errorstats")
        commandstats = client.info("commandstats")
        # Only the NOPERM class has an ACL LOG to say which command; a user without
        # the right to read it (an external Redis) just gets no names.
        acl_log = _acl_log(client) if "errorstat_NOPERM" in errorstats else []
    except redis.RedisError as exc:
        return ProbeResult(up=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    admin = _admin_failures(commandstats)
    classes = _error_classes(errorstats)
    if admin and "ERR" in classes:
        classes["ERR"] = max(0, classes["ERR"] - admin)
    counters = Counters(
        commands=int(info.get("total_commands_processed", 0)),
        errors=max(0, int(info.get("total_error_replies", 0)) - admin),
        hits=int(info.get("keyspace_hits", 0)),
        misses=int(info.get("keyspace_misses", 0)),
        error_classes=tuple(sorted(classes.items())),
        denials=tuple(sorted(_denials(acl_log).items())),
    )
    base = previous if previous is not None and previous.commands <= counters.commands else None
    d_cmd = counters.commands - (base.commands if base else 0)
    d_err = counters.errors - (base.errors if base else 0)
    d_hit = counters.hits - (base.hits if base else 0)
    d_miss = counters.misses - (base.misses if base else 0)
    return ProbeResult(
        up=True,
        latency_ms=round(latency, 3),
        # Judged only over a meaningful window: one typo among a handful of commands
        # on an idle cache must not roll every consumer back.
        error_rate=round(d_err / d_cmd, 4) if d_cmd >= MIN_COMMANDS_FOR_ERROR_RATE else None,
        hit_rate=round(d_hit / (d_hit + d_miss), 4) if (d_hit + d_miss) > 0 else None,
        connected_clients=int(info.get("connected_clients", 0)),
        evicted_keys=int(info.get("evicted_keys", 0)),
        counters=counters,
        # Over the same window as the error rate (since start-up on a first probe).
        error_classes=_delta(counters.error_classes, base.error_classes if base else ()),
        denied_commands=_delta(counters.denials, base.denials if base else ()),
    )


ADMIN_COMMANDS = frozenset(
    {"config|rewrite", "config|set", "replicaof", "slaveof", "client|kill", "script|kill"}
)
"""Commands only the operator and Sentinel send (the application's user may not): their
failures — Sentinel's CONFIG REWRITE of a read-only redis.conf after every failover, say —
are not application errors and do not count in the error rate."""


def _admin_failures(commandstats: dict[str, object]) -> int:
    total = 0
    for key, value in commandstats.items():
        name = key.removeprefix("cmdstat_")
        if name in ADMIN_COMMANDS and isinstance(value, dict):
            total += int(value.get("failed_calls", 0)) + int(value.get("rejected_calls", 0))
    return total


def _acl_log(client: redis.Redis) -> list[dict[str, object]]:
    try:
        entries: list[dict[str, object]] = client.acl_log(count=32)  # type: ignore[assignment]
    except redis.ResponseError:
        return []
    return list(entries or [])


def _error_classes(errorstats: dict[str, object]) -> dict[str, int]:
    """``{"errorstat_NOPERM": {"count": 3}}`` -> ``{"NOPERM": 3}``."""
    out: dict[str, int] = {}
    for key, value in errorstats.items():
        if key.startswith("errorstat_") and isinstance(value, dict):
            out[key.removeprefix("errorstat_")] = int(value.get("count", 0))
    return out


def _denials(entries: list[dict[str, object]]) -> dict[str, int]:
    """Command denials of the application user (``default``) in ACL LOG, summed per command."""
    out: dict[str, int] = {}
    for entry in entries:
        if entry.get("reason") != "command" or entry.get("username") != "default":
            continue
        command = str(entry.get("object") or "").upper()
        if command:
            out[command] = out.get(command, 0) + int(str(entry.get("count") or 1))
    return out


def _delta(now: tuple[tuple[str, int], ...], before: tuple[tuple[str, int], ...]) -> dict[str, int]:
    """Positive growth per name between two cumulative snapshots."""
    old = dict(before)
    out = {}
    for name, count in now:
        grown = count - old.get(name, 0)
        if grown > 0:
            out[name] = grown
    return out


def enforce_config(
    target: Target, wanted: dict[str, str], timeout: float = 2.0
) -> dict[str, tuple[str, str]]:
    """CONFIG SET each directive of ``wanted`` whose live value differs.

    Values are compared as Redis prints them (``CONFIG GET``); the caller passes them
    in that form (maxmemory in bytes). Returns ``{directive: (live, wanted)}`` of what
    was corrected; a connection problem corrects nothing (the probe reports it).
    """
    client = _client(target, timeout, decode=True)
    fixed: dict[str, tuple[str, str]] = {}
    try:
        live = client.config_get(*wanted) if wanted else {}  # one round trip
        for directive, value in wanted.items():
            have = str(live.get(directive, ""))
            if have == value:
                continue
            try:
                client.config_set(directive, value)
            except redis.ResponseError as exc:  # a value Redis refuses: say, go on
                log.warning(
                    "CONFIG SET %s %r refused on %s: %s", directive, value, target.host, exc
                )
                continue
            # Redis may print a value otherwise than it was given (flags reordered,
            # units in bytes): a set that leaves it as it was corrected nothing.
            now = str(client.config_get(directive).get(directive, ""))
            if now != have:
                fixed[directive] = (have, value)
    except redis.RedisError:
        return fixed
    finally:
        client.close()
    return fixed


class RedisProber:
    """:class:`cachetier.ports.Prober` over redis-py (the functions above)."""

    def probe(self, target: Target, previous: Counters | None) -> ProbeResult:
        return probe(target, previous)

    def enforce_config(self, target: Target, wanted: dict[str, str]) -> dict[str, tuple[str, str]]:
        return enforce_config(target, wanted)
