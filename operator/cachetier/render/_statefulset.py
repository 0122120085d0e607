"""The Redis StatefulSet: pods, probes, volumes and the restricted security context.

Pure: no I/O, no randomness, no clock.
"""

from __future__ import annotations

from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile

from ._conf import (
    AUTH_DIR,
    CONFIG_DIR,
    DATA_DIR,
    NODES_CONF_PATH,
    TLS_CA_PATH,
    TLS_DIR,
    TMP_DIR,
)
from ._meta import object_meta, stamp
from ._scheduling import apply_pod_metadata, apply_scheduling
from ._types import TierRef

# uid/gid of the redis user in the official (alpine and debian) Redis images.
REDIS_UID = 999
# 0400: kubelet adds group read for fsGroup, so uid 999 can read, nobody else.
SECRET_FILE_MODE = 0o400
TERMINATION_GRACE_SECONDS = 30


def replicas(spec: CacheTierSpec) -> int:
    """Pods of the tier: 1 standalone; shards x (1 + replicasPerShard) in cluster mode."""
    return profile(spec).pods(spec)


def probe_login(ref: TierRef, probe_user: bool) -> tuple[str, dict[str, Any]]:
    """The user the readiness probe logs in as, and the REDISCLI_AUTH env var with its
    password (from the auth Secret, so it is never on a command line). The probe user
    (PING only) on tiers that have one; the operator's user on tiers created before."""
    user, key = (
        (names.PROBE_USER, names.PROBE_PASSWORD_KEY)
        if probe_user
        else (names.OPERATOR_USER, names.OPERATOR_PASSWORD_KEY)
    )
    env = {
        "name": "REDISCLI_AUTH",
        "valueFrom": {"secretKeyRef": {"name": names.auth_secret(ref.name), "key": key}},
    }
    return user, env


def _readiness_command(spec: CacheTierSpec, user: str) -> str:
    tls = f" --tls --cacert {TLS_CA_PATH}" if spec.tls.enabled else ""
    return (
        f'redis-cli -h "$POD_IP" -p {names.REDIS_PORT}{tls} --user {user}'
        " --no-auth-warning ping | grep -q PONG"
    )


def _container(ref: TierRef, spec: CacheTierSpec, probe_user: bool) -> dict[str, Any]:
    user, auth_env = probe_login(ref, probe_user)
    cluster = profile(spec).cluster_protocol
    ports: list[dict[str, Any]] = [
        {"name": names.REDIS_PORT_NAME, "containerPort": names.REDIS_PORT, "protocol": "TCP"}
    ]
    if cluster:
        ports.append(
            {"name": names.BUS_PORT_NAME, "containerPort": names.REDIS_BUS_PORT, "protocol": "TCP"}
        )
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        # Nested inside the ConfigMap mount; kubelet creates the mount points.
        {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
        {"name": names.data_volume(), "mountPath": DATA_DIR},
    ]
    if spec.tls.enabled:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    mounts.append({"name": "tmp", "mountPath": TMP_DIR})
    container: dict[str, Any] = {
        "name": names.REDIS_CONTAINER,
        "image": spec.image,
        "command": ["redis-server", f"{CONFIG_DIR}/{names.REDIS_CONF_KEY}"],
    }
    if cluster:
        # Nodes gossip the address they announce: the pod IP is what peers (and the
        # operator) reach; the pod's stable DNS name behind the headless Service is
        # what clients get from CLUSTER SLOTS/SHARDS and MOVED
        # (cluster-preferred-endpoint-type hostname), so a client that still knows a
        # replaced pod reaches its successor instead of a dead IP.
        container["args"] = [
            "--cluster-announce-ip",
            "$(POD_IP)",
            "--cluster-announce-hostname",
            f"$(POD_NAME).{names.headless_service(ref.name)}.{ref.namespace}.svc",
        ]
    if profile(spec).sentinel:
        # Replicas are known to the primary and the Sentinels by the address they
        # announce: the pod's, not the one their connection happens to leave from.
        container["args"] = ["--replica-announce-ip", "$(POD_IP)"]
    container["env"] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        *(
            [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
            if cluster
            else []
        ),
        auth_env,
    ]
    container["ports"] = ports
    container["volumeMounts"] = mounts
    container["readinessProbe"] = {
        "exec": {"command": ["sh", "-c", _readiness_command(spec, user)]},
        "periodSeconds": 5,
        # Spawning a shell and redis-cli can exceed the 1s default on a busy node.
        "timeoutSeconds": 3,
    }
    # Liveness is only "the port accepts connections": a Redis busy loading a big
    # AOF answers PING with LOADING, and must not be killed for it.
    container["livenessProbe"] = {
        "tcpSocket": {"port": names.REDIS_PORT},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "failureThreshold": 6,
    }
    resources = {
        key: dict(value)
        for key, value in (
            ("requests", spec.resources.requests),
            ("limits", spec.resources.limits),
        )
        if value
    }
    if resources:
        container["resources"] = resources
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    return container


