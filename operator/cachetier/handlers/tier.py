"""kopf wiring for CacheTiers: thin, non-blocking handlers in front of a small runtime.

The operator is level-triggered: every watch event of a CacheTier (and of a
StatefulSet it owns) queues one reconcile of that tier, which writes nothing
when nothing differs. No kopf change-detection handlers, timers or daemons
are used, so kopf itself writes no progress annotations and adds no
finalizer. The concurrency model:

- kopf's handlers are all ``async`` and only queue work (kopf hands one
  object's events over one at a time, so a handler that worked inline would
  hold back that object's next event — a rollback, say).
- Reconciles run on 8 threads (``_Dispatcher``), at most one per tier at a
  time (a per-tier lock); the dispatch loop is woken at once for new work,
  re-runs tiers that asked for a retry, and re-checks every tier once a
  period (``CACHETIER_RESYNC_INTERVAL``, drift repair).
- A rollback also goes to the fast lane: 4 threads used for nothing else,
  with write threads of each pass's own, so no other tier's work queues
  ahead of it (``RolloutPass.rollback_now``).
- Probes run on 8 threads, one per tier at a time, every
  ``CACHETIER_PROBE_INTERVAL`` seconds; consumer writes of a full pass share
  16 threads; a Redis Cluster's converge runs in a thread of its own per tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from cachetier import metrics, names
from cachetier.api import validate
from cachetier.kube.client import ApiError, Kube, load_api_client
from cachetier.kube.events import post_event
from cachetier.reconcile import injection as inj
from cachetier.reconcile.health import HealthProber
from cachetier.reconcile.lane import StaleRollout
from cachetier.reconcile.observed import may_request_rollback
from cachetier.reconcile.tier import TemporaryError, TierReconciler
from cachetier.redis.cluster import converge
from cachetier.redis.probe import RedisProber

log = logging.getLogger("cachetier.handlers")

RESYNC_SECONDS = 60.0
"""Every tier is reconciled at least this often (drift that no watch event reports);
``CACHETIER_RESYNC_INTERVAL`` (seconds) overrides it when the operator starts."""
PROBE_SECONDS = float(os.environ.get("CACHETIER_PROBE_INTERVAL", "5"))

CURRENT: Runtime | None = None
"""The runtime of the operator running in this process (tests and benchmarks read it)."""


class Runtime:
    """Per-process state kept in kopf's memo."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.reconciler = TierReconciler(
            kube, event=lambda b, t, r, m: post_event(kube, b, t, r, m), converge=converge
        )
        self.reconciler.wake = lambda ns, name: self._schedule((ns, name), 0.1)
        self.prober = HealthProber(
            kube,
            self.reconciler,
            lambda b, t, r, m: post_event(kube, b, t, r, m),
            RedisProber(),
            lock_for=self.lock_for,
        )
        self.locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self.requeue: dict[tuple[str, str], float] = {}
        self.guard = threading.Lock()
        self.reconciles = 0
        self.errors = 0
        self.rollbacks = 0
        # The dispatch loop waits on ``kicked`` (set from any thread via ``kick``).
        self.loop: asyncio.AbstractEventLoop | None = None
        self.kicked = asyncio.Event()
        # The rollback fast lane: threads of its own, used for nothing else.
        self.lane = ThreadPoolExecutor(4, thread_name_prefix="rollback")
        # namespace -> tier names, and the subset at pod granularity (pod events wake
        # only those of the pod's namespace).
        self.tiers_by_ns: defaultdict[str, set[str]] = defaultdict(set)
        self.pod_tiers_by_ns: defaultdict[str, set[str]] = defaultdict(set)
        # (namespace, tier) -> its consumer selector: a workload event wakes only the
        # tiers it concerns (selected, or still carrying the tier's injection).
        self.selectors: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.failures: dict[tuple[str, str], int] = {}
        """Consecutive operator errors per tier (the back-off)."""

    def lock_for(self, key: tuple[str, str]) -> threading.Lock:
        """One lock per tier: watch events and the resync loop never overlap on a tier."""
        with self.guard:
            return self.locks[key]

    def reconcile(self, namespace: str, name: str) -> None:
        """Fetch the tier fresh and reconcile it (serialised per tier)."""
        key = (namespace, name)
        with self.lock_for(key):
            body = self.kube.get(names.KIND, namespace, name)
            if body is None:
                with self.guard:
                    self.requeue.pop(key, None)
                    self.tiers_by_ns[namespace].discard(name)
                    self.pod_tiers_by_ns[namespace].discard(name)
                    self.selectors.pop(key, None)
                    self.failures.pop(key, None)
                self.reconciler.forget(namespace, name)
                return
            self._index(body)
            self.reconciles += 1
            started = time.monotonic()
            try:
                with self.kube.scoped(f"{namespace}/{name}"):
                    if body["metadata"].get("deletionTimestamp"):
                        self.reconciler.finalize(body)
                        return
                    result = self.reconciler.reconcile(body)
            except TemporaryError as exc:
                log.info("reconcile %s/%s: %s; retrying in %ss", namespace, name, exc, exc.delay)
                self._schedule(key, exc.delay)
                return
            except StaleRollout as exc:
                log.info("reconcile %s/%s: %s; re-reading it", namespace, name, exc)
                self._schedule(key, 0.0)
                return
            except ApiError as exc:
                metrics.RECONCILES.labels("error").inc()
                self.errors += 1
                log.warning("reconcile %s/%s: %s; retrying in 15s", namespace, name, exc)
                self._schedule(key, 15.0)
                return
            except Exception as exc:
                # Not the user's spec (that is SpecError -> InvalidSpec): the operator's
                # own fault. Traceback in the log, an Event, a metric, retry with back-off.
                delay = self._backoff(key)
                metrics.RECONCILES.labels("operator_error").inc()
                self.errors += 1
                log.exception("reconcile %s/%s failed; retrying in %ss", namespace, name, delay)
                post_event(
                    self.kube,
                    body,
                    "Warning",
                    "ReconcileError",
                    f"operator error {type(exc).__name__}: {exc}; retrying in {delay:.0f}s"[:1000],
                )
                self._schedule(key, delay)
                return
            with self.guard:
                self.failures.pop(key, None)
            metrics.RECONCILES.labels("ok").inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            if result.requeue_after is not None:
                self._schedule(key, result.requeue_after)
            else:
                with self.guard:
                    self.requeue.pop(key, None)

    def submit_rollback(self, body: dict[str, Any] | None, key: tuple[str, str]) -> None:
        """Hand the tier to the rollback fast lane (returns at once).

        With a watch event's ``body``, only when it may ask for a rollback that status
        does not show done yet; without one (an automatic rollback), always.
        """
        if body is not None and (not may_request_rollback(body) or _rollback_recorded(body)):
            return
        self.lane.submit(self._rollback_job, key, body)

    def _rollback_job(self, key: tuple[str, str], body: dict[str, Any] | None) -> None:
        try:
            with self.kube.scoped(f"{key[0]}/{key[1]}"):
                if body is None:
                    body = self.kube.get(names.KIND, *key)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return
                spec, _ = validate.check_spec(body.get("spec"))
                if spec is None:
                    return
                report = self.reconciler.rollback_now(body, spec)
        except ApiError as exc:
            log.warning("rollback of %s/%s: %s (the reconcile retries it)", *key, exc)
            self._schedule(key, 1.0)
            return
        except Exception:
            log.exception("rollback of %s/%s", *key)
            self._schedule(key, 1.0)
            return
        if report is not None:
            self.rollbacks += 1
            self._schedule(key, 0.0)  # the full reconcile records it in status

    def _backoff(self, key: tuple[str, str]) -> float:
        """1, 2, 4 ... seconds after consecutive operator errors of a tier, at most 300."""
        with self.guard:
            count = self.failures.get(key, 0)
            self.failures[key] = count + 1
        return float(min(300, 2**count))

    def _index(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        spec = body.get("spec") or {}
        granularity = (spec.get("rollout") or {}).get("granularity")
        consumers = spec.get("consumers") or None
        with self.guard:
            self.selectors[(meta["namespace"], meta["name"])] = (
                dict(consumers.get("selector") or {}) if consumers else None
            )
            self.tiers_by_ns[meta["namespace"]].add(meta["name"])
            if granularity == "pod":
                self.pod_tiers_by_ns[meta["namespace"]].add(meta["name"])
            else:
                self.pod_tiers_by_ns[meta["namespace"]].discard(meta["name"])

    def wake_pod_tiers(self, namespace: str) -> None:
        """A pod changed in ``namespace``: reconcile its pod-granularity tiers soon, coalesced."""
        with self.guard:
            tiers = list(self.pod_tiers_by_ns[namespace])
        for name in tiers:
            self._schedule((namespace, name), 0.2)

    def wake_for_workload(self, workload: dict[str, Any]) -> None:
        """A Deployment/StatefulSet changed: reconcile soon the tiers it concerns.

        Those whose consumer selector matches its labels, and those whose injection
        it still carries (its labels may have just stopped matching) — not every tier
        of the namespace, so one tier's many consumers never keep the others busy.
        """
        meta = workload.get("metadata") or {}
        namespace, labels = meta.get("namespace", ""), meta.get("labels") or {}
        with self.guard:
            tiers = [
                (name, self.selectors.get((namespace, name)))
                for name in self.tiers_by_ns[namespace]
            ]
        for name, selector in tiers:
            if (selector is not None and inj.selector_matches(labels, selector)) or (
                inj.has_any_injection(workload, name)
            ):
                self._schedule((namespace, name), 0.2)

    def schedule(self, key: tuple[str, str], delay: float) -> None:
        """Reconcile ``key`` after ``delay`` seconds (the earliest request wins)."""
        self._schedule(key, delay)

    def _schedule(self, key: tuple[str, str], delay: float) -> None:
        with self.guard:
            due = time.monotonic() + delay
            self.requeue[key] = min(self.requeue.get(key, due), due)
        if delay <= 0:
            self.kick()

    def kick(self) -> None:
        """Wake the dispatch loop now (from any thread)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.kicked.set)

    def probe(self, namespace: str, name: str) -> None:
        """Probe the tier's Redis; an automatic rollback is acted on at once."""
        try:
            with self.kube.scoped(f"{namespace}/{name}"):
                rolled_back = self.prober.probe_tier(namespace, name)
        except ApiError as exc:
            log.warning("probe of %s/%s: %s", namespace, name, exc)
            return
        if rolled_back:
            self.submit_rollback(None, (namespace, name))

    def known_tiers(self) -> list[tuple[str, str]]:
        """Every tier this process has seen."""
        with self.guard:
            return [(ns, n) for ns, names_ in self.tiers_by_ns.items() for n in names_]

    def due(self) -> list[tuple[str, str]]:
        """Tiers whose retry time has come."""
        now = time.monotonic()
        with self.guard:
            keys = [k for k, t in self.requeue.items() if t <= now]
            for k in keys:
                del self.requeue[k]
        return keys


def _rollback_recorded(body: dict[str, Any]) -> bool:
    """Status already shows this generation with every consumer off (nothing for the lane)."""
    st = body.get("status") or {}
    return (
        st.get("observedGeneration") == body["metadata"].get("generation")
        and (st.get("rollout") or {}).get("effectivePercent") == 0
        and (st.get("consumers") or {}).get("enabled") == 0
    )


def _runtime(memo: Any) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster ServiceAccount first, else the kubeconfig named by KUBECONFIG (read now)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return info or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf and build the runtime."""
    settings.posting.enabled = False  # we post our own, deduplicated Events
    # kopf logs every handled event at INFO ("Handler ... succeeded"): one line per
    # Deployment and Pod change of the cluster. Our own log says what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 60
    kubeconfig = memo.get("kubeconfig")
    rt = Runtime(Kube(load_api_client(kubeconfig)))
    memo["runtime"] = rt
    rt.loop = asyncio.get_running_loop()
    global CURRENT
    CURRENT = rt
    memo["resync_task"] = asyncio.get_running_loop().create_task(_resync_loop(rt))
    memo["probe_task"] = asyncio.get_running_loop().create_task(_probe_loop(rt))
    port = int(os.environ.get("CACHETIER_METRICS_PORT", "9090"))
    if port:
        try:
            metrics.serve(port)
        except OSError as exc:
            log.warning("metrics port %s unavailable: %s", port, exc)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync loop."""
    for key in ("resync_task", "probe_task"):
        task = memo.get(key)
        if task is not None:
            task.cancel()


class _Dispatcher:
    """Runs blocking work per tier in a thread pool, one job per tier at a time.

    Jobs are fire-and-forget: a slow tier (a stopped Redis, a slow API call)
    never holds up the loop or the other tiers; a job still running when its
    tier comes due again is simply skipped and rescheduled.
    """

    def __init__(self, name: str, workers: int) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self.inflight: set[tuple[str, str]] = set()
        self.name = name

    def submit(self, key: tuple[str, str], fn: Any) -> bool:
        if key in self.inflight:
            return False
        self.inflight.add(key)
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn, *key)

        def done(f: asyncio.Future[Any], key: tuple[str, str] = key) -> None:
            self.inflight.discard(key)
            if not f.cancelled() and f.exception() is not None:
                log.error("%s of %s/%s failed: %r", self.name, *key, f.exception())

        future.add_done_callback(done)
        return True


