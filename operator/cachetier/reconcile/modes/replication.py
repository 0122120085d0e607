"""``mode: replication``: a primary and replicas behind one URL, failover by Sentinel.

Pure. The operator forms the first topology (the pod with the most data — pod 0 on a
fresh tier — is the primary, the others ``REPLICAOF`` it, every Sentinel
``MONITOR``s it) and after that never elects a primary: failover is Sentinel's. It
follows Sentinel: the pod a quorum of Sentinels names is labelled
``cachetier.io/role: primary`` (the old primary's label goes first, so no two pods
carry it at any instant), every other Redis pod ``replica``; ``<tier>`` selects the
primary, so ``REDIS_URL`` stays the same across failovers. It heals only what
Sentinel cannot: a replaced pod (a new address Sentinel never saw, or an empty
volume that came up alone as a primary) is made a replica of Sentinel's primary, a
replaced Sentinel is given the primary again, a Sentinel that remembers dead
addresses is reset (one at a time). A scale-in never removes the primary's pod: the
StatefulSet waits while one supervised ``SENTINEL FAILOVER`` moves the primary to a
kept replica (the pods that go get priority 0 first). Never ``FLUSHALL``, never
``REPLICAOF NO ONE``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.ports import (
    Monitor,
    NodeState,
    Priority,
    ReplicaOf,
    ReplicationAction,
    ReplicationObservation,
    Reset,
    SentinelState,
    Switchover,
)
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.modes import _operated, _update
from cachetier.reconcile.modes.base import Inputs, Judgement, LabelChange
from cachetier.reconcile.observed import Key, Observed
from cachetier.render import TierRef, spec_hash

FOLLOW_SECONDS = 2.0
"""A replication tier is looked at this often: Sentinel's failovers send no watch event."""
CAUGHT_UP_BYTES = 64 * 1024
"""A replica this close to its primary's offset (read a moment apart) is in sync."""
SWITCHOVER_PAUSE_MS = 10_000
"""A supervised switchover pauses the old primary's writes this long at most: its pod
is replaced as soon as the Sentinels agree on the new primary (a second or two)."""
"""A replication tier is looked at this often: Sentinel's failovers send no watch event."""


def _ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return bool(st.get("podIP")) and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


def _ordinal(pod: dict[str, Any]) -> int:
    tail = str(pod["metadata"]["name"]).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 1_000_000


def sentinel_primary(observation: ReplicationObservation, quorum: int) -> str | None:
    """The address a quorum of the Sentinels names as primary (None: no such agreement)."""
    votes = Counter(
        s.master_host for s in observation.sentinels if s.up and s.monitoring and s.master_host
    )
    for host, count in votes.most_common(1):
        if count >= quorum:
            return host
    return None


def bootstrap_primary(nodes: list[NodeState]) -> NodeState | None:
    """Whom to make primary when no Sentinel knows one: never a pod that could lose data.

    A primary that already has replicas (the Sentinels were replaced, the topology
    lives on), else the replicas' common master, else the pod with the largest
    replication offset (the most data), pod 0 on a tie (a fresh tier).
    """
    up = [n for n in nodes if n.up]
    if not up:
        return None
    led = [n for n in up if n.role == "primary" and n.connected_replicas > 0]
    if led:
        return max(led, key=lambda n: n.connected_replicas)
    masters = Counter(n.master_host for n in up if n.role == "replica" and n.master_host)
    for host, _ in masters.most_common(1):
        for n in up:
            if n.host == host and n.role == "primary":
                return n
    return max(up, key=lambda n: (n.offset, -up.index(n)))


def orphaned_primary(
    observation: ReplicationObservation,
    nodes: list[NodeState],
    primary_host: str,
    pod_hosts: set[str],
    quorum: int,
    want: int,
) -> bool:
    """The Sentinels agree on a primary that no pod has the address of, a quorum of
    them judges it down, and they know no replica at a pod's address: Sentinel can only
    fail over to a replica it knows, and none is left (the whole StatefulSet restarted,
    every pod with a new address). Every Redis pod is a primary with no replica of its
    own, or a replica of an address that is no pod's, with its link down. Sentinel cannot
    heal this; while it knows a live replica, failing over is Sentinel's."""
    if primary_host in pod_hosts or len(nodes) < want or not nodes:
        return False
    if any(s.failover for s in observation.sentinels if s.up):
        return False
    for n in nodes:
        alone = n.role == "primary" and n.connected_replicas == 0
        lost = n.role == "replica" and not n.link_up and n.master_host not in pod_hosts
        if not n.up or not (alone or lost):
            return False
    # A replica Sentinel knows at a pod's address (an address may be given again to a
    # new pod, which is then a primary of its own: no candidate for Sentinel).
    known = {host for s in observation.sentinels if s.up for host, _ in s.priorities}
    if known & {n.host for n in nodes if n.role == "replica"}:
        return False
    down = sum(
        1
        for s in observation.sentinels
        if s.up and s.monitoring and s.master_host == primary_host and s.master_down
    )
    return down >= quorum


