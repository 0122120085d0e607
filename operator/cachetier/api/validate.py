"""Semantic checks of a CacheTier spec, beyond what pydantic and the CRD schema state.

Pure: no I/O. ``validate_spec`` returns every problem it finds as a
``Problem(field, message)``; an empty list means the spec is valid. The
operator reports problems as ``Ready=False`` with reason ``InvalidSpec``
instead of acting on the spec.

Two kinds of checks:

- rules the API server cannot state, because they compare values in
  different units (``redis.maxmemory`` in Redis units against
  ``resources.limits.memory`` as a Kubernetes quantity) or need a parser
  (durations, quantities that must be positive);
- the CRD's cross-field CEL rules, mirrored, so a spec that reached the
  operator without them (an older CRD, a client-side test) gets the same
  answer.

``check_spec`` does both steps from the raw ``spec`` dict: pydantic first,
then ``validate_spec``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import pairwise
from typing import Any, NamedTuple

import pydantic

from cachetier.api import redis_config
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile
from cachetier.api.redis_commands import is_known
from cachetier.api.units import (
    format_redis_memory,
    parse_duration,
    parse_quantity,
    parse_redis_memory,
    quantity_to_bytes,
)

__all__ = ["Problem", "check_spec", "problems_from_error", "validate_spec"]


class Problem(NamedTuple):
    """One reason a spec cannot be acted on."""

    field: str
    """Path of the offending field as a user writes it, e.g. ``spec.redis.maxmemory``."""
    message: str
    """What is wrong and, where it helps, what would be right (does not repeat the path)."""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def validate_spec(spec: CacheTierSpec) -> list[Problem]:
    """Every semantic problem of ``spec`` (already parsed by pydantic), in a stable order.

    Values out of bounds stop the checks that would compute with them.
    """
    bounds = list(_bounds(spec))
    if bounds:
        return bounds
    return [problem for check in _CHECKS for problem in check(spec)]


def check_spec(raw: Mapping[str, Any] | None) -> tuple[CacheTierSpec | None, list[Problem]]:
    """Parse and validate a raw ``spec`` as the API server stored it.

    Returns the parsed spec (None when pydantic refuses it) and the problems.
    """
    try:
        spec = CacheTierSpec.model_validate(dict(raw or {}))
    except pydantic.ValidationError as exc:
        return None, problems_from_error(exc)
    try:
        return spec, validate_spec(spec)
    except (ValueError, ArithmeticError) as exc:  # a value no check anticipated
        return spec, [Problem("spec", f"cannot be read: {exc}")]


def problems_from_error(exc: pydantic.ValidationError) -> list[Problem]:
    """A pydantic error as problems whose paths use the API's camelCase names."""
    problems = []
    for error in exc.errors(include_url=False):
        path = "spec"
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        problems.append(Problem(path, error["msg"]))
    return problems


# ---------------------------------------------------------------------------
# The checks. Each yields problems for one concern.


def _memory_fits(spec: CacheTierSpec) -> Iterator[Problem]:
    """maxmemory must leave the container headroom under its memory limit."""
    if not profile(spec).runs_redis:
        return  # the operator runs no container; maxmemory is not rendered
    limit_text = spec.resources.limits.get("memory")
    if limit_text is None:
        return
    maxmemory = parse_redis_memory(spec.redis.maxmemory)
    limit = quantity_to_bytes(limit_text)
    if maxmemory == 0:
        yield Problem(
            "spec.redis.maxmemory",
            f"0 means no limit, but resources.limits.memory is {limit_text}: Redis would "
            "be OOM-killed instead of evicting keys; set maxmemory below the limit",
        )
    elif maxmemory >= limit:
        yield Problem(
            "spec.redis.maxmemory",
            f"{spec.redis.maxmemory} ({maxmemory} bytes) does not fit under "
            f"resources.limits.memory {limit_text} ({limit} bytes); Redis needs headroom "
            "above maxmemory for connections, buffers and fork, e.g. maxmemory "
            f"{format_redis_memory(limit * 3 // 4)}",
        )


MAX_MAXMEMORY = 2**50
"""1 PiB: far above any Redis, far below where Redis's own parser overflows."""


