"""Reconcile one CacheTier: gather -> decide -> act.

- **gather** reads the tier's world once into an :class:`Observed` snapshot: the
  children its mode renders, the Secrets it reads, its Redis pods (when the mode
  needs them), the namespace's consumer workloads (and pods, at pod granularity),
  and the cluster converge worker's last view.
- **decide** (:func:`cachetier.reconcile.decide.decide`, pure) turns the snapshot
  into a :class:`Decision`: the children to apply, the consumer plan (rollback
  first), Redis actions, Events and the whole ``CacheTierStatus``.
- **act** carries it out in order: finalizer, consumers if this is a rollback, the
  auth Secret's first copy, the children, the cluster converge, the consumers,
  then status (one merge patch of what changed, nothing if nothing did) and Events.

Everything outside comes in through :mod:`cachetier.ports` (the Kubernetes API, the
cluster converge, an event sink, a clock), so the whole pipeline runs against the
in-memory fakes of ``tests/fakes`` as well as against a control plane.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets as pysecrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cachetier import metrics, names
from cachetier.api import validate
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile
from cachetier.api.units import quantity_to_bytes
from cachetier.ports import (
    AclAdmin,
    ApiError,
    Clock,
    ClusterAdmin,
    Conflict,
    ConvergeResult,
    EventSink,
    KubeApi,
    RedisUnavailable,
    ReplicationAdmin,
    ReplicationObservation,
    SentinelFollower,
    Target,
    TlsOptions,
)
from cachetier.reconcile import rotation, volumes
from cachetier.reconcile.cluster import ClusterManager
from cachetier.reconcile.consumer_plan import ConsumerPlan, plan_consumers
from cachetier.reconcile.consumers import ConsumerReconciler, ConsumerReport
from cachetier.reconcile.decide import (
    ConsumerOutcome,
    Decision,
    decide,
    refused,
    rollback_reason,
    secrets_to_read,
    settle,
)
from cachetier.reconcile.lane import ConsumerLanes
from cachetier.reconcile.modes import MODES
from cachetier.reconcile.observed import DependencyMissing, Key, Observed
from cachetier.render import TierRef
from cachetier.topology import NodeAddress

log = logging.getLogger("cachetier.reconcile")

TemporaryError = DependencyMissing
"""Try again after ``delay`` seconds (a dependency is missing or the API is busy)."""

OPERATOR_NAMESPACE = os.environ.get("CACHETIER_OPERATOR_NAMESPACE") or names.OPERATOR_NAMESPACE
"""The operator's own namespace (downward API in manifests/), admitted by NetworkPolicies."""


ROTATION_KEYS = (
    names.PREVIOUS_PASSWORD_KEY,
    names.NEXT_OPERATOR_PASSWORD_KEY,
    names.PREVIOUS_OPERATOR_PASSWORD_KEY,
)
"""Keys of <tier>-auth present only while a password rotation runs."""


@dataclass
class Result:
    """What one reconcile asks of the runtime: when to run again (None: on the next event)."""

    requeue_after: float | None = None


def now_rfc3339() -> str:
    """The current time, as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_password() -> str:
    # 32 bytes of entropy, URL-safe so it can sit in redis:// URLs unescaped.
    return pysecrets.token_urlsafe(32)


def _no_cluster(
    nodes: Sequence[NodeAddress],
    password: str | None,
    shards: int,
    replicas_per_shard: int,
    **_: Any,
) -> ConvergeResult:
    raise RuntimeError("this reconciler was built without a cluster converge (ClusterAdmin)")


def status_dict(decision: Decision) -> dict[str, Any]:
    """The decision's status as the API stores it (camelCase, no nulls)."""
    return decision.status.model_dump(
        mode="json", by_alias=True, exclude_unset=True, exclude_none=True
    )


ZONE_TTL = 300.0
APPLY_THREADS = 16
"""Applies in flight at once, shared by every pass (a new tier's children go out together)."""
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
ZONE_LABEL = "topology.kubernetes.io/zone"