def restart_primary(
    nodes: list[NodeState], by_host: dict[str, dict[str, Any]], last_primary: str
) -> NodeState | None:
    """Whom to lead after a whole restart: the last primary's pod (same volume, the
    newest data), else the pod with the most data (:func:`bootstrap_primary`)."""
    for n in nodes:
        if by_host[n.host]["metadata"]["name"] == last_primary and n.up:
            return n
    return bootstrap_primary(nodes)


def _may_scale_in(inputs: Inputs, keep: int) -> bool:
    """The StatefulSet may shrink to ``keep`` pods: a quorum of Sentinels agrees on a
    primary, none is failing over, and the primary is one of the pods kept."""
    obs = inputs.obs
    observation = obs.replication or ReplicationObservation()
    quorum = inputs.spec.replication.effective_quorum()
    host = sentinel_primary(observation, quorum)
    if host is None or any(s.failover for s in observation.sentinels if s.up):
        return False
    for pod in obs.pods or ():
        if (pod.get("status") or {}).get("podIP") == host:
            return _ordinal(pod) < keep
    return False


def scale_in_steps(
    observation: ReplicationObservation,
    nodes: list[NodeState],
    primary_host: str,
    ordinals: dict[str, int],
    *,
    keep: int,
    master: str,
) -> list[ReplicationAction]:
    """Replica priorities for a scale-in, then the one switchover it may need.

    The pods a scale-in removes (ordinal >= ``keep``) get ``replica-priority 0`` so that
    no failover picks them; the kept ones the default back (a scale-in undone). When
    the primary itself is to be removed, and every Sentinel watching sees priority 0 on
    every doomed replica, one ``SENTINEL FAILOVER`` moves it to a kept, linked replica
    (Sentinel picks the most up-to-date); the StatefulSet shrinks after that.
    """
    steps: list[ReplicationAction] = []
    doomed = {n.host for n in nodes if ordinals.get(n.host, 0) >= keep}
    for n in nodes:
        if n.host == primary_host or not n.up or n.role != "replica":
            continue
        want = 0 if n.host in doomed else (n.priority or 100)
        if n.priority != want:
            steps.append(Priority(host=n.host, priority=want))
    if steps or primary_host not in doomed:
        return steps
    kept_linked = [
        n for n in nodes if n.host not in doomed and n.role == "replica" and n.link_up and n.up
    ]
    watching = [s for s in observation.sentinels if s.up and s.master_host == primary_host]
    seen_doomed = all(
        dict(s.priorities).get(host, 0) == 0 for s in watching for host in doomed - {primary_host}
    )
    if kept_linked and watching and seen_doomed:
        steps.append(Switchover(host=watching[0].host, master=master))
    return steps


def stale_sentinel(
    observation: ReplicationObservation,
    nodes: list[NodeState],
    primary_host: str,
    *,
    replicas: int,
    sentinels: int,
    sentinels_ready: int,
) -> SentinelState | None:
    """The Sentinel to ``SENTINEL RESET`` now, if any: one that knows more replicas or
    Sentinels than the tier has (addresses of replaced pods, dead for good).

    Only on a whole, healthy topology — every Redis pod up and linked to the agreed
    primary, every Sentinel pod ready, watching it and not judging it down — and one
    at a time: not while another Sentinel is still re-learning after its own reset
    (knows fewer than the tier has), so a quorum stays informed throughout.
    """
    up = [s for s in observation.sentinels if s.up]
    whole = (
        len(nodes) == replicas + 1
        and all(n.up for n in nodes)
        and all(
            n.link_up and n.master_host == primary_host for n in nodes if n.host != primary_host
        )
        and sentinels_ready == sentinels
        and len(up) == sentinels
        and all(s.monitoring and s.master_host == primary_host and not s.master_down for s in up)
    )
    if not whole or any(s.replicas < replicas or s.sentinels < sentinels for s in up):
        return None
    for s in up:
        if s.replicas > replicas or s.sentinels > sentinels:
            return s
    return None


