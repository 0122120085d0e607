"""The files of configMap, secret, downwardAPI and projected volumes (pure: no I/O).

Each builder returns a ``FileSet``: relative path -> (content, mode). Modes and key
selection follow the Kubernetes rules: ``items`` pick keys (a missing key fails unless
the source is optional), ``mode`` overrides ``defaultMode`` (default 0644).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from posixpath import normpath

from .fieldpath import FieldPathError, field_value, resource_value
from .objects import Obj

FileSet = dict[str, tuple[bytes, int]]
"""Relative path -> (content, file mode)."""
DEFAULT_MODE = 0o644
DUMMY_TOKEN = b"cachetier-nodeagent-dummy-token"
"""Content of projected serviceAccountToken files (no process here talks to the API)."""


class VolumeError(Exception):
    """A volume cannot be set up yet (missing object or key, unbound claim)."""


def _safe(path: str) -> str:
    norm = normpath(path)
    if norm.startswith(("/", "..")) or norm in ("", "."):
        raise VolumeError(f"invalid volume file path {path!r}")
    return norm


def _select(values: dict[str, bytes], src: Obj, default_mode: int, what: str) -> FileSet:
    items = src.get("items") or []
    files: FileSet = {}
    if not items:
        for key, value in values.items():
            files[_safe(key)] = (value, default_mode)
        return files
    for item in items:
        key = str(item.get("key", ""))
        if key not in values:
            if src.get("optional"):
                continue
            raise VolumeError(f"{what} references non-existent key: {key}")
        mode = item.get("mode")
        files[_safe(str(item.get("path", key)))] = (
            values[key],
            int(mode) if mode is not None else default_mode,
        )
    return files


def configmap_files(cm: Obj | None, src: Obj, default_mode: int) -> FileSet:
    """Files of a configMap volume (or projection) for ConfigMap ``cm`` (None: missing)."""
    what = f"configmap {src.get('name', '')}"
    if cm is None:
        if src.get("optional"):
            return {}
        raise VolumeError(f'configmap "{src.get("name", "")}" not found')
    values = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    values.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return _select(values, src, default_mode, what)


def secret_files(secret: Obj | None, src: Obj, default_mode: int) -> FileSet:
    """Files of a secret volume (or projection) for Secret ``secret`` (None: missing)."""
    name = str(src.get("secretName") or src.get("name") or "")
    if secret is None:
        if src.get("optional"):
            return {}
        raise VolumeError(f'secret "{name}" not found')
    values = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    return _select(values, src, default_mode, f"secret {name}")


def downward_files(
    pod: Obj, items: list[Obj], default_mode: int, allocatable: dict[str, str]
) -> FileSet:
    """Files of a downwardAPI volume (or projection)."""
    files: FileSet = {}
    for item in items:
        path = _safe(str(item.get("path", "")))
        try:
            if "fieldRef" in item:
                value = field_value(pod, str(item["fieldRef"].get("fieldPath", "")), for_file=True)
            elif "resourceFieldRef" in item:
                ref = item["resourceFieldRef"]
                value = resource_value(pod, str(ref.get("containerName", "")), ref, allocatable)
            else:
                continue
        except FieldPathError as err:
            raise VolumeError(str(err)) from err
        mode = item.get("mode")
        files[path] = (value.encode(), int(mode) if mode is not None else default_mode)
    return files


def projected_files(
    pod: Obj,
    sources: list[Obj],
    default_mode: int,
    get_configmap: Callable[[str], Obj | None],
    get_secret: Callable[[str], Obj | None],
    allocatable: dict[str, str],
) -> FileSet:
    """Files of a projected volume (configMap, secret, downwardAPI, serviceAccountToken)."""
    files: FileSet = {}
    for source in sources:
        if "configMap" in source:
            src = source["configMap"]
            files.update(configmap_files(get_configmap(str(src.get("name"))), src, default_mode))
        elif "secret" in source:
            src = source["secret"]
            files.update(secret_files(get_secret(str(src.get("name"))), src, default_mode))
        elif "downwardAPI" in source:
            items = source["downwardAPI"].get("items") or []
            files.update(downward_files(pod, items, default_mode, allocatable))
        elif "serviceAccountToken" in source:
            path = _safe(str(source["serviceAccountToken"].get("path", "token")))
            files[path] = (DUMMY_TOKEN, default_mode)
    return files
