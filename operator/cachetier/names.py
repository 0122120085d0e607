"""Every derived name, label and annotation of CacheTier, made in one place.

Pure: no I/O. Nothing else in the package formats ``f"{tier}-..."``.
"""

from __future__ import annotations

GROUP = "cachetier.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CacheTier"
PLURAL = "cachetiers"
SINGULAR = "cachetier"
SHORT_NAMES = ("ct",)

FIELD_MANAGER = "cachetier-operator"
CLI_FIELD_MANAGER = "cachetier-cli"
FINALIZER = f"{GROUP}/finalizer"

# Labels every object the operator makes carries.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
APP_NAME = "cachetier"
MANAGED_BY = "cachetier-operator"

# Annotations.
ANNOTATION_TIER = f"{GROUP}/tier"
ANNOTATION_REDIS_ENABLED = f"{GROUP}/redis-enabled"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
# On a CacheTier: "true" holds rollout.steps where they are (set by `cachetier rollout pause`).
ANNOTATION_ROLLOUT_PAUSED = f"{GROUP}/rollout-paused"
ANNOTATION_REARM = f"{GROUP}/rearm"
ANNOTATION_ROTATE_PASSWORD = f"{GROUP}/rotate-password"
ANNOTATION_ROTATE_OPERATOR_PASSWORD = f"{GROUP}/rotate-operator-password"
"""On a CacheTier: any new value asks for a new application password (GitOps)."""
ANNOTATION_AUTH_REVISION = f"{GROUP}/auth-revision"
"""On a consumer's pod template: which password generation it runs with (a new value
rolls the workload, so its pods start with the new password)."""
"""On a tier: a new value re-arms the rollout after an automatic rollback, without a
spec change (``cachetier rollout set`` writes it); the honoured value is kept in
``status.rollout.rearm``."""

# Env vars injected into consumers.
ENV_REDIS_URL = "REDIS_URL"
ENV_REDIS_ENABLED = "REDIS_ENABLED"
ENV_REDIS_FLAG_FILE = "REDIS_FLAG_FILE"
ENV_REDIS_PASSWORD = "REDIS_PASSWORD"
"""The password alone (secretKeyRef, optional): cluster clients need it per node."""
ENV_REDIS_MODE = "REDIS_MODE"
"""standalone | cluster | external (secretKeyRef): which client to build."""

# Keys of the Secrets.
AUTH_PASSWORD_KEY = "password"
CONNECTION_KEYS = ("url", "uri", "host", "port", "password", "type", "provider")

REDIS_PORT = 6379
REDIS_BUS_PORT = 16379
REDIS_CONTAINER = "redis"
SENTINEL_PORT = 26379
SENTINEL_PORT_NAME = "sentinel"
SENTINEL_CONTAINER = "sentinel"
SENTINEL_CONF_KEY = "sentinel.conf"
LABEL_ROLE = f"{GROUP}/role"
"""On the Redis pods of a replication tier: ``primary`` or ``replica`` (the operator
sets it from what a quorum of Sentinels reports)."""
ROLE_PRIMARY = "primary"
ROLE_REPLICA = "replica"
SENTINEL_APP_NAME = "cachetier-sentinel"
CONNECTION_SENTINELS_KEY = "sentinels"
CONNECTION_MASTER_NAME_KEY = "masterName"

# Keys of <tier>-auth besides AUTH_PASSWORD_KEY, and of <tier>-config.
OPERATOR_PASSWORD_KEY = "operator-password"
PREVIOUS_PASSWORD_KEY = "previous-password"
"""<tier>-auth, during a password rotation only: the application password being retired."""
HASH_PASSWORD_KEY = "config-hash-password"
"""<tier>-auth: the application password the pod template's config hash is computed
with (the first one): a rotated password is applied live, it restarts no pod."""
NEXT_OPERATOR_PASSWORD_KEY = "next-operator-password"
"""<tier>-auth, while an operator password rotation adds the new one to every server:
the new operator password (``operator-password`` is the one the operator still uses)."""
PREVIOUS_OPERATOR_PASSWORD_KEY = "previous-operator-password"
"""<tier>-auth, once the operator uses the new password: the one being retired."""
HASH_OPERATOR_PASSWORD_KEY = "config-hash-operator-password"
"""<tier>-auth: the operator password the config hash is computed with (the first)."""
PROBE_PASSWORD_KEY = "probe-password"
"""<tier>-auth: the password of the probe user (names.PROBE_USER), which only PINGs."""
AUTH_CONF_KEY = "auth.conf"
REDIS_CONF_KEY = "redis.conf"

# Connection Secret: keys beyond the servicebinding.io ones, their fixed values,
# and the Secret type (servicebinding.io convention: "servicebinding.io/<type>").
CONNECTION_MODE_KEY = "mode"
CONNECTION_USERNAME_KEY = "username"
CONNECTION_TYPE = "redis"
CONNECTION_PROVIDER = APP_NAME
CONNECTION_SECRET_TYPE = f"servicebinding.io/{CONNECTION_TYPE}"

