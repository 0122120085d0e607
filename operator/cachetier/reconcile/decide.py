"""decide: one tier's snapshot in, every action and the whole status out (pure).

``decide(observed, now) -> Decision`` is the operator's judgement of one tier: which
children to create or repair, which consumers to switch (rollback first), which
Redis actions to take, which Events to post, and the complete
:class:`cachetier.api.models.CacheTierStatus` — rebuilt from the observation on
every pass, never patched up field by field. The mode-specific parts come from the
strategy of ``spec.mode`` (``cachetier.reconcile.modes``); what must be remembered
between passes is :class:`cachetier.reconcile.observed.Remembered`.

No I/O, no clock, no randomness (``now`` and fresh passwords come in with the
snapshot), so every decision is unit-tested as data (tests/unit/test_decide.py).
The consumer writes can fail or race (a 409 from another field manager);
:func:`settle` folds what actually happened back into status and Events.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cachetier import names
from cachetier.api.errors import SpecError
from cachetier.api.models import CacheTierSpec, CacheTierStatus
from cachetier.api.modes import profile
from cachetier.ports import AclUpdate, OperatorSwitch, ReplicationAction, Target
from cachetier.reconcile import conditions as cond
from cachetier.reconcile import rotation
from cachetier.reconcile.consumer_plan import ConsumerPlan, matching_workloads, plan_consumers
from cachetier.reconcile.modes import MODES, ConvergeRequest, Inputs, Judgement, LabelChange
from cachetier.reconcile.observed import (
    DependencyMissing,
    Key,
    Observed,
    auto_rolled_back,
    format_time,
    rollback_requested,
)
from cachetier.reconcile.volumes import VolumePlan, plan_volumes
from cachetier.render import TierSecrets, drift, owner_reference
from cachetier.rollout import StepState, next_effective_percent

STEP_RECHECK = 5.0
"""A stepped rollout is looked at this often while it climbs or holds."""
CONSUMER_ERROR_RECHECK = 10.0
"""Consumer writes that failed are retried after this long."""


@dataclass(frozen=True)
class Event:
    """An Event to post about the tier."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class ConsumerStep:
    """The consumer pass of this decision: its inputs and its plan."""

    plan: ConsumerPlan
    enabled: bool
    effective_percent: int
    connection_ready: bool
    off: bool
    """This pass switches every consumer off (a rollback)."""
    auth_revision: str = ""
    """The consumers' ``cachetier.io/auth-revision`` (password rotation)."""


@dataclass(frozen=True)
class ConsumerOutcome:
    """What the consumer writes did (:func:`settle` reads it)."""

    changed: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    """Conflicts besides the plan's own (a 409 from the API server)."""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutPart:
    """The rollout's share of the decision."""

    status: dict[str, Any]
    consumers: ConsumerStep
    requeue: float | None
    events: tuple[Event, ...]
    rolled: cond.Condition


@dataclass(frozen=True)
class Decision:
    """Everything one pass will do, in the order the pipeline does it."""

    add_finalizer: bool = False
    seed: dict[str, Any] | None = None
    """The auth Secret's first copy (create-only: a racing pass re-reads instead)."""
    consumers_first: bool = False
    """Switch consumers before any other write (instant rollback)."""
    applies: tuple[dict[str, Any], ...] = ()
    """Children to apply (server-side apply), in order."""
    converge: ConvergeRequest | None = None
    resizes: tuple[tuple[str, str], ...] = ()
    """Volume expansion: (claim, size) to patch before the applies."""
    orphan: str | None = None
    """Volume expansion: the StatefulSet to delete with its pods orphaned."""
    pod_deletes: tuple[str, ...] = ()
    """Supervised update: the Redis pod to replace now (its StatefulSet re-creates it)."""
    redis_actions: tuple[ReplicationAction, ...] = ()
    """Replication mode: REPLICAOF / SENTINEL MONITOR, in order."""
    acl_updates: tuple[AclUpdate, ...] = ()
    """Password rotation: ACL SETUSER on the Redis pods and Sentinels."""
    operator_switches: tuple[OperatorSwitch, ...] = ()
    """Operator password rotation: servers to switch to the operator password in use."""
    rotation: RotationStep | None = None
    labels: tuple[LabelChange, ...] = ()
    """Replication mode: pod role labels, demotions first."""
    consumers: ConsumerStep | None = None
    status: CacheTierStatus = field(default_factory=CacheTierStatus)
    events: tuple[Event, ...] = ()
    """Every Event of the pass (``base_events`` plus the consumer and phase Events)."""
    base_events: tuple[Event, ...] = ()
    """The Events decided before the consumer writes (passwords, children, re-arm)."""
    requeue: float | None = None
    verdict: cond.Verdict | None = None
    judgement: Judgement | None = None
    rollout: RolloutPart | None = None

    @property
    def writes_nothing(self) -> bool:
        """No object write at all (status aside): a converged tier."""
        plan = self.consumers.plan if self.consumers else None
        return not (
            self.add_finalizer
            or self.seed
            or self.applies
            or self.resizes
            or self.orphan
            or self.pod_deletes
            or self.labels
            or (plan and (plan.injects or plan.releases or plan.pod_patches))
        )

    @property
    def acts_nothing(self) -> bool:
        """No write and no Redis action (a converge request is idempotent: not counted)."""
        return (
            self.writes_nothing
            and not self.redis_actions
            and not self.acl_updates
            and not self.operator_switches
        )


