"""ACL I/O for password rotation (redis-py): the password hashes a user has, and
``ACL SETUSER`` to add or remove one, on a Redis pod or a Sentinel."""

from __future__ import annotations

from typing import Any

import redis

from cachetier.ports import AclUpdate, OperatorSwitch, RedisUnavailable, Target
from cachetier.redis.probe import connect

__all__ = ["RedisAclAdmin"]

TIMEOUT = 2.0


def _send(client: Any, *args: Any) -> Any:
    return client.execute_command(*args)


class RedisAclAdmin:
    """:class:`cachetier.ports.AclAdmin` through redis-py."""

    def password_hashes(self, target: Target, user: str) -> frozenset[str] | None:
        client = connect(target, TIMEOUT)
        try:
            reply = _send(client, "ACL", "GETUSER", user)
        except redis.RedisError:
            return None
        finally:
            client.close()
        if reply is None:
            return frozenset()
        if isinstance(reply, list):  # RESP2: a flat key/value list
            reply = dict(zip(reply[::2], reply[1::2], strict=False))
        fields = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in reply.items()}
        passwords = fields.get("passwords") or []
        return frozenset(p.decode() if isinstance(p, bytes) else str(p) for p in passwords)

    def update(self, update: AclUpdate) -> None:
        rules = [f">{p}" for p in update.add] + [f"<{p}" for p in update.remove]
        client = connect(update.target, TIMEOUT)
        try:
            _send(client, "ACL", "SETUSER", update.user, *update.rules, *rules)
            if update.sentinel:
                # A Sentinel runs from a copy of sentinel.conf it rewrites: persist the
                # users now, so a restarted container keeps the change.
                _send(client, "SENTINEL", "FLUSHCONFIG")
        except redis.RedisError as exc:
            where = f"{update.target.host}:{update.target.port}"
            raise RedisUnavailable(f"ACL SETUSER on {where}: {type(exc).__name__}") from exc
        finally:
            client.close()

    def switched(self, target: Target, sentinel: bool) -> bool | None:
        client = connect(target, TIMEOUT)
        try:
            if sentinel:
                reply = _send(client, "SENTINEL", "CONFIG", "GET", "sentinel-pass")
            else:
                reply = _send(client, "CONFIG", "GET", "masterauth")
        except redis.RedisError:
            return None
        finally:
            client.close()
        # RESP3: a map; RESP2: a flat name/value list.
        values = list(reply.values()) if isinstance(reply, dict) else list(reply or [])[1::2]
        value = values[0] if values else b""
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text == (target.password or "")

    def switch(self, switch: OperatorSwitch) -> None:
        password = switch.target.password or ""
        client = connect(switch.target, TIMEOUT)
        try:
            if switch.sentinel:
                # The primary's auth-pass first: sentinel-pass is what `switched` reads.
                try:
                    _send(client, "SENTINEL", "SET", switch.master, "auth-pass", password)
                except redis.ResponseError as exc:
                    if "No such master" not in str(exc):
                        raise
                    # Not monitoring yet: SENTINEL MONITOR will carry the password.
                _send(client, "SENTINEL", "CONFIG", "SET", "sentinel-pass", password)
                _send(client, "SENTINEL", "FLUSHCONFIG")
            else:
                _send(client, "CONFIG", "SET", "masterauth", password)
        except redis.RedisError as exc:
            where = f"{switch.target.host}:{switch.target.port}"
            raise RedisUnavailable(
                f"operator password switch on {where}: {type(exc).__name__}"
            ) from exc
        finally:
            client.close()
