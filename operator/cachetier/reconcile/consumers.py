"""Consumers of a tier: the writes of the consumer pass (inject, release, pod flags).

I/O through a :class:`cachetier.ports.KubeApi`; what to write is decided by the
pure :func:`cachetier.reconcile.consumer_plan.plan_consumers`. Writes happen only
for workloads whose live state differs from the decision, in parallel, so a
rollback of hundreds of consumers takes about as long as the API needs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.ports import ApiError, Conflict, KubeApi, NotFound
from cachetier.reconcile import injection as inj
from cachetier.reconcile.consumer_plan import (
    CONSUMER_KINDS,
    ConsumerPlan,
    is_ours,
    plan_consumers,
)

log = logging.getLogger("cachetier.consumers")

T = TypeVar("T")

PARALLEL_WRITES = 16


@dataclass
class ConsumerReport:
    """What the consumer pass saw and did."""

    selected: int = 0
    enabled: int = 0
    workloads: list[dict[str, Any]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    enabled_set: set[str] = field(default_factory=set)


class ConsumerReconciler:
    """Brings a tier's consumers in line with its rollout."""

    def __init__(self, kube: KubeApi, *, shared_pool: bool = True) -> None:
        """``shared_pool`` False gives every pass write threads of its own (the rollback
        lane: one tier's large pass never queues ahead of another tier's writes)."""
        self.kube = kube
        self.pool = (
            ThreadPoolExecutor(PARALLEL_WRITES, thread_name_prefix="consumer")
            if shared_pool
            else None
        )

    def gather(
        self, namespace: str, spec: CacheTierSpec
    ) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...] | None]:
        """The namespace's workloads, and its pods at pod granularity (else None)."""
        live: list[dict[str, Any]] = []
        for kind in CONSUMER_KINDS:
            for item in self.kube.list_objects(kind, namespace):
                item.setdefault("kind", kind)
                live.append(item)
        pods = None
        if spec.rollout.granularity == "pod":
            pods = tuple(self.kube.list_objects("Pod", namespace))
        return tuple(live), pods

    def execute(self, namespace: str, tier: str, plan: ConsumerPlan) -> ConsumerReport:
        """Carry out a plan: applies, releases and pod annotations, in parallel."""
        report = ConsumerReport(
            selected=plan.selected,
            enabled=plan.enabled,
            workloads=list(plan.workloads),
            conflicts=list(plan.conflicts),
            enabled_set=set(plan.enabled_set),
        )
        for result in self._map(lambda j: self._inject(namespace, *j), plan.injects):
            _merge(report, result)
        for result in self._map(lambda o: self._release(namespace, tier, o), plan.releases):
            _merge(report, result)

        def patch(item: tuple[str, str]) -> None:
            pname, want = item
            with contextlib.suppress(NotFound):
                self.kube.merge_patch(
                    "Pod",
                    namespace,
                    pname,
                    {"metadata": {"annotations": {names.ANNOTATION_REDIS_ENABLED: want}}},
                )

        list(self._map(patch, plan.pod_patches))
        return report

    def reconcile(
        self,
        tier: str,
        namespace: str,
        spec: CacheTierSpec,
        *,
        enabled: bool,
        effective_percent: int,
        connection_ready: bool,
    ) -> ConsumerReport:
        """One complete pass: gather, plan, execute (the rollback lane's complete pass)."""
        workloads, pods = self.gather(namespace, spec)
        plan = plan_consumers(
            tier,
            namespace,
            spec,
            workloads,
            pods,
            enabled=enabled,
            effective_percent=effective_percent,
            connection_ready=connection_ready,
        )
        return self.execute(namespace, tier, plan)

    def switch_off(
        self, tier: str, namespace: str, spec: CacheTierSpec, workloads: list[tuple[str, str]]
    ) -> ConsumerReport:
        """Rollback's fast path: ``REDIS_ENABLED=false`` on these (kind, name) workloads.

        One GET and at most one apply per workload, all in parallel, no LIST of the
        namespace; the full pass that follows covers any workload not named here.
        """
        wanted = list(spec.consumers.containers) if spec.consumers else []

        def one(item: tuple[str, str]) -> ConsumerReport:
            kind, name = item
            try:
                obj = self.kube.get(kind, namespace, name)
            except ApiError as exc:
                return ConsumerReport(errors=[f"{kind} {name}: {exc.message}"])
            if obj is None or is_ours(obj):
                return ConsumerReport()
            obj.setdefault("kind", kind)
            containers = inj.target_containers(obj, wanted)
            desired = inj.Injection(tier, containers, False, False)
            if inj.env_owners(obj, containers) or inj.is_injected(obj, desired):
                return ConsumerReport()  # a conflict is the full pass's to report
            return self._inject(namespace, obj, desired)

        report = ConsumerReport()
        for result in self._map(one, workloads):
            _merge(report, result)
        return report

    def release_all(self, tier: str, namespace: str) -> ConsumerReport:
        """Switch every consumer of ``tier`` off, then remove the operator's entries."""
        report = ConsumerReport()
        live, _ = self.gather(namespace, CacheTierSpec())
        release = [o for o in live if not is_ours(o) and inj.has_any_injection(o, tier)]
        for result in self._map(lambda o: self._release(namespace, tier, o), release):
            _merge(report, result)
        return report

    def _map(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        """``pool.map`` that attributes the workers' writes to the caller's scope (the tier)."""
        scope = self.kube.scope

        def scoped(item: Any) -> T:
            with self.kube.scoped(scope):
                return fn(item)

        if not items:
            return []
        if self.pool is not None:
            return list(self.pool.map(scoped, items))
        workers = min(PARALLEL_WRITES, len(items))
        with ThreadPoolExecutor(workers, thread_name_prefix="rollback-write") as pool:
            return list(pool.map(scoped, items))

    # -- writes -----------------------------------------------------------------

    def _inject(
        self, namespace: str, obj: dict[str, Any], desired: inj.Injection
    ) -> ConsumerReport:
        out = ConsumerReport()
        kind, name = obj["kind"], obj["metadata"]["name"]
        body = inj.build_apply(kind, namespace, name, desired)
        try:
            self.kube.apply(body, force=False)
            state = "true" if desired.redis_enabled else "false"
            out.changed.append(f"{kind}/{name} REDIS_ENABLED={state}")
        except Conflict as exc:
            out.conflicts.append(f"{kind} {name}: {exc.message}")
        except NotFound:
            pass
        except ApiError as exc:
            out.errors.append(f"{kind} {name}: {exc.message}")
        return out

    def _release(self, namespace: str, tier: str, obj: dict[str, Any]) -> ConsumerReport:
        """REDIS_ENABLED=false first, then apply an empty body to drop every entry."""
        out = ConsumerReport()
        kind, name = obj["kind"], obj["metadata"]["name"]
        containers = inj.target_containers(obj, [])
        owned = [
            c["name"]
            for c in inj.template_spec(obj).get("containers") or []
            if any(e.get("name") == names.ENV_REDIS_ENABLED for e in c.get("env") or [])
        ]
        try:
            if owned:
                off = inj.Injection(tier, tuple(c for c in containers if c in owned), False)
                self.kube.apply(inj.build_apply(kind, namespace, name, off), force=False)
            self.kube.apply(inj.build_apply(kind, namespace, name, None), force=False)
            out.changed.append(f"{kind}/{name} released")
        except NotFound:
            pass
        except ApiError as exc:
            out.errors.append(f"{kind} {name}: {exc.message}")
        return out


def _merge(into: ConsumerReport, other: ConsumerReport) -> None:
    into.changed += other.changed
    into.conflicts += other.conflicts
    into.errors += other.errors