# -- the decision ------------------------------------------------------------------------


def decide(obs: Observed, now: datetime) -> Decision:
    """The whole decision for one tier (see the module docstring)."""
    spec = obs.spec
    if spec is None or obs.problems:
        return _invalid(obs, spec, now)
    mode = MODES[spec.mode]
    add_finalizer = names.FINALIZER not in (obs.tier["metadata"].get("finalizers") or [])
    rollback_first = not spec.rollout.enabled or spec.rollout.percent == 0

    events: list[Event] = []
    seed: dict[str, Any] | None = None
    applies: list[dict[str, Any]] = []
    judgement: Judgement | None = None
    volume: VolumePlan | None = None
    requeue: float | None = None
    rotating = RotationStep(revision=str((obs.status.get("auth") or {}).get("revision") or ""))
    try:
        secrets: TierSecrets | None = None
        tls_ca: str | None = None
        if profile(spec).runs_redis:
            tls_ca = _tls_ca(obs, spec)
            secrets, seed, secret_events, blocked = _tier_secrets(obs, spec)
            events += secret_events
            if blocked is not None:
                raise blocked
            if secrets is not None:
                secrets, rotating = _rotation(obs, spec, secrets, tls_ca, format_time(now) or "")
                secrets, rotating = _operator_rotation(
                    obs, spec, secrets, rotating, seed, tls_ca, format_time(now) or ""
                )
                events += rotating.events
        inputs = Inputs(obs, spec, secrets, tls_ca, format_time(now) or "")
        desired = mode.desired(inputs)
        volume = plan_volumes(obs, desired, obs.claims, obs.storage_classes)
        held = [
            o for o in desired if not (volume.hold_statefulset and o.get("kind") == "StatefulSet")
        ]
        applies, written, apply_events = _plan_applies(obs, held)
        events += apply_events
        judgement = mode.judge(inputs, desired, written)
        events += [Event(kind, reason, message) for kind, reason, message in judgement.notices]
        verdict, requeue = _volume_verdict(obs, volume, judgement.verdict), judgement.requeue
        if volume.orphan_statefulset or volume.hold_statefulset or volume.expanding:
            requeue = _sooner(requeue, VOLUME_RECHECK)
        if rotating.running or rotating.operator_running:
            requeue = _sooner(requeue, ROTATION_RECHECK)
            if verdict.phase == "Ready":
                if rotating.running:
                    message = f"rotating the application password: {rotating.running}"
                else:
                    message = f"rotating the operator's password: {rotating.operator_running}"
                verdict = replace(verdict, progressing=("True", "PasswordRotation", message))
    except DependencyMissing as exc:
        verdict, requeue = cond.blocked("DependencyMissing", str(exc)), exc.delay
    except SpecError as exc:
        verdict = cond.invalid_spec(str(exc))

    if rollback_first:
        connection = obs.child("Secret", names.connection_secret(obs.ref.name))
        phase = str(obs.status.get("phase") or "Pending")
        ready = connection is not None
    else:
        phase = verdict.phase
        ready = verdict.phase in ("Ready", "Degraded") and judgement is not None
    rollout = _rollout(obs, spec, phase, ready, now, auth_revision=rotating.revision)
    requeue = _sooner(requeue, rollout.requeue)
    draft = Decision(
        add_finalizer=add_finalizer,
        seed=seed,
        consumers_first=rollback_first,
        applies=tuple(applies),
        resizes=volume.resizes if volume is not None else (),
        orphan=volume.orphan_statefulset if volume is not None else None,
        pod_deletes=judgement.pod_deletes if judgement is not None else (),
        converge=judgement.converge if judgement is not None else None,
        redis_actions=judgement.replication_actions if judgement is not None else (),
        labels=judgement.labels if judgement is not None else (),
        acl_updates=rotating.updates,
        operator_switches=rotating.switches,
        rotation=rotating,
        consumers=rollout.consumers,
        base_events=tuple(events) + rollout.events,
        requeue=requeue,
        verdict=verdict,
        judgement=judgement,
        rollout=rollout,
    )
    return settle(obs, draft, planned_outcome(draft), now)


VOLUME_RECHECK = 5.0
"""A tier whose volumes are being expanded is looked at again this often."""


def _volume_verdict(obs: Observed, volume: VolumePlan, verdict: cond.Verdict) -> cond.Verdict:
    """The verdict while volumes grow: the pods keep serving throughout, so a tier that
    was Ready stays Ready (Progressing, VolumeExpanding); a class that cannot expand
    makes it not Ready, with nothing changed."""
    if volume.unsupported:
        message = (
            f"persistence.size grows but storage class {volume.unsupported} does not allow "
            "volume expansion (allowVolumeExpansion); nothing was changed: set the size back "
            "or use a class that can expand"
        )
        return cond.Verdict(
            phase="Degraded",
            ready=("False", "VolumeExpansionUnsupported", message),
            progressing=("False", "VolumeExpansionUnsupported", message),
            degraded=("True", "VolumeExpansionUnsupported", message),
        )
    if not volume.expanding:
        return verdict
    message = f"expanding volumes to persistence.size: {volume.expanding}"
    if obs.status.get("phase") in ("Ready", "RolledBack") and verdict.phase != "Failed":
        return cond.Verdict(
            phase="Ready",
            ready=("True", "Ready", message),
            progressing=("True", "VolumeExpanding", message),
            degraded=("False", "Ready", ""),
        )
    return replace(verdict, progressing=("True", "VolumeExpanding", message))


