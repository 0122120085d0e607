"""The supervised rolling update of a cluster tier (pure): replicas first, one at a time,
only on a settled cluster; a master only after it handed over; halted when a pod does
not come back."""

from __future__ import annotations

from typing import Any

from cachetier import names
from cachetier.reconcile.modes._update import REVISION_LABEL, UPDATE_STALL_SECONDS
from cachetier.reconcile.modes.cluster import supervise_update
from cachetier.reconcile.observed import Observed
from cachetier.render import TierRef
from cachetier.topology import NodeAddress

NOW = "2026-12-03T10:00:00Z"
LATER = "2026-12-03T10:10:00Z"


def _pod(i: int, revision: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"c-{i}", "labels": {REVISION_LABEL: revision}}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"metadata": meta, "status": {"podIP": f"10.0.0.{i}"}}


def _members(masters: int = 3) -> list[dict[str, Any]]:
    out = []
    for i in range(masters):
        out.append(
            {"address": f"10.0.0.{i}:6379", "role": "master", "id": f"m{i}", "healthy": True}
        )
    for i in range(masters):
        out.append({
            "address": f"10.0.0.{masters + i}:6379", "role": "replica", "id": f"r{i}",
            "masterId": f"m{i}", "healthy": True,
        })  # fmt: skip
    return out


def _obs(revisions: list[str], status: dict[str, Any] | None = None, **pod_kw: Any) -> Observed:
    sts = {
        "metadata": {"name": "c"},
        "spec": {"updateStrategy": {"type": "OnDelete"}},
        "status": {"updateRevision": "new", "currentRevision": "old"},
    }
    return Observed(
        tier={"metadata": {"name": "c", "namespace": "ns"}, "status": status or {}},
        ref=TierRef("c", "ns", "uid"),
        spec=None,
        problems=(),
        children={("StatefulSet", names.statefulset("c")): sts},
        pods=tuple(_pod(i, r) for i, r in enumerate(revisions)),
    )


def test_replicas_go_first_one_at_a_time() -> None:
    step = supervise_update(_obs(["old"] * 6), _members(), True, 6, NOW)
    assert step.delete == "c-3" and step.handover is None
    assert step.status == {
        "revision": "new",
        "updated": 0,
        "total": 6,
        "current": "c-3",
        "since": NOW,
    }


def test_nothing_is_replaced_while_the_cluster_is_not_settled() -> None:
    status = {"update": {"revision": "new", "current": "c-3", "since": NOW}}
    step = supervise_update(
        _obs(["old"] * 3 + ["new"] + ["old"] * 2, status), _members(), False, 6, NOW
    )
    assert step.delete is None and step.handover is None and not step.stalled
    assert step.status is not None and step.status["updated"] == 1


def test_a_master_hands_over_before_its_pod_is_replaced() -> None:
    step = supervise_update(_obs(["old"] * 3 + ["new"] * 3), _members(), True, 6, NOW)
    assert step.delete is None
    assert step.handover == NodeAddress("10.0.0.0", 6379)
    # Switched over: it is a replica now, so it is the next pod replaced.
    members = _members()
    members[0]["role"], members[3]["role"] = "replica", "master"
    members[0]["masterId"] = "r0"
    step = supervise_update(_obs(["old"] * 3 + ["new"] * 3), members, True, 6, NOW)
    assert step.delete == "c-0"


def test_a_master_without_replicas_is_restarted_in_place() -> None:
    members = [m for m in _members() if m["role"] == "master"]
    step = supervise_update(_obs(["old"] * 3), members, True, 3, NOW)
    assert step.delete == "c-0"


def test_a_pod_that_does_not_come_back_halts_the_update() -> None:
    status = {"update": {"revision": "new", "current": "c-3", "since": NOW}}
    obs = _obs(["old"] * 6, status)
    step = supervise_update(obs, _members(), False, 6, LATER)
    assert UPDATE_STALL_SECONDS < 600
    assert step.stalled and "c-3" in step.stalled and step.delete is None


def test_done_when_every_pod_runs_the_new_revision() -> None:
    status = {"update": {"revision": "new", "updated": 5, "total": 6}}
    step = supervise_update(_obs(["new"] * 6, status), _members(), True, 6, NOW)
    assert step.status == {"revision": "new", "updated": 6, "total": 6}
    assert step.delete is None and step.handover is None


def test_a_new_tier_has_no_update_to_show() -> None:
    assert supervise_update(_obs(["new"] * 6), _members(), True, 6, NOW).status is None
