"""Drift of live objects from what the operator applied (pure ``render.drift``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cachetier.render import drift
from tests.unit.test_render_tier import SPECS, _render


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the API server returns it: defaults, status, server fields added."""
    live = copy.deepcopy(obj)
    live["metadata"].update(uid="u", resourceVersion="7", creationTimestamp="2026-12-01T00:00:00Z")
    live["metadata"]["managedFields"] = [{"manager": "cachetier-operator"}]
    live["status"] = {"replicas": 1, "observedGeneration": 3}
    spec = live.get("spec") or {}
    if live["kind"] == "Service":
        spec.setdefault("clusterIP", "10.0.0.12")
        for port in spec["ports"]:
            port.setdefault("protocol", "TCP")
    if live["kind"] == "StatefulSet":
        spec["revisionHistoryLimit"] = 10
        pod = spec["template"]["spec"]
        pod["dnsPolicy"] = "ClusterFirst"
        for container in pod["containers"]:
            container["terminationMessagePath"] = "/dev/termination-log"
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("fieldRef")
                if ref:
                    ref["apiVersion"] = "v1"
            for port in container.get("ports") or []:
                port.setdefault("protocol", "TCP")
        for claim in spec.get("volumeClaimTemplates") or []:
            claim["status"] = {"phase": "Pending"}
    return live


@pytest.mark.parametrize("raw", SPECS.values(), ids=SPECS.keys())
def test_what_the_api_server_adds_is_not_drift(raw: dict[str, Any]) -> None:
    for obj in _render(raw):
        assert drift(obj, as_stored(obj)) is None, obj["kind"]


def sts_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "StatefulSet")


def test_hand_edits_of_owned_fields_are_drift() -> None:
    sts = sts_of(_render({}))
    scaled = as_stored(sts)
    scaled["spec"]["replicas"] = 3
    assert drift(sts, scaled) == "spec.replicas"
    scaled["spec"]["replicas"] = 0
    assert drift(sts, scaled) == "spec.replicas"
    edited = as_stored(sts)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "redis:6"
    assert drift(sts, edited) == "spec.template.spec.containers[redis].image"
    gone = as_stored(sts)
    gone["spec"]["template"]["spec"]["containers"][0]["env"].pop(0)
    assert drift(sts, gone) is not None
    relabelled = as_stored(sts)
    relabelled["metadata"]["labels"].pop("app.kubernetes.io/managed-by")
    assert drift(sts, relabelled) == "metadata.labels.app.kubernetes.io/managed-by"


def test_secret_and_config_map_values_are_compared() -> None:
    objects = _render({})
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    edited = as_stored(config)
    edited["data"]["redis.conf"] += "maxmemory 1gb\n"
    assert drift(config, edited) == "data.redis.conf"
    secret = next(o for o in objects if o["kind"] == "Secret")
    emptied = as_stored(secret)
    emptied["data"] = {}
    assert drift(secret, emptied) is not None


def test_canonical_quantities_and_ignored_claim_templates() -> None:
    sts = sts_of(_render({"resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}}}))
    live = as_stored(sts)
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["requests"] = {"cpu": "500m", "memory": "1024Mi"}
    assert drift(sts, live) is None
    container["resources"]["requests"]["cpu"] = "1"
    assert drift(sts, live) == "spec.template.spec.containers[redis].resources.requests.cpu"
    # Immutable, and growth is volume expansion: never a reason to re-apply.
    live = as_stored(sts)
    live["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "9Gi"
    assert drift(sts, live) is None