def _bounds(spec: CacheTierSpec) -> Iterator[Problem]:
    """Sizes a Redis or a Kubernetes object can actually have."""
    maxmemory = parse_redis_memory(spec.redis.maxmemory)
    if maxmemory > MAX_MAXMEMORY:
        yield Problem(
            "spec.redis.maxmemory",
            f"{spec.redis.maxmemory} is more than the 1 PiB ({MAX_MAXMEMORY} bytes) allowed",
        )
    quantities = [("spec.redis.persistence.size", spec.redis.persistence.size)]
    for kind in ("requests", "limits"):
        for resource, value in sorted(getattr(spec.resources, kind).items()):
            quantities.append((f"spec.resources.{kind}.{resource}", value))
    for path, value in quantities:
        try:
            parse_quantity(value)
        except ValueError as exc:
            yield Problem(path, str(exc))


def _requests_within_limits(spec: CacheTierSpec) -> Iterator[Problem]:
    """A request above its limit is refused by the API server only when the pod is made."""
    for resource, request in sorted(spec.resources.requests.items()):
        limit = spec.resources.limits.get(resource)
        if limit is not None and parse_quantity(request) > parse_quantity(limit):
            yield Problem(
                f"spec.resources.requests.{resource}",
                f"{request} is more than the limit {limit}",
            )


def _positive_sizes(spec: CacheTierSpec) -> Iterator[Problem]:
    """Quantities that the schema's pattern lets through as zero."""
    persistence = spec.redis.persistence
    needs_volume = profile(spec).runs_redis and persistence.mode != "none"
    if needs_volume and quantity_to_bytes(persistence.size) <= 0:
        yield Problem(
            "spec.redis.persistence.size",
            f"must be more than 0 with persistence mode {persistence.mode}",
        )
    for kind in ("requests", "limits"):
        for resource, value in sorted(getattr(spec.resources, kind).items()):
            if resource == "memory" and parse_quantity(value) <= 0:
                yield Problem(f"spec.resources.{kind}.memory", "must be more than 0")


def _rdb_schedule(spec: CacheTierSpec) -> Iterator[Problem]:
    """Mirror of the CRD rule: rdb persistence needs at least one snapshot rule."""
    persistence = spec.redis.persistence
    if persistence.mode == "rdb" and not persistence.rdb_schedule:
        yield Problem(
            "spec.redis.persistence.rdbSchedule",
            "must not be empty when persistence.mode is rdb",
        )


def _disabled_commands(spec: CacheTierSpec) -> Iterator[Problem]:
    """Known Redis commands, each once (names are case-insensitive).

    An unknown name in an ACL rule stops redis-server from starting.
    """
    seen: set[str] = set()
    for index, command in enumerate(spec.redis.disabled_commands):
        if command.lower() in seen:
            yield Problem(f"spec.redis.disabledCommands[{index}]", f"{command} is listed twice")
        elif not is_known(command):
            yield Problem(
                f"spec.redis.disabledCommands[{index}]",
                f"{command} is not a Redis command (Redis would refuse to start with it in "
                "an ACL rule); subcommands are written CONTAINER|SUB, e.g. CONFIG|SET",
            )
        seen.add(command.lower())


def _redis_config(spec: CacheTierSpec) -> Iterator[Problem]:
    """Directives a user may set: known to Redis (an unknown one stops redis-server from
    starting) and not the operator's (the API server refuses those first)."""
    for name in sorted(spec.redis.config):
        field = f"spec.redis.config.{name}"
        if redis_config.owned(name):
            yield Problem(field, f"{name} is set by the operator, not by redis.config")
        elif redis_config.unknown(name):
            yield Problem(
                field,
                f"{name} is not a redis.conf directive of Redis 7.0 (redis-server would "
                "refuse to start); names are as CONFIG GET prints them",
            )


def _rollout(spec: CacheTierSpec) -> Iterator[Problem]:
    """Steps go strictly up to at most percent, one stepInterval (> 0) apart."""
    rollout = spec.rollout
    steps = rollout.steps
    if any(later <= earlier for earlier, later in pairwise(steps)):
        yield Problem("spec.rollout.steps", f"{steps} must be in strictly increasing order")
    if steps and steps[-1] > rollout.percent:
        yield Problem(
            "spec.rollout.steps",
            f"the last step {steps[-1]} goes past rollout.percent {rollout.percent}",
        )
    if steps and parse_duration(rollout.step_interval) <= 0:
        yield Problem("spec.rollout.stepInterval", "must be more than 0s when steps are set")


