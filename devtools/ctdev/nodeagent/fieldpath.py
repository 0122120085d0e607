"""Downward API values: fieldRef paths, resourceFieldRef values, and Kubernetes quantities.

Pure: no I/O. Mirrors the kubelet's formatting (``key="value"`` lines for label and
annotation maps, Go-quoted values, sorted keys) so that files and env vars read the same
as on a real node.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from .objects import Obj

_SUFFIXES = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


class FieldPathError(ValueError):
    """A fieldRef or resourceFieldRef the agent does not support."""


def parse_quantity(text: str | int | float) -> Fraction:
    """A Kubernetes quantity ("500m", "1Gi", "2", "1e3") as an exact fraction."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise FieldPathError(f"invalid quantity {text!r}")
    return Fraction(match.group(1)) * _SUFFIXES[match.group(2)]


def go_quote(value: str) -> str:
    """Quote like Go's ``strconv.Quote`` (what the kubelet uses for map files)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    escapes.update({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"})
    out = []
    for ch in value:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def format_map(values: dict[str, str]) -> str:
    """Labels or annotations as a downward-API file: sorted ``key="value"`` lines."""
    return "".join(f"{k}={go_quote(str(values[k]))}\n" for k in sorted(values))


def field_value(pod: Obj, path: str, *, for_file: bool = False) -> str:
    """The value of a fieldRef ``path`` for the pod (maps only allowed in files)."""
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    sub = _SUBSCRIPT.match(path)
    if sub:
        return str((md.get(sub.group(1)) or {}).get(sub.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        if not for_file:
            raise FieldPathError(f"{path} is only supported in downwardAPI volumes")
        return format_map(md.get(path.split(".")[1]) or {})
    simple = {
        "metadata.name": md.get("name"),
        "metadata.namespace": md.get("namespace"),
        "metadata.uid": md.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("status.podIPs", "status.hostIPs"):
        return ",".join(str(i.get("ip", "")) for i in status.get(path.split(".")[1]) or [])
    raise FieldPathError(f"unsupported fieldRef {path!r}")


def resource_value(pod: Obj, container_name: str, ref: Obj, allocatable: dict[str, str]) -> str:
    """The value of a resourceFieldRef: the limit (or node allocatable) / divisor, rounded up."""
    resource = str(ref.get("resource", ""))
    kind, _, res = resource.partition(".")
    if kind not in ("limits", "requests") or not res:
        raise FieldPathError(f"unsupported resourceFieldRef {resource!r}")
    container = next(
        (c for c in (pod.get("spec") or {}).get("containers") or [] if c["name"] == container_name),
        None,
    )
    resources = (container or {}).get("resources") or {}
    raw = (resources.get(kind) or {}).get(res)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(res)
    if raw is None and kind == "limits":
        raw = allocatable.get(res)
    value = parse_quantity(raw if raw is not None else 0)
    divisor = parse_quantity(ref.get("divisor") or 1)
    if divisor == 0:
        raise FieldPathError("divisor must not be zero")
    return str(math.ceil(value / divisor))
