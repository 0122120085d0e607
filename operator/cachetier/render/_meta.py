"""Metadata shared by every rendered object: labels, ownerReference, hash stamp.

Pure: no I/O, no randomness, no clock.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

from cachetier import names

from ._types import TierRef


def spec_hash(obj: dict[str, Any]) -> str:
    """Stable sha256 (hex) over a canonical JSON form of ``obj``.

    The annotation names.ANNOTATION_SPEC_HASH is left out of the digest, so
    ``spec_hash(stamped) == stamped's annotation``: the I/O layer can compare a
    live object's annotation with the desired one and skip the write when equal.
    Key order does not matter; list order does.
    """
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if isinstance(annotations, dict) and names.ANNOTATION_SPEC_HASH in annotations:
        obj = copy.deepcopy(obj)
        stripped = obj["metadata"]["annotations"]
        del stripped[names.ANNOTATION_SPEC_HASH]
        if not stripped:
            del obj["metadata"]["annotations"]
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """Return ``obj`` with annotation names.ANNOTATION_SPEC_HASH set to its spec_hash."""
    digest = spec_hash(obj)
    stamped = copy.deepcopy(obj)
    stamped["metadata"].setdefault("annotations", {})[names.ANNOTATION_SPEC_HASH] = digest
    return stamped


def owner_reference(ref: TierRef) -> dict[str, Any]:
    """The controller ownerReference to the CacheTier (garbage collection, kopf ownership)."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(ref: TierRef, name: str, component: str) -> dict[str, Any]:
    """metadata of a child object: name, namespace, labels, ownerReference."""
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": names.component_labels(ref.name, component),
        "ownerReferences": [owner_reference(ref)],
    }


def secret_data(values: dict[str, str]) -> dict[str, str]:
    """Secret ``data`` (base64) from plain strings.

    ``data`` rather than ``stringData``: stringData is write-only, so under
    server-side apply the field manager would own keys that never appear in the
    live object, and a key dropped from the desired object would not be removed.
    """
    return {
        key: base64.b64encode(value.encode("utf-8")).decode("ascii")
        for key, value in values.items()
    }