def _invalid(obs: Observed, spec: CacheTierSpec | None, now: datetime) -> Decision:
    """A spec that cannot be acted on: Failed until it changes (no requeue, no hot loop).

    What runs keeps being protected: an automatic (or manual) rollback of a serving
    tier still switches its consumers off.
    """
    verdict = cond.invalid_spec("; ".join(obs.problems[:3]))
    rollout: RolloutPart | None = None
    rolled = obs.remembered.rolled_back_generation == obs.generation
    if spec is not None and (rolled or not spec.rollout.enabled):
        kept = str((obs.status.get("auth") or {}).get("revision") or "")
        rollout = _rollout(obs, spec, "Failed", True, now, auth_revision=kept)
    draft = Decision(
        consumers_first=True,
        consumers=rollout.consumers if rollout else None,
        base_events=rollout.events if rollout else (),
        verdict=verdict,
        rollout=rollout,
    )
    return settle(obs, draft, planned_outcome(draft), now)


def refused(obs: Observed, decision: Decision, message: str, now: datetime) -> Decision:
    """The API server refused a child (400/422): the spec is what is wrong.

    Nothing more is applied; a consumer pass that was to follow the children runs
    as for a tier that does not serve (matching workloads wait as they are).
    """
    verdict = cond.invalid_spec(f"the API server refused a child object: {message}")
    rollout = decision.rollout
    if not decision.consumers_first and obs.spec is not None:
        revision = decision.rotation.revision if decision.rotation is not None else ""
        rollout = _rollout(obs, obs.spec, verdict.phase, False, now, auth_revision=revision)
    kept = tuple(e for e in decision.base_events if e.reason not in ("Applied", "DriftRepaired"))
    if rollout is not None and rollout is not decision.rollout:
        kept = tuple(e for e in kept if e.reason != "Rearmed") + rollout.events
    draft = replace(
        decision,
        applies=(),
        converge=None,
        redis_actions=(),
        labels=(),
        verdict=verdict,
        judgement=None,
        rollout=rollout,
        consumers=rollout.consumers if rollout else None,
        base_events=kept,
    )
    return settle(obs, draft, planned_outcome(draft), now)


# -- passwords and TLS ------------------------------------------------------------------


def _decode(secret: dict[str, Any] | None, key: str) -> str | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()


def encode_secret(obj: dict[str, Any]) -> dict[str, Any]:
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


def secrets_to_read(obs_ref_name: str, spec: CacheTierSpec) -> list[str]:
    """Names of the Secrets the decision reads for this spec (the gather step GETs them)."""
    out = []
    if profile(spec).runs_redis:
        out += [
            names.auth_secret(obs_ref_name),
            names.auth_recovery_secret(obs_ref_name),
            names.connection_secret(obs_ref_name),
        ]
        if spec.auth.enabled and spec.auth.password_secret_ref is not None:
            out.append(spec.auth.password_secret_ref.name)
        if spec.tls.enabled and spec.tls.secret_name:
            out.append(spec.tls.secret_name)
    if profile(spec).takes_url and spec.external.url_secret_ref is not None:
        out.append(spec.external.url_secret_ref.name)
    return out


def _tls_ca(obs: Observed, spec: CacheTierSpec) -> str | None:
    """A TLS tier's Secret must exist (else its pods could never start); its CA (PEM)."""
    if not spec.tls.enabled or not spec.tls.secret_name:
        return None
    secret = obs.secrets.get(spec.tls.secret_name)
    if secret is None:
        raise DependencyMissing(
            f"spec.tls.secretName: Secret {spec.tls.secret_name!r} not found", delay=30
        )
    missing = [k for k in ("tls.crt", "tls.key", "ca.crt") if k not in (secret.get("data") or {})]
    if missing:
        raise DependencyMissing(
            f"spec.tls.secretName: Secret {spec.tls.secret_name!r} has no {', '.join(missing)}",
            delay=30,
        )
    return _decode(secret, "ca.crt")


