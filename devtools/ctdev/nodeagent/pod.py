"""The per-pod worker: one thread that turns one Pod into processes and reports its status.

Loop: (re)materialise volumes when the pod or a referenced object changed, run init
containers one by one, start/restart containers, run due probes, patch the status when it
changed, then sleep until the next deadline or an event. On ``deletionTimestamp``:
SIGTERM, the grace period, SIGKILL, then delete the Pod with gracePeriodSeconds=0.
"""

from __future__ import annotations

import copy
import shutil
import signal
import threading
import time

from . import launch as launchmod
from .container import ContainerRunner, Launch
from .envres import ConfigError, expand
from .files import VolumeError
from .host import PodHost
from .kube import STRATEGIC, ApiError, api_path
from .log import Log
from .objects import Obj, name_of, namespace_of, now_rfc3339, ref, uid_of
from .prepare import prepare_launch
from .probes import ProbeTarget, run_probe
from .status import Conditions, build_pod_status
from .volumes import PodVolumes

_log = Log("nodeagent.pod")
TICK_MAX = 5.0


class PodWorker:
    """Runs one pod (identified by uid) until it is deleted or the agent stops."""

    def __init__(self, agent: PodHost, pod: Obj) -> None:
        self._agent = agent
        self.uid = uid_of(pod)
        self.ns, self.name = namespace_of(pod), name_of(pod)
        self._ref = ref(pod)
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._dirty = True
        self._gone = False
        self._shutdown = False
        cfg = agent.config
        self.pod_dir = cfg.state_dir / "pods" / self.uid
        self.log_dir = cfg.state_dir / "logs" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.volumes = PodVolumes(self.pod_dir, cfg.state_dir, agent.lookup, cfg.allocatable)
        self._volumes_ok = False
        self._retry_volumes = False
        self._mount_error = ""
        self.ip = ""
        self._conditions = Conditions((pod.get("status") or {}).get("conditions"))
        self._start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        self._last_sent: Obj | None = None
        self._contexts: dict[str, tuple[launchmod.LaunchContext, dict[str, str], str]] = {}
        self.init_runners = self._runners(pod, init=True)
        self.runners = self._runners(pod, init=False)
        self._thread = threading.Thread(target=self._run, name=f"pod-{self._ref}", daemon=True)

    def _runners(self, pod: Obj, init: bool) -> list[ContainerRunner]:
        spec = pod.get("spec") or {}
        key = "initContainers" if init else "containers"
        counts = {
            s.get("name"): int(s.get("restartCount") or 0)
            for s in (pod.get("status") or {}).get(f"{key[:-1]}Statuses") or []
        }
        runners = [
            ContainerRunner(
                c,
                kind=launchmod.image_kind(str(c.get("image", ""))),
                restart_policy=str(spec.get("restartPolicy", "Always")),
                init=init,
                backoff=self._agent.config.backoff,
                fast_probe=self._agent.config.fast_probe,
                restart_count=counts.get(c.get("name"), 0),
            )
            for c in spec.get(key) or []
        ]
        if not init and spec.get("initContainers"):
            for runner in runners:
                runner.state = {"waiting": {"reason": "PodInitializing"}}
        return runners

    # ---- events from the agent (any thread)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def update(self, pod: Obj) -> None:
        """A newer version of the pod arrived."""
        with self._lock:
            self._pod = pod
            self._dirty = True
        self._wake.set()

    def dependency_changed(self) -> None:
        """A ConfigMap, Secret, claim or volume in the pod's namespace changed."""
        with self._lock:
            self._dirty = True
        self._wake.set()

    def deleted(self) -> None:
        """The pod object is gone from the API."""
        self._gone = True
        self._wake.set()

    def shutdown(self) -> None:
        """The agent stops: stop processes, leave the pod object alone."""
        self._shutdown = True
        self._wake.set()

    def join(self, timeout: float) -> None:
        """Wait for the worker thread."""
        self._thread.join(timeout)

    # ---- the loop

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            _log.exception("pod worker failed", pod=self._ref)
            self._kill_all(0.0)
        finally:
            self._agent.worker_done(self.uid)

    def _loop(self) -> None:
        status = (self._pod.get("status") or {}).get("phase")
        prefer = (self._pod.get("status") or {}).get("podIP")
        self.ip = self._agent.pod_ips.allocate(self.uid, prefer=prefer)
        terminal = status in ("Succeeded", "Failed")
        _log.info("pod assigned", pod=self._ref, ip=self.ip, uid=self.uid)
        while True:
            self._wake.clear()
            with self._lock:
                pod, dirty, self._dirty = self._pod, self._dirty, False
            if self._shutdown:
                self._kill_all(3.0)
                return
            if self._gone:
                self._kill_all(0.0)
                self._cleanup()
                return
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                self._terminate(pod)
                return
            if not terminal:
                if dirty or self._retry_volumes:
                    self._sync_volumes(pod)
                if self._volumes_ok:
                    self._step(pod)
                self._report(pod)
            self._wake.wait(self._next_delay())

    def _with_ip(self, pod: Obj) -> Obj:
        out = dict(pod)
        status = dict(pod.get("status") or {})
        status.update(podIP=self.ip, podIPs=[{"ip": self.ip}], hostIP=self._agent.config.host_ip)
        out["status"] = status
        return out

    def _sync_volumes(self, pod: Obj) -> None:
        try:
            self.volumes.sync(self._with_ip(pod))
        except (VolumeError, OSError) as err:
            if self._mount_error != str(err):
                _log.warning("volume sync failed; retrying", pod=self._ref, error=str(err))
            self._mount_error = str(err)
            # Once running, a broken reference keeps the old files (as the kubelet does)
            # and must not stop the containers' supervision; before, the pod waits.
            self._retry_volumes = True
            return
        self._mount_error = ""
        self._retry_volumes = False
        if not self._volumes_ok:
            _log.info("volumes ready", pod=self._ref)
        self._volumes_ok = True

    def _next_delay(self) -> float:
        now = time.monotonic()
        times = [t for r in self.init_runners + self.runners if (t := r.next_wake()) is not None]
        if self._retry_volumes:
            times.append(now + 1.0)
        if self._last_sent is None:
            times.append(now + 1.0)  # the last status patch failed: retry
        return max(0.0, min([now + TICK_MAX, *times]) - now)

    # ---- containers

    def _step(self, pod: Obj) -> None:
        now = time.monotonic()
        for runner in self.init_runners:
            runner.reap()
            if runner.completed:
                if runner.state.get("terminated", {}).get("exitCode", 0) != 0:
                    return  # init failed for good: the pod fails
                continue
            if runner.due_start(now):
                self._launch(pod, runner)
            if not runner.completed:
                return
        for runner in self.runners:
            runner.reap()
            if runner.due_start(now):
                self._launch(pod, runner)
        for runner in self.runners:
            runner.escalate(now)
            for probe in runner.due_probes(now):
                grace = float(
                    probe.spec.get("terminationGracePeriodSeconds")
                    or (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
                    or 30
                )
                ok = run_probe(probe.spec, self._probe_target(runner), probe.timeout)
                if ok != probe.result:
                    _log.info("probe", pod=self._ref, container=runner.name, kind=probe.kind, ok=ok)
                runner.record_probe(probe, ok, time.monotonic(), grace)

    def _probe_target(self, runner: ContainerRunner) -> ProbeTarget:
        ports = {
            str(p["name"]): int(p["containerPort"])
            for p in runner.spec.get("ports") or []
            if p.get("name") and p.get("containerPort")
        }
        ctx, env, cwd = self._contexts.get(runner.name) or (None, {}, "/")

        def run_exec(argv: list[str], timeout: float) -> bool:
            if ctx is None:
                return False
            expanded = [expand(a, env) for a in argv]
            local = launchmod.local_argv(expanded, ctx)
            return self._agent.run_exec(local, env, cwd, timeout)

        return ProbeTarget(pod_ip=self.ip, ports=ports, run_exec=run_exec)

    def _launch(self, pod: Obj, runner: ContainerRunner) -> None:
        try:
            launch = self._prepare(pod, runner)
        except ConfigError as err:
            if runner.state.get("waiting", {}).get("message") != str(err):
                _log.warning(
                    "container config error", pod=self._ref, container=runner.name, error=str(err)
                )
            runner.config_error("CreateContainerConfigError", str(err))
            return
        except (OSError, VolumeError) as err:
            _log.warning(
                "container start failed", pod=self._ref, container=runner.name, error=str(err)
            )
            runner.config_error("RunContainerError", str(err), retry_in=2.0)
            return
        runner.start(launch, self._wake.set)
        # Log the command as written in the spec: the expanded one may hold secrets.
        _log.info(
            "container started",
            pod=self._ref,
            container=runner.name,
            pid=runner.proc.pid if runner.proc else None,
            program=launch.argv[0] if launch.argv else None,
            command=[*(runner.spec.get("command") or []), *(runner.spec.get("args") or [])],
            restarts=runner.restart_count,
        )

    def _prepare(self, pod: Obj, runner: ContainerRunner) -> Launch:
        if runner.kind == "none":
            return Launch(argv=None)
        prepared = prepare_launch(
            self._with_ip(pod),
            runner,
            pod_dir=self.pod_dir,
            log_dir=self.log_dir,
            volume_paths=self.volumes.paths,
            config=self._agent.config,
            lookup=self._agent.lookup,
            resolve_hosts=self._agent.resolve_hosts,
        )
        self._contexts[runner.name] = (prepared.ctx, prepared.launch.env, prepared.launch.cwd)
        return prepared.launch

    # ---- status

    def _report(self, pod: Obj) -> None:
        init_done = all(r.completed for r in self.init_runners)
        init_failed = any(
            r.completed and r.state.get("terminated", {}).get("exitCode", 0) != 0
            for r in self.init_runners
        )
        body = build_pod_status(
            pod,
            pod_ip=self.ip,
            host_ip=self._agent.config.host_ip,
            start_time=self._start_time,
            init_views=[r.view() for r in self.init_runners],
            views=[r.view() for r in self.runners],
            initializing=not init_done,
            init_failed=init_failed,
            conditions=self._conditions,
        )
        if body == self._last_sent:
            return
        try:
            self._agent.kube.patch(api_path("pods", self.ns, self.name, "status"), body, STRATEGIC)
        except ApiError as err:
            self._last_sent = None
            if err.status != 404:
                _log.warning("status patch failed", pod=self._ref, error=str(err))
            return
        if body["status"]["phase"] != (self._last_sent or {}).get("status", {}).get("phase"):
            _log.info("pod phase", pod=self._ref, phase=body["status"]["phase"])
        self._last_sent = copy.deepcopy(body)

    # ---- termination

    def _kill_all(self, grace: float) -> None:
        runners = self.init_runners + self.runners
        for runner in runners:
            runner.stop(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for runner in runners:
            proc = runner.proc
            if proc is not None and not proc.wait(max(0.0, deadline - time.monotonic())):
                proc.kill(signal.SIGKILL)
                proc.wait(2.0)

    def _terminate(self, pod: Obj) -> None:
        md = pod.get("metadata") or {}
        grace = md.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        _log.info("terminating pod", pod=self._ref, grace=grace)
        self._kill_all(float(grace))
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            self._agent.kube.delete(api_path("pods", self.ns, self.name), body)
        except ApiError as err:
            if err.status != 409:  # 409: a newer pod of the same name
                _log.warning("pod delete failed", pod=self._ref, error=str(err))
        self._cleanup()
        _log.info("pod deleted", pod=self._ref)

    def _cleanup(self) -> None:
        shutil.rmtree(self.pod_dir, ignore_errors=True)
