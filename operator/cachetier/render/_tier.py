"""render_tier: every desired child object of a CacheTier, in apply order.

Pure: no I/O, no randomness, no clock.
"""

from __future__ import annotations

from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile

from ._conf import render_auth_conf, render_redis_conf
from ._config import (
    build_auth_recovery_secret,
    build_auth_secret,
    build_config_map,
    config_hash,
)
from ._connection import build_connection_secret, connection_url
from ._network import (
    build_client_service,
    build_headless_service,
    build_network_policy,
    build_pdb,
)
from ._replication import (
    build_replicas_service,
    build_sentinel_network_policy,
    build_sentinel_pdb,
    build_sentinel_service,
    build_sentinel_statefulset,
    render_sentinel_conf,
)
from ._statefulset import build_statefulset
from ._types import TierRef, TierSecrets


def render_tier(
    ref: TierRef,
    spec: CacheTierSpec,
    secrets: TierSecrets,
    operator_namespace: str = names.OPERATOR_NAMESPACE,
) -> list[dict[str, Any]]:
    """Every desired child object for ``spec.mode``, as dicts ready for server-side apply.

    Order: Secrets (auth, its recovery copy, connection), ConfigMap, Services,
    StatefulSet, PodDisruptionBudget,
    NetworkPolicy (what each one references exists before it); mode replication adds
    the replicas' Service and the Sentinels' Service, StatefulSet, PDB and
    NetworkPolicy. Each object carries
    the common labels, a controller ownerReference to the CacheTier and the
    names.ANNOTATION_SPEC_HASH annotation. mode external returns [] (the I/O layer
    builds its connection Secret with build_external_connection_secret).

    Raises ValueError when auth is enabled and ``secrets.app_password`` is missing.
    """
    if not profile(spec).runs_redis:
        return []
    password = secrets.connection_password if spec.auth.enabled else None
    # The pods' config hash sees the first application password only: a rotated one is
    # applied live (ACL SETUSER) and restarts nothing; a pod that restarts reads the
    # auth.conf of the Secret, with every password accepted at that moment.
    auth_conf = render_auth_conf(spec, secrets.for_hash())
    objects = [
        build_auth_secret(ref, spec, secrets),
        build_auth_recovery_secret(ref, spec, secrets),
        build_connection_secret(
            ref,
            url=connection_url(ref, spec, password),
            host=names.service_host(ref.name, ref.namespace),
            port=names.REDIS_PORT,
            password=password,
            mode=spec.mode,
            extra=_sentinel_keys(ref, spec),
        ),
        build_config_map(ref, spec),
        build_client_service(ref, spec),
        build_headless_service(ref, spec),
        # The hash leaves out what is applied live (CONFIG SET), so changing it
        # restarts no pod; the ConfigMap has it for the next start.
        build_statefulset(
            ref,
            spec,
            config_hash(render_redis_conf(spec, live_user_settings=False), auth_conf),
            probe_user=secrets.probe_password is not None,
        ),
        build_pdb(ref),
        build_network_policy(ref, spec, operator_namespace),
    ]
    if profile(spec).sentinel:
        sentinel_conf = render_sentinel_conf(spec, secrets.for_hash())
        objects += [
            build_replicas_service(ref),
            build_sentinel_service(ref),
            build_sentinel_statefulset(
                ref,
                spec,
                config_hash(sentinel_conf, ""),
                probe_user=secrets.probe_password is not None,
            ),
            build_sentinel_pdb(ref),
            build_sentinel_network_policy(ref, operator_namespace),
        ]
    return objects


def _sentinel_keys(ref: TierRef, spec: CacheTierSpec) -> dict[str, str]:
    """Connection Secret keys for Sentinel-aware clients (mode replication)."""
    if not profile(spec).sentinel:
        return {}
    host = f"{names.sentinel_service(ref.name)}.{ref.namespace}.svc"
    return {
        names.CONNECTION_SENTINELS_KEY: f"{host}:{names.SENTINEL_PORT}",
        names.CONNECTION_MASTER_NAME_KEY: names.sentinel_master(ref.name),
    }
