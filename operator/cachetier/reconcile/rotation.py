"""Password rotation with zero downtime (pure).

A rotation of the application password (ACL user ``default``) goes through stages
read afresh from the world on every pass, never from a remembered step:

1. ``Adding`` -- the new password is added beside the old one on every Redis pod and
   Sentinel (``ACL SETUSER default >new``, live: no restart; auth.conf lists both, so a
   pod that restarts meanwhile accepts both too). Consumers are still told the old one.
2. ``Consumers`` -- once every server has it (``ACL GETUSER`` shows its SHA-256): the
   connection Secret switches to the new password and every consumer workload's pod
   template gets a new ``cachetier.io/auth-revision``, so it rolls and its new pods
   start with the new password; old pods keep working with the old one meanwhile.
3. ``Removing`` -- once every consumer workload has rolled out (no pod of the old
   template left): auth.conf lists only the new password and ``ACL SETUSER default
   <old`` removes the old one from every server.
4. Done -- no server accepts the old password: ``previous-password`` leaves the auth
   Secret, ``status.auth.rotation`` says ``Done``.

A rotation starts when ``cachetier.io/rotate-password`` gets a value not handled yet
(a generated password: a new one is generated), or when the content of a
``passwordSecretRef`` Secret changes (the operator keeps a copy of the password in use
in ``<tier>-auth``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from cachetier import names

ADDING = "Adding"
CONSUMERS = "Consumers"
REMOVING = "Removing"
DONE = "Done"


def password_hash(password: str) -> str:
    """What ``ACL GETUSER`` lists for a password: its SHA-256, hex."""
    return hashlib.sha256(password.encode()).hexdigest()


def auth_revision(password: str, key: str) -> str:
    """The consumer template annotation for ``password``: an HMAC keyed with the
    operator's password, so it changes with every rotation and reveals nothing."""
    return hmac.new(key.encode(), password.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Server:
    """One Redis pod or Sentinel of the tier, and the password hashes it holds."""

    pod: str
    host: str
    port: int
    sentinel: bool
    hashes: frozenset[str] | None
    """None: not asked, or it did not answer."""


def stage(
    target: str,
    previous: str | None,
    servers: tuple[Server, ...] | None,
    consumers_rolled: bool,
) -> str:
    """The stage of the rotation from ``previous`` to ``target`` (``""``: none)."""
    if previous is None:
        return ""
    if not servers:
        return ADDING
    new = password_hash(target)
    if any(s.hashes is None or new not in s.hashes for s in servers):
        return ADDING
    if not consumers_rolled:
        return CONSUMERS
    old = password_hash(previous)
    if old != new and any(s.hashes is not None and old in s.hashes for s in servers):
        return REMOVING
    return DONE


def servers_of(pods: tuple[dict[str, Any], ...] | None) -> list[tuple[str, str, int, bool]]:
    """(pod, address, port, is a Sentinel) of every tier pod that has an address."""
    out = []
    for pod in pods or ():
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        labels = (pod.get("metadata") or {}).get("labels") or {}
        sentinel = labels.get(names.LABEL_COMPONENT) == names.COMPONENT_SENTINEL
        port = names.SENTINEL_PORT if sentinel else names.REDIS_PORT
        out.append((str(pod["metadata"]["name"]), str(ip), port, sentinel))
    return sorted(out)


def updates(
    stage_: str, target: str, previous: str | None, servers: tuple[Server, ...]
) -> list[tuple[Server, tuple[str, ...], tuple[str, ...]]]:
    """(server, passwords to add, passwords to remove) for this stage."""
    if previous is None:
        return []
    out: list[tuple[Server, tuple[str, ...], tuple[str, ...]]] = []
    new, old = password_hash(target), password_hash(previous)
    for s in servers:
        if s.hashes is None:
            continue  # not answering: it reads auth.conf (both passwords) when it is back
        if stage_ == ADDING and new not in s.hashes:
            out.append((s, (target, previous), ()))
        elif stage_ == REMOVING and old in s.hashes and old != new:
            out.append((s, (), (previous,)))
    return out


def rolled_out(workload: dict[str, Any], revision: str) -> bool:
    """A consumer workload runs ``revision`` on every pod (no pod of an older template
    left): what ``kubectl rollout status`` waits for."""
    template = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    if (template.get("annotations") or {}).get(names.ANNOTATION_AUTH_REVISION) != revision:
        return False
    meta = workload.get("metadata") or {}
    st = workload.get("status") or {}
    if st.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    want = int((workload.get("spec") or {}).get("replicas", 1))
    if workload.get("kind") == "StatefulSet":
        return (
            int(st.get("updatedReplicas") or 0) >= want
            and st.get("currentRevision") == st.get("updateRevision")
        ) or want == 0
    # terminatingReplicas (newer API servers): an old pod shutting down may still be
    # serving with the old password.
    return (
        int(st.get("updatedReplicas") or 0) >= want
        and int(st.get("replicas") or 0) <= want
        and not int(st.get("terminatingReplicas") or 0)
    )