class ReplicationMode:
    """Primary + replicas + Sentinels: the operated path plus following Sentinel."""

    def child_keys(self, ref: TierRef, spec: CacheTierSpec) -> list[Key]:
        return _operated.operated_keys(ref, spec)

    def wants_pods(self, obs: Observed, spec: CacheTierSpec) -> bool:
        return obs.child("StatefulSet", names.statefulset(obs.ref.name)) is not None

    def desired(self, inputs: Inputs) -> list[dict[str, Any]]:
        desired = _operated.operated_desired(inputs)
        obs = inputs.obs
        live = obs.child("StatefulSet", names.statefulset(obs.ref.name))
        if live is None:
            return desired
        live_replicas = int((live.get("spec") or {}).get("replicas") or 0)
        for obj in desired:
            if obj["kind"] != "StatefulSet" or obj["metadata"]["name"] != live["metadata"]["name"]:
                continue
            want = int(obj["spec"]["replicas"])
            if want < live_replicas and not _may_scale_in(inputs, want):
                obj["spec"]["replicas"] = live_replicas
                annotations = obj["metadata"].setdefault("annotations", {})
                annotations.pop(names.ANNOTATION_SPEC_HASH, None)
                annotations[names.ANNOTATION_SPEC_HASH] = spec_hash(obj)
        return desired

    def judge(self, inputs: Inputs, desired: list[dict[str, Any]], written: set[Key]) -> Judgement:
        workload, base = _operated.operated_judge(inputs, desired, written)
        obs, spec = inputs.obs, inputs.spec
        rs = spec.replication
        quorum = rs.effective_quorum()
        previous = obs.status.get("replication") or {}
        pods = sorted((p for p in obs.pods or () if _ready(p)), key=_ordinal)
        by_host = {p["status"]["podIP"]: p for p in pods}
        observation = obs.replication or ReplicationObservation()
        nodes = [n for n in observation.nodes if n.host in by_host]
        sentinel_sts = obs.child("StatefulSet", names.sentinel_statefulset(obs.ref.name))
        sentinels_ready = int(((sentinel_sts or {}).get("status") or {}).get("readyReplicas") or 0)
        failing_over = any(s.failover for s in observation.sentinels if s.up)

        actions: list[ReplicationAction] = []
        primary_host = sentinel_primary(observation, quorum)
        agreed = primary_host is not None
        if primary_host is None and all(not s.monitoring for s in observation.sentinels if s.up):
            # Nobody watches a primary yet (a new tier, or every Sentinel replaced): form
            # the topology once every Redis pod and a quorum of Sentinels are up.
            up_sentinels = [s for s in observation.sentinels if s.up]
            if len(nodes) >= workload.desired_replicas and len(up_sentinels) >= quorum:
                chosen = bootstrap_primary(nodes)
                if chosen is not None:
                    primary_host = chosen.host
        notices: list[tuple[str, str, str]] = []
        reformed = False
        if primary_host is not None and orphaned_primary(
            observation, nodes, primary_host, set(by_host), quorum, workload.desired_replicas
        ):
            # Every Redis pod restarted at once (new addresses): the Sentinels' primary is
            # gone and they know no replica to promote, so they never will. The last
            # primary's pod (its data is the newest) leads again; the others follow it.
            chosen = restart_primary(nodes, by_host, str(previous.get("primary") or ""))
            if chosen is not None:
                notices.append(
                    (
                        "Warning",
                        "PrimaryReformed",
                        f"every Redis pod restarted: the Sentinels' primary {primary_host} is "
                        f"gone and they have no replica to promote; "
                        f"{by_host[chosen.host]['metadata']['name']} (the last primary's pod, "
                        "or the one with the most data) leads again and the others replicate "
                        "from it",
                    )
                )
                primary_host, agreed, reformed = chosen.host, False, True
        if primary_host is not None and primary_host in by_host and not failing_over:
            for s in observation.sentinels:
                moved = (agreed or reformed) and s.master_host != primary_host
                if s.up and (not s.monitoring or moved):
                    actions.append(
                        Monitor(
                            host=s.host,
                            master=names.sentinel_master(obs.ref.name),
                            primary_host=primary_host,
                            quorum=quorum,
                            down_after_ms=rs.down_after_milliseconds,
                            failover_timeout_ms=rs.failover_timeout,
                        )
                    )
            for n in nodes:
                if n.host == primary_host or not n.up:
                    continue  # a node that does not answer is Sentinel's to judge
                stray = n.role == "primary" or (n.master_host not in by_host)
                if stray or (not agreed and n.master_host != primary_host):
                    actions.append(ReplicaOf(host=n.host, primary_host=primary_host))

        keep = rs.replicas + 1
        if agreed and not failing_over and not actions and primary_host is not None:
            actions += scale_in_steps(
                observation,
                nodes,
                primary_host,
                {n.host: _ordinal(by_host[n.host]) for n in nodes},
                keep=keep,
                master=names.sentinel_master(obs.ref.name),
            )
        if agreed and not failing_over and not actions and primary_host is not None:
            stale = stale_sentinel(
                observation,
                nodes,
                primary_host,
                replicas=rs.replicas,
                sentinels=rs.sentinels,
                sentinels_ready=sentinels_ready,
            )
            if stale is not None:
                actions.append(Reset(host=stale.host, master=names.sentinel_master(obs.ref.name)))

        # Labels follow the Sentinels' agreement (or the topology just formed).
        primary_pod = by_host[primary_host]["metadata"]["name"] if primary_host in by_host else None
        labels: list[LabelChange] = []
        if primary_pod is not None:
            for p in obs.pods or ():
                name = p["metadata"]["name"]
                have = (p["metadata"].get("labels") or {}).get(names.LABEL_ROLE)
                want = names.ROLE_PRIMARY if name == primary_pod else names.ROLE_REPLICA
                if have != want:
                    labels.append(LabelChange(pod=name, role=want))
            # Demotions first: at no instant do two pods carry role=primary.
            labels.sort(key=lambda c: c.role == names.ROLE_PRIMARY)

        zones = dict(obs.node_zones)

        def where(host: str | None) -> dict[str, str]:
            node = str(((by_host.get(host or "") or {}).get("spec") or {}).get("nodeName") or "")
            return {"node": node, "zone": zones.get(node, "")} if node else {}

        replicas = [
            {
                "pod": by_host[n.host]["metadata"]["name"],
                "linkUp": n.link_up,
                "lagBytes": max(0, _offset(nodes, primary_host) - n.offset),
                **where(n.host),
            }
            for n in nodes
            if n.host != primary_host
        ]
        watching = [
            s
            for s in observation.sentinels
            if s.up and s.monitoring and s.master_host == primary_host
        ]
        monitoring = len(watching)
        # A Sentinel can fail over only to replicas it has discovered (from the primary's
        # INFO, every 10 s): until a quorum knows them all, the tier is not ready for one.
        informed = sum(1 for s in watching if s.replicas >= len(replicas))
        status: dict[str, Any] = {
            # The last agreed primary stands while the Sentinels do not agree (mid
            # failover), as its label does: the next agreement is compared with it.
            "primary": primary_pod or str(previous.get("primary") or ""),
            "replicas": replicas,
            "sentinels": {"ready": sentinels_ready, "monitoring": monitoring, "quorum": quorum},
        }
        placed = where(primary_host) if primary_pod else {}
        shared: list[str] = []
        if placed:
            status["primaryNode"] = placed["node"]
            if placed["zone"]:
                status["primaryZone"] = placed["zone"]
            shared = [r["pod"] for r in replicas if r.get("node") == placed["node"]]
            status["placement"] = "Degraded" if shared else "Spread"
            status["sharedDomains"] = len(shared)
        last = previous.get("lastFailover")
        if last:
            status["lastFailover"] = last
        failover = None
        old_primary = previous.get("primary")
        if primary_pod and old_primary and old_primary != primary_pod and agreed:
            failover = (old_primary, primary_pod)
            status["lastFailover"] = inputs.now_text
        problems = []
        if primary_pod is None:
            problems.append("no primary agreed by a quorum of Sentinels yet")
        if sentinels_ready < rs.sentinels:
            problems.append(f"{sentinels_ready}/{rs.sentinels} Sentinels ready")
        if monitoring < quorum:
            problems.append(f"{monitoring}/{quorum} Sentinels watch the primary")
        elif informed < quorum:
            problems.append(f"{informed}/{quorum} Sentinels know every replica")
        down = [r["pod"] for r in replicas if not r["linkUp"]]
        if down:
            problems.append("replication link down: " + ", ".join(down))
        if len(replicas) < rs.replicas:
            problems.append(f"{len(replicas)}/{rs.replicas} replicas")
        plan = _supervise(
            inputs,
            nodes,
            by_host,
            primary_host if agreed and not failing_over else None,
            healing=bool(actions),
            informed=informed >= quorum and sentinels_ready == rs.sentinels,
            want=workload.desired_replicas,
        )
        if plan.handover and primary_host is not None:
            actions.append(
                Switchover(
                    host=watching[0].host,
                    master=names.sentinel_master(obs.ref.name),
                    pause_host=primary_host,
                    replicas=tuple(n.host for n in nodes if n.host != primary_host),
                    pause_ms=SWITCHOVER_PAUSE_MS,
                )
            )
        base = replace(base, update=plan.status, pod_deletes=(plan.delete,) if plan.delete else ())
        if plan.stalled:
            message = f"supervised update halted: {plan.stalled}"
            base = replace(
                base, verdict=replace(base.verdict, degraded=("True", "UpdateStalled", message))
            )
        judged = replace(
            base,
            notices=tuple(notices),
            replication=status,
            replication_actions=tuple(actions),
            labels=tuple(labels),
            failover=failover,
            requeue=FOLLOW_SECONDS,
        )
        if base.verdict.phase == "Ready" and not problems and shared:
            # Serving, but the primary's node going down would take these replicas with
            # it: say so (scheduling could not spread them); Ready stays True.
            message = (
                f"placement: replica(s) {', '.join(shared)} share node "
                f"{placed['node']} with the primary {primary_pod}"
            )
            degraded = ("True", "PlacementDegraded", message[:1000])
            return replace(judged, verdict=replace(base.verdict, degraded=degraded))
        if base.verdict.phase != "Ready" or not problems:
            return judged
        message = "replication: " + "; ".join(problems)
        # Without an agreed primary a tier is forming, whatever it was before.
        prior_phase = obs.status.get("phase") if primary_pod else None
        verdict = cond.serving_or_forming(
            prior_phase,
            message,
            degraded="ReplicationDegraded",
            healing="ReplicationHealing",
            forming="ReplicationForming",
        )
        return replace(judged, verdict=verdict)