def _tls(spec: CacheTierSpec) -> Iterator[Problem]:
    """Mirror of the CRD rules on tls."""
    if spec.tls.enabled and profile(spec).takes_url:
        yield Problem(
            "spec.tls.enabled",
            "must be false when mode is external: the URL's scheme (rediss://) decides TLS",
        )
    elif spec.tls.enabled and not spec.tls.secret_name:
        yield Problem("spec.tls.secretName", "is required when tls.enabled is true")


def _external(spec: CacheTierSpec) -> Iterator[Problem]:
    """Mirror of the CRD rules on mode external and its URL."""
    has_url = spec.external.url_secret_ref is not None
    if profile(spec).takes_url and not has_url:
        yield Problem("spec.external.urlSecretRef", "is required when mode is external")
    if not profile(spec).takes_url and has_url:
        yield Problem("spec.external.urlSecretRef", "is only valid when mode is external")


def _replication_settings(spec: CacheTierSpec) -> Iterator[Problem]:
    """Mirror of the CRD rules of spec.replication."""
    rs = spec.replication
    if profile(spec).sentinel and spec.redis.persistence.mode == "none":
        yield Problem(
            "spec.redis.persistence.mode",
            "mode replication needs aof or rdb: a primary that restarts empty would "
            "otherwise empty its replicas when they resync",
        )
    if not profile(spec).sentinel and rs != CacheTierSpec().replication:
        yield Problem(
            "spec.replication",
            "replication settings apply only to mode: replication (this mode ignores them)",
        )
    if rs.sentinels % 2 == 0:
        yield Problem("spec.replication.sentinels", "must be odd (3, 5 or 7)")
    if rs.quorum is not None and rs.quorum > rs.sentinels:
        yield Problem("spec.replication.quorum", "must be at most replication.sentinels")
    if rs.min_replicas_to_write > rs.replicas:
        yield Problem("spec.replication.minReplicasToWrite", "must be at most replication.replicas")


def _cluster_settings(spec: CacheTierSpec) -> Iterator[Problem]:
    """Mirror of the CRD rule: cluster settings other than the defaults need mode cluster."""
    if not profile(spec).cluster_protocol and spec.cluster != CacheTierSpec().cluster:
        yield Problem(
            "spec.cluster", "cluster settings apply only to mode: cluster (this mode ignores them)"
        )


def _auth(spec: CacheTierSpec) -> Iterator[Problem]:
    """Mirror of the CRD rule: a password Secret needs authentication on."""
    if spec.auth.password_secret_ref is not None and not spec.auth.enabled:
        yield Problem("spec.auth.passwordSecretRef", "needs auth.enabled: true")


def _consumers(spec: CacheTierSpec) -> Iterator[Problem]:
    """Mirror of the CRD rules: a non-empty selector with well-formed requirements."""
    if spec.consumers is None:
        return
    selector = spec.consumers.selector
    if not selector.match_labels and not selector.match_expressions:
        yield Problem(
            "spec.consumers.selector",
            "must not be empty: it would select every workload in the namespace",
        )
    for index, requirement in enumerate(selector.match_expressions):
        wants_values = requirement.operator in ("In", "NotIn")
        if wants_values != bool(requirement.values):
            yield Problem(
                f"spec.consumers.selector.matchExpressions[{index}].values",
                f"must be {'non-empty' if wants_values else 'empty'} "
                f"for operator {requirement.operator}",
            )


def _pod_metadata(spec: CacheTierSpec) -> Iterator[Problem]:
    """The operator's label and annotation prefixes stay the operator's (as the CEL rule)."""
    if any(k.startswith(("cachetier.io/", "app.kubernetes.io/")) for k in spec.pod_metadata.labels):
        yield Problem(
            "spec.podMetadata.labels",
            "podMetadata.labels may not use the cachetier.io/ or app.kubernetes.io/ "
            "prefixes: the operator's selectors and roles use them",
        )
    if any(k.startswith("cachetier.io/") for k in spec.pod_metadata.annotations):
        yield Problem(
            "spec.podMetadata.annotations",
            "podMetadata.annotations may not use the cachetier.io/ prefix",
        )


_CHECKS: tuple[Callable[[CacheTierSpec], Iterator[Problem]], ...] = (
    _memory_fits,
    _pod_metadata,
    _requests_within_limits,
    _positive_sizes,
    _rdb_schedule,
    _disabled_commands,
    _redis_config,
    _rollout,
    _tls,
    _external,
    _cluster_settings,
    _replication_settings,
    _auth,
    _consumers,
)