def _tier_secrets(
    obs: Observed, spec: CacheTierSpec
) -> tuple[TierSecrets | None, dict[str, Any] | None, list[Event], DependencyMissing | None]:
    """Passwords: read them if they exist; generate each one once, never again.

    ``<tier>-auth-recovery`` (a child like the others) keeps a copy: a deleted
    ``<tier>-auth`` comes back with the same passwords (else the application
    password is taken from ``<tier>-connection``), with a Warning Event either way;
    only when every copy is gone are new passwords generated (the snapshot's
    entropy), and then the Event says so. Returns the secrets, the seed to create
    (None: the auth Secret exists), Events, and what blocks the tier, if anything.
    """
    ref = obs.ref
    auth_name = names.auth_secret(ref.name)
    live = obs.secrets.get(auth_name)
    operator_pw = _decode(live, names.OPERATOR_PASSWORD_KEY)
    generated_pw = _decode(live, names.AUTH_PASSWORD_KEY)
    seed: dict[str, Any] | None = None
    events: list[Event] = []
    fresh_operator, fresh_app, fresh_probe = obs.fresh_passwords
    if live is None:
        recovery = obs.secrets.get(names.auth_recovery_secret(ref.name))
        connection = obs.secrets.get(names.connection_secret(ref.name))
        operator_pw = _decode(recovery, names.OPERATOR_PASSWORD_KEY)
        generated_pw = _decode(recovery, names.AUTH_PASSWORD_KEY)
        if generated_pw is None and spec.auth.password_secret_ref is None:
            generated_pw = _decode(connection, "password")
        source = "its recovery copy" if recovery is not None else "the connection Secret"
        if recovery is not None or generated_pw is not None:
            events.append(
                Event(
                    "Warning",
                    "AuthSecretRestored",
                    f"Secret {auth_name} was deleted; restored with the same passwords from "
                    f"{source}" + ("" if operator_pw else " (a new operator password: pods roll)"),
                )
            )
        elif obs.remembered.serving:
            events.append(
                Event(
                    "Warning",
                    "PasswordRegenerated",
                    f"Secret {auth_name} and every copy of it were deleted: new passwords "
                    "generated; consumers get them as they restart",
                )
            )
        # A tier restored with its operator password keeps its probes as they are (an old
        # tier: as the operator's user); any other gets the probe user.
        probe_pw = _decode(recovery, names.PROBE_PASSWORD_KEY)
        if probe_pw is None and not operator_pw:
            probe_pw = fresh_probe
        kept = {
            key: value
            for key in (
                names.HASH_OPERATOR_PASSWORD_KEY,
                names.NEXT_OPERATOR_PASSWORD_KEY,
                names.PREVIOUS_OPERATOR_PASSWORD_KEY,
            )
            if (value := _decode(recovery, key))
        }
        if probe_pw:
            kept[names.PROBE_PASSWORD_KEY] = probe_pw
        operator_pw = operator_pw or fresh_operator
        generated_pw = generated_pw or fresh_app
        seed = encode_secret(
            {
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
                    names.OPERATOR_PASSWORD_KEY: operator_pw,
                    names.AUTH_PASSWORD_KEY: generated_pw,
                    **kept,
                },
            }
        )
    if not operator_pw:
        missing = DependencyMissing(f"Secret {auth_name} has no operator-password key")
        return None, seed, events, missing
    if not spec.auth.enabled:
        return TierSecrets(None, operator_pw, False), seed, events, None
    previous = _decode(live, names.PREVIOUS_PASSWORD_KEY)
    hash_pw = _decode(live, names.HASH_PASSWORD_KEY)
    in_use = _decode(live, names.AUTH_PASSWORD_KEY)
    asked = obs.annotations.get(names.ANNOTATION_ROTATE_PASSWORD) or ""
    handled = str((obs.status.get("auth") or {}).get("requested") or "")
    byo = spec.auth.password_secret_ref
    if byo is not None:
        src = obs.secrets.get(byo.name)
        value = _decode(src, byo.key)
        if value is None:
            what = "not found" if src is None else f"has no key {byo.key!r}"
            missing = DependencyMissing(
                f"spec.auth.passwordSecretRef: Secret {byo.name!r} {what}", delay=30
            )
            return None, seed, events, missing
        waits = previous is None and live is not None and in_use and in_use != value
        if waits and in_use and _operator_rotating(live):
            # One rotation at a time: the new password waits for the operator's.
            value = in_use
        if previous is None and live is not None and in_use and in_use != value:
            # The user's Secret has a new password: rotate to it, the old one accepted
            # until every consumer runs the new one.
            previous = in_use
            events.append(_rotation_started(f"Secret {byo.name!r} has a new password"))
        secrets = TierSecrets(
            value,
            operator_pw,
            False,
            previous_app_password=previous,
            hash_password=hash_pw or in_use or value,
        )
        return secrets, seed, events, None
    # Auth was off or BYO before: the application password is generated now, once
    # (the auth Secret is a child: the apply below keeps it).
    current = generated_pw or fresh_app
    hash_pw = hash_pw or current
    existed = live is not None  # a rotation needs a password already in use
    if (
        previous is None
        and asked
        and asked != handled
        and existed
        and generated_pw
        and fresh_app
        and not _operator_rotating(live)
    ):
        previous, current = generated_pw, fresh_app
        events.append(
            _rotation_started(f"{names.ANNOTATION_ROTATE_PASSWORD}={asked!r}: a new password")
        )
    secrets = TierSecrets(
        current, operator_pw, True, previous_app_password=previous, hash_password=hash_pw
    )
    return secrets, seed, events, None


def _rotation_started(why: str) -> Event:
    return Event(
        "Normal",
        "PasswordRotationStarted",
        f"{why}; the old one stays accepted until every consumer runs with the new one",
    )


ROTATION_RECHECK = 2.0
"""A tier whose password rotates is looked at this often (ACL changes send no event)."""


