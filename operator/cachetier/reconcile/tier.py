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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic

from cachetier import names
from cachetier.api import validate
from cachetier.api.models import CacheTierSpec
from cachetier.kube.client import ApiError, Conflict, Kube
from cachetier.reconcile import conditions as cond
from cachetier.render import (
    TierRef,
    TierSecrets,
    build_connection_secret,
    build_external_connection_secret,
    connection_url,
    render_tier,
    spec_hash,
)

log = logging.getLogger("cachetier.reconcile")

EventFn = Callable[[dict[str, Any], str, str, str], None]


class TemporaryError(Exception):
    """Try again after ``delay`` seconds (a dependency is missing or the API is busy)."""

    def __init__(self, message: str, delay: float = 15.0) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class Result:
    """What one reconcile did."""

    status: dict[str, Any]
    writes: list[str] = field(default_factory=list)
    requeue_after: float | None = None


def now_rfc3339() -> str:
    """The current time, as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_validation_error(err: pydantic.ValidationError) -> str:
    """'spec.redis.maxmemory: <why>' for the first few problems."""
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"spec.{loc}: {e['msg']}")
    return "; ".join(parts)


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


class TierReconciler:
    """Reconciles CacheTiers through one Kube client."""

    def __init__(self, kube: Kube, event: EventFn | None = None) -> None:
        self.kube = kube
        self._event = event or (lambda body, etype, reason, message: None)

    # -- secrets -------------------------------------------------------------

    def _tier_secrets(self, ref: TierRef, spec: CacheTierSpec) -> TierSecrets:
        """Passwords: read them if they exist; generate each one once, never again."""
        auth_name = names.auth_secret(ref.name)
        live = self.kube.get("Secret", ref.namespace, auth_name)
        operator_pw = _decode(live, "operator-password")
        generated_pw = _decode(live, names.AUTH_PASSWORD_KEY)
        if live is None:
            # Create-only first write: if two reconciles race, the loser's 409
            # makes it re-read, so a password is never generated twice.
            operator_pw = _new_password()
            generated_pw = _new_password()
            seed = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": auth_name,
                    "namespace": ref.namespace,
                    "labels": names.common_labels(ref.name),
                    "ownerReferences": [_owner(ref)],
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
                return self._tier_secrets(ref, spec)
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

    # -- children ------------------------------------------------------------

    def _apply_children(self, body: dict[str, Any], desired: list[dict[str, Any]]) -> list[str]:
        """Apply each object whose content hash differs from the live one."""
        writes = []
        for obj in desired:
            obj = _encode_secret(obj)
            meta = obj["metadata"]
            want = (meta.get("annotations") or {}).get(names.ANNOTATION_SPEC_HASH)
            live = self.kube.get(obj["kind"], meta["namespace"], meta["name"])
            have = None
            if live is not None:
                have = (live["metadata"].get("annotations") or {}).get(names.ANNOTATION_SPEC_HASH)
            if live is not None and want is not None and want == have:
                continue
            self.kube.apply(obj)
            verb = "Created" if live is None else "Updated"
            writes.append(f"{verb} {obj['kind']} {meta['name']}")
        if writes:
            self._event(body, "Normal", "Applied", "; ".join(writes))
        return writes

    def _observe_statefulset(self, ref: TierRef) -> cond.WorkloadObservation:
        sts = self.kube.get("StatefulSet", ref.namespace, names.statefulset(ref.name))
        if sts is None:
            return cond.WorkloadObservation(exists=False)
        spec = sts.get("spec") or {}
        st = sts.get("status") or {}
        desired = int(spec.get("replicas", 1))
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
            for pod in self.kube.list("Pod", ref.namespace, selector):
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
        )

    def _external_connection(self, ref: TierRef, spec: CacheTierSpec) -> dict[str, Any]:
        src_ref = spec.external.url_secret_ref
        if src_ref is None:  # the CRD's CEL rule refuses this; keep mypy and old CRDs honest
            raise ValueError("spec.external.urlSecretRef: required when mode is external")
        src = self.kube.get("Secret", ref.namespace, src_ref.name)
        url = _decode(src, src_ref.key)
        if url is None:
            what = "not found" if src is None else f"has no key {src_ref.key!r}"
            raise TemporaryError(
                f"spec.external.urlSecretRef: Secret {src_ref.name!r} {what}", delay=30
            )
        try:
            return build_external_connection_secret(ref, url.strip())
        except ValueError as exc:
            raise ValueError(f"spec.external.urlSecretRef: {exc}") from exc

    # -- the loop body -----------------------------------------------------------

    def reconcile(self, body: dict[str, Any]) -> Result:
        """One level-triggered pass over a CacheTier ``body`` (as the API returned it)."""
        meta = body["metadata"]
        ref = TierRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        generation = meta.get("generation")
        old_status = dict(body.get("status") or {})
        previous_phase = old_status.get("phase")
        writes: list[str] = []
        requeue: float | None = None
        new: dict[str, Any] = {}

        try:
            spec = CacheTierSpec.model_validate(body.get("spec") or {})
            problems = validate.validate_spec(spec)
            if problems:
                raise ValueError("; ".join(f"{p}: {m}" for p, m in problems))
        except pydantic.ValidationError as exc:
            verdict = cond.invalid_spec(format_validation_error(exc))
            return self._finish(body, ref, old_status, verdict, generation, new, writes, None)
        except ValueError as exc:
            verdict = cond.invalid_spec(str(exc))
            return self._finish(body, ref, old_status, verdict, generation, new, writes, None)

        try:
            if spec.mode == "external":
                secret = self._external_connection(ref, spec)
                writes += self._apply_children(body, [secret])
                data = secret.get("stringData") or {}
                new["endpoint"] = {"host": data.get("host", ""), "port": int(data.get("port", 0))}
                new["connectionSecret"] = names.connection_secret(ref.name)
                verdict = cond.external_verdict(True, "connection Secret built from the URL")
            else:
                tier_secrets = self._tier_secrets(ref, spec)
                desired = render_tier(ref, spec, tier_secrets)
                desired.insert(
                    1,
                    build_connection_secret(
                        ref,
                        url=connection_url(ref, spec, tier_secrets.app_password),
                        host=names.service_host(ref.name, ref.namespace),
                        port=names.REDIS_PORT,
                        password=tier_secrets.app_password,
                    ),
                )
                desired = _dedupe(desired)
                writes += self._apply_children(body, desired)
                obs = self._observe_statefulset(ref)
                verdict = cond.workload_verdict(obs, previous_phase)
                new["endpoint"] = {
                    "host": names.service_host(ref.name, ref.namespace),
                    "port": names.REDIS_PORT,
                }
                new["connectionSecret"] = names.connection_secret(ref.name)
                if verdict.phase != "Ready":
                    requeue = 10.0
        except TemporaryError as exc:
            verdict = cond.blocked("DependencyMissing", str(exc))
            requeue = exc.delay
        except ValueError as exc:
            verdict = cond.invalid_spec(str(exc))
        except ApiError as exc:
            if exc.status == 422 or exc.status == 400:
                verdict = cond.invalid_spec(f"the API server refused a child object: {exc.message}")
            else:
                raise
        return self._finish(body, ref, old_status, verdict, generation, new, writes, requeue)

    def _finish(
        self,
        body: dict[str, Any],
        ref: TierRef,
        old_status: dict[str, Any],
        verdict: cond.Verdict,
        generation: int | None,
        new: dict[str, Any],
        writes: list[str],
        requeue: float | None,
    ) -> Result:
        status = dict(old_status)
        status.update(new)
        status["observedGeneration"] = generation
        status["phase"] = verdict.phase
        status["conditions"] = cond.merge_conditions(
            list(old_status.get("conditions") or []),
            cond.verdict_conditions(verdict),
            generation,
            now_rfc3339(),
        )
        self.write_status(body, old_status, status)
        if old_status.get("phase") != verdict.phase:
            etype = "Normal" if verdict.phase in ("Ready", "Provisioning", "Pending") else "Warning"
            reason = verdict.ready[1]
            self._event(body, etype, reason, f"phase {verdict.phase}: {verdict.ready[2]}")
        return Result(status=status, writes=writes, requeue_after=requeue)

    def write_status(
        self, body: dict[str, Any], old_status: dict[str, Any], status: dict[str, Any]
    ) -> bool:
        """Merge-patch the status subresource with what changed; nothing if nothing did."""
        patch = {k: status.get(k) for k in set(status) | set(old_status) if status.get(k) != old_status.get(k)}
        if not patch:
            return False
        meta = body["metadata"]
        self.kube.merge_patch(
            names.KIND, meta["namespace"], meta["name"], {"status": patch}, subresource="status"
        )
        return True


def _owner(ref: TierRef) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _dedupe(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first object of each (kind, name); the renderer may emit the connection Secret."""
    seen: set[tuple[str, str]] = set()
    out = []
    for o in objs:
        key = (o["kind"], o["metadata"]["name"])
        if key in seen:
            continue
        seen.add(key)
        out.append(o)
    return out


def content_hash(obj: dict[str, Any]) -> str:
    """Re-exported for callers that build objects outside the renderer."""
    return spec_hash(obj)