class TierReconciler:
    """Reconciles CacheTiers: gather -> decide -> act, through the ports."""

    def __init__(
        self,
        kube: KubeApi,
        event: EventSink | None = None,
        *,
        converge: ClusterAdmin | None = None,
        replication: ReplicationAdmin | None = None,
        follower: SentinelFollower | None = None,
        clock: Clock | None = None,
        passwords: Callable[[], str] = _new_password,
        acl: AclAdmin | None = None,
    ) -> None:
        self.kube = kube
        self._event: EventSink = event or (lambda body, etype, reason, message: None)
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.passwords = passwords
        self.consumers = ConsumerReconciler(kube)
        # The rollback fast lane writes with threads of its own per pass: a large
        # rollout (or rollback) of another tier never queues ahead of it.
        self.lanes = ConsumerLanes(
            kube, self.consumers, ConsumerReconciler(kube, shared_pool=False)
        )
        self.clusters = ClusterManager(converge or _no_cluster)
        self.replication = replication
        self.acl = acl
        """ACL GETUSER/SETUSER for password rotation (None: rotations never progress)."""
        """The Redis side of replication mode (None: such tiers are observed as empty)."""
        self.follower = follower
        """Sentinel pub/sub: a failover wakes its tier before the next 2 s look."""
        self.wake: Callable[[str, str], None] = lambda namespace, name: None
        self.operator_namespace = OPERATOR_NAMESPACE
        self._node_zones: dict[str, tuple[float, str]] = {}
        self.timings: defaultdict[str, float] = defaultdict(float)
        """Wall seconds spent in each phase of the pipeline, summed over passes (and
        ``passes``): the per-phase figures the benchmarks print."""
        self._timing_lock = threading.Lock()
        self._writers = ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="apply")
        self._readers = ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="read")

    # -- the pipeline -----------------------------------------------------------------

    def reconcile(self, body: dict[str, Any]) -> Result:
        """One level-triggered pass over a CacheTier ``body`` (as the API returned it)."""
        t0 = time.perf_counter()
        observed = self.gather(body)
        t1 = time.perf_counter()
        decision = decide(observed, self.clock())
        t2 = time.perf_counter()
        try:
            return self.act(observed, decision)
        finally:
            t3 = time.perf_counter()
            with self._timing_lock:
                self.timings["gather"] += t1 - t0
                self.timings["decide"] += t2 - t1
                self.timings["act"] += t3 - t2
                self.timings["passes"] += 1

    def gather(self, body: dict[str, Any]) -> Observed:
        """Read everything the decision needs, once."""
        meta = body["metadata"]
        ref = TierRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        spec, problems = validate.check_spec(body.get("spec"))
        obs = Observed(
            tier=body,
            ref=ref,
            spec=spec,
            problems=tuple(str(p) for p in problems),
            operator_namespace=self.operator_namespace,
        )
        if spec is None:
            return obs
        workloads, consumer_pods = self.lanes.gather((ref.namespace, ref.name), spec)
        obs = replace(obs, workloads=workloads, consumer_pods=consumer_pods)
        if problems:
            return obs
        mode = MODES[spec.mode]
        # Every child and Secret at once: the watch caches answer most; the rest (the
        # Secrets, read by name only) go to the API server concurrently.
        keys = list(dict.fromkeys(mode.child_keys(ref, spec)))
        keys += [
            ("Secret", n) for n in secrets_to_read(ref.name, spec) if ("Secret", n) not in keys
        ]
        scope = self.kube.scope

        def one(key: Key) -> dict[str, Any] | None:
            with self.kube.scoped(scope):
                return self.kube.get(key[0], ref.namespace, key[1])

        fetched = dict(zip(keys, self._readers.map(one, keys), strict=True))
        children: dict[Key, dict[str, Any] | None] = {
            key: fetched[key] for key in mode.child_keys(ref, spec)
        }
        read: dict[str, dict[str, Any] | None] = {
            name: fetched[("Secret", name)] for name in secrets_to_read(ref.name, spec)
        }
        obs = replace(obs, children=children, secrets=read)
        if mode.wants_pods(obs, spec):
            selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(ref.name).items())
            obs = replace(obs, pods=tuple(self.kube.list_objects("Pod", ref.namespace, selector)))
            if profile(spec).cluster_protocol or profile(spec).sentinel:
                obs = replace(obs, node_zones=self._zones(obs.pods or ()))
        if profile(spec).cluster_protocol:
            nodes = sum(1 for _ in obs.pods or ())
            obs = replace(
                obs,
                cluster=self.clusters.view(
                    (ref.namespace, ref.name), profile(spec).pods(spec), nodes
                ),
            )
        if profile(spec).sentinel:
            obs = replace(obs, replication=self._observe_replication(obs))
        if profile(spec).runs_redis and spec.redis.persistence.mode != "none":
            obs = self._observe_claims(obs, spec)
        auth = read.get(names.auth_secret(ref.name))
        asked = obs.annotations.get(names.ANNOTATION_ROTATE_PASSWORD)
        handled = (obs.status.get("auth") or {}).get("requested")
        asked_operator = obs.annotations.get(names.ANNOTATION_ROTATE_OPERATOR_PASSWORD)
        handled_operator = ((obs.status.get("auth") or {}).get("operator") or {}).get("requested")
        if profile(spec).runs_redis and (
            auth is None
            or (asked and asked != handled)
            or (asked_operator and asked_operator != handled_operator)
        ):
            obs = replace(
                obs, fresh_passwords=(self.passwords(), self.passwords(), self.passwords())
            )
        held = (auth or {}).get("data") or {}
        if profile(spec).runs_redis and any(key in held for key in ROTATION_KEYS):
            obs = self._observe_acl(obs, spec, auth)
        if profile(spec).runs_redis and names.PREVIOUS_PASSWORD_KEY in held:
            pods = obs.consumer_pods
            if pods is None:
                pods = tuple(self.kube.list_objects("Pod", ref.namespace))
            obs = replace(obs, rotation_pods=pods)
        return obs

    def _observe_acl(
        self, obs: Observed, spec: CacheTierSpec, auth: dict[str, Any] | None
    ) -> Observed:
        """During a password rotation only: the application user's password hashes on
        every Redis pod and Sentinel (``ACL GETUSER default``); during an operator
        password rotation, the operator user's too, and whether each server logs in to
        the others with the password in use."""
        if self.acl is None:
            return obs
        pods = obs.pods
        if pods is None:
            selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(obs.ref.name).items())
            pods = tuple(self.kube.list_objects("Pod", obs.ref.namespace, selector))
        if profile(spec).sentinel:
            # The Sentinels hold the application user too (Sentinel-aware clients).
            labels = names.sentinel_selector_labels(obs.ref.name)
            selector = ",".join(f"{k}={v}" for k, v in labels.items())
            pods = (*pods, *self.kube.list_objects("Pod", obs.ref.namespace, selector))
        password = _decode(auth, names.OPERATOR_PASSWORD_KEY)
        ca = None
        if spec.tls.enabled and spec.tls.secret_name:
            ca = _decode(obs.secrets.get(spec.tls.secret_name), "ca.crt")
        held = (auth or {}).get("data") or {}
        app = names.PREVIOUS_PASSWORD_KEY in held
        operator = any(key in held for key in ROTATION_KEYS if key != names.PREVIOUS_PASSWORD_KEY)
        by_name = {str(p["metadata"]["name"]): p for p in pods}
        servers = []
        for pod, host, port, sentinel in rotation.servers_of(pods):
            target = Target(
                host=host,
                port=port,
                username=names.OPERATOR_USER,
                password=password,
                tls=spec.tls.enabled and not sentinel,
                ca_data=None if sentinel else ca,
            )
            server = rotation.Server(
                pod,
                host,
                port,
                sentinel,
                self.acl.password_hashes(target, "default") if app else None,
                probe_user=rotation.probes_as_probe_user(by_name[pod]),
            )
            if operator:
                server = replace(
                    server,
                    operator_hashes=self.acl.password_hashes(target, names.OPERATOR_USER),
                    switched=self.acl.switched(target, sentinel),
                )
            servers.append(server)
        return replace(obs, acl=tuple(servers))

    def _observe_claims(self, obs: Observed, spec: CacheTierSpec) -> Observed:
        """The tier's PVCs (by name: no list of every claim) and, when one is smaller
        than the spec asks, the StorageClasses they name (does it allow expansion?)."""
        sts = obs.child("StatefulSet", names.statefulset(obs.ref.name))
        if sts is None:
            return obs
        # Only while a size change is under way (a steady tier costs no read): the
        # template is smaller than the spec, or the last pass said claims still grow.
        growing = volumes.expanding_said(obs)
        template = volumes.template_size(sts)
        want = quantity_to_bytes(spec.redis.persistence.size)
        if not growing and (template is None or quantity_to_bytes(template) >= want):
            return obs
        count = max(int((sts.get("spec") or {}).get("replicas") or 0), profile(spec).pods(spec))
        claims = []
        for i in range(count):
            claim = self.kube.get(
                "PersistentVolumeClaim", obs.ref.namespace, names.claim(obs.ref.name, i)
            )
            if claim is not None:
                claims.append(claim)
        classes: dict[str, dict[str, Any] | None] = {}
        if any(quantity_to_bytes(volumes.claim_request(c)) < want for c in claims):
            for name in volumes.claim_classes(tuple(claims)):
                classes[name] = self.kube.get("StorageClass", None, name)
        return replace(obs, claims=tuple(claims), storage_classes=classes)

    def _zones(self, pods: Sequence[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
        """Zones of the nodes ``pods`` run on: one GET per node, remembered for
        ``ZONE_TTL`` seconds (a node's zone does not change; a forbidden or missing
        Node reads as no zone, and placement then goes by node names alone)."""
        now = time.monotonic()
        out: dict[str, str] = {}
        for pod in pods:
            node = str((pod.get("spec") or {}).get("nodeName") or "")
            if not node or node in out:
                continue
            cached = self._node_zones.get(node)
            if cached is None or now - cached[0] > ZONE_TTL:
                try:
                    obj = self.kube.get("Node", None, node) or {}
                except ApiError as exc:
                    log.warning(
                        "cannot read Node %s (%s): placement goes by node names", node, exc.status
                    )
                    obj = {}
                labels = (obj.get("metadata") or {}).get("labels") or {}
                cached = (now, str(labels.get(ZONE_LABEL, "")))
                self._node_zones[node] = cached
            out[node] = cached[1]
        return tuple(sorted(out.items()))

    def _observe_replication(self, obs: Observed) -> ReplicationObservation:
        """Ask every Redis pod and every Sentinel of a replication tier (in parallel)."""
        ref = obs.ref
        password = _decode(
            obs.secrets.get(names.auth_secret(ref.name)), names.OPERATOR_PASSWORD_KEY
        )
        if self.replication is None or password is None:
            return ReplicationObservation()
        selector = ",".join(f"{k}={v}" for k, v in names.sentinel_selector_labels(ref.name).items())
        sentinels = self.kube.list_objects("Pod", ref.namespace, selector)
        if self.follower is not None:
            self.follower.follow(
                (ref.namespace, ref.name),
                [host for _, host in _addresses(sentinels)],
                master=names.sentinel_master(ref.name),
                username=names.OPERATOR_USER,
                password=password,
                port=names.SENTINEL_PORT,
                on_event=lambda: self.wake(ref.namespace, ref.name),
            )
        return self.replication.observe(
            _addresses(obs.pods or ()),
            _addresses(sentinels),
            master=names.sentinel_master(ref.name),
            username=names.OPERATOR_USER,
            password=password,
            redis_port=names.REDIS_PORT,
            sentinel_port=names.SENTINEL_PORT,
        )

    def _spent(self, phase: str, since: float) -> float:
        """Add the time since ``since`` to ``timings[phase]``; returns now."""
        now = time.perf_counter()
        with self._timing_lock:
            self.timings[phase] += now - since
        return now

    def act(self, obs: Observed, decision: Decision) -> Result:
        """Carry the decision out, in order; status and Events last."""
        body, ref = obs.tier, obs.ref
        key = (ref.namespace, ref.name)
        now = self.clock()
        t = time.perf_counter()
        if decision.add_finalizer:
            self._ensure_finalizer(body)
            t = self._spent("act.finalizer", t)
        report: ConsumerReport | None = None
        if decision.consumers_first and decision.consumers is not None:
            # Instant rollback: consumers are switched off before any other work.
            report, decision = self._consumer_pass(obs, decision)
        if decision.seed is not None:
            try:
                # Create-only: if two passes race, the loser re-reads, so a password
                # is never generated twice.
                self.kube.create(decision.seed)
            except Conflict:
                return self.reconcile(body)
            t = self._spent("act.seed", t)
        try:
            # Volume expansion: the claims grow first, then the StatefulSet is orphaned
            # (pods keep running) so that the next pass re-creates it with the new size.
            for claim, size in decision.resizes:
                self.kube.merge_patch(
                    "PersistentVolumeClaim",
                    ref.namespace,
                    claim,
                    {"spec": {"resources": {"requests": {"storage": size}}}},
                )
            if decision.orphan is not None:
                self.kube.delete(
                    "StatefulSet", ref.namespace, decision.orphan, propagation="Orphan"
                )
            self._apply_all(decision.applies)
        except ApiError as exc:
            if exc.status not in (400, 422):
                raise
            decision = refused(obs, decision, exc.message, now)
        t = self._spent("act.apply", t)
        request = decision.converge
        if request is not None:
            self.clusters.ensure(
                key,
                list(request.addresses),
                username=names.OPERATOR_USER,
                password=request.password,
                shards=request.shards,
                replicas_per_shard=request.replicas_per_shard,
                on_done=lambda: self.wake(*key),
                tls=TlsOptions(ca_data=request.ca_data) if request.tls else None,
                domains=request.domains,
                handover=request.handover,
            )
        self._act_replication(obs, decision)
        for update in decision.acl_updates:
            if self.acl is None:
                break
            try:
                self.acl.update(update)
                what = "added a password" if update.add else "removed a password"
                log.info(
                    "%s/%s: password rotation: ACL user %s %s on %s:%s", *key, update.user,
                    what if update.add or update.remove else "set up",
                    update.target.host, update.target.port,
                )  # fmt: skip
            except RedisUnavailable as exc:
                log.warning("%s/%s: password rotation: %s (retried)", *key, exc)
        for switch in decision.operator_switches:
            if self.acl is None:
                break
            try:
                self.acl.switch(switch)
                log.info(
                    "%s/%s: operator password rotation: %s:%s logs in with the new one",
                    *key, switch.target.host, switch.target.port,
                )  # fmt: skip
            except RedisUnavailable as exc:
                log.warning("%s/%s: operator password rotation: %s (retried)", *key, exc)
        for pod in decision.pod_deletes:
            # Supervised update: the StatefulSet (OnDelete) re-creates it from the new
            # template; the next pod waits until this one is back and in sync. After
            # the role labels: a replaced primary's clients reconnect to the new one.
            log.info("%s/%s: replacing pod %s (supervised update)", *key, pod)
            self.kube.delete("Pod", ref.namespace, pod)
        if not decision.consumers_first and decision.consumers is not None:
            report, decision = self._consumer_pass(obs, decision)
        if report is not None and decision.consumers is not None:
            own = len(decision.consumers.plan.conflicts)
            outcome = ConsumerOutcome(
                changed=tuple(report.changed),
                conflicts=tuple(report.conflicts[own:]),
                errors=tuple(report.errors),
            )
            decision = settle(obs, decision, outcome, now)
            if report.errors:
                log.warning("consumer errors for %s/%s: %s", *key, report.errors)
        t = self._spent("act.redis_and_consumers", t)
        self._export(obs, decision)
        self.write_status(body, obs.status, status_dict(decision))
        t = self._spent("act.status", t)
        for event in decision.events:
            if event.reason == "DriftRepaired":
                log.info("%s/%s: %s", ref.namespace, ref.name, event.message)
            self._event(body, event.type, event.reason, event.message)
        self._spent("act.events", t)
        return Result(requeue_after=decision.requeue)

    def _consumer_pass(self, obs: Observed, decision: Decision) -> tuple[ConsumerReport, Decision]:
        """The consumer writes; at pod granularity re-planned from pods listed in the
        tier's turn (the decision then carries the plan that was carried out)."""
        step = decision.consumers
        assert step is not None and obs.spec is not None
        spec = obs.spec
        used: list[ConsumerPlan] = []

        def refresh(plan: ConsumerPlan) -> ConsumerPlan:
            pods = tuple(self.kube.list_objects("Pod", obs.ref.namespace))
            fresh = plan_consumers(
                obs.ref.name,
                obs.ref.namespace,
                spec,
                obs.workloads,
                pods,
                enabled=step.enabled,
                effective_percent=step.effective_percent,
                connection_ready=step.connection_ready,
                auth_revision=step.auth_revision,
            )
            plan = replace(plan, enabled=fresh.enabled, pod_patches=fresh.pod_patches)
            used.append(plan)
            return plan

        pod_level = obs.consumer_pods is not None
        report = self.lanes.run(obs.tier, obs.ref, step, refresh if pod_level else None)
        if used and decision.rollout is not None:
            fresh_step = replace(step, plan=used[0])
            decision = replace(
                decision,
                consumers=fresh_step,
                rollout=replace(decision.rollout, consumers=fresh_step),
            )
        return report, decision

    def _act_replication(self, obs: Observed, decision: Decision) -> None:
        """Role labels (demotions first: never two primaries), then the Redis actions."""
        for change in decision.labels:
            log.info(
                "%s/%s: pod %s is %s", obs.ref.namespace, obs.ref.name, change.pod, change.role
            )
            self.kube.merge_patch(
                "Pod",
                obs.ref.namespace,
                change.pod,
                {"metadata": {"labels": {names.LABEL_ROLE: change.role}}},
            )
        if not decision.redis_actions or self.replication is None:
            return
        password = _decode(
            obs.secrets.get(names.auth_secret(obs.ref.name)), names.OPERATOR_PASSWORD_KEY
        )
        for action in decision.redis_actions:
            log.info("%s/%s: %s", obs.ref.namespace, obs.ref.name, action)
            try:
                self.replication.execute(
                    action,
                    username=names.OPERATOR_USER,
                    password=password,
                    redis_port=names.REDIS_PORT,
                    sentinel_port=names.SENTINEL_PORT,
                )
            except RedisUnavailable as exc:
                # Down, frozen or restarting: the next pass (2 s) observes again.
                log.warning("%s/%s: %s", obs.ref.namespace, obs.ref.name, exc)

    def _export(self, obs: Observed, decision: Decision) -> None:
        ns, name = obs.ref.namespace, obs.ref.name
        reason = rollback_reason(decision)
        if reason is not None:
            metrics.ROLLBACKS.labels(ns, name, reason).inc()
        placed = decision.status.cluster or decision.status.replication
        if placed is not None and placed.placement:
            metrics.SHARED_DOMAINS.labels(ns, name).set(placed.shared_domains)
        replication = decision.status.replication
        if replication is not None:
            if any(e.reason == "Failover" for e in decision.events):
                metrics.FAILOVERS.labels(ns, name).inc()
            lags = [r.lag_bytes or 0 for r in replication.replicas]
            metrics.REPLICA_LAG_BYTES.labels(ns, name).set(max(lags, default=0))
            metrics.REPLICAS_LINKED.labels(ns, name).set(
                sum(bool(r.link_up) for r in replication.replicas)
            )
            metrics.SENTINELS_MONITORING.labels(ns, name).set(replication.sentinels.monitoring)
        if decision.rollout is None or decision.consumers is None or obs.spec is None:
            return
        plan = decision.consumers.plan
        metrics.EFFECTIVE_PERCENT.labels(ns, name).set(decision.rollout.status["effectivePercent"])
        metrics.TARGET_PERCENT.labels(ns, name).set(obs.spec.rollout.percent)
        metrics.CONSUMERS_SELECTED.labels(ns, name).set(plan.selected)
        metrics.CONSUMERS_ENABLED.labels(ns, name).set(plan.enabled)

    # -- the rollback lane, the finalizer, status ---------------------------------------

    def rollback_now(self, body: dict[str, Any], spec: Any) -> ConsumerReport | None:
        """The rollback fast lane (:meth:`ConsumerLanes.rollback_now`)."""
        return self.lanes.rollback_now(body, spec)

    def _apply_all(self, objs: Sequence[dict[str, Any]]) -> None:
        """Server-side apply every object, concurrently: the StatefulSet (and the
        Deployments of the Sentinels) last, once what their pods mount exists. The
        first error is raised once every request has returned."""
        first = [o for o in objs if o["kind"] not in WORKLOAD_KINDS]
        last = [o for o in objs if o["kind"] in WORKLOAD_KINDS]
        scope = self.kube.scope

        def one(obj: dict[str, Any]) -> ApiError | None:
            try:
                with self.kube.scoped(scope):
                    self.kube.apply(obj)
            except ApiError as exc:
                return exc
            return None

        for wave in (first, last):
            if len(wave) == 1:
                self.kube.apply(wave[0])
                continue
            errors = [e for e in self._writers.map(one, wave) if e is not None]
            if errors:
                raise errors[0]

    def _ensure_finalizer(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if names.FINALIZER in finalizers:
            return
        op: dict[str, Any]
        if finalizers:
            op = {"op": "add", "path": "/metadata/finalizers/-", "value": names.FINALIZER}
        else:
            op = {"op": "add", "path": "/metadata/finalizers", "value": [names.FINALIZER]}
        self.kube.json_patch(names.KIND, meta["namespace"], meta["name"], [op])
        meta["finalizers"] = [*finalizers, names.FINALIZER]

    def finalize(self, body: dict[str, Any]) -> None:
        """The tier is being deleted: release every consumer, then drop the finalizer."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if names.FINALIZER not in finalizers:
            return
        report = self.consumers.release_all(meta["name"], meta["namespace"])
        if report.errors:
            raise TemporaryError("; ".join(report.errors), delay=5)
        if report.changed:
            self._event(body, "Normal", "Released", f"released {len(report.changed)} consumer(s)")
        index = finalizers.index(names.FINALIZER)
        self.kube.json_patch(
            names.KIND,
            meta["namespace"],
            meta["name"],
            [
                {"op": "test", "path": f"/metadata/finalizers/{index}", "value": names.FINALIZER},
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ],
        )
        self.forget(meta["namespace"], meta["name"])

    def forget(self, namespace: str, name: str) -> None:
        """The tier is gone: drop what this process kept for it (converge state, fence)."""
        key = (namespace, name)
        self.clusters.forget(key)
        self.lanes.forget(key)
        if self.follower is not None:
            self.follower.forget(key)

    def write_status(
        self, body: dict[str, Any], old_status: dict[str, Any], status: dict[str, Any]
    ) -> bool:
        """Merge-patch the status subresource with what changed; nothing if nothing did.

        Nulls are dropped first: the API server stores none, so comparing a
        status that holds them with the stored one would differ on every pass.
        """
        status = _drop_nulls(status)
        patch = _merge_diff(old_status, status)
        if not patch:
            return False
        meta = body["metadata"]
        self.kube.merge_patch(
            names.KIND, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
        )
        return True


def _decode(secret: dict[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()


def _addresses(pods: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(pod name, pod IP) of the pods that have an address."""
    out = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if ip and not pod["metadata"].get("deletionTimestamp"):
            out.append((str(pod["metadata"]["name"]), str(ip)))
    return sorted(out)


def _merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (empty if equal)."""
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        if key not in new:
            patch[key] = None
        elif isinstance(new[key], dict) and isinstance(old.get(key), dict):
            sub = _merge_diff(old[key], new[key])
            if sub:
                patch[key] = sub
        elif new[key] != old.get(key):
            patch[key] = new[key]
    return patch


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