@dataclass(frozen=True)
class RotationStep:
    """A password rotation's share of the decision."""

    status: dict[str, Any] | None = None
    """``status.auth`` (None: keep what it says)."""
    updates: tuple[AclUpdate, ...] = ()
    revision: str = ""
    """The consumer pod templates' ``cachetier.io/auth-revision`` ("": none)."""
    events: tuple[Event, ...] = ()
    running: str = ""
    """The stage, while a rotation runs ("": none runs)."""
    operator_status: dict[str, Any] | None = None
    """``status.auth.operator`` (None: keep what it says)."""
    switches: tuple[OperatorSwitch, ...] = ()
    operator_running: str = ""
    """The stage of the operator password's rotation, while one runs."""


def _rotation(
    obs: Observed,
    spec: CacheTierSpec,
    secrets: TierSecrets,
    tls_ca: str | None,
    now_text: str,
) -> tuple[TierSecrets, RotationStep]:
    """Which stage a password rotation is at, and what it does this pass (the
    ``rotation`` module's stages); the secrets as this stage renders them."""
    previous_status = dict(obs.status.get("auth") or {})
    kept_revision = str(previous_status.get("revision") or "")
    asked = obs.annotations.get(names.ANNOTATION_ROTATE_PASSWORD) or ""
    target = secrets.app_password
    if target is None or not spec.auth.enabled:
        return secrets, RotationStep(revision=kept_revision)
    previous = secrets.previous_app_password
    revision = rotation.auth_revision(target, secrets.operator_password)
    if previous is None:
        handled = str(previous_status.get("requested") or "")
        if asked and asked != handled:
            # Nothing to rotate from (a tier created with the annotation), or a password
            # the user owns: the request is noted as handled, never acted on later.
            noted = {**previous_status, "requested": asked}
            events: tuple[Event, ...] = ()
            if not secrets.app_password_generated:
                events = (
                    Event(
                        "Warning",
                        "PasswordRotationIgnored",
                        f"{names.ANNOTATION_ROTATE_PASSWORD}: this tier's password comes from "
                        "spec.auth.passwordSecretRef; change that Secret's content to rotate it",
                    ),
                )
            return secrets, RotationStep(status=noted, revision=kept_revision, events=events)
        return secrets, RotationStep(revision=kept_revision)
    servers = obs.acl
    ours = [
        w
        for w in matching_workloads(spec, obs.workloads)
        if (w["metadata"].get("annotations") or {}).get(names.ANNOTATION_TIER) == obs.ref.name
    ]
    # Rolled out by the workload's status, and by its pods: none still running (or
    # shutting down) from a template with the old password.
    rolled = all(
        rotation.rolled_out(w, revision) and rotation.pods_on(w, obs.rotation_pods, revision)
        for w in ours
    )
    stage = rotation.stage(target, previous, servers, rolled)
    started = previous_status.get("rotation") != "InProgress"
    since = now_text if started else str(previous_status.get("since") or now_text)
    status: dict[str, Any] = {
        "rotation": "InProgress",
        "stage": stage,
        "since": since,
        "requested": asked or previous_status.get("requested"),
        "revision": kept_revision if stage == rotation.ADDING else revision,
    }
    updates = tuple(
        AclUpdate(
            target=Target(
                host=server.host,
                port=server.port,
                username=names.OPERATOR_USER,
                password=secrets.operator_password,
                tls=spec.tls.enabled and not server.sentinel,
                ca_data=None if server.sentinel else tls_ca,
            ),
            user="default",
            add=add,
            remove=remove,
            sentinel=server.sentinel,
        )
        for server, add, remove in rotation.updates(stage, target, previous, servers or ())
    )
    if stage == rotation.DONE:
        status.update(rotation="Done", stage=rotation.DONE, since=now_text)
        event = Event(
            "Normal",
            "PasswordRotated",
            f"password rotated: every consumer runs with the new one ({len(ours)} "
            "workload(s)); the old one is refused",
        )
        done = replace(secrets, previous_app_password=None)
        return done, RotationStep(status=status, revision=revision, events=(event,))
    shown = replace(
        secrets,
        accept_previous=stage in (rotation.ADDING, rotation.CONSUMERS),
        tell_previous=stage == rotation.ADDING,
    )
    step = RotationStep(
        status=status, updates=updates, revision=str(status["revision"]), running=stage
    )
    return shown, step


def _operator_rotating(live: dict[str, Any] | None) -> bool:
    data = (live or {}).get("data") or {}
    return names.NEXT_OPERATOR_PASSWORD_KEY in data or names.PREVIOUS_OPERATOR_PASSWORD_KEY in data


