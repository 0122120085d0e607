"""Pod status from the agent's view of its containers (pure: no I/O).

The output is a strategic-merge patch body for ``pods/status``: container states carry
explicit nulls for the state kinds they left (a merge would keep them otherwise),
conditions merge by type (so the scheduler's PodScheduled and readiness-gate conditions
set by others stay), and the phase follows the kubelet's rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .objects import Obj, now_rfc3339

STATE_KINDS = ("waiting", "running", "terminated")
OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


@dataclass
class ContainerView:
    """A snapshot of one container as the agent sees it."""

    name: str
    image: str
    state: Obj
    """``{"waiting": {...}}``, ``{"running": {...}}`` or ``{"terminated": {...}}``."""
    last_state: Obj = field(default_factory=dict)
    """The previous run's terminated state (``{}`` before the first restart)."""
    container_id: str = ""
    ready: bool = False
    started: bool = False
    restart_count: int = 0

    @property
    def kind(self) -> str:
        """The state kind: waiting, running or terminated."""
        return next(iter(self.state), "waiting")


def container_status(view: ContainerView) -> Obj:
    """One entry of ``containerStatuses``."""
    state: Obj = dict.fromkeys(STATE_KINDS)
    state.update(view.state)
    out: Obj = {
        "name": view.name,
        "image": view.image,
        "imageID": f"cachetier-local://{view.image}",
        "ready": view.ready,
        "started": view.started,
        "restartCount": view.restart_count,
        "state": state,
        "lastState": view.last_state,
    }
    if view.container_id:
        out["containerID"] = view.container_id
    return out


def pod_phase(
    restart_policy: str, views: list[ContainerView], initializing: bool, init_failed: bool
) -> str:
    """The kubelet's phase rules for regular containers after init containers."""
    if init_failed:
        return "Failed"
    if initializing:
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for v in views:
        if v.kind == "running":
            running += 1
        elif v.kind == "terminated":
            stopped += 1
            succeeded += v.state["terminated"].get("exitCode") == 0
        elif v.last_state.get("terminated"):
            stopped += 1  # waiting to restart after a crash
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if restart_policy == "Never" else "Running"


class Conditions:
    """Keeps lastTransitionTime of the agent's own pod conditions."""

    def __init__(self, existing: list[Obj] | None = None) -> None:
        self._since: dict[str, tuple[str, str]] = {}
        for cond in existing or []:
            if cond.get("type") in OWN_CONDITIONS:
                self._since[cond["type"]] = (
                    str(cond.get("status")),
                    str(cond.get("lastTransitionTime") or now_rfc3339()),
                )

    def make(self, kind: str, ok: bool, reason: str = "", message: str = "") -> Obj:
        """A condition; its transition time changes only when its status does."""
        status = "True" if ok else "False"
        prev = self._since.get(kind)
        if prev is None or prev[0] != status:
            prev = (status, now_rfc3339())
            self._since[kind] = prev
        cond: Obj = {"type": kind, "status": status, "lastProbeTime": None}
        cond["lastTransitionTime"] = prev[1]
        # Explicit nulls: a strategic merge would otherwise keep a stale reason/message.
        cond["reason"] = reason if not ok and reason else None
        cond["message"] = message if not ok and message else None
        return cond


def build_pod_status(
    pod: Obj,
    *,
    pod_ip: str,
    host_ip: str,
    start_time: str,
    init_views: list[ContainerView],
    views: list[ContainerView],
    initializing: bool,
    init_failed: bool,
    conditions: Conditions,
) -> Obj:
    """The status patch for the pod."""
    spec = pod.get("spec") or {}
    phase = pod_phase(str(spec.get("restartPolicy", "Always")), views, initializing, init_failed)
    not_ready = [v.name for v in views if not v.ready]
    containers_ready = not not_ready and not initializing
    existing = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    gates = [str(g.get("conditionType")) for g in spec.get("readinessGates") or []]
    gates_missing = [g for g in gates if (existing.get(g) or {}).get("status") != "True"]
    msg = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else ""
    conds = [
        conditions.make("PodReadyToStartContainers", True),
        conditions.make(
            "Initialized",
            not initializing,
            "ContainersNotInitialized",
            "containers with incomplete status: "
            f"[{' '.join(v.name for v in init_views if v.kind != 'terminated')}]",
        ),
        conditions.make("ContainersReady", containers_ready, "ContainersNotReady", msg),
    ]
    if containers_ready and gates_missing:
        conds.append(
            conditions.make(
                "Ready",
                False,
                "ReadinessGatesNotReady",
                f"corresponding condition of pod readiness gate {gates_missing!r} does not exist.",
            )
        )
    else:
        conds.append(conditions.make("Ready", containers_ready, "ContainersNotReady", msg))
    status: Obj = {
        "phase": phase,
        "conditions": conds,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "containerStatuses": [container_status(v) for v in views],
    }
    if init_views:
        status["initContainerStatuses"] = [container_status(v) for v in init_views]
    return {"status": status}
