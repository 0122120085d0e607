"""spec.scheduling and spec.podMetadata on a pod template, with the spreading defaults.

Unless ``affinity.podAntiAffinity`` is set: the pods prefer not to share a node with
another pod of the same kind of the tier (preferred pod anti-affinity on
``kubernetes.io/hostname``); a user's ``nodeAffinity`` or ``podAffinity`` is added to
that default, ``podAntiAffinity: {}`` turns it off. Unset
``topologySpreadConstraints``: in modes with more than one Redis pod, the Redis pods
spread across ``kubernetes.io/hostname`` and ``topology.kubernetes.io/zone`` (maxSkew 1,
``ScheduleAnyway``: a cluster with fewer nodes or no zones still schedules them). What
the user sets replaces the default; ``[]`` turns spreading off.
"""

from __future__ import annotations

from typing import Any

from cachetier.api.models import CacheTierSpec

HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def _anti_affinity(selector: dict[str, str]) -> dict[str, Any]:
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": HOSTNAME,
                        "labelSelector": {"matchLabels": dict(selector)},
                    },
                }
            ]
        }
    }


def apply_scheduling(
    pod: dict[str, Any],
    spec: CacheTierSpec,
    selector: dict[str, str],
    *,
    spread: bool,
    anti_affinity: bool,
) -> None:
    """Set the scheduling fields of ``pod`` (a pod spec) from ``spec.scheduling``.

    ``selector``: the labels of this pod kind (the default rules count these pods);
    ``spread``/``anti_affinity``: whether the defaults apply to this pod kind.
    """
    s = spec.scheduling
    if s.node_selector:
        pod["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        pod["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in s.tolerations
        ]
    if s.priority_class_name:
        pod["priorityClassName"] = s.priority_class_name
    affinity = dict(_anti_affinity(selector)) if anti_affinity else {}
    if s.affinity is not None:
        # Per kind: a nodeAffinity of the user's keeps the default podAntiAffinity; a
        # podAntiAffinity of theirs (``{}`` too) replaces it.
        affinity.update(s.affinity)
        affinity = {k: v for k, v in affinity.items() if v != {}}
    if affinity:
        pod["affinity"] = affinity
    constraints: list[dict[str, Any]] = []
    if s.topology_spread_constraints is not None:
        for c in s.topology_spread_constraints:
            entry = c.model_dump(mode="json", by_alias=True, exclude_none=True)
            if c.label_selector is None:
                entry["labelSelector"] = {"matchLabels": dict(selector)}
            constraints.append(entry)
    elif spread:
        constraints = [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(selector)},
            }
            for key in (HOSTNAME, ZONE)
        ]
    if constraints:
        pod["topologySpreadConstraints"] = constraints


def apply_pod_metadata(metadata: dict[str, Any], spec: CacheTierSpec) -> None:
    """Add ``spec.podMetadata`` to a pod template's metadata (the operator's keys win)."""
    extra = spec.pod_metadata
    if extra.labels:
        metadata["labels"] = {**extra.labels, **metadata.get("labels", {})}
    if extra.annotations:
        metadata["annotations"] = {**extra.annotations, **metadata.get("annotations", {})}
