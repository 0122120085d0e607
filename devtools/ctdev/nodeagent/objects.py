"""Small helpers over Kubernetes objects as plain JSON dicts (pure: no I/O)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

Obj = dict[str, Any]
"""A Kubernetes object (or any JSON object) as decoded from the API."""


def meta(obj: Obj) -> Obj:
    """The object's metadata (empty dict when missing)."""
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def name_of(obj: Obj) -> str:
    """metadata.name."""
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Obj) -> str:
    """metadata.namespace ("" for cluster-scoped objects)."""
    return str(meta(obj).get("namespace", ""))


def uid_of(obj: Obj) -> str:
    """metadata.uid."""
    return str(meta(obj).get("uid", ""))


def ref(obj: Obj) -> str:
    """``namespace/name`` (or ``name``) for logs."""
    ns = namespace_of(obj)
    return f"{ns}/{name_of(obj)}" if ns else name_of(obj)


def now_rfc3339() -> str:
    """The current time as a Kubernetes ``Time`` (seconds precision, UTC)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """The current time as a Kubernetes ``MicroTime`` (for Lease renewTime)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(ts: float) -> str:
    """A Unix timestamp as a Kubernetes ``Time``."""
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_ready(pod: Obj) -> bool:
    """True when the Pod's Ready condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A Service-style equality selector (non-empty) matches the labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