def _supervise(
    inputs: Inputs,
    nodes: list[NodeState],
    by_host: dict[str, dict[str, Any]],
    primary_host: str | None,
    *,
    healing: bool,
    informed: bool,
    want: int,
) -> _update.UpdatePlan:
    """The supervised update of the Redis pods: replicas first, each once the tier is
    whole again (every pod ready, linked to the agreed primary and caught up, a quorum
    of Sentinels knowing them all); then the primary, after a switchover to a replica.

    ``primary_host``: the Sentinels' agreed primary, None while they do not agree or
    fail over (nothing is replaced then); ``healing``: the operator has something to
    heal first (nothing is replaced but the primary just handed over).
    """
    obs = inputs.obs
    primary_offset = _offset(nodes, primary_host)
    in_sync = [
        n
        for n in nodes
        if n.host != primary_host
        and n.up
        and n.link_up
        and n.master_host == primary_host
        and primary_offset - n.offset <= CAUGHT_UP_BYTES
    ]
    settled = (
        primary_host is not None
        and not healing
        and primary_host in by_host
        and informed
        and len(nodes) == want
        and len(obs.pods or ()) == want
        and all(n.up for n in nodes)
        and len(in_sync) == want - 1
    )

    def ip(pod: dict[str, Any]) -> str:
        return str((pod.get("status") or {}).get("podIP") or "")

    roles = {n.host: n.role for n in nodes}

    def role_of(pod: dict[str, Any]) -> str:
        if primary_host is not None and ip(pod) == primary_host:
            return _update.PRIMARY
        return _update.REPLICA if roles.get(ip(pod)) == "replica" else ""

    def can_hand_over(pod: dict[str, Any]) -> bool:
        return any(n.priority > 0 for n in in_sync)

    def handed_over(pod: dict[str, Any]) -> bool:
        # The pod the tier's Service still selects, no longer the agreed primary.
        label = (pod["metadata"].get("labels") or {}).get(names.LABEL_ROLE)
        return label == names.ROLE_PRIMARY and primary_host is not None and ip(pod) != primary_host

    return _update.supervise(
        obs,
        role_of,
        can_hand_over,
        settled=settled,
        want=want,
        now=inputs.now_text,
        handed_over=handed_over,
    )


def _offset(nodes: list[NodeState], host: str | None) -> int:
    for n in nodes:
        if n.host == host:
            return n.offset
    return 0
