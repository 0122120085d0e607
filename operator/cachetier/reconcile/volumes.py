"""Volume expansion: a larger ``persistence.size`` on a running tier (pure).

A StatefulSet's ``volumeClaimTemplates`` cannot change, so the growth is done the way
the Kubernetes docs describe it by hand, with the world observed between steps:

1. every claim of the tier whose storage class allows expansion is patched to the new
   size (the storage's resizer grows the volume; ``status.capacity`` follows);
2. the StatefulSet is deleted with ``propagationPolicy: Orphan`` — its pods keep
   running, nothing restarts, no claim is touched;
3. the next pass applies it again with the new template; it adopts the same pods.

A class without ``allowVolumeExpansion`` stops it before any write: ``Ready=False``
with reason ``VolumeExpansionUnsupported`` names the class, and nothing is deleted.
Shrinking never reaches here: the API server refuses it (a CEL transition rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cachetier import names
from cachetier.api.units import quantity_to_bytes
from cachetier.reconcile.observed import Observed

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


@dataclass(frozen=True)
class VolumePlan:
    """What this pass does about the size of the tier's volumes."""

    resizes: tuple[tuple[str, str], ...] = ()
    """(claim, new size) to patch."""
    orphan_statefulset: str | None = None
    """Delete this StatefulSet, orphaning its pods (its template gets the new size)."""
    hold_statefulset: bool = False
    """Do not apply the StatefulSet this pass (it is being replaced, or cannot be)."""
    unsupported: str = ""
    """The storage classes that cannot expand (the tier says so; nothing is written)."""
    expanding: str = ""
    """What is still growing (claims whose capacity is below the size), for status."""


def template_size(sts: dict[str, Any] | None) -> str | None:
    """The data volume size a StatefulSet's claim template asks for (None: no volume)."""
    for template in ((sts or {}).get("spec") or {}).get("volumeClaimTemplates") or []:
        if template.get("metadata", {}).get("name") == names.data_volume():
            requests = ((template.get("spec") or {}).get("resources") or {}).get("requests")
            return str((requests or {}).get("storage") or "") or None
    return None


def claim_request(pvc: dict[str, Any]) -> str:
    """A claim's requested storage."""
    spec = pvc.get("spec") or {}
    return str(((spec.get("resources") or {}).get("requests") or {}).get("storage") or "0")


def _capacity(pvc: dict[str, Any]) -> str:
    return str(((pvc.get("status") or {}).get("capacity") or {}).get("storage") or "0")


def _class_of(pvc: dict[str, Any], classes: dict[str, dict[str, Any] | None]) -> str:
    name = (pvc.get("spec") or {}).get("storageClassName")
    if name:
        return str(name)
    for cls_name, cls in classes.items():  # a claim of no class: the default's rules
        annotations = ((cls or {}).get("metadata") or {}).get("annotations") or {}
        if annotations.get(DEFAULT_CLASS_ANNOTATION) == "true":
            return cls_name
    return ""


def expanding_said(obs: Observed) -> bool:
    """Whether the last pass reported volumes expanding (Progressing, VolumeExpanding)."""
    for c in obs.status.get("conditions") or []:
        if c.get("type") == "Progressing":
            return bool(c.get("reason") == "VolumeExpanding")
    return False


def plan_volumes(
    obs: Observed,
    desired: list[dict[str, Any]],
    claims: tuple[dict[str, Any], ...],
    classes: dict[str, dict[str, Any] | None],
) -> VolumePlan:
    """The volume step of this pass (``claims``: the tier's PVCs; ``classes``: their
    StorageClasses by name, None when missing)."""
    name = names.statefulset(obs.ref.name)
    want_obj = next(
        (o for o in desired if o.get("kind") == "StatefulSet" and o["metadata"]["name"] == name),
        None,
    )
    want = template_size(want_obj)
    if want is None:
        return VolumePlan()
    live = obs.child("StatefulSet", name)
    growing = [
        c["metadata"]["name"]
        for c in claims
        if quantity_to_bytes(_capacity(c)) < quantity_to_bytes(want)
    ]
    expanding = ", ".join(sorted(growing))
    if live is not None and live["metadata"].get("deletionTimestamp"):
        # Orphaning: wait until it is gone, then apply it anew.
        return VolumePlan(hold_statefulset=True, expanding=expanding or name)
    have = template_size(live)
    if live is None and expanding_said(obs):
        # Orphaned a moment ago: the apply of this pass re-creates it; still expanding.
        return VolumePlan(expanding=expanding or name)
    if have is None or quantity_to_bytes(have) >= quantity_to_bytes(want):
        # Nothing to replace (a new tier, or done); claims may still be growing.
        return VolumePlan(expanding=expanding if live is not None else "")
    small = [c for c in claims if quantity_to_bytes(claim_request(c)) < quantity_to_bytes(want)]
    cannot = sorted(
        {
            cls or "(no class)"
            for c in small
            if not ((classes.get(cls := _class_of(c, classes)) or {}).get("allowVolumeExpansion"))
        }
    )
    if cannot:
        return VolumePlan(hold_statefulset=True, unsupported=", ".join(cannot))
    return VolumePlan(
        resizes=tuple(sorted((c["metadata"]["name"], want) for c in small)),
        orphan_statefulset=name,
        hold_statefulset=True,
        expanding=expanding or name,
    )


def claim_classes(claims: tuple[dict[str, Any], ...]) -> list[str]:
    """The storage class names the claims name (the gather step reads these)."""
    return sorted(
        {
            str(c["spec"]["storageClassName"])
            for c in claims
            if (c.get("spec") or {}).get("storageClassName")
        }
    )
