"""The operator's runtime: the queue, the threads, and what one reconcile or probe
of a tier costs the process around the pipeline (locks, back-off, metrics).

Built by the kopf ``startup`` handler (``cachetier.handlers.tier``), which also runs
its two loops; this module does not import kopf. It is the composition root: it
hands the reconcile (``cachetier.reconcile``, which speaks only ``cachetier.ports``)
the real adapters — the Kubernetes client, redis-py's cluster converge and prober,
the Event poster. The concurrency model is README "Concurrency".
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cachetier import metrics, names
from cachetier.api import validate
from cachetier.kube.cache import Caches, Informer, Scope
from cachetier.kube.client import ApiError, Kube
from cachetier.kube.events import post_event
from cachetier.reconcile import injection as inj
from cachetier.reconcile.health import HealthProber
from cachetier.reconcile.lane import StaleRollout
from cachetier.reconcile.observed import may_request_rollback
from cachetier.reconcile.tier import TemporaryError, TierReconciler
from cachetier.redis.acl import RedisAclAdmin
from cachetier.redis.cluster import converge
from cachetier.redis.probe import RedisProber
from cachetier.redis.replication import RedisReplicationAdmin
from cachetier.redis.sentinel_watch import SentinelWatch

log = logging.getLogger("cachetier.handlers")


class Runtime:
    """Per-process state kept in kopf's memo."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.sentinels = SentinelWatch()
        self.reconciler = TierReconciler(
            kube,
            event=lambda b, t, r, m: post_event(kube, b, t, r, m),
            converge=converge,
            replication=RedisReplicationAdmin(),
            acl=RedisAclAdmin(),
            follower=self.sentinels,
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
        self.caches = Caches()
        self.watch_kube: Kube | None = None
        """The informers' client (:meth:`start_caches`)."""

    # -- watch caches -------------------------------------------------------------------

    def start_caches(self, namespaces: list[str]) -> None:
        """The watches of what the operator owns (label selectors), in each watched
        namespace or cluster-wide; consumer watches start per namespace as tiers with
        consumers appear there (:meth:`_index`)."""
        # The watches hold their connections for minutes: a pool of their own, so the
        # reconciles' requests never wait for (or open past) a pooled connection.
        self.watch_kube = Kube(self.kube.api_client.clone())
        self.kube.attach(self.caches)
        owned = {names.LABEL_MANAGED_BY: frozenset({names.MANAGED_BY})}
        scopes: list[str | None] = [*namespaces] or [None]
        for ns in scopes:
            self._watch(
                Scope(
                    "Pod",
                    ns,
                    {names.LABEL_NAME: frozenset({names.APP_NAME, names.SENTINEL_APP_NAME})},
                )
            )
            self._watch(Scope("StatefulSet", ns, owned), self._owned_statefulset_event)
            for kind in ("ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy"):
                self._watch(Scope(kind, ns, owned))

    def _watch(self, scope: Scope, on_event: Any = None, slim: Any = None) -> None:
        if self.watch_kube is None or self.caches.has(scope):
            return
        extra = {"slim": slim} if slim is not None else {}
        self.caches.add(Informer(self.watch_kube, scope, on_event=on_event, **extra)).start()

    def _owned_statefulset_event(self, _etype: str, body: dict[str, Any]) -> None:
        """A tier's StatefulSet changed (pods became ready, say): reconcile its tier."""
        for owner in body["metadata"].get("ownerReferences") or []:
            if owner.get("kind") == names.KIND and owner.get("controller"):
                # Coalesced: a new StatefulSet's status changes several times at once.
                self._schedule((body["metadata"]["namespace"], owner["name"]), 0.1)

    def _workload_event(self, _etype: str, body: dict[str, Any]) -> None:
        labels = body["metadata"].get("labels") or {}
        if body.get("kind") == "StatefulSet" and (
            labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY
        ):
            return  # a tier's own (the owned watch wakes it)
        self.wake_for_workload(body)

    def _pod_event(self, _etype: str, body: dict[str, Any]) -> None:
        self.wake_pod_tiers(body["metadata"]["namespace"])

    def _consumer_watches(self, namespace: str, consumers: bool, pods: bool) -> None:
        """Consumer workloads (and, at pod granularity, pods) of one namespace: a
        consumer selector may name any labels, so these watch the whole kind there."""
        if consumers:
            for kind in ("Deployment", "StatefulSet"):
                self._watch(Scope(kind, namespace), self._workload_event, inj.slim_workload)
        if pods:
            self._watch(Scope("Pod", namespace), self._pod_event)

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
                if isinstance(exc, RuntimeError) and "cannot schedule new futures" in str(exc):
                    # The process is stopping (SIGTERM) while this pass was in flight:
                    # its thread pools refuse new work. Not a fault; a start re-reads it.
                    log.info("reconcile %s/%s: stopped by shutdown", namespace, name)
                    return
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
        # Every namespace with a tier: a tier without consumers still releases the
        # workloads that carry its injection.
        self._consumer_watches(meta["namespace"], True, granularity == "pod")

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
