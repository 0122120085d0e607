"""Kubernetes Events on a CacheTier (core/v1), posted through the Kube adapter."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from cachetier import names
from cachetier.kube.client import ApiError, Kube

log = logging.getLogger("cachetier.events")


def post_event(kube: Kube, body: dict[str, Any], etype: str, reason: str, message: str) -> None:
    """Record an Event on the tier; a failure to post is logged, never raised."""
    meta = body["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": etype,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": names.MANAGED_BY},
        "reportingComponent": names.MANAGED_BY,
        "reportingInstance": names.MANAGED_BY,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        kube.create(event)
    except ApiError as exc:
        log.warning("could not post event %s/%s: %s", reason, message, exc)
