"""Redis Cluster topology as data: parse CLUSTER NODES, plan the next safe steps.

Pure: nothing in this package performs I/O or imports a Redis client. The
executor in `cachetier.redis.cluster` observes nodes, calls
`plan_next_steps`, runs the steps, and repeats.
"""

from cachetier.topology.model import DesiredLayout, Domain, NodeObservation, Observed
from cachetier.topology.nodes import ClusterNode, NodeAddress, parse_cluster_nodes
from cachetier.topology.planner import DEFAULT_SLOTS_PER_STEP, plan_next_steps
from cachetier.topology.slots import TOTAL_SLOTS, SlotRange, quotas
from cachetier.topology.steps import (
    AddSlots,
    Blocked,
    Failover,
    Forget,
    Meet,
    MigrateSlots,
    Plan,
    Replicate,
    Step,
)
from cachetier.topology.summary import ClusterSummary, NodeSummary, summarize
from cachetier.topology.view import ClusterView, Member, build_view

__all__ = [
    "DEFAULT_SLOTS_PER_STEP",
    "TOTAL_SLOTS",
    "AddSlots",
    "Blocked",
    "ClusterNode",
    "ClusterSummary",
    "ClusterView",
    "DesiredLayout",
    "Domain",
    "Failover",
    "Forget",
    "Meet",
    "Member",
    "MigrateSlots",
    "NodeAddress",
    "NodeObservation",
    "NodeSummary",
    "Observed",
    "Plan",
    "Replicate",
    "SlotRange",
    "Step",
    "build_view",
    "parse_cluster_nodes",
    "plan_next_steps",
    "quotas",
    "summarize",
]
