"""mode replication: the Sentinel StatefulSet and the Services of primary and replicas.

Pure: no I/O, no randomness, no clock. The Redis pods are the tier's usual StatefulSet
(``1 + replicas`` pods, started as plain Redis); the operator forms the first topology
and labels the pods ``cachetier.io/role: primary|replica`` from what the Sentinels
report, so ``<tier>`` (selecting ``role: primary``) follows every failover.
"""

from __future__ import annotations

from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec

from ._conf import (
    AUTH_DIR,
    DATA_DIR,
    HEADER,
    TMP_DIR,
    operator_acl_user,
    probe_acl_user,
    quote_conf,
)
from ._meta import object_meta, stamp
from ._network import clients_and_operator
from ._scheduling import apply_pod_metadata, apply_scheduling
from ._statefulset import REDIS_UID, SECRET_FILE_MODE, probe_login
from ._types import TierRef, TierSecrets

SENTINEL_CONF_DIR = f"{AUTH_DIR}-sentinel"
SENTINEL_CONF_PATH = f"{SENTINEL_CONF_DIR}/{names.SENTINEL_CONF_KEY}"
SENTINEL_RUN_CONF = f"{DATA_DIR}/{names.SENTINEL_CONF_KEY}"

SENTINEL_APP_RULES = (
    "-@all",
    "+auth",
    "+hello",
    "+ping",
    "+role",
    "+client|setname",
    "+client|getname",
    "+client|id",
    "+subscribe",
    "+psubscribe",
    "+unsubscribe",
    "+punsubscribe",
    "+sentinel|get-master-addr-by-name",
    "+sentinel|master",
    "+sentinel|masters",
    "+sentinel|replicas",
    "+sentinel|slaves",
    "+sentinel|sentinels",
    "+sentinel|myid",
)
"""What applications may ask a Sentinel: discovery and its events, never a failover,
a reset or a reconfiguration (those are the operator's user's)."""


def render_sentinel_conf(spec: CacheTierSpec, secrets: TierSecrets) -> str:
    """sentinel.conf (in the auth Secret): port, ACL users, how Sentinels authenticate to
    each other. No ``sentinel monitor`` line: the operator adds the primary at run time
    (``SENTINEL MONITOR``), and again for a Sentinel that was replaced."""
    app = "nopass"
    if spec.auth.enabled and secrets.app_password:
        app = " ".join(quote_conf(">" + pw) for pw in secrets.accepted())
    lines = [
        HEADER,
        f"port {names.SENTINEL_PORT}",
        f"dir {TMP_DIR}",
        'logfile ""',
        f"loglevel {spec.redis.log_level}",
        "# Applications: discovery only.",
        " ".join(["user", "default", "on", app, *SENTINEL_APP_RULES]),
        "# The operator (and the Sentinels among themselves): everything.",
        operator_acl_user(secrets),
        *probe_acl_user(secrets),
        f"sentinel sentinel-user {names.OPERATOR_USER}",
        f"sentinel sentinel-pass {quote_conf(secrets.operator_password)}",
    ]
    return "\n".join(lines) + "\n"


SENTINEL_START = (
    # Sentinel rewrites its config file: it runs from a copy on its own volume, made
    # once per pod (a restarted container keeps what it learnt). It announces its pod
    # address to the other Sentinels, not whatever address its connections leave from.
    f"[ -f {SENTINEL_RUN_CONF} ] || {{ cp {SENTINEL_CONF_PATH} {SENTINEL_RUN_CONF} && "
    f'echo "sentinel announce-ip $POD_IP" >> {SENTINEL_RUN_CONF}; }} && '
    f"exec redis-server {SENTINEL_RUN_CONF} --sentinel"
)


def _sentinel_container(ref: TierRef, spec: CacheTierSpec, probe_user: bool) -> dict[str, Any]:
    user, auth_env = probe_login(ref, probe_user)
    ready = (
        f'redis-cli -h "$POD_IP" -p {names.SENTINEL_PORT} --user {user}'
        " --no-auth-warning ping | grep -q PONG"
    )
    return {
        "name": names.SENTINEL_CONTAINER,
        "image": spec.image,
        "command": ["sh", "-c", SENTINEL_START],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            auth_env,
        ],
        "ports": [
            {
                "name": names.SENTINEL_PORT_NAME,
                "containerPort": names.SENTINEL_PORT,
                "protocol": "TCP",
            }
        ],
        "volumeMounts": [
            {"name": "sentinel-conf", "mountPath": SENTINEL_CONF_DIR, "readOnly": True},
            {"name": "sentinel-data", "mountPath": DATA_DIR},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", ready]},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": names.SENTINEL_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }


