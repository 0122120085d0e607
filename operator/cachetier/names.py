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

# Env vars injected into consumers.
ENV_REDIS_URL = "REDIS_URL"
ENV_REDIS_ENABLED = "REDIS_ENABLED"
ENV_REDIS_FLAG_FILE = "REDIS_FLAG_FILE"

# Keys of the Secrets.
AUTH_PASSWORD_KEY = "password"
CONNECTION_KEYS = ("url", "uri", "host", "port", "password", "type", "provider")

REDIS_PORT = 6379
REDIS_BUS_PORT = 16379
REDIS_CONTAINER = "redis"


def auth_secret(tier: str) -> str:
    """Name of the Secret that holds the generated password."""
    return f"{tier}-auth"


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


def data_volume() -> str:
    """Name of the PVC template / data volume."""
    return "data"


def service_host(tier: str, namespace: str) -> str:
    """In-cluster DNS name of the client Service."""
    return f"{client_service(tier)}.{namespace}.svc"


def selector_labels(tier: str) -> dict[str, str]:
    """Labels that select the tier's Redis pods (immutable once created)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: tier}


def common_labels(tier: str) -> dict[str, str]:
    """Labels on every object the operator makes for ``tier``."""
    return {**selector_labels(tier), LABEL_MANAGED_BY: MANAGED_BY}