def _volumes(ref: TierRef, spec: CacheTierSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config_map(ref.name)}},
        {
            "name": "auth",
            "secret": {
                "secretName": names.auth_secret(ref.name),
                # Only auth.conf: the raw passwords stay out of the filesystem.
                "items": [{"key": names.AUTH_CONF_KEY, "path": names.AUTH_CONF_KEY}],
                "defaultMode": SECRET_FILE_MODE,
            },
        },
    ]
    if spec.redis.persistence.mode == "none":
        volumes.append({"name": names.data_volume(), "emptyDir": {}})
    if spec.tls.enabled and spec.tls.secret_name:
        volumes.append(
            {
                "name": "tls",
                "secret": {"secretName": spec.tls.secret_name, "defaultMode": SECRET_FILE_MODE},
            }
        )
    volumes.append({"name": "tmp", "emptyDir": {}})
    return volumes


def _pod_spec(ref: TierRef, spec: CacheTierSpec, probe_user: bool) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        # Passes the `restricted` Pod Security Standard.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": REDIS_UID,
            "runAsGroup": REDIS_UID,
            "fsGroup": REDIS_UID,
            # Skip the recursive chown of a large data volume on every start.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    # A master and its replica (a primary and its replicas) on one node would fail
    # together: spread when possible (README "Failure domains").
    many = profile(spec).pods(spec) > 1
    apply_scheduling(pod, spec, names.selector_labels(ref.name), spread=many, anti_affinity=many)
    if profile(spec).cluster_protocol:
        pod["initContainers"] = [_resolve_peers_container(spec)]
    pod["containers"] = [_container(ref, spec, probe_user)]
    pod["volumes"] = _volumes(ref, spec)
    return pod


# Before Redis starts, every node line of nodes.conf that carries an announced hostname
# gets that name's current address. Pods replaced together (new IPs) then find each
# other again without the operator: a node that starts last resolves everybody, the
# ones it reaches learn its new address from its PINGs, and gossip does the rest. A
# name that does not resolve (its pod is not up yet) keeps the old address.
RESOLVE_PEERS_SCRIPT = f"""\
conf={NODES_CONF_PATH}
[ -f "$conf" ] || exit 0
next="$conf.resolved"
: > "$next"
while IFS= read -r line; do
  id=${{line%% *}}; rest=${{line#* }}; addr=${{rest%% *}}; tail=${{rest#* }}
  case "$addr" in
    \\[*) ;;
    *,?*)
      ip=$(getent hosts "${{addr#*,}}" 2>/dev/null | awk 'NR == 1 {{print $1}}')
      if [ -n "$ip" ]; then line="$id $ip:${{addr#*:}} $tail"; fi
      ;;
  esac
  printf '%s\\n' "$line" >> "$next"
done < "$conf"
mv "$next" "$conf"
"""


def _resolve_peers_container(spec: CacheTierSpec) -> dict[str, Any]:
    """Init container of cluster pods: refresh peer addresses in nodes.conf by name."""
    return {
        "name": "resolve-peers",
        "image": spec.image,
        "command": ["sh", "-c", RESOLVE_PEERS_SCRIPT],
        "volumeMounts": [{"name": names.data_volume(), "mountPath": DATA_DIR}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }


def _claim_templates(ref: TierRef, spec: CacheTierSpec) -> list[dict[str, Any]]:
    persistence = spec.redis.persistence
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": persistence.size}},
    }
    if persistence.storage_class_name:
        claim_spec["storageClassName"] = persistence.storage_class_name
    return [
        {
            "metadata": {
                "name": names.data_volume(),
                "labels": names.component_labels(ref.name, names.COMPONENT_REDIS),
            },
            "spec": claim_spec,
        }
    ]


def update_strategy(spec: CacheTierSpec) -> dict[str, str]:
    """Cluster and replication mode: ``OnDelete`` -- the operator replaces the Redis
    pods itself, replicas first and each primary only after a switchover (supervised
    update); standalone (one pod) rolls as the StatefulSet controller does."""
    supervised = profile(spec).cluster_protocol or profile(spec).sentinel
    return {"type": "OnDelete" if supervised else "RollingUpdate"}


def build_statefulset(
    ref: TierRef, spec: CacheTierSpec, config_hash: str, probe_user: bool = True
) -> dict[str, Any]:
    """<tier>: the Redis pods. ``config_hash`` goes on the pod template, so a change
    of redis.conf or auth.conf rolls the pods. ``probe_user``: the readiness probe logs
    in as names.PROBE_USER (False: as the operator, on tiers created before it existed).

    Immutable once created (the API server refuses changes): selector, serviceName,
    podManagementPolicy, volumeClaimTemplates.
    """
    sts_spec: dict[str, Any] = {
        "replicas": replicas(spec),
        "serviceName": names.headless_service(ref.name),
        # Cluster nodes need every peer up to form the cluster; ordered start buys nothing.
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": names.selector_labels(ref.name)},
        "updateStrategy": update_strategy(spec),
        "template": {
            "metadata": {
                "labels": names.component_labels(ref.name, names.COMPONENT_REDIS),
                "annotations": {names.ANNOTATION_CONFIG_HASH: config_hash},
            },
            "spec": _pod_spec(ref, spec, probe_user),
        },
    }
    apply_pod_metadata(sts_spec["template"]["metadata"], spec)
    persistence = spec.redis.persistence
    if persistence.mode != "none":
        sts_spec["volumeClaimTemplates"] = _claim_templates(ref, spec)
        policy = "Retain" if persistence.retain_on_delete else "Delete"
        sts_spec["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": policy,
            "whenScaled": policy,
        }
    return stamp(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": object_meta(ref, names.statefulset(ref.name), names.COMPONENT_REDIS),
            "spec": sts_spec,
        }
    )
