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

The operator's own password (``cachetier.io/rotate-operator-password``) goes the same
way; its "consumers" are the operator itself, the replicas (``masterauth``) and the
Sentinels (``auth-pass``, ``sentinel-pass``):

1. ``Adding`` -- ``ACL SETUSER cachetier-operator >new`` on every server; the operator
   still logs in with the old one (``operator-password``; the new one waits in
   ``next-operator-password``).
2. ``Switching`` -- once every server has it: ``operator-password`` is the new one (the
   old one moves to ``previous-operator-password``), so every connection the operator
   opens uses it; ``CONFIG SET masterauth`` on every Redis pod, ``SENTINEL SET auth-pass``
   and ``SENTINEL CONFIG SET sentinel-pass`` on every Sentinel. The readiness probes log
   in as the probe user (PING only), whose password never rotates; a tier created
   before the probe user existed gets one now, and its pods roll (supervised) to it.
3. ``Removing`` -- once every server uses the new password itself and every pod's probe
   logs in as the probe user: ``ACL SETUSER cachetier-operator <old`` everywhere.
4. Done -- no server accepts the old one; ``previous-operator-password`` is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from cachetier import names
from cachetier.reconcile.injection import selector_matches

ADDING = "Adding"
CONSUMERS = "Consumers"
REMOVING = "Removing"
SWITCHING = "Switching"
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
    operator_hashes: frozenset[str] | None = None
    """The operator user's password hashes (an operator password rotation only)."""
    switched: bool | None = None
    """It logs in to others with the operator password the operator uses (``masterauth``;
    a Sentinel's ``sentinel-pass``). None: not asked, or no answer."""
    probe_user: bool = True
    """Its pod's readiness probe logs in as the probe user (not the operator's)."""


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


def operator_stage(
    next_: str | None, current: str, previous: str | None, servers: tuple[Server, ...] | None
) -> str:
    """The stage of an operator password rotation (``""``: none runs). ``next_``: the
    new password while it is added; ``previous``: the old one once the operator uses
    ``current``, the new one."""
    if next_ is not None:
        new = password_hash(next_)
        if not servers or any(
            s.operator_hashes is None or new not in s.operator_hashes for s in servers
        ):
            return ADDING
        return SWITCHING
    if previous is None:
        return ""
    if not servers or any(s.switched is not True or not s.probe_user for s in servers):
        return SWITCHING
    old = password_hash(previous)
    if old != password_hash(current) and any(
        s.operator_hashes is None or old in s.operator_hashes for s in servers
    ):
        # Every server must answer: a silent one may still accept the old password.
        return REMOVING
    return DONE


def operator_updates(
    stage_: str, next_: str | None, previous: str | None, servers: tuple[Server, ...]
) -> tuple[list[tuple[Server, tuple[str, ...], tuple[str, ...]]], list[Server]]:
    """(server, operator passwords to add, to remove) for this stage, and the servers
    to switch to the operator password in use (``masterauth``, ``sentinel-pass``)."""
    acl: list[tuple[Server, tuple[str, ...], tuple[str, ...]]] = []
    switch: list[Server] = []
    for s in servers:
        hashes = s.operator_hashes
        if stage_ == ADDING and next_ and hashes is not None:
            if password_hash(next_) not in hashes:
                acl.append((s, (next_,), ()))
        elif stage_ == SWITCHING and s.switched is False:
            switch.append(s)
        elif stage_ == REMOVING and previous and hashes and password_hash(previous) in hashes:
            acl.append((s, (), (previous,)))
    return acl, switch


def probes_as_probe_user(pod: dict[str, Any]) -> bool:
    """Every readiness probe of ``pod`` logs in as the probe user (or needs no login)."""
    for container in (pod.get("spec") or {}).get("containers") or ():
        command = ((container.get("readinessProbe") or {}).get("exec") or {}).get("command")
        text = " ".join(str(part) for part in command or ())
        if f"--user {names.OPERATOR_USER}" in text:
            return False
    return True


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


def pods_on(
    workload: dict[str, Any], pods: tuple[dict[str, Any], ...] | None, revision: str
) -> bool:
    """Every pod of ``workload`` (its selector, its namespace) was started from the
    template with ``revision`` and none is shutting down: no consumer pod may still use
    the old password. None (pods not listed): not known, so not yet."""
    if pods is None:
        return False
    meta = workload.get("metadata") or {}
    selector = (workload.get("spec") or {}).get("selector") or {}
    if not selector:
        return False
    for pod in pods:
        pod_meta = pod.get("metadata") or {}
        if pod_meta.get("namespace", meta.get("namespace")) != meta.get("namespace"):
            continue
        if not selector_matches(pod_meta.get("labels") or {}, selector):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue  # its containers have stopped
        annotations = pod_meta.get("annotations") or {}
        if pod_meta.get("deletionTimestamp") or (
            annotations.get(names.ANNOTATION_AUTH_REVISION) != revision
        ):
            return False
    return True


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
