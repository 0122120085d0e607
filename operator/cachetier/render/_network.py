"""Services, PodDisruptionBudget and NetworkPolicy of a tier.

Pure: no I/O, no randomness, no clock.
"""

from __future__ import annotations

from typing import Any

from cachetier import names
from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import profile

from ._meta import object_meta, stamp
from ._types import TierRef


def _service_ports(spec: CacheTierSpec, *, bus: bool) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = [
        {
            "name": names.REDIS_PORT_NAME,
            "port": names.REDIS_PORT,
            "targetPort": names.REDIS_PORT_NAME,
            "protocol": "TCP",
        }
    ]
    if bus and profile(spec).cluster_protocol:
        ports.append(
            {
                "name": names.BUS_PORT_NAME,
                "port": names.REDIS_BUS_PORT,
                "targetPort": names.BUS_PORT_NAME,
                "protocol": "TCP",
            }
        )
    return ports


def build_client_service(ref: TierRef, spec: CacheTierSpec) -> dict[str, Any]:
    """<tier>: the ClusterIP Service clients connect to (a seed node in cluster mode;
    the pod labelled primary in replication mode, so it follows every failover)."""
    selector = names.selector_labels(ref.name)
    if profile(spec).sentinel:
        selector = {**selector, names.LABEL_ROLE: names.ROLE_PRIMARY}
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(ref, names.client_service(ref.name), names.COMPONENT_REDIS),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": _service_ports(spec, bus=False),
            },
        }
    )


def build_headless_service(ref: TierRef, spec: CacheTierSpec) -> dict[str, Any]:
    """<tier>-headless: stable per-pod DNS names for the StatefulSet.

    publishNotReadyAddresses, so peers (cluster bus, replication, the operator
    forming the cluster) still resolve a pod that is starting or failing its probe.
    """
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(ref, names.headless_service(ref.name), names.COMPONENT_REDIS),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": names.selector_labels(ref.name),
                "ports": _service_ports(spec, bus=True),
            },
        }
    )


def build_pdb(ref: TierRef) -> dict[str, Any]:
    """<tier>: at most one Redis pod voluntarily disrupted at a time.

    maxUnavailable rather than minAvailable: a minAvailable of 1 over a single
    standalone pod would block every node drain forever, while maxUnavailable 1
    lets drains through and still keeps a cluster from losing two nodes at once.
    """
    return stamp(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": object_meta(ref, names.pdb(ref.name), names.COMPONENT_REDIS),
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": names.selector_labels(ref.name)},
            },
        }
    )


def clients_and_operator(ref: TierRef, operator_namespace: str) -> list[dict[str, Any]]:
    """NetworkPolicy peers every port of a tier admits: its consumers (the pods carrying
    names.client_label(tier)) and the operator (its namespace *and* its pod label: a
    label alone is one anybody may set on a pod in any namespace)."""
    return [
        {"podSelector": {"matchLabels": {names.client_label(ref.name): "true"}}},
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
            },
            "podSelector": {"matchLabels": names.operator_pod_labels()},
        },
    ]


def build_network_policy(
    ref: TierRef, spec: CacheTierSpec, operator_namespace: str = names.OPERATOR_NAMESPACE
) -> dict[str, Any]:
    """<tier>: the Redis port is open only to consumers, the operator and the tier itself.

    Consumers are the pods carrying names.client_label(tier) (the operator injects
    it into their templates). The operator is admitted by its namespace *and* its pod
    label: a label alone is one anybody may set on a pod in any namespace. The
    cluster bus port is open to the tier's own pods only.
    """

    def own_pods() -> dict[str, Any]:
        return {"podSelector": {"matchLabels": names.selector_labels(ref.name)}}

    rules: list[dict[str, Any]] = [
        {
            "from": [
                *clients_and_operator(ref, operator_namespace),
                own_pods(),
                *(
                    [{"podSelector": {"matchLabels": names.sentinel_selector_labels(ref.name)}}]
                    if profile(spec).sentinel
                    else []
                ),
            ],
            "ports": [{"protocol": "TCP", "port": names.REDIS_PORT}],
        }
    ]
    if profile(spec).cluster_protocol:
        rules.append(
            {"from": [own_pods()], "ports": [{"protocol": "TCP", "port": names.REDIS_BUS_PORT}]}
        )
    return stamp(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": object_meta(ref, names.network_policy(ref.name), names.COMPONENT_REDIS),
            "spec": {
                "podSelector": {"matchLabels": names.selector_labels(ref.name)},
                "policyTypes": ["Ingress"],
                "ingress": rules,
            },
        }
    )