# The operator's own ACL user in every Redis it runs: probes, cluster formation,
# replication (masteruser). Not restricted by spec.redis.disabledCommands.
OPERATOR_USER = "cachetier-operator"
# The readiness probes' ACL user: PING only. Its password reaches the containers as an
# env var (fixed at start) and never rotates, so the operator's own password can.
PROBE_USER = "cachetier-probe"
# app.kubernetes.io/name of the operator's own pods; the NetworkPolicy lets them in.
OPERATOR_APP_NAME = "cachetier-operator"
OPERATOR_NAMESPACE = "cachetier-system"
"""Where manifests/ installs the operator; ``CACHETIER_OPERATOR_NAMESPACE`` (the pod's own
namespace, from the downward API) overrides it. The NetworkPolicy admits the operator's
pods of that namespace only."""

# Values of LABEL_COMPONENT.
COMPONENT_REDIS = "redis"
COMPONENT_SENTINEL = "sentinel"
COMPONENT_AUTH = "auth"
COMPONENT_CONNECTION = "connection"
COMPONENT_CONFIG = "config"

# Port names (container ports and Service ports).
REDIS_PORT_NAME = "redis"
BUS_PORT_NAME = "bus"


def auth_secret(tier: str) -> str:
    """Name of the Secret that holds the generated password."""
    return f"{tier}-auth"


def auth_recovery_secret(tier: str) -> str:
    """Name of the operator's copy of <tier>-auth's passwords (restores a deleted one)."""
    return f"{tier}-auth-recovery"


def connection_secret(tier: str) -> str:
    """Name of the Secret consumers read REDIS_URL from."""
    return f"{tier}-connection"


def config_map(tier: str) -> str:
    """Name of the ConfigMap holding redis.conf."""
    return f"{tier}-config"


def client_service(tier: str) -> str:
    """Name of the client Service."""
    return tier


def headless_service(tier: str) -> str:
    """Name of the headless Service that gives pods stable DNS names."""
    return f"{tier}-headless"


def statefulset(tier: str) -> str:
    """Name of the Redis StatefulSet."""
    return tier


def pdb(tier: str) -> str:
    """Name of the PodDisruptionBudget."""
    return tier


def network_policy(tier: str) -> str:
    """Name of the NetworkPolicy guarding the Redis port."""
    return tier


def sentinel_statefulset(tier: str) -> str:
    """StatefulSet of a replication tier's Sentinels."""
    return f"{tier}-sentinel"


def sentinel_service(tier: str) -> str:
    """Service of a replication tier's Sentinels (for Sentinel-aware clients)."""
    return f"{tier}-sentinel"


def sentinel_pdb(tier: str) -> str:
    """PodDisruptionBudget of a replication tier's Sentinels."""
    return f"{tier}-sentinel"


def sentinel_network_policy(tier: str) -> str:
    """NetworkPolicy of a replication tier's Sentinels."""
    return f"{tier}-sentinel"


def replicas_service(tier: str) -> str:
    """Service of a replication tier's replicas (reads)."""
    return f"{tier}-replicas"


def sentinel_master(tier: str) -> str:
    """The name the Sentinels know the tier's primary by (``masterName``)."""
    return tier


def sentinel_selector_labels(tier: str) -> dict[str, str]:
    """Labels that select a replication tier's Sentinel pods (never its Redis pods)."""
    return {LABEL_NAME: SENTINEL_APP_NAME, LABEL_INSTANCE: tier}


def data_volume() -> str:
    """Name of the PVC template / data volume."""
    return "data"


def claim(tier: str, ordinal: int) -> str:
    """The PVC the StatefulSet makes for pod ``ordinal``: <template>-<statefulset>-<n>."""
    return f"{data_volume()}-{statefulset(tier)}-{ordinal}"


def service_host(tier: str, namespace: str) -> str:
    """In-cluster DNS name of the client Service."""
    return f"{client_service(tier)}.{namespace}.svc"


def selector_labels(tier: str) -> dict[str, str]:
    """Labels that select the tier's Redis pods (immutable once created)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: tier}


def common_labels(tier: str) -> dict[str, str]:
    """Labels on every object the operator makes for ``tier``."""
    return {**selector_labels(tier), LABEL_MANAGED_BY: MANAGED_BY}


def component_labels(tier: str, component: str) -> dict[str, str]:
    """common_labels plus app.kubernetes.io/component."""
    return {**common_labels(tier), LABEL_COMPONENT: component}


def client_label(tier: str) -> str:
    """Label key the operator puts on consumer pods; the NetworkPolicy admits them.

    The name part of a label key is at most 63 characters, so this is valid only
    for tier names of that length or less.
    """
    return f"client.{GROUP}/{tier}"


def operator_pod_labels() -> dict[str, str]:
    """Labels that select the operator's own pods (with its namespace, in a NetworkPolicy)."""
    return {LABEL_NAME: OPERATOR_APP_NAME}