def _operator_rotation(
    obs: Observed,
    spec: CacheTierSpec,
    secrets: TierSecrets,
    step: RotationStep,
    seed: dict[str, Any] | None,
    tls_ca: str | None,
    now_text: str,
) -> tuple[TierSecrets, RotationStep]:
    """The operator's own password: the probe user's password, the first operator
    password (for the config hash), and the stage of a rotation (``rotation`` module)."""
    live = obs.secrets.get(names.auth_secret(obs.ref.name))
    source = live if live is not None else seed
    probe = _decode(source, names.PROBE_PASSWORD_KEY)
    hash_op = _decode(source, names.HASH_OPERATOR_PASSWORD_KEY)
    next_ = _decode(source, names.NEXT_OPERATOR_PASSWORD_KEY)
    previous = _decode(source, names.PREVIOUS_OPERATOR_PASSWORD_KEY)
    login = secrets.operator_password  # what the operator logs in with this pass
    status = dict((obs.status.get("auth") or {}).get("operator") or {})
    asked = obs.annotations.get(names.ANNOTATION_ROTATE_OPERATOR_PASSWORD) or ""
    handled = str(status.get("requested") or "")
    fresh_operator, _, fresh_probe = obs.fresh_passwords
    events: list[Event] = []
    app_rotating = secrets.previous_app_password is not None
    if (
        asked
        and asked != handled
        and next_ is None
        and previous is None
        and live is not None
        and not app_rotating
        and fresh_operator
    ):
        next_ = fresh_operator
        hash_op = hash_op or login
        if probe is None:
            # A tier from before the probe user: its pods roll (supervised) to probes
            # that no longer log in as the operator.
            probe = fresh_probe
        events.append(
            Event(
                "Normal",
                "OperatorPasswordRotationStarted",
                f"{names.ANNOTATION_ROTATE_OPERATOR_PASSWORD}={asked!r}: a new operator "
                "password; the old one stays accepted until every server uses the new one",
            )
        )
    base = replace(secrets, probe_password=probe, hash_operator_password=hash_op)
    if next_ is None and previous is None:
        if asked and asked != handled and not app_rotating:
            status["requested"] = asked  # nothing to rotate from yet: noted as handled
            return base, replace(step, operator_status=status)
        return base, step
    stage = rotation.operator_stage(next_, login, previous, obs.acl)
    acl, switch = rotation.operator_updates(stage, next_, previous, obs.acl or ())

    def target(server: rotation.Server) -> Target:
        return Target(
            host=server.host,
            port=server.port,
            username=names.OPERATOR_USER,
            password=login,
            tls=spec.tls.enabled and not server.sentinel,
            ca_data=None if server.sentinel else tls_ca,
        )

    probe_rules: tuple[str, ...] = ()
    if probe:
        probe_rules = ("on", f">{probe}", "-@all", "+ping")
    updates = [
        AclUpdate(
            target=target(server),
            user=names.OPERATOR_USER,
            add=add,
            remove=remove,
            sentinel=server.sentinel,
        )
        for server, add, remove in acl
    ]
    if stage == rotation.ADDING:
        # The probe user too (a tier from before it): a pod that restarts reads it from
        # auth.conf, a running one gets it now.
        updates += [
            AclUpdate(
                target=target(server),
                user=names.PROBE_USER,
                sentinel=server.sentinel,
                rules=probe_rules,
            )
            for server, _, _ in acl
            if probe_rules
        ]
    switches = tuple(
        OperatorSwitch(
            target=target(server),
            sentinel=server.sentinel,
            master=names.sentinel_master(obs.ref.name),
        )
        for server in switch
    )
    started = status.get("rotation") != "InProgress"
    shown_status: dict[str, Any] = {
        "rotation": "InProgress",
        "stage": stage,
        "since": now_text if started else str(status.get("since") or now_text),
        "requested": asked or status.get("requested"),
    }
    if stage == rotation.ADDING:
        shown = replace(
            base,
            other_operator_password=next_,
            next_operator_password=next_,
            previous_operator_password=None,
        )
    elif stage == rotation.DONE:
        shown = replace(base, previous_operator_password=None)
        shown_status.update(rotation="Done", since=now_text)
        events.append(
            Event(
                "Normal",
                "OperatorPasswordRotated",
                "operator password rotated: every Redis pod and Sentinel uses the new one; "
                "the old one is refused",
            )
        )
    else:
        # Switching (the operator uses the new one from now on), Removing.
        new = next_ or login
        old = login if next_ else previous
        shown = replace(
            base,
            operator_password=new,
            other_operator_password=old if stage == rotation.SWITCHING else None,
            next_operator_password=None,
            previous_operator_password=old,
        )
    out = replace(
        step,
        updates=step.updates + tuple(updates),
        switches=switches,
        operator_status=shown_status,
        operator_running="" if stage == rotation.DONE else stage,
        events=step.events + tuple(events),
    )
    return shown, out


# -- children ------------------------------------------------------------------------------


def _plan_applies(
    obs: Observed, desired: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], set[Key], list[Event]]:
    """Each object that is missing, changed in the spec, or edited by hand.

    The content-hash annotation says whether the desired object changed; the live
    values of the fields the operator sets (``render.drift``) say whether someone
    changed them since. Nothing differs: nothing is written.
    """
    applies: list[dict[str, Any]] = []
    written: set[Key] = set()
    drifted: list[str] = []
    verbs: list[str] = []
    for obj in desired:
        obj = encode_secret(obj)
        meta = obj["metadata"]
        key = (obj["kind"], meta["name"])
        want = (meta.get("annotations") or {}).get(names.ANNOTATION_SPEC_HASH)
        live = obs.children.get(key)
        have = None
        if live is not None:
            have = (live["metadata"].get("annotations") or {}).get(names.ANNOTATION_SPEC_HASH)
        if live is not None and want is not None and want == have:
            where = drift(obj, live)
            if where is None:
                continue
            drifted.append(f"{obj['kind']} {meta['name']} ({where})")
        applies.append(obj)
        written.add(key)
        verbs.append(f"{'Created' if live is None else 'Updated'} {obj['kind']} {meta['name']}")
    events = []
    if drifted:
        message = "restored what was changed by hand: " + "; ".join(drifted)
        events.append(Event("Warning", "DriftRepaired", message[:1000]))
    if verbs:
        events.append(Event("Normal", "Applied", "; ".join(verbs)))
    return applies, written, events


