"""Health probing of tiers and automatic rollback.

Gathers the probe target (a Redis pod's IP with the operator's own ACL user,
or the external URL), runs a :class:`cachetier.ports.Prober` (redis-py's is
``cachetier.redis.probe.RedisProber``), judges it with
the pure :func:`cachetier.rollout.evaluate_probe` (critical: unreachable, error
rate) and :func:`cachetier.rollout.evaluate_latency` (a warning), and records the
result: metrics on every probe; ``status.health`` only when the verdict changes
(up/down, good/bad, slow/fast), never for a changing number, so an idle or
merely busy tier causes no API writes.
After ``failureThreshold`` bad probes in a row it rolls the tier back:
``status.rollout.rolledBackGeneration``, condition ``RolledBack`` with reason
``AutoRollback``, an Event, and the next reconcile switches consumers off.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pydantic

from cachetier import metrics, names
from cachetier.api import redis_config
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile
from cachetier.api.units import parse_redis_memory
from cachetier.ports import Counters, EventSink, KubeApi, Prober, ProbeResult, Target
from cachetier.reconcile import conditions as cond
from cachetier.reconcile.tier import TierReconciler, now_rfc3339
from cachetier.rollout import evaluate_latency, evaluate_probe

log = logging.getLogger("cachetier.health")

PROBED_PHASES = ("Ready", "Degraded", "RolledBack")


@dataclass
class _Memory:
    counters: Counters | None = None
    failures: int | None = None
    """Bad probes in a row (None until the first probe of this process)."""
    slow: bool = False
    latency_streak: int = 0
    rearm: str | None = None
    config_checked: float = float("-inf")
    """When the live Redis settings were last compared with the spec (monotonic)."""
    config_generation: int | None = None
    """The tier's generation at that comparison (a new spec is compared at once)."""


CONFIG_CHECK_SECONDS = 30.0
"""Live settings (CONFIG GET on every pod) are compared this often, not on every probe."""


