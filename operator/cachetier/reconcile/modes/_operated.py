"""The common part of the modes whose Redis the operator runs (standalone, cluster).

Pure: the children come from ``cachetier.render``, readiness from the StatefulSet
and pods in the snapshot.
"""

from __future__ import annotations

from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.modes.base import Inputs, Judgement
from cachetier.reconcile.observed import Key, Observed
from cachetier.render import TierRef, TierSecrets, drift, render_tier

NOT_READY_RECHECK = 10.0
"""A tier that is not Ready yet is reconciled again this often (besides its events)."""

_PLACEHOLDER = TierSecrets("-", "-", True)


def operated_keys(ref: TierRef, spec: CacheTierSpec) -> list[Key]:
    """(kind, name) of every object :func:`render_tier` makes for this spec."""
    return [(o["kind"], o["metadata"]["name"]) for o in render_tier(ref, spec, _PLACEHOLDER)]


def operated_desired(inputs: Inputs) -> list[dict[str, Any]]:
    if inputs.secrets is None:  # the shared decision always reads them for these modes
        raise ValueError("an operated mode needs the tier's secrets")
    obs = inputs.obs
    return render_tier(obs.ref, inputs.spec, inputs.secrets, obs.operator_namespace)


def wants_pods(obs: Observed, spec: CacheTierSpec) -> bool:
    """The pods are listed only when some are not ready (to say why)."""
    sts = obs.child("StatefulSet", names.statefulset(obs.ref.name))
    if sts is None:
        return False
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    return ready < profile(spec).pods(spec)


def replicas_of(desired: list[dict[str, Any]]) -> int:
    """The pod count the rendered (and, in cluster mode, scale-in-held) StatefulSet asks."""
    for obj in desired:
        if obj.get("kind") == "StatefulSet":
            return int((obj.get("spec") or {}).get("replicas", 1))
    return 1


def observe_statefulset(
    obs: Observed, desired: list[dict[str, Any]], written: set[Key]
) -> cond.WorkloadObservation:
    """The Redis StatefulSet against the pods the spec requires (not what the live
    StatefulSet asks for: a hand scale must not look Ready).

    A StatefulSet this pass applies is judged as the API server will hold it right
    after the apply: a new one exists with no pod yet; a changed spec bumps its
    generation, so it is not rolled out, and it asks for the rendered replicas.
    """
    name = names.statefulset(obs.ref.name)
    sts = obs.child("StatefulSet", name)
    want = replicas_of(desired)
    applying = ("StatefulSet", name) in written
    if sts is None:
        if not applying:
            return cond.WorkloadObservation(exists=False)
        return cond.WorkloadObservation(
            exists=True,
            desired_replicas=want,
            ready_replicas=0,
            updated=True,  # a new StatefulSet has nothing to roll: it provisions
            asked_replicas=want,
            current_replicas=0,
        )
    spec = sts.get("spec") or {}
    st = sts.get("status") or {}
    asked = int(spec.get("replicas", 1))
    # OnDelete (a cluster tier's supervised update): the controller never advances
    # currentRevision (it only does while it rolls pods itself), so the updated
    # replicas say when the update is done.
    on_delete = (spec.get("updateStrategy") or {}).get("type") == "OnDelete"
    updated = (
        st.get("observedGeneration") == sts["metadata"].get("generation")
        and int(st.get("updatedReplicas") or 0) >= want
        and (
            on_delete
            or not st.get("updateRevision")
            or st.get("currentRevision") == st["updateRevision"]
        )
    )
    if applying:
        for obj in desired:
            if obj.get("kind") == "StatefulSet":
                asked = int(obj["spec"].get("replicas", 1))
                if drift({"kind": "StatefulSet", "spec": obj["spec"]}, sts) is not None:
                    updated = False
    unschedulable = ""
    restarts = 0
    ready = int(st.get("readyReplicas") or 0)
    if ready < want:
        for pod in obs.pods or ():
            pst = pod.get("status") or {}
            for c in pst.get("conditions") or []:
                if c.get("type") == "PodScheduled" and c.get("status") == "False":
                    unschedulable = c.get("message") or c.get("reason") or "unschedulable"
            for cs in pst.get("containerStatuses") or []:
                restarts += int(cs.get("restartCount") or 0)
    return cond.WorkloadObservation(
        exists=True,
        desired_replicas=want,
        ready_replicas=ready,
        updated=updated,
        unschedulable=unschedulable,
        restarts=restarts,
        asked_replicas=asked,
        current_replicas=int(st.get("replicas") or 0),
    )


def operated_judge(
    inputs: Inputs, desired: list[dict[str, Any]], written: set[Key]
) -> tuple[cond.WorkloadObservation, Judgement]:
    """The StatefulSet's verdict, the Service endpoint and the connection Secret."""
    obs = inputs.obs
    workload = observe_statefulset(obs, desired, written)
    verdict = cond.workload_verdict(workload, obs.status.get("phase"))
    return workload, Judgement(
        verdict=verdict,
        endpoint={
            "host": names.service_host(obs.ref.name, obs.ref.namespace),
            "port": names.REDIS_PORT,
        },
        connection_secret=names.connection_secret(obs.ref.name),
        requeue=None if verdict.phase == "Ready" else NOT_READY_RECHECK,
    )
