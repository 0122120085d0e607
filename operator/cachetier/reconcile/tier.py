"""Reconcile one CacheTier: observe -> desired -> diff -> apply -> status.

Talks to the API only through :class:`cachetier.kube.client.Kube`. The
decisions (what to render, which conditions hold) are made by the pure
packages; this module gathers, compares content hashes and writes only what
differs, so a reconcile with nothing to do sends no write request.
"""

from __future__ import annotations

import base64
import logging
import secrets as pysecrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cachetier import names
from cachetier.api import validate
from cachetier.api.errors import SpecError
from cachetier.api.models import CacheTierSpec
from cachetier.kube.client import ApiError, Conflict, Kube
from cachetier.reconcile import conditions as cond
from cachetier.reconcile import modes
from cachetier.reconcile.consumers import ConsumerReconciler
from cachetier.reconcile.modes import TierContext
from cachetier.reconcile.rollout_pass import EventFn, RolloutPass, _Fence
from cachetier.render import (
    TierRef,
    TierSecrets,
    build_external_connection_secret,
    drift,
    owner_reference,
)

log = logging.getLogger("cachetier.reconcile")


class TemporaryError(Exception):
    """Try again after ``delay`` seconds (a dependency is missing or the API is busy)."""

    def __init__(self, message: str, delay: float = 15.0) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class Result:
    """What one reconcile asks of the runtime: when to run again (None: on the next event)."""

    requeue_after: float | None = None