class HealthProber:
    """Probes tiers; one instance per operator process."""

    def __init__(
        self,
        kube: KubeApi,
        reconciler: TierReconciler,
        event: EventSink,
        prober: Prober,
        lock_for: Callable[[tuple[str, str]], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.kube = kube
        self.prober = prober
        self.lock_for = lock_for or (lambda key: nullcontext())
        self.reconciler = reconciler
        self._event = event
        self._memory: dict[tuple[str, str], _Memory] = {}
        self._lock = threading.Lock()
        self.probes = 0
        """Probes run by this process (tests and benchmarks read it)."""

    def _targets(self, body: dict[str, Any], spec: CacheTierSpec) -> list[Target]:
        """Every Redis of the tier that has an address (by pod name), or the external URL."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if profile(spec).takes_url:
            secret = self.kube.get("Secret", ns, names.connection_secret(name))
            url = _decode(secret, "url")
            if not url:
                return []
            parts = urlsplit(url)
            return [
                Target(
                    host=parts.hostname or "",
                    port=parts.port or names.REDIS_PORT,
                    username=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password else None,
                    tls=parts.scheme == "rediss",
                    check_hostname=True,
                )
            ]
        auth = self.kube.get("Secret", ns, names.auth_secret(name))
        password = _decode(auth, names.OPERATOR_PASSWORD_KEY)
        ca = None
        if spec.tls.enabled and spec.tls.secret_name:
            ca = _decode(self.kube.get("Secret", ns, spec.tls.secret_name), "ca.crt")
        selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(name).items())
        # A replication tier's primary first: the probe (and auto-rollback) goes
        # through the pod the clients' Service selects.
        pods = sorted(
            self.kube.list_objects("Pod", ns, selector),
            key=lambda p: (
                (p["metadata"].get("labels") or {}).get(names.LABEL_ROLE) != names.ROLE_PRIMARY,
                not _pod_ready(p),
                p["metadata"]["name"],
            ),
        )
        return [
            Target(
                host=ip,
                port=names.REDIS_PORT,
                username=names.OPERATOR_USER,
                password=password,
                tls=spec.tls.enabled,
                ca_data=ca,
            )
            for pod in pods
            if (ip := (pod.get("status") or {}).get("podIP"))
        ]

    def _repair_config(
        self, body: dict[str, Any], spec: CacheTierSpec, targets: list[Target]
    ) -> None:
        """Put back redis.conf settings someone changed live (CONFIG SET), on every pod."""
        wanted = {
            # spec.redis.config's live settings: applied here, without a restart.
            **{name: value for name, value in spec.redis.config.items() if redis_config.live(name)},
            "maxmemory": str(parse_redis_memory(spec.redis.maxmemory)),
            "maxmemory-policy": spec.redis.maxmemory_policy,
            "loglevel": spec.redis.log_level,
        }
        repaired: list[str] = []
        applied: list[str] = []
        for target in targets:
            for directive, (live, value) in self.prober.enforce_config(target, wanted).items():
                change = f"{directive} {live} -> {value} on {target.host}"
                (applied if directive in spec.redis.config else repaired).append(change)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if applied:
            message = "applied redis.config live (CONFIG SET, no restart): " + "; ".join(applied)
            log.info("%s/%s: %s", ns, name, message)
            self._event(body, "Normal", "ConfigApplied", message[:1000])
        if repaired:
            message = "restored Redis settings changed live (CONFIG SET): " + "; ".join(repaired)
            log.info("%s/%s: %s", ns, name, message)
            self._event(body, "Warning", "ConfigDriftRepaired", message[:1000])

    def probe_tier(self, namespace: str, name: str) -> bool:
        """Probe one tier; True when it has just been rolled back automatically."""
        body = self.kube.get(names.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.forget_tier(namespace, name)
            return False
        status = dict(body.get("status") or {})
        # What runs is probed, whatever the phase of the latest spec: a serving tier
        # that receives a refused update (Failed) keeps its auto-rollback protection.
        serving = bool((status.get("rollout") or {}).get("serving"))
        if status.get("phase") not in PROBED_PHASES and not serving:
            return False
        try:
            spec = CacheTierSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError:
            return False
        key = (namespace, name)
        with self._lock:
            memory = self._memory.setdefault(key, _Memory())
        targets = self._targets(body, spec)
        result = (
            self.prober.probe(targets[0], memory.counters)
            if targets
            else ProbeResult(up=False, error="no Redis pod has an IP")
        )
        if not result.up and profile(spec).cluster_protocol:
            # A cluster client reaches the cluster through any node: one node's (or one
            # Kubernetes node's) loss is the cluster's to fail over, not a reason to roll
            # the consumers back while another node serves.
            for target in targets[1:4]:
                other = self.prober.probe(target, None)
                if other.up:
                    result = other
                    break
        generation = body["metadata"].get("generation")
        due = (
            time.monotonic() - memory.config_checked >= CONFIG_CHECK_SECONDS
            or memory.config_generation != generation
        )
        if result.up and profile(spec).runs_redis and due:
            memory.config_checked = time.monotonic()
            memory.config_generation = generation
            self._repair_config(body, spec, targets)
        if result.counters is not None:
            memory.counters = result.counters
        self.probes += 1
        _export(namespace, name, result)

        # The verdict and its status write happen under the tier's lock, on a fresh
        # read: a reconcile running meanwhile can neither be overwritten by nor
        # overwrite this write (status lists such as conditions are replaced whole).
        with self.lock_for(key):
            fresh = self.kube.get(names.KIND, namespace, name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return False
            return self._record(fresh, spec, memory, result)

    def _record(
        self, body: dict[str, Any], spec: CacheTierSpec, memory: _Memory, result: ProbeResult
    ) -> bool:
        """Judge the probe; write status.health (and an automatic rollback) on a new verdict.

        The counts behind a verdict (bad probes in a row, the latency streak) live in
        this process's memory, not in status, so a probe that only changes a number
        writes nothing; status changes when the verdict does: up/down, good/bad,
        slow/fast, a rollback.
        """
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        status = dict(body.get("status") or {})
        old_health = dict(status.get("health") or {})
        auto = spec.rollout.auto_rollback
        rearm = (body["metadata"].get("annotations") or {}).get(names.ANNOTATION_REARM)
        if memory.failures is None:  # first probe of this process: resume from status
            memory.failures = int(old_health.get("consecutiveFailures") or 0)
            memory.slow = bool(old_health.get("slow"))
            memory.rearm = rearm
        elif rearm != memory.rearm:  # a person re-armed the rollout: count afresh
            memory.failures, memory.rearm = 0, rearm
        verdict = evaluate_probe(
            auto,
            result.up,
            result.latency_ms,
            result.error_rate,
            memory.failures,
            error_classes=result.error_classes,
            denied=result.denied_commands,
        )
        latency = evaluate_latency(auto, result.latency_ms, memory.slow, memory.latency_streak)
        was_slow = memory.slow
        memory.slow, memory.latency_streak = latency.slow, latency.streak
        threshold = auto.failure_threshold
        # Past the threshold the count stops climbing.
        memory.failures = min(verdict.consecutive_failures, threshold)
        metrics.SLOW.labels(namespace, name).set(1 if latency.slow else 0)
        if result.error_classes is not None:
            metrics.set_error_classes(namespace, name, result.error_classes)
        health: dict[str, Any] = {
            "up": result.up,
            "latencyMs": result.latency_ms,
            "hitRate": result.hit_rate,
            "errorRate": result.error_rate,
            "connectedClients": result.connected_clients,
            "evictedKeys": result.evicted_keys,
            "consecutiveFailures": memory.failures,
            "slow": latency.slow,
            "errorClasses": result.error_classes or {},
            "deniedCommands": sorted(result.denied_commands or {}),
            "message": verdict.message if verdict.bad else latency.message,
            "checkedAt": now_rfc3339(),
        }
        if result.error:
            health["message"] = f"{verdict.message}: {result.error}"[:500]
        rollout = dict(status.get("rollout") or {})
        generation = body["metadata"].get("generation")
        already = rollout.get("rolledBackGeneration") == generation
        rollback = (
            verdict.rollback
            and auto.enabled
            and spec.rollout.enabled
            and not already
            and int(rollout.get("effectivePercent") or 0) > 0
        )
        old_bad = int(old_health.get("consecutiveFailures") or 0) > 0
        material = (
            "up" not in old_health
            or old_health.get("up") != health["up"]
            or old_bad != verdict.bad
            or bool(old_health.get("slow")) != latency.slow
        )
        if not (material or rollback):
            return False
        new_status = dict(status)
        new_status["health"] = {k: v for k, v in health.items() if v is not None}
        updates: list[cond.Condition] = []
        if latency.slow != was_slow or not _has_condition(status, cond.HIGH_LATENCY):
            updates.append(
                cond.Condition(cond.HIGH_LATENCY, "True", "LatencyAboveThreshold", latency.message)
                if latency.slow
                else cond.Condition(cond.HIGH_LATENCY, "False", "LatencyOk")
            )
        if rollback:
            # The decision in one write (the reconcile that follows at once flips
            # the consumers and writes the same values), so status never shows
            # the rollback condition beside a non-zero effective percent.
            rollout.update(
                rolledBackGeneration=generation,
                enabled=False,
                effectivePercent=0,
                reason="RolledBack",
            )
            new_status["rollout"] = rollout
            updates += [
                cond.Condition(cond.ROLLED_BACK, "True", "AutoRollback", verdict.message),
                cond.Condition(
                    cond.STALLED,
                    "True",
                    "AutoRollback",
                    f"automatic rollback holds every consumer off: {verdict.message}"[:1000],
                ),
            ]
        if updates:
            new_status["conditions"] = cond.merge_conditions(
                list(status.get("conditions") or []), updates, generation, now_rfc3339()
            )
        self.reconciler.write_status(body, status, new_status)
        if result.up != bool(old_health.get("up", True)) or verdict.bad != old_bad:
            etype = "Normal" if not verdict.bad else "Warning"
            reason = "RedisHealthy" if not verdict.bad else "RedisUnhealthy"
            self._event(body, etype, reason, str(verdict.message or "probe ok"))
        if latency.slow != was_slow:
            if latency.slow:
                self._event(body, "Warning", "HighLatency", latency.message)
            else:
                self._event(body, "Normal", "LatencyOk", "PING latency back under the threshold")
        if rollback:
            metrics.ROLLBACKS.labels(namespace, name, "AutoRollback").inc()
            self._event(body, "Warning", "AutoRollback", verdict.message)
            log.warning("auto-rollback of %s/%s: %s", namespace, name, verdict.message)
        return rollback


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _has_condition(status: dict[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype for c in status.get("conditions") or [])


def _export(namespace: str, name: str, result: ProbeResult) -> None:
    metrics.REDIS_UP.labels(namespace, name).set(1 if result.up else 0)
    if result.latency_ms is not None:
        metrics.PROBE_LATENCY_MS.labels(namespace, name).set(result.latency_ms)
    if result.hit_rate is not None:
        metrics.HIT_RATE.labels(namespace, name).set(result.hit_rate)
    if result.error_rate is not None:
        metrics.ERROR_RATE.labels(namespace, name).set(result.error_rate)


def _decode(secret: dict[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()
