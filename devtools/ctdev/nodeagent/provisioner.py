"""A local dynamic provisioner: StorageClass ``cachetier-local`` backed by directories.

At start the agent creates the StorageClass (provisioner ``cachetier.io/local``,
volumeBindingMode Immediate, reclaimPolicy Delete, annotated as the cluster default).
For every Pending claim of that class (or, when it is the default, of no class) it makes
``<state>/pv/<namespace>-<claim>`` and a hostPath PersistentVolume pre-bound to the claim
(``claimRef`` with the claim's uid); kube-controller-manager's PV binder completes the
binding. A Released volume of this provisioner is deleted with its directory.

It is also the class's resizer (``allowVolumeExpansion: true``): a Bound claim whose
request is above its capacity gets its volume's capacity raised and then its own
``status.capacity`` (a directory has no size to grow; the numbers are what a real
resizer would report after growing the disk), as an external resizer does for a CSI
driver.
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


_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def to_bytes(quantity: str) -> float:
    """A storage quantity in bytes (``1Gi``, ``500M``, ``1e9``, ``1073741824``)."""
    text = str(quantity).strip()
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _UNITS[suffix]
    return float(text)


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
        """Provision a volume for a new Pending claim of our class; grow a bound one."""
        if kind != "DELETED" and (pvc.get("status") or {}).get("phase") == "Bound":
            self._resize(pvc)
            return
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

    def _resize(self, pvc: Obj) -> None:
        """Raise a bound claim's capacity to its request (and its volume's first)."""
        spec = pvc.get("spec") or {}
        want = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        have = ((pvc.get("status") or {}).get("capacity") or {}).get("storage")
        volume = spec.get("volumeName")
        if not want or not have or not volume or to_bytes(want) <= to_bytes(have):
            return
        try:
            pv = self._kube.request("GET", api_path("persistentvolumes", name=volume))
            if (meta(pv).get("annotations") or {}).get(
                "pv.kubernetes.io/provisioned-by"
            ) != PROVISIONER:
                return
            self._kube.request(
                "PATCH",
                api_path("persistentvolumes", name=volume),
                body={"spec": {"capacity": {"storage": want}}},
                content_type="application/merge-patch+json",
            )
            status = {"capacity": {"storage": want}, "allocatedResources": {"storage": want}}
            self._kube.request(
                "PATCH",
                api_path(
                    "persistentvolumeclaims",
                    namespace=namespace_of(pvc),
                    name=name_of(pvc),
                    sub="status",
                ),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
            _log.info("volume expanded", claim=ref(pvc), size=want)
        except ApiError as err:
            _log.warning("volume expansion failed", claim=ref(pvc), error=str(err))

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
