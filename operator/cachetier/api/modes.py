"""What each ``spec.mode`` means, as data (pure): the one place mode names are read.

Render, validation and the probe ask a :class:`ModeProfile` what the mode does
(does the operator run Redis? speak the Cluster protocol? take the user's URL?)
instead of comparing ``spec.mode`` with a name; the reconcile's strategies (one
module per mode, ``cachetier.reconcile.modes``) are chosen by the same name. A
new mode is one more profile here and one more strategy module there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cachetier.api.models import CacheTierSpec


@dataclass(frozen=True)
class ModeProfile:
    """The facts of one mode that the pure code needs."""

    name: str
    runs_redis: bool
    """The operator runs the Redis pods (StatefulSet, Services, config, passwords)."""
    cluster_protocol: bool
    """Redis Cluster: cluster-enabled, the bus port, announced names, slots."""
    takes_url: bool
    """The connection comes from the user's URL Secret (``spec.external``)."""
    sentinel: bool
    """A primary with replicas, watched by Redis Sentinel (``spec.replication``)."""
    pods: Callable[[CacheTierSpec], int]
    """How many Redis pods the spec asks for."""


PROFILES: dict[str, ModeProfile] = {
    "standalone": ModeProfile(
        name="standalone",
        runs_redis=True,
        cluster_protocol=False,
        takes_url=False,
        sentinel=False,
        pods=lambda spec: 1,
    ),
    "replication": ModeProfile(
        name="replication",
        runs_redis=True,
        cluster_protocol=False,
        takes_url=False,
        sentinel=True,
        pods=lambda spec: 1 + spec.replication.replicas,
    ),
    "cluster": ModeProfile(
        name="cluster",
        runs_redis=True,
        cluster_protocol=True,
        takes_url=False,
        sentinel=False,
        pods=lambda spec: spec.cluster.shards * (1 + spec.cluster.replicas_per_shard),
    ),
    "external": ModeProfile(
        name="external",
        runs_redis=False,
        cluster_protocol=False,
        takes_url=True,
        sentinel=False,
        pods=lambda spec: 0,
    ),
}


def profile(spec: CacheTierSpec) -> ModeProfile:
    """The profile of ``spec.mode`` (the schema's enum admits only these names)."""
    return PROFILES[spec.mode]