# -- the rollout ---------------------------------------------------------------------------


def _rollout(
    obs: Observed,
    spec: CacheTierSpec,
    phase: str,
    connection_ready: bool,
    now: datetime,
    *,
    auth_revision: str = "",
) -> RolloutPart:
    """The effective percent, the consumer plan, ``status.rollout`` and its conditions."""
    memory = obs.remembered
    generation = obs.generation
    serving = memory.serving or phase == "Ready"
    rearm = obs.annotations.get(names.ANNOTATION_REARM)
    rearmed = bool(rearm) and rearm != memory.rearm
    rolled_back = auto_rolled_back(obs.tier)
    paused = obs.annotations.get(names.ANNOTATION_ROLLOUT_PAUSED) == "true"
    state = StepState(index=memory.step, last_step_time=memory.last_step_time)
    failures = memory.failures
    if memory.slow:  # a warning does not roll back, but steps do not climb on it
        failures = max(failures, 1)
    step = next_effective_percent(
        spec.rollout,
        state,
        now.replace(microsecond=0),
        healthy=phase == "Ready" and failures == 0,
        paused=paused,
        rolled_back=rolled_back,
    )
    effective, reason = step.effective_percent, str(step.reason)
    step_state = step.state
    if not serving and effective > 0:
        # The step clock starts when the tier first serves, not before.
        effective, reason = 0, "WaitingForTier"
        step_state = StepState(index=None, last_step_time=None)
    enabled = spec.rollout.enabled and not rolled_back
    plan = plan_consumers(
        obs.ref.name,
        obs.ref.namespace,
        spec,
        obs.workloads,
        obs.consumer_pods,
        enabled=enabled,
        effective_percent=effective,
        connection_ready=connection_ready,
        auth_revision=auth_revision,
    )
    rollout: dict[str, Any] = {
        "enabled": enabled,
        "targetPercent": spec.rollout.percent,
        "effectivePercent": effective,
        "step": step_state.index,
        "reason": reason,
        "lastStepTime": format_time(step_state.last_step_time),
        "serving": serving,
    }
    if rolled_back:
        rollout["rolledBackGeneration"] = generation
    if rearm:
        rollout["rearm"] = rearm
    events: tuple[Event, ...] = ()
    if rearmed:
        events = (Event("Normal", "Rearmed", f"rollout re-armed ({names.ANNOTATION_REARM})"),)
    if rolled_back:
        rolled = cond.Condition(
            cond.ROLLED_BACK, "True", "AutoRollback", _condition_message(obs, cond.ROLLED_BACK)
        )
    elif not spec.rollout.enabled:
        rolled = cond.Condition(
            cond.ROLLED_BACK,
            "True",
            "Manual",
            "spec.rollout.enabled is false: every consumer is off",
        )
    else:
        rolled = cond.Condition(cond.ROLLED_BACK, "False", "Enabled")
    requeue = (
        STEP_RECHECK if spec.rollout.steps and reason in ("Stepping", "HoldingUnhealthy") else None
    )
    step_ = ConsumerStep(
        plan=plan,
        enabled=enabled,
        effective_percent=effective,
        connection_ready=connection_ready,
        off=rollback_requested(obs.tier, spec),
        auth_revision=auth_revision,
    )
    return RolloutPart(rollout, step_, requeue, events, rolled)


def _condition_message(obs: Observed, ctype: str) -> str:
    for c in obs.status.get("conditions") or []:
        if c.get("type") == ctype:
            return str(c.get("message") or "")
    return ""


# -- status, from the parts ------------------------------------------------------------------


def planned_outcome(decision: Decision) -> ConsumerOutcome | None:
    """What the consumer writes do if every one of them succeeds."""
    if decision.consumers is None:
        return None
    plan = decision.consumers.plan
    changed = [
        f"{o['kind']}/{o['metadata']['name']} REDIS_ENABLED={str(i.redis_enabled).lower()}"
        for o, i in plan.injects
    ]
    changed += [f"{o['kind']}/{o['metadata']['name']} released" for o in plan.releases]
    return ConsumerOutcome(changed=tuple(changed))


def _only_created(message: str) -> bool:
    return all(part.startswith("Created ") for part in message.split("; "))


