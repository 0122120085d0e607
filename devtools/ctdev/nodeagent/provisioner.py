"""A local dynamic provisioner: StorageClass ``cachetier-local`` backed by directories.

At start the agent creates the StorageClass (provisioner ``cachetier.io/local``,
volumeBindingMode Immediate, reclaimPolicy Delete, annotated as the cluster default).
For every Pending claim of that class (or, when it is the default, of no class) it makes
``<state>/pv/<namespace>-<claim>`` and a hostPath PersistentVolume pre-bound to the claim
(``claimRef`` with the claim's uid); kube-controller-manager's PV binder completes the
binding. A Released volume of this provisioner is deleted with its directory.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from .kube import ApiError, Kube, api_path
from .log import Log
from .objects import Obj, meta, name_of, namespace_of, ref, uid_of

_log = Log("nodeagent.provisioner")
PROVISIONER = "cachetier.io/local"
STORAGE_CLASS = "cachetier-local"
STORAGE = "storage.k8s.io/v1"


def build_storage_class(name: str, default: bool) -> Obj:
    """The local StorageClass."""
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "apiVersion": STORAGE,
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }


def claim_dir(state_dir: Path, pvc: Obj) -> Path:
    """Where a claim's data lives: ``<state>/pv/<namespace>-<claim>``."""
    return state_dir / "pv" / f"{namespace_of(pvc)}-{name_of(pvc)}"


def build_volume(pvc: Obj, path: Path, storage_class: str) -> Obj:
    """A hostPath PersistentVolume pre-bound to ``pvc``."""
    spec = pvc.get("spec") or {}
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{uid_of(pvc)}",
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            "labels": {"cachetier.io/local-pv": "true"},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": storage_class,
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace_of(pvc),
                "name": name_of(pvc),
                "uid": uid_of(pvc),
                "resourceVersion": str(meta(pvc).get("resourceVersion", "")),
            },
        },
    }


class Provisioner:
    """Reacts to claim and volume events (called from informer threads)."""

    def __init__(self, kube: Kube, state_dir: Path, storage_class: str = STORAGE_CLASS) -> None:
        self._kube = kube
        self._state_dir = state_dir
        self.storage_class = storage_class
        self._lock = threading.Lock()
        self._done: set[str] = set()

    def ensure_storage_class(self) -> None:
        """Create the StorageClass (default unless another default exists)."""
        path = api_path("storageclasses", group=STORAGE)
        existing = self._kube.request("GET", path).get("items") or []
        if any(name_of(sc) == self.storage_class for sc in existing):
            return
        others = [
            sc
            for sc in existing
            if meta(sc).get("annotations", {}).get("storageclass.kubernetes.io/is-default-class")
            == "true"
        ]
        try:
            self._kube.create(path, build_storage_class(self.storage_class, default=not others))
            _log.info("storage class created", name=self.storage_class, default=not others)
        except ApiError as err:
            if err.status != 409:
                raise

    def _wants(self, pvc: Obj) -> bool:
        spec = pvc.get("spec") or {}
        phase = (pvc.get("status") or {}).get("phase")
        if spec.get("volumeName") or phase not in (None, "Pending"):
            return False
        if meta(pvc).get("deletionTimestamp"):
            return False
        return spec.get("storageClassName") in (self.storage_class, None)

    def on_claim(self, kind: str, pvc: Obj) -> None:
        """Provision a volume for a new Pending claim of our class."""
        if kind == "DELETED" or not self._wants(pvc):
            return
        with self._lock:
            if uid_of(pvc) in self._done:
                return
            self._done.add(uid_of(pvc))
        path = claim_dir(self._state_dir, pvc)
        path.mkdir(parents=True, exist_ok=True)
        try:
            # A claim without a class binds to a class-less volume.
            cls = self.storage_class if (pvc.get("spec") or {}).get("storageClassName") else ""
            self._kube.create(api_path("persistentvolumes"), build_volume(pvc, path, cls))
            _log.info("volume provisioned", claim=ref(pvc), path=str(path))
        except ApiError as err:
            if err.status != 409:
                with self._lock:
                    self._done.discard(uid_of(pvc))
                _log.warning("provisioning failed", claim=ref(pvc), error=str(err))

    def on_volume(self, kind: str, pv: Obj, in_use: set[str]) -> None:
        """Delete a Released volume of ours and its directory (unless another PV uses it)."""
        annotations = meta(pv).get("annotations") or {}
        if kind == "DELETED" or annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            return
        spec = pv.get("spec") or {}
        if (pv.get("status") or {}).get("phase") != "Released":
            return
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        path = str((spec.get("hostPath") or {}).get("path", ""))
        if path and path not in in_use and Path(path).is_relative_to(self._state_dir / "pv"):
            shutil.rmtree(path, ignore_errors=True)
        try:
            self._kube.delete(api_path("persistentvolumes", name=name_of(pv)))
            _log.info("released volume deleted", volume=name_of(pv), path=path)
        except ApiError as err:
            _log.warning("volume deletion failed", volume=name_of(pv), error=str(err))
