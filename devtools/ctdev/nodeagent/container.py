"""One container's lifecycle: start, exit, restart with back-off, probes, and its status view.

The pod worker drives it from a single thread: ``start`` with a prepared ``Launch``,
``reap`` after the process exits (restart policy and back-off decide what is next),
``due_probes``/``record_probe`` for probes, ``escalate`` for a liveness kill's grace period.
Back-off follows the kubelet's shape: the first restart is immediate, then
``base, 2*base, ...`` up to ``max``, reset after a run of ``reset`` seconds.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .objects import Obj, rfc3339
from .probes import ProbeState
from .process import Process
from .status import ContainerView


@dataclass(frozen=True)
class Backoff:
    """Restart back-off settings."""

    base: float = 2.0
    """Delay before the second restart (the first is immediate)."""
    max: float = 60.0
    """Upper bound of the delay."""
    reset: float = 60.0
    """A run at least this long resets the delay."""


@dataclass
class Launch:
    """A prepared start: ``argv`` None means "no process" (images the agent cannot run)."""

    argv: list[str] | None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    log_path: Path = Path("/dev/null")


class ContainerRunner:
    """The agent's state for one container of a pod."""

    def __init__(
        self,
        spec: Obj,
        *,
        kind: str,
        restart_policy: str,
        init: bool,
        backoff: Backoff,
        fast_probe: float,
        restart_count: int = 0,
    ) -> None:
        self.spec = spec
        self.name = str(spec["name"])
        self.image = str(spec.get("image", ""))
        self.kind = kind
        """``redis``, ``demo`` or ``none`` (see ``launch.image_kind``)."""
        self.init = init
        self.restart_policy = str(spec.get("restartPolicy") or restart_policy)
        self.backoff_settings = backoff
        self.proc: Process | None = None
        self.placeholder = False
        """Reported running without a process."""
        self.container_id = ""
        self.restart_count = restart_count
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.completed = False
        """Terminated for good (init container done, or no restart by policy)."""
        self.next_start = 0.0
        self._delay = 0.0
        self._runs = 0
        self._started_mono = 0.0
        self.kill_at: float | None = None
        """Monotonic deadline to SIGKILL after a liveness-probe SIGTERM."""
        self.probes = {
            kind: ProbeState(kind, spec[f"{kind}Probe"], fast_interval=fast_probe)
            for kind in ("startup", "readiness", "liveness")
            if not init and spec.get(f"{kind}Probe")
        }

    # ---- start / exit

    @property
    def running(self) -> bool:
        """A process runs (or a placeholder is reported running)."""
        return self.placeholder or (self.proc is not None and self.proc.alive)

    def due_start(self, now: float) -> bool:
        """Should (re)start now."""
        return (
            not self.completed
            and not self.running
            and self.proc is None
            and (now >= self.next_start)
        )

    def start(self, launch: Launch, on_exit: Callable[[], None]) -> None:
        """Start the container (counts a restart after the first run)."""
        if self._runs:
            self.restart_count += 1
        self._runs += 1
        self.container_id = f"cachetier://{uuid.uuid4().hex}"
        now = time.time()
        self._started_mono = time.monotonic()
        if launch.argv is None:
            if self.init:
                self._set_terminated(0, now, now, "Completed")
                self.completed = True
            else:
                self.placeholder = True
                self.state = {"running": {"startedAt": rfc3339(now)}}
            return
        self.proc = Process(
            launch.argv, env=launch.env, cwd=launch.cwd, log_path=launch.log_path, on_exit=on_exit
        )
        self.state = {"running": {"startedAt": rfc3339(self.proc.started_at)}}
        for probe in self.probes.values():
            probe.reset(self._started_mono)

    def config_error(self, reason: str, message: str, retry_in: float = 1.0) -> None:
        """The container cannot be created yet (e.g. a missing Secret key)."""
        self.state = {"waiting": {"reason": reason, "message": message}}
        self.next_start = time.monotonic() + retry_in

    def _set_terminated(self, code: int, started: float, finished: float, reason: str) -> None:
        term: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": rfc3339(started),
            "finishedAt": rfc3339(finished),
            "containerID": self.container_id,
        }
        self.state = {"terminated": term}

    def reap(self) -> bool:
        """Handle an exited process; True when something changed."""
        proc = self.proc
        if proc is None or proc.alive:
            return False
        self.proc = None
        self.kill_at = None
        code = proc.exit_code
        finished = proc.finished_at or time.time()
        self._set_terminated(code, proc.started_at, finished, "Completed" if code == 0 else "Error")
        if proc.signal is not None:
            self.state["terminated"]["signal"] = proc.signal
        ran = time.monotonic() - self._started_mono
        restart = self.restart_policy == "Always" or (
            self.restart_policy == "OnFailure" and code != 0
        )
        if self.init and code == 0:
            self.completed = True
            return True
        if not restart:
            self.completed = True
            return True
        settings = self.backoff_settings
        if ran >= settings.reset:
            self._delay = 0.0
        delay = self._delay
        self._delay = settings.base if delay == 0 else min(delay * 2, settings.max)
        self.next_start = time.monotonic() + delay
        self.last_state = dict(self.state)
        if delay > 0:
            self.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:g}s restarting failed container={self.name}",
                }
            }
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group (placeholders just stop)."""
        if self.placeholder:
            self.placeholder = False
            now = time.time()
            self._set_terminated(0, now, now, "Completed")
        if self.proc is not None:
            self.proc.kill(sig)

    # ---- probes

    def due_probes(self, now: float) -> list[ProbeState]:
        """Probes to run now, in startup -> liveness/readiness order."""
        if self.proc is None or not self.proc.alive:
            return []
        startup = self.probes.get("startup")
        if startup is not None and not startup.result:
            return [startup] if now >= startup.next_at else []
        return [p for k, p in self.probes.items() if k != "startup" and now >= p.next_at]

    def record_probe(self, probe: ProbeState, ok: bool, now: float, grace: float) -> None:
        """Account a probe result; a failed liveness probe kills the container."""
        probe.record(ok, now)
        if probe.kind == "liveness" and not probe.result and self.kill_at is None:
            self.stop(signal.SIGTERM)
            self.kill_at = now + grace

    def escalate(self, now: float) -> None:
        """SIGKILL after a liveness kill's grace period."""
        if self.kill_at is not None and now >= self.kill_at:
            self.stop(signal.SIGKILL)
            self.kill_at = None

    def next_wake(self) -> float | None:
        """Monotonic time this container next needs attention (None: only on events)."""
        times = [p.next_at for p in self.probes.values()] if self.running else []
        if self.kill_at is not None:
            times.append(self.kill_at)
        if not self.running and not self.completed:
            times.append(self.next_start)
        return min(times) if times else None

    # ---- status

    @property
    def started(self) -> bool:
        """Running and past its startup probe."""
        startup = self.probes.get("startup")
        return self.running and (startup is None or startup.result)

    @property
    def ready(self) -> bool:
        """Running, started, and passing its readiness probe (if any)."""
        if self.placeholder:
            return True
        readiness = self.probes.get("readiness")
        return self.started and (readiness is None or readiness.result)

    def view(self) -> ContainerView:
        """A snapshot for the pod status."""
        return ContainerView(
            name=self.name,
            image=self.image,
            state=self.state,
            last_state=self.last_state,
            container_id=self.container_id if self._runs else "",
            ready=self.ready,
            started=self.started,
            restart_count=self.restart_count,
        )