def now_rfc3339() -> str:
    """The current time, as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decode(secret: dict[str, Any] | None, key: str) -> str | None:
    if not secret:
        return None
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode()


def _encode_secret(obj: dict[str, Any]) -> dict[str, Any]:
    """stringData -> data, so server-side apply owns plain ``data`` keys."""
    if obj.get("kind") != "Secret" or "stringData" not in obj:
        return obj
    out = dict(obj)
    string_data = out.pop("stringData")
    data = dict(out.get("data") or {})
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    out["data"] = data
    return out


def _new_password() -> str:
    # 32 bytes of entropy, URL-safe so it can sit in redis:// URLs unescaped.
    return pysecrets.token_urlsafe(32)


class TierReconciler(RolloutPass):
    """Reconciles CacheTiers through one Kube client."""

    def __init__(self, kube: Kube, event: EventFn | None = None) -> None:
        self.kube = kube
        self._event = event or (lambda body, etype, reason, message: None)
        self.consumers = ConsumerReconciler(kube)
        # The rollback fast lane writes with threads of its own per pass: a large
        # rollout (or rollback) of another tier never queues ahead of it.
        self.lane_consumers = ConsumerReconciler(kube, shared_pool=False)
        self._turns: dict[tuple[str, str], threading.Lock] = {}
        self._fences: dict[tuple[str, str], _Fence] = {}
        self._turns_guard = threading.Lock()
        self.modes = modes.build(lambda namespace, name: self.wake(namespace, name))
        self.wake: Callable[[str, str], None] = lambda namespace, name: None

    # -- secrets -------------------------------------------------------------

    def tier_secrets(
        self, ref: TierRef, spec: CacheTierSpec, body: dict[str, Any] | None = None
    ) -> TierSecrets:
        """Passwords: read them if they exist; generate each one once, never again.

        ``<tier>-auth-recovery`` (rendered and applied like every child) keeps a
        copy: a deleted ``<tier>-auth`` comes back
        with the same passwords (else the application password is taken from
        ``<tier>-connection``), with a Warning Event either way; only when every
        copy is gone are new passwords generated, and then the Event says so.
        """
        auth_name = names.auth_secret(ref.name)
        live = self.kube.get("Secret", ref.namespace, auth_name)
        operator_pw = _decode(live, "operator-password")
        generated_pw = _decode(live, names.AUTH_PASSWORD_KEY)
        if live is None:
            recovery = self.kube.get("Secret", ref.namespace, names.auth_recovery_secret(ref.name))
            connection = self.kube.get("Secret", ref.namespace, names.connection_secret(ref.name))
            operator_pw = _decode(recovery, "operator-password")
            generated_pw = _decode(recovery, names.AUTH_PASSWORD_KEY)
            if generated_pw is None and spec.auth.password_secret_ref is None:
                generated_pw = _decode(connection, "password")
            source = "its recovery copy" if recovery is not None else "the connection Secret"
            status = (body or {}).get("status") or {}
            serving = bool((status.get("rollout") or {}).get("serving"))
            if body is not None and (recovery is not None or generated_pw is not None):
                self._event(
                    body,
                    "Warning",
                    "AuthSecretRestored",
                    f"Secret {auth_name} was deleted; restored with the same passwords from "
                    f"{source}" + ("" if operator_pw else " (a new operator password: pods roll)"),
                )
            elif body is not None and serving:
                self._event(
                    body,
                    "Warning",
                    "PasswordRegenerated",
                    f"Secret {auth_name} and every copy of it were deleted: new passwords "
                    "generated; consumers get them as they restart",
                )
            # Create-only first write: if two reconciles race, the loser's 409
            # makes it re-read, so a password is never generated twice.
            operator_pw = operator_pw or _new_password()
            generated_pw = generated_pw or _new_password()
            seed = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": auth_name,
                    "namespace": ref.namespace,
                    "labels": names.common_labels(ref.name),
                    "ownerReferences": [owner_reference(ref)],
                },
                "type": "Opaque",
                "stringData": {
                    "operator-password": operator_pw,
                    names.AUTH_PASSWORD_KEY: generated_pw,
                },
            }
            try:
                self.kube.create(_encode_secret(seed))
            except Conflict:
                return self.tier_secrets(ref, spec, body)
        if operator_pw is None:
            raise TemporaryError(f"Secret {auth_name} has no operator-password key")
        if not spec.auth.enabled:
            return TierSecrets(None, operator_pw, False)
        byo = spec.auth.password_secret_ref
        if byo is not None:
            src = self.kube.get("Secret", ref.namespace, byo.name)
            value = _decode(src, byo.key)
            if value is None:
                what = "not found" if src is None else f"has no key {byo.key!r}"
                raise TemporaryError(
                    f"spec.auth.passwordSecretRef: Secret {byo.name!r} {what}", delay=30
                )
            return TierSecrets(value, operator_pw, False)
        if generated_pw is None:
            # Auth was off or BYO before; generate the app password now, once.
            generated_pw = _new_password()
        return TierSecrets(generated_pw, operator_pw, True)

    def require_tls_secret(self, ref: TierRef, spec: CacheTierSpec) -> str | None:
        """A TLS tier's Secret must exist (else its pods could never start); its CA (PEM).

        None when the tier does not use TLS.
        """
        if not spec.tls.enabled or not spec.tls.secret_name:
            return None
        secret = self.kube.get("Secret", ref.namespace, spec.tls.secret_name)
        if secret is None:
            raise TemporaryError(
                f"spec.tls.secretName: Secret {spec.tls.secret_name!r} not found", delay=30
            )
        missing = [
            k for k in ("tls.crt", "tls.key", "ca.crt") if k not in (secret.get("data") or {})
        ]
        if missing:
            raise TemporaryError(
                f"spec.tls.secretName: Secret {spec.tls.secret_name!r} has no {', '.join(missing)}",
                delay=30,
            )
        return _decode(secret, "ca.crt")

    # -- children ------------------------------------------------------------

    def apply_children(self, body: dict[str, Any], desired: list[dict[str, Any]]) -> list[str]:
        """Apply each object that is missing, changed in the spec, or edited by hand.

        The content-hash annotation says whether the desired object changed; the
        live values of the fields the operator sets (``render.drift``) say whether
        someone changed them since. Nothing differs: nothing is written.
        """
        writes = []
        drifted = []
        for obj in desired:
            obj = _encode_secret(obj)
            meta = obj["metadata"]
            want = (meta.get("annotations") or {}).get(names.ANNOTATION_SPEC_HASH)
            live = self.kube.get(obj["kind"], meta["namespace"], meta["name"])
            have = None
            if live is not None:
                have = (live["metadata"].get("annotations") or {}).get(names.ANNOTATION_SPEC_HASH)
            if live is not None and want is not None and want == have:
                where = drift(obj, live)
                if where is None:
                    continue
                drifted.append(f"{obj['kind']} {meta['name']} ({where})")
            self.kube.apply(obj)
            verb = "Created" if live is None else "Updated"
            writes.append(f"{verb} {obj['kind']} {meta['name']}")
        if drifted:
            message = "restored what was changed by hand: " + "; ".join(drifted)
            log.info("%s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], message)
            self._event(body, "Warning", "DriftRepaired", message[:1000])
        if writes:
            self._event(body, "Normal", "Applied", "; ".join(writes))
        return writes

    def observe_statefulset(self, ref: TierRef, want: int) -> cond.WorkloadObservation:
        """The Redis StatefulSet against ``want`` pods: what the tier's spec requires,
        not what the live StatefulSet asks for (a hand scale must not look Ready)."""
        sts = self.kube.get("StatefulSet", ref.namespace, names.statefulset(ref.name))
        if sts is None:
            return cond.WorkloadObservation(exists=False)
        spec = sts.get("spec") or {}
        st = sts.get("status") or {}
        desired = want
        updated = (
            st.get("observedGeneration") == sts["metadata"].get("generation")
            and int(st.get("updatedReplicas") or 0) >= desired
            and (not st.get("updateRevision") or st.get("currentRevision") == st["updateRevision"])
        )
        unschedulable = ""
        restarts = 0
        ready = int(st.get("readyReplicas") or 0)
        if ready < desired:
            selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(ref.name).items())
            for pod in self.kube.list_objects("Pod", ref.namespace, selector):
                pst = pod.get("status") or {}
                for c in pst.get("conditions") or []:
                    if c.get("type") == "PodScheduled" and c.get("status") == "False":
                        unschedulable = c.get("message") or c.get("reason") or "unschedulable"
                for cs in pst.get("containerStatuses") or []:
                    restarts += int(cs.get("restartCount") or 0)
        return cond.WorkloadObservation(
            exists=True,
            desired_replicas=desired,
            ready_replicas=ready,
            updated=updated,
            unschedulable=unschedulable,
            restarts=restarts,
            asked_replicas=int(spec.get("replicas", 1)),
            current_replicas=int(st.get("replicas") or 0),
        )

    def external_connection(self, ref: TierRef, spec: CacheTierSpec) -> dict[str, Any]:
        src_ref = spec.external.url_secret_ref
        if src_ref is None:  # the CRD's CEL rule refuses this; keep mypy and old CRDs honest
            raise SpecError("spec.external.urlSecretRef: required when mode is external")
        src = self.kube.get("Secret", ref.namespace, src_ref.name)
        url = _decode(src, src_ref.key)
        if url is None:
            what = "not found" if src is None else f"has no key {src_ref.key!r}"
            raise TemporaryError(
                f"spec.external.urlSecretRef: Secret {src_ref.name!r} {what}", delay=30
            )
        try:
            return build_external_connection_secret(ref, url.strip())
        except ValueError as exc:  # the URL is the user's: its faults are spec errors
            raise SpecError(f"spec.external.urlSecretRef: {exc}") from exc

    # -- the loop body -----------------------------------------------------------

    def reconcile(self, body: dict[str, Any]) -> Result:
        """One level-triggered pass over a CacheTier ``body`` (as the API returned it)."""
        meta = body["metadata"]
        ref = TierRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        generation = meta.get("generation")
        old_status = dict(body.get("status") or {})
        previous_phase = old_status.get("phase")
        requeue: float | None = None
        new: dict[str, Any] = {}

        spec, problems = validate.check_spec(body.get("spec"))
        if spec is None or problems:
            # Permanent until the spec changes: no requeue, and the status write
            # is a no-op on the next event, so there is no hot loop.
            verdict = cond.invalid_spec("; ".join(str(p) for p in problems[:3]))
            rolled = (old_status.get("rollout") or {}).get("rolledBackGeneration") == generation
            if spec is not None and (rolled or not spec.rollout.enabled):
                # What runs keeps being protected: an automatic (or manual) rollback
                # of a serving tier still switches its consumers off.
                rollout = self._rollout(
                    body, ref, spec, old_status, new, "Failed", connection_ready=True
                )
                verdict = cond.Verdict(
                    verdict.phase,
                    verdict.ready,
                    verdict.progressing,
                    verdict.degraded,
                    rollout.conditions,
                )
            return self._finish(body, ref, old_status, verdict, generation, new, None)

        self._ensure_finalizer(body)
        rollback_first = not spec.rollout.enabled or spec.rollout.percent == 0
        rollout_conditions: list[cond.Condition] = []
        if rollback_first:
            # Instant rollback: consumers are switched off before any other work.
            connection = self.kube.get("Secret", ref.namespace, names.connection_secret(ref.name))
            rollout_conditions = self._rollout(
                body,
                ref,
                spec,
                old_status,
                new,
                str(old_status.get("phase") or "Pending"),
                connection_ready=connection is not None,
            ).conditions

        try:
            ctx = TierContext(body, ref, spec, previous_phase, new)
            outcome = self.modes[spec.mode].reconcile(self, ctx)
            verdict, requeue = outcome.verdict, outcome.requeue
        except TemporaryError as exc:
            verdict = cond.blocked("DependencyMissing", str(exc))
            requeue = exc.delay
        except SpecError as exc:
            verdict = cond.invalid_spec(str(exc))
        except ApiError as exc:
            if exc.status == 422 or exc.status == 400:
                verdict = cond.invalid_spec(f"the API server refused a child object: {exc.message}")
            else:
                raise
        if not rollback_first:
            ready_to_serve = verdict.phase in ("Ready", "Degraded") and "connectionSecret" in new
            rollout = self._rollout(
                body, ref, spec, old_status, new, verdict.phase, connection_ready=ready_to_serve
            )
            rollout_conditions = rollout.conditions
            if rollout.requeue is not None:
                requeue = rollout.requeue if requeue is None else min(requeue, rollout.requeue)
        verdict = cond.Verdict(
            phase=verdict.phase,
            ready=verdict.ready,
            progressing=verdict.progressing,
            degraded=verdict.degraded,
            extra=[*verdict.extra, *rollout_conditions],
        )
        return self._finish(body, ref, old_status, verdict, generation, new, requeue)

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
        for mode in self.modes.values():
            mode.forget(namespace, name)
        with self._turns_guard:
            self._fences.pop(key, None)

    def _finish(
        self,
        body: dict[str, Any],
        ref: TierRef,
        old_status: dict[str, Any],
        verdict: cond.Verdict,
        generation: int | None,
        new: dict[str, Any],
        requeue: float | None,
    ) -> Result:
        status = dict(old_status)
        status.update(new)
        status["observedGeneration"] = generation
        status["phase"] = verdict.phase
        rolled = any(c.type == cond.ROLLED_BACK and c.status == "True" for c in verdict.extra)
        if verdict.phase == "Ready" and rolled:
            status["phase"] = "RolledBack"
        status["conditions"] = cond.merge_conditions(
            list(old_status.get("conditions") or []),
            cond.verdict_conditions(verdict),
            generation,
            now_rfc3339(),
        )
        self.write_status(body, old_status, status)
        if old_status.get("phase") != status["phase"]:
            etype = "Normal" if verdict.phase in ("Ready", "Provisioning", "Pending") else "Warning"
            reason = verdict.ready[1]
            self._event(body, etype, reason, f"phase {status['phase']}: {verdict.ready[2]}")
        return Result(requeue_after=requeue)

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