async def _probe_loop(rt: Runtime) -> None:
    probes = _Dispatcher("probe", 8)
    while True:
        await asyncio.sleep(PROBE_SECONDS)
        try:
            for key in rt.known_tiers():
                probes.submit(key, rt.probe)
        except Exception:
            log.exception("probe loop")


async def _resync_loop(rt: Runtime) -> None:
    loop = asyncio.get_running_loop()
    reconciles = _Dispatcher("reconcile", 8)
    period = float(os.environ.get("CACHETIER_RESYNC_INTERVAL") or RESYNC_SECONDS)
    last_full = time.monotonic()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.kicked.wait(), 0.1)
        rt.kicked.clear()
        try:
            keys = rt.due()
            if time.monotonic() - last_full >= period:
                last_full = time.monotonic()
                tiers = await loop.run_in_executor(
                    reconciles.pool, rt.kube.list_objects, names.KIND, None
                )
                keys += [(t["metadata"]["namespace"], t["metadata"]["name"]) for t in tiers]
            for key in dict.fromkeys(keys):
                if not reconciles.submit(key, rt.reconcile):
                    rt.schedule(key, 0.1)  # still running: once it ends
        except Exception:
            log.exception("resync loop")


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def tier_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Any change of a CacheTier: a rollback to the fast lane, a reconcile queued now.

    Never blocks: kopf hands a tier's events over one at a time, so a handler that
    reconciled inline would leave the next event (a rollback, say) waiting for it.
    """
    if type == "DELETED":
        return
    rt = _runtime(memo)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    rt.submit_rollback(dict(body), key)
    rt.schedule(key, 0.0)


@kopf.on.event("apps", "v1", "statefulsets", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
async def statefulset_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A tier's StatefulSet changed (pods became ready, say): reconcile its tier soon."""
    for owner in body["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == names.KIND and owner.get("controller"):
            _runtime(memo).schedule((body["metadata"]["namespace"], owner["name"]), 0.0)


@kopf.on.event("apps", "v1", "deployments")
async def deployment_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A Deployment changed: the tiers it concerns re-check their consumers."""
    _runtime(memo).wake_for_workload(dict(body))


@kopf.on.event("apps", "v1", "statefulsets")
async def consumer_statefulset_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A StatefulSet (possibly a consumer) changed: same as a Deployment."""
    labels = body["metadata"].get("labels") or {}
    if labels.get(names.LABEL_MANAGED_BY) != names.MANAGED_BY:
        _runtime(memo).wake_for_workload(dict(body))


@kopf.on.event("", "v1", "pods")
async def pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Pods come and go: tiers at pod granularity keep their exact per-pod count."""
    _runtime(memo).wake_pod_tiers(body["metadata"]["namespace"])
