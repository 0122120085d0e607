"""Materialising a pod's volumes as directories under the agent's state directory.

- configMap, secret, downwardAPI, projected: files under ``<pod>/volumes/<name>``, each
  written atomically (temp file + rename) and only when its content or mode changed;
  ``sync`` is called again whenever the pod's metadata or a referenced object changes,
  which keeps downward-API label/annotation files live within the watch latency;
- emptyDir (any medium): a directory under ``<pod>/volumes/<name>``;
- persistentVolumeClaim: the bound PersistentVolume's ``hostPath.path`` or ``local.path``
  (outlives the pod; see ``provisioner``);
- hostPath: sandboxed under ``<state>/hostpath/<path>`` rather than the real host path;
- anything else: an empty directory (logged once).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from .files import (
    DEFAULT_MODE,
    FileSet,
    VolumeError,
    configmap_files,
    downward_files,
    projected_files,
    secret_files,
)
from .log import Log
from .objects import Obj

_log = Log("nodeagent.volumes")


class VolumeLookup(Protocol):
    """Read access to the objects a pod's volumes refer to."""

    def configmap(self, namespace: str, name: str) -> Obj | None:
        """The ConfigMap, or None."""

    def secret(self, namespace: str, name: str) -> Obj | None:
        """The Secret, or None."""

    def pvc(self, namespace: str, name: str) -> Obj | None:
        """The PersistentVolumeClaim, or None."""

    def pv(self, name: str) -> Obj | None:
        """The PersistentVolume, or None."""


def _mode_of(src: Obj) -> int:
    return int(src.get("defaultMode", DEFAULT_MODE))


def write_atomic(path: Path, content: bytes, mode: int) -> None:
    """Replace ``path`` with ``content`` in one rename (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class PodVolumes:
    """The volumes of one pod: ``paths`` maps each volume name to its host directory."""

    def __init__(
        self, pod_dir: Path, state_dir: Path, lookup: VolumeLookup, allocatable: dict[str, str]
    ) -> None:
        self._pod_dir = pod_dir
        self._state_dir = state_dir
        self._lookup = lookup
        self._allocatable = allocatable
        self.paths: dict[str, Path] = {}
        """Volume name -> host directory (after a successful ``sync``)."""
        self._written: dict[str, FileSet] = {}
        self._warned: set[str] = set()

    def _content(self, pod: Obj, vol: Obj) -> FileSet | None:
        ns = str(pod["metadata"].get("namespace", ""))
        if "configMap" in vol:
            src = vol["configMap"]
            cm = self._lookup.configmap(ns, str(src.get("name", "")))
            return configmap_files(cm, src, _mode_of(src))
        if "secret" in vol:
            src = vol["secret"]
            secret = self._lookup.secret(ns, str(src.get("secretName", "")))
            return secret_files(secret, src, _mode_of(src))
        if "downwardAPI" in vol:
            src = vol["downwardAPI"]
            return downward_files(pod, src.get("items") or [], _mode_of(src), self._allocatable)
        if "projected" in vol:
            src = vol["projected"]
            return projected_files(
                pod,
                src.get("sources") or [],
                _mode_of(src),
                lambda n: self._lookup.configmap(ns, n),
                lambda n: self._lookup.secret(ns, n),
                self._allocatable,
            )
        return None

    def _claim_dir(self, ns: str, claim: str) -> Path:
        pvc = self._lookup.pvc(ns, claim)
        if pvc is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
        volume = (pvc.get("spec") or {}).get("volumeName")
        pv = self._lookup.pv(str(volume)) if volume else None
        if pv is None:
            raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound')
        spec = pv.get("spec") or {}
        path = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        return Path(path) if path else self._state_dir / "pv" / str(volume)

    def _dir_of(self, pod: Obj, vol: Obj) -> Path:
        name = str(vol["name"])
        if "persistentVolumeClaim" in vol:
            ns = str(pod["metadata"].get("namespace", ""))
            return self._claim_dir(ns, str(vol["persistentVolumeClaim"].get("claimName", "")))
        if "hostPath" in vol:
            src = vol["hostPath"]
            target = self._state_dir / "hostpath" / str(src.get("path", "")).lstrip("/")
            if src.get("type") in ("File", "FileOrCreate"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch(exist_ok=True)
                return target
            return target
        known = ("emptyDir", "configMap", "secret", "downwardAPI", "projected", "ephemeral")
        if not any(k in vol for k in known) and name not in self._warned:
            self._warned.add(name)
            _log.warning("unsupported volume type; using an empty directory", volume=name)
        return self._pod_dir / "volumes" / name

    def sync(self, pod: Obj) -> None:
        """Create every volume and bring file contents up to date.

        Every volume is attempted (one broken reference does not stop the others from
        updating); the first failure is raised afterwards as ``VolumeError``.
        """
        errors: list[VolumeError] = []
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            name = str(vol["name"])
            try:
                path = self._dir_of(pod, vol)
                if not path.exists():
                    path.mkdir(parents=True, exist_ok=True)
                desired = self._content(pod, vol)
            except VolumeError as err:
                errors.append(err)
                continue
            if desired is not None:
                self._write(name, path, desired)
            self.paths[name] = path
        if errors:
            raise errors[0]

    def _write(self, name: str, root: Path, desired: FileSet) -> None:
        previous = self._written.get(name, {})
        for rel, (content, mode) in desired.items():
            if previous.get(rel) != (content, mode) or not (root / rel).exists():
                write_atomic(root / rel, content, mode)
        for rel in previous.keys() - desired.keys():
            (root / rel).unlink(missing_ok=True)
        self._written[name] = desired
