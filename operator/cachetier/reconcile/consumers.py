"""Consumers of a tier: discover, decide (rollout maths), inject or release.

I/O through :class:`cachetier.kube.client.Kube`; decisions come from the pure
``cachetier.rollout`` and ``cachetier.reconcile.injection``. Writes happen only
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
from cachetier.kube.client import ApiError, Conflict, Kube, NotFound
from cachetier.reconcile import injection as inj
from cachetier.rollout import Workload, parse_pin, plan_workloads, select_pods

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


def _list_kind(kube: Kube, kind: str, namespace: str) -> list[dict[str, Any]]:
    items = kube.list_objects(kind, namespace)
    for item in items:
        item.setdefault("kind", kind)
    return items


def _is_ours(obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY


class ConsumerReconciler:
    """Brings a tier's consumers in line with its rollout."""

    def __init__(self, kube: Kube, *, shared_pool: bool = True) -> None:
        """``shared_pool`` False gives every pass write threads of its own (the rollback
        lane: one tier's large pass never queues ahead of another tier's writes)."""
        self.kube = kube
        self.pool = (
            ThreadPoolExecutor(PARALLEL_WRITES, thread_name_prefix="consumer")
            if shared_pool
            else None
        )

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
        """One pass: every matching workload injected with its decision, the rest released.

        ``connection_ready`` False (the connection Secret does not exist yet)
        means nothing is injected yet: a secretKeyRef to a missing Secret
        would stop the consumer's new pods from starting.
        """
        report = ConsumerReport()
        consumers = spec.consumers
        kinds = list(consumers.kinds) if consumers else []
        selector = consumers.selector.model_dump(by_alias=True) if consumers else {}
        wanted = list(consumers.containers) if consumers else []
        granularity_pod = spec.rollout.granularity == "pod"

        live: list[dict[str, Any]] = []
        for kind in ("Deployment", "StatefulSet"):
            live += _list_kind(self.kube, kind, namespace)

        selected: list[dict[str, Any]] = []
        release: list[dict[str, Any]] = []
        for obj in live:
            if _is_ours(obj):
                continue
            labels = obj["metadata"].get("labels") or {}
            matches = bool(consumers) and obj["kind"] in kinds
            matches = matches and inj.selector_matches(labels, selector)
            if matches and connection_ready:
                selected.append(obj)
            elif matches:
                # No connection Secret yet: a secretKeyRef to it would stop new pods
                # from starting, so matching workloads wait as they are.
                continue
            elif inj.has_any_injection(obj, tier):
                release.append(obj)

        decisions = plan_workloads(
            namespace,
            tier,
            [
                Workload(
                    o["kind"],
                    o["metadata"]["name"],
                    parse_pin(
                        (o["metadata"].get("annotations") or {}).get(names.ANNOTATION_REDIS_ENABLED)
                    ),
                )
                for o in selected
            ],
            enabled=enabled,
            effective_percent=effective_percent,
        )

        jobs = []
        for obj in selected:
            key = (obj["kind"], obj["metadata"]["name"])
            decision = decisions[key]
            containers = inj.target_containers(obj, wanted)
            desired = inj.Injection(tier, containers, decision.enabled, granularity_pod)
            report.workloads.append(
                {
                    "kind": key[0],
                    "name": key[1],
                    "enabled": decision.enabled,
                    "pinned": decision.pinned,
                }
            )
            if decision.enabled:
                report.enabled_set.add(f"{key[0]}/{key[1]}")
            owners = inj.env_owners(obj, containers)
            if owners:
                who = ", ".join(f"{env} by {'/'.join(sorted(m))}" for env, m in owners.items())
                report.conflicts.append(f"{key[0]} {key[1]}: {who}")
                continue
            if not inj.is_injected(obj, desired):
                jobs.append((obj, desired))
        report.selected = len(selected)
        report.enabled = len(report.enabled_set)

        for result in self._map(lambda j: self._inject(namespace, *j), jobs):
            _merge(report, result)
        for result in self._map(lambda o: self._release(namespace, tier, o), release):
            _merge(report, result)

        if granularity_pod and connection_ready:
            pod_enabled = self._pod_flags(
                namespace, selected, decisions, enabled, effective_percent
            )
            report.enabled = pod_enabled
        return report

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
            if obj is None or _is_ours(obj):
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
        live: list[dict[str, Any]] = []
        for kind in ("Deployment", "StatefulSet"):
            live += _list_kind(self.kube, kind, namespace)
        release = [o for o in live if not _is_ours(o) and inj.has_any_injection(o, tier)]
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

    def _pod_flags(
        self,
        namespace: str,
        selected: list[dict[str, Any]],
        decisions: dict[tuple[str, str], Any],
        enabled: bool,
        percent: int,
    ) -> int:
        """Pod granularity: annotate exactly the SPEC count of each workload's running pods."""
        pods = self.kube.list_objects("Pod", namespace)
        patches: list[tuple[str, str]] = []
        total_enabled = 0
        for obj in selected:
            selector = (obj.get("spec") or {}).get("selector") or {}
            key = (obj["kind"], obj["metadata"]["name"])
            decision = decisions[key]
            mine = [
                p
                for p in pods
                if not (p["metadata"].get("deletionTimestamp"))
                and (p.get("status") or {}).get("phase") in ("Running", "Pending")
                and _owned_by(p, obj)
                and inj.selector_matches(p["metadata"].get("labels") or {}, selector)
            ]
            # A pin decides the whole workload; otherwise the exact per-pod count.
            if decision.pinned or not enabled:
                on = {p["metadata"]["name"] for p in mine} if decision.enabled else set()
            else:
                on = select_pods([p["metadata"]["name"] for p in mine], percent, enabled)
            total_enabled += len(on)
            for p in mine:
                pname = p["metadata"]["name"]
                want = "true" if pname in on else "false"
                have = (p["metadata"].get("annotations") or {}).get(names.ANNOTATION_REDIS_ENABLED)
                if have != want:
                    patches.append((pname, want))

        def patch(item: tuple[str, str]) -> None:
            pname, want = item
            with contextlib.suppress(NotFound):
                self.kube.merge_patch(
                    "Pod",
                    namespace,
                    pname,
                    {"metadata": {"annotations": {names.ANNOTATION_REDIS_ENABLED: want}}},
                )

        list(self._map(patch, patches))
        return total_enabled


def _owned_by(pod: dict[str, Any], workload: dict[str, Any]) -> bool:
    """A Deployment's pods belong to its ReplicaSets (named <deployment>-<hash>)."""
    name = str(workload["metadata"]["name"])
    for ref in pod["metadata"].get("ownerReferences") or []:
        if workload["kind"] == "StatefulSet" and ref.get("kind") == "StatefulSet":
            return str(ref.get("name")) == name
        if workload["kind"] == "Deployment" and ref.get("kind") == "ReplicaSet":
            rs = str(ref.get("name", ""))
            return rs.rsplit("-", 1)[0] == name
    return False


def _merge(into: ConsumerReport, other: ConsumerReport) -> None:
    into.changed += other.changed
    into.conflicts += other.conflicts
    into.errors += other.errors
