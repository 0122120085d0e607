"""Container environment resolution, as the kubelet does it (pure, given a ``Lookup``).

``envFrom`` first, then ``env`` in order; each ``value`` is expanded with ``$(VAR)``
referring to variables defined before it (``$$`` escapes a dollar); ``valueFrom`` reads
fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef. A missing non-optional
reference is a ``ConfigError`` (the container waits with ``CreateContainerConfigError``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Protocol

from .fieldpath import FieldPathError, field_value, resource_value
from .objects import Obj


class Lookup(Protocol):
    """Read access to the ConfigMaps and Secrets a pod refers to."""

    def configmap(self, namespace: str, name: str) -> Obj | None:
        """The ConfigMap, or None when it does not exist."""

    def secret(self, namespace: str, name: str) -> Obj | None:
        """The Secret, or None when it does not exist."""


class ConfigError(Exception):
    """The container's configuration cannot be resolved (yet)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown variables stay as written, ``$$`` is ``$``."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def configmap_value(cm: Obj, key: str) -> str | None:
    """A ConfigMap key's value (text or binary data), or None."""
    data = cm.get("data") or {}
    if key in data:
        return str(data[key])
    binary = cm.get("binaryData") or {}
    if key in binary:
        return base64.b64decode(binary[key]).decode(errors="replace")
    return None


def secret_value(secret: Obj, key: str) -> str | None:
    """A Secret key's decoded value, or None."""
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode(errors="replace")
    return None


def _all_values(obj: Obj, is_secret: bool) -> dict[str, str]:
    keys = list((obj.get("data") or {}).keys())
    if not is_secret:
        keys += list((obj.get("binaryData") or {}).keys())
    get = secret_value if is_secret else configmap_value
    return {k: v for k in keys if (v := get(obj, k)) is not None}


def _key_ref(pod: Obj, lookup: Lookup, ref: Obj, is_secret: bool) -> str | None:
    ns = str((pod.get("metadata") or {}).get("namespace", ""))
    name, key = str(ref.get("name", "")), str(ref.get("key", ""))
    kind = "secret" if is_secret else "configmap"
    obj = lookup.secret(ns, name) if is_secret else lookup.configmap(ns, name)
    if obj is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    value = secret_value(obj, key) if is_secret else configmap_value(obj, key)
    if value is None and not ref.get("optional"):
        raise ConfigError(f"couldn't find key {key} in {kind} {ns}/{name}")
    return value


def build_env(
    pod: Obj, container: Obj, lookup: Lookup, allocatable: dict[str, str]
) -> dict[str, str]:
    """The container's environment from its spec (insertion-ordered)."""
    ns = str((pod.get("metadata") or {}).get("namespace", ""))
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        is_secret = "secretRef" in source
        ref = source.get("secretRef") if is_secret else source.get("configMapRef")
        if not isinstance(ref, dict):
            continue
        name = str(ref.get("name", ""))
        obj = lookup.secret(ns, name) if is_secret else lookup.configmap(ns, name)
        if obj is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{"secret" if is_secret else "configmap"} "{name}" not found')
        for key, value in _all_values(obj, is_secret).items():
            env[prefix + key] = value
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        source = var.get("valueFrom")
        if not source:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        found: str | None
        try:
            if "fieldRef" in source:
                found = field_value(pod, str(source["fieldRef"].get("fieldPath", "")))
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"]
                target = str(ref.get("containerName") or container.get("name", ""))
                found = resource_value(pod, target, ref, allocatable)
            elif "configMapKeyRef" in source:
                found = _key_ref(pod, lookup, source["configMapKeyRef"], is_secret=False)
            elif "secretKeyRef" in source:
                found = _key_ref(pod, lookup, source["secretKeyRef"], is_secret=True)
            else:
                raise ConfigError(f"unsupported valueFrom for {name}: {sorted(source)}")
        except FieldPathError as err:
            raise ConfigError(str(err)) from err
        if found is not None:
            env[name] = found
    return env