def settle(
    obs: Observed, decision: Decision, outcome: ConsumerOutcome | None, now: datetime
) -> Decision:
    """The decision with status and the consumer Events for what the writes did."""
    verdict = decision.verdict or cond.invalid_spec("no verdict")
    judgement = decision.judgement
    rollout = decision.rollout
    old = obs.status
    extra: list[cond.Condition] = []
    events = list(decision.base_events)
    requeue = decision.requeue
    body: dict[str, Any] = {
        # Fields this pass could not judge keep what the last pass said.
        "endpoint": old.get("endpoint"),
        "connectionSecret": old.get("connectionSecret"),
        "cluster": old.get("cluster"),
        "replication": old.get("replication"),
        "placement": old.get("placement"),
        "update": old.get("update"),
        "auth": old.get("auth"),
        "rollout": old.get("rollout"),
        "consumers": old.get("consumers"),
        # The prober's: status.health is its record, read here as observed.
        "health": old.get("health"),
    }
    if judgement is not None:
        if judgement.endpoint is not None:
            body["endpoint"] = judgement.endpoint
        if judgement.connection_secret is not None:
            body["connectionSecret"] = judgement.connection_secret
        if judgement.cluster is not None:
            body["cluster"] = judgement.cluster
        if judgement.replication is not None:
            body["replication"] = judgement.replication
        if judgement.update is not None:
            body["update"] = judgement.update
        placed = body["cluster"] or body["replication"] or {}
        body["placement"] = placed.get("placement") or None
        if judgement.failover is not None:
            before, after = judgement.failover
            events.append(
                Event("Warning", "Failover", f"Sentinel moved the primary from {before} to {after}")
            )
    step = decision.rotation
    if step is not None and (step.status is not None or step.operator_status is not None):
        auth = dict(step.status if step.status is not None else obs.status.get("auth") or {})
        if step.operator_status is not None:
            auth["operator"] = step.operator_status
        body["auth"] = auth
    if rollout is not None:
        plan = rollout.consumers.plan
        done = outcome or ConsumerOutcome()
        conflicts = [*plan.conflicts, *done.conflicts]
        body["rollout"] = rollout.status
        body["consumers"] = {
            "selected": plan.selected,
            "enabled": plan.enabled,
            "summary": f"{plan.enabled}/{plan.selected}",
            "workloads": plan.workloads,
        }
        extra = [
            cond.Condition(
                cond.CONSUMER_CONFLICT, "True", "ConsumerConflict", "; ".join(conflicts)[:1000]
            )
            if conflicts
            else cond.Condition(cond.CONSUMER_CONFLICT, "False", "NoConflict"),
            rollout.rolled,
        ]
        events += _consumer_events(obs, rollout, plan, done, conflicts)
        if done.errors:
            requeue = _sooner(requeue, CONSUMER_ERROR_RECHECK)
    verdict = replace(verdict, extra=[*verdict.extra, *extra])
    generation = obs.generation
    phase = verdict.phase
    rolled = any(c.type == cond.ROLLED_BACK and c.status == "True" for c in verdict.extra)
    if phase == "Ready" and rolled:
        phase = "RolledBack"
    conditions = cond.merge_conditions(
        list(old.get("conditions") or []),
        cond.verdict_conditions(verdict),
        generation,
        format_time(now) or "",
    )
    body.update(observedGeneration=generation, phase=phase, conditions=conditions)
    status = CacheTierStatus.model_validate({k: v for k, v in body.items() if v is not None})
    if old.get("phase") != phase:
        etype = "Normal" if verdict.phase in ("Ready", "Provisioning", "Pending") else "Warning"
        message = f"phase {phase}: {verdict.ready[2]}"
        created = [e for e in events if e.reason == "Applied" and _only_created(e.message)]
        if not old.get("phase") and created:
            # A new tier: one Event says what was created and the phase (not two).
            events = [e for e in events if e not in created]
            message = f"{message}; {created[0].message}"
        events.append(Event(etype, verdict.ready[1], message[:1000]))
    return replace(decision, status=status, events=tuple(events), requeue=requeue)


def _consumer_events(
    obs: Observed,
    rollout: RolloutPart,
    plan: ConsumerPlan,
    done: ConsumerOutcome,
    conflicts: list[str],
) -> list[Event]:
    events: list[Event] = []
    before = set(obs.remembered.consumers_enabled)
    after = plan.enabled_set
    manual_off = obs.spec is not None and not obs.spec.rollout.enabled
    if done.changed and (before != after or manual_off):
        on, off = sorted(after - before), sorted(before - after)
        if manual_off or rollout.status["effectivePercent"] == 0:
            events.append(
                Event(
                    "Warning",
                    "RolledBack",
                    f"rollback: REDIS_ENABLED=false on {len(done.changed)} consumer(s)",
                )
            )
        else:
            parts = []
            if on:
                parts.append("enabled " + ", ".join(on[:20]))
            if off:
                parts.append("disabled " + ", ".join(off[:20]))
            events.append(
                Event(
                    "Normal",
                    "RolloutChanged",
                    f"{rollout.status['effectivePercent']}%: " + "; ".join(parts or ["updated"]),
                )
            )
    old_conditions = str(obs.status.get("conditions"))
    for conflict in conflicts:
        if conflict not in old_conditions:
            events.append(Event("Warning", "ConsumerConflict", conflict))
    return events


def rollback_reason(decision: Decision) -> str | None:
    """ "AutoRollback" or "Manual" when this decision's Events record a rollback."""
    if not any(e.reason == "RolledBack" for e in decision.events):
        return None
    rollout = decision.rollout.status if decision.rollout else {}
    return "AutoRollback" if rollout.get("rolledBackGeneration") else "Manual"


def _sooner(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
