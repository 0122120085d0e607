"""The <tier>-auth Secret and the <tier>-config ConfigMap.

Pure: no I/O, no randomness, no clock.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile

from ._conf import render_auth_conf, render_redis_conf
from ._meta import object_meta, secret_data, stamp
from ._replication import render_sentinel_conf
from ._types import TierRef, TierSecrets


def config_hash(redis_conf: str, auth_conf: str) -> str:
    """sha256 (hex) over redis.conf and auth.conf, for the pod-template annotation.

    Any change of config or of a password changes it and so rolls the pods.
    auth.conf always holds the generated operator password, so this digest does
    not let anyone test guesses of the application password.
    """
    digest = hashlib.sha256()
    for part in (redis_conf, auth_conf):
        data = part.encode("utf-8")
        # Length-prefixed, so moving text from one file to the other changes the hash.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _operator_values(secrets: TierSecrets) -> dict[str, str]:
    """The operator's and the probe user's passwords, and an operator password
    rotation's state, as <tier>-auth (and its recovery copy) keep them."""
    values = {names.OPERATOR_PASSWORD_KEY: secrets.operator_password}
    if secrets.hash_operator_password:
        values[names.HASH_OPERATOR_PASSWORD_KEY] = secrets.hash_operator_password
    if secrets.next_operator_password:
        values[names.NEXT_OPERATOR_PASSWORD_KEY] = secrets.next_operator_password
    if secrets.previous_operator_password:
        values[names.PREVIOUS_OPERATOR_PASSWORD_KEY] = secrets.previous_operator_password
    if secrets.probe_password:
        values[names.PROBE_PASSWORD_KEY] = secrets.probe_password
    return values


def build_auth_secret(ref: TierRef, spec: CacheTierSpec, secrets: TierSecrets) -> dict[str, Any]:
    """<tier>-auth: operator password, auth.conf (sentinel.conf), the application
    password in use (generated, or a copy of spec.auth.passwordSecretRef's), the one
    the config hash is computed with, and during a rotation the one being retired.
    """
    values: dict[str, str] = {}
    if spec.auth.enabled and secrets.app_password:
        # A passwordSecretRef's password too: the copy in use, so that a change of the
        # user's Secret is seen (and rotated to) rather than switched to at once.
        values[names.AUTH_PASSWORD_KEY] = secrets.app_password
        values[names.HASH_PASSWORD_KEY] = secrets.hash_password or secrets.app_password
        if secrets.previous_app_password:
            values[names.PREVIOUS_PASSWORD_KEY] = secrets.previous_app_password
    values.update(_operator_values(secrets))
    values[names.AUTH_CONF_KEY] = render_auth_conf(spec, secrets)
    if profile(spec).sentinel:
        values[names.SENTINEL_CONF_KEY] = render_sentinel_conf(spec, secrets)
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": object_meta(ref, names.auth_secret(ref.name), names.COMPONENT_AUTH),
            "type": "Opaque",
            "data": secret_data(values),
        }
    )


def build_auth_recovery_secret(
    ref: TierRef, spec: CacheTierSpec, secrets: TierSecrets
) -> dict[str, Any]:
    """<tier>-auth-recovery: the operator's copy of the passwords <tier>-auth holds.

    A deleted <tier>-auth is re-created from it with the same passwords, so a person
    deleting the Secret never changes what consumers authenticate with.
    """
    values: dict[str, str] = {}
    if spec.auth.enabled and secrets.app_password_generated and secrets.app_password:
        values[names.AUTH_PASSWORD_KEY] = secrets.app_password
        values[names.HASH_PASSWORD_KEY] = secrets.hash_password or secrets.app_password
    values.update(_operator_values(secrets))
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": object_meta(
                ref, names.auth_recovery_secret(ref.name), names.COMPONENT_AUTH
            ),
            "type": "Opaque",
            "data": secret_data(values),
        }
    )


def build_config_map(ref: TierRef, spec: CacheTierSpec) -> dict[str, Any]:
    """<tier>-config with redis.conf (no secrets in it)."""
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": object_meta(ref, names.config_map(ref.name), names.COMPONENT_CONFIG),
            "data": {names.REDIS_CONF_KEY: render_redis_conf(spec)},
        }
    )