def build_sentinel_statefulset(
    ref: TierRef, spec: CacheTierSpec, conf_hash: str, probe_user: bool = True
) -> dict[str, Any]:
    """<tier>-sentinel: ``replication.sentinels`` Redis Sentinel processes.

    ``conf_hash`` (of sentinel.conf) goes on the pod template: a new password rolls them.

    Their state (the primary they watch, the peers they know) lives on an emptyDir: a
    replaced Sentinel starts empty and the operator gives it the primary again.
    """
    selector = names.sentinel_selector_labels(ref.name)
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": REDIS_UID,
            "runAsGroup": REDIS_UID,
            "fsGroup": REDIS_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_sentinel_container(ref, spec, probe_user)],
        "volumes": [
            {
                "name": "sentinel-conf",
                "secret": {
                    "secretName": names.auth_secret(ref.name),
                    "items": [{"key": names.SENTINEL_CONF_KEY, "path": names.SENTINEL_CONF_KEY}],
                    "defaultMode": SECRET_FILE_MODE,
                },
            },
            {"name": "sentinel-data", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    apply_scheduling(pod, spec, selector, spread=False, anti_affinity=True)
    # Not the Redis pods' selector labels: the Redis StatefulSet must never count these.
    labels = {
        **names.common_labels(ref.name),
        **selector,
        names.LABEL_COMPONENT: names.COMPONENT_SENTINEL,
    }
    template: dict[str, Any] = {
        "metadata": {"labels": labels, "annotations": {names.ANNOTATION_CONFIG_HASH: conf_hash}},
        "spec": pod,
    }
    apply_pod_metadata(template["metadata"], spec)
    return stamp(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": object_meta(
                ref, names.sentinel_statefulset(ref.name), names.COMPONENT_SENTINEL
            ),
            "spec": {
                "replicas": spec.replication.sentinels,
                "serviceName": names.sentinel_service(ref.name),
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": selector},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": template,
            },
        }
    )


def build_sentinel_service(ref: TierRef) -> dict[str, Any]:
    """<tier>-sentinel: the Sentinels, for Sentinel-aware clients (and the pods' names)."""
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(
                ref, names.sentinel_service(ref.name), names.COMPONENT_SENTINEL
            ),
            "spec": {
                "type": "ClusterIP",
                "selector": names.sentinel_selector_labels(ref.name),
                "ports": [
                    {
                        "name": names.SENTINEL_PORT_NAME,
                        "port": names.SENTINEL_PORT,
                        "targetPort": names.SENTINEL_PORT_NAME,
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )


def build_replicas_service(ref: TierRef) -> dict[str, Any]:
    """<tier>-replicas: the replicas (read-only traffic)."""
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(ref, names.replicas_service(ref.name), names.COMPONENT_REDIS),
            "spec": {
                "type": "ClusterIP",
                "selector": {
                    **names.selector_labels(ref.name),
                    names.LABEL_ROLE: names.ROLE_REPLICA,
                },
                "ports": [
                    {
                        "name": names.REDIS_PORT_NAME,
                        "port": names.REDIS_PORT,
                        "targetPort": names.REDIS_PORT_NAME,
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )


def build_sentinel_pdb(ref: TierRef) -> dict[str, Any]:
    """<tier>-sentinel: one Sentinel voluntarily disrupted at a time (a quorum stays)."""
    return stamp(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": object_meta(ref, names.sentinel_pdb(ref.name), names.COMPONENT_SENTINEL),
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": names.sentinel_selector_labels(ref.name)},
            },
        }
    )


def build_sentinel_network_policy(
    ref: TierRef, operator_namespace: str = names.OPERATOR_NAMESPACE
) -> dict[str, Any]:
    """<tier>-sentinel: the Sentinel port open to consumers, the operator, the tier's
    Redis pods and the Sentinels themselves."""
    return stamp(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": object_meta(
                ref, names.sentinel_network_policy(ref.name), names.COMPONENT_SENTINEL
            ),
            "spec": {
                "podSelector": {"matchLabels": names.sentinel_selector_labels(ref.name)},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            *clients_and_operator(ref, operator_namespace),
                            {"podSelector": {"matchLabels": names.selector_labels(ref.name)}},
                            {
                                "podSelector": {
                                    "matchLabels": names.sentinel_selector_labels(ref.name)
                                }
                            },
                        ],
                        "ports": [{"protocol": "TCP", "port": names.SENTINEL_PORT}],
                    }
                ],
            },
        }
    )
