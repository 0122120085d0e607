"""Leader election: what a replica may do with the Lease (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cachetier.kube.lease import verdict

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def _lease(holder: str, renewed: datetime | None, duration: int = 15) -> dict[str, object]:
    spec: dict[str, object] = {"holderIdentity": holder, "leaseDurationSeconds": duration}
    if renewed is not None:
        spec["renewTime"] = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"resourceVersion": "7"}, "spec": spec}


def test_a_replica_creates_renews_waits_or_takes_over() -> None:
    assert verdict(None, "a", NOW) == "create"
    assert verdict(_lease("a", NOW), "a", NOW) == "renew"
    assert verdict(_lease("b", NOW - timedelta(seconds=5)), "a", NOW) == "wait"
    # The holder has not renewed within its duration: gone (killed, partitioned).
    assert verdict(_lease("b", NOW - timedelta(seconds=16)), "a", NOW) == "take"
    assert verdict(_lease("b", NOW - timedelta(seconds=16), duration=30), "a", NOW) == "wait"
    # Released at a clean shutdown, or never renewed.
    assert verdict(_lease("", NOW), "a", NOW) == "take"
    assert verdict(_lease("b", None), "a", NOW) == "take"
