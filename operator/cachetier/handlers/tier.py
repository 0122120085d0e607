"""kopf wiring for CacheTiers: thin, non-blocking handlers in front of the runtime.

The operator is level-triggered: every watch event of a CacheTier (and of a
StatefulSet it owns) queues one reconcile of that tier, which writes nothing
when nothing differs. No kopf change-detection handlers, timers or daemons
are used, so kopf itself writes no progress annotations and adds no
finalizer (``tests/e2e/test_kopf_writes.py`` shows what they would write). The
runtime (queue, locks, back-off) is ``cachetier.runtime``; the concurrency
model (README "Concurrency"):

- kopf's handlers are all ``async`` and only queue work (kopf hands one
  object's events over one at a time, so a handler that worked inline would
  hold back that object's next event — a rollback, say).
- Reconciles run on 16 threads (``_Dispatcher``), at most one per tier at a
  time (a per-tier lock); the dispatch loop is woken at once for new work,
  re-runs tiers that asked for a retry, and re-checks every tier once a
  period (``CACHETIER_RESYNC_INTERVAL``, drift repair).
- A rollback also goes to the fast lane: 4 threads used for nothing else,
  with write threads of each pass's own, so no other tier's work queues
  ahead of it (``ConsumerLanes.rollback_now``).
- Probes run on 8 threads, one per tier at a time, every
  ``CACHETIER_PROBE_INTERVAL`` seconds; consumer writes of a full pass share
  16 threads; a Redis Cluster's converge runs in a thread of its own per tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from cachetier import metrics, names
from cachetier.kube.client import Kube, load_api_client
from cachetier.runtime import Runtime

__all__ = ["CURRENT", "PROBE_SECONDS", "RESYNC_SECONDS", "Runtime"]

log = logging.getLogger("cachetier.handlers")

RESYNC_SECONDS = 60.0
"""Every tier is reconciled at least this often (drift that no watch event reports);
``CACHETIER_RESYNC_INTERVAL`` (seconds) overrides it when the operator starts."""
PROBE_SECONDS = float(os.environ.get("CACHETIER_PROBE_INTERVAL", "5"))

RECONCILE_THREADS = 16
"""Tiers reconciled at once (each waits on the API server most of its pass)."""
OWN_WRITE_DELAY = 1.0
"""A CacheTier event that shows only the operator's own last write is looked at once
this many seconds later (coalesced), not at once."""

CURRENT: Runtime | None = None
"""The runtime of the operator running in this process (tests and benchmarks read it)."""


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
    if watched_namespaces():
        # Namespace-scoped: the listed namespaces exactly, the resources found at start;
        # no cluster-wide list/watch of Namespaces or CRDs (a Role cannot grant them).
        settings.scanning.disabled = True
    # kopf logs every handled event at INFO ("Handler ... succeeded"): one line per
    # Deployment and Pod change of the cluster. Our own log says what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 60
    kubeconfig = memo.get("kubeconfig")
    rt = Runtime(Kube(load_api_client(kubeconfig)))
    rt.start_caches(watched_namespaces())
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
    """Stop the resync and probe loops and the Sentinel subscriptions."""
    for key in ("resync_task", "probe_task"):
        task = memo.get(key)
        if task is not None:
            task.cancel()
    rt = memo.get("runtime")
    if rt is not None:
        rt.sentinels.close()
        rt.caches.stop()


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


def watched_namespaces() -> list[str]:
    """The namespaces this operator reconciles ([]: every one): ``--namespace`` or
    ``WATCH_NAMESPACES``, which the entry point leaves in the environment."""
    return sorted(
        {n.strip() for n in os.environ.get("WATCH_NAMESPACES", "").split(",") if n.strip()}
    )


async def _resync_loop(rt: Runtime) -> None:
    loop = asyncio.get_running_loop()
    reconciles = _Dispatcher("reconcile", RECONCILE_THREADS)
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
                scopes: list[str | None] = [*watched_namespaces()] or [None]
                for scope in scopes:
                    tiers = await loop.run_in_executor(
                        reconciles.pool, rt.kube.list_objects, names.KIND, scope
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
    if rt.kube.wrote(names.KIND, *key, str(body["metadata"].get("resourceVersion"))):
        # Only our own finalizer or status write: the pass that made it has seen the
        # rest; one more look soon, coalesced with anything else that comes.
        rt.schedule(key, OWN_WRITE_DELAY)
        return
    rt.submit_rollback(dict(body), key)
    rt.schedule(key, 0.0)
