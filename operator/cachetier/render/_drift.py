"""Does a live object still carry what the operator applied? (pure)

The operator applies each child with server-side apply and owns exactly the fields of
its desired object. A person (``kubectl scale``, ``kubectl edit``) or a tool can change
those fields on the live object without touching the content-hash annotation, so the
annotation alone cannot tell. :func:`drift` projects the live object onto the desired
object's shape — the keys the operator sets, list entries matched by ``name`` (or by
position) — and compares values, so fields the API server adds (defaults, status,
``clusterIP``, managedFields) never count, and anything the operator set that is now
different does.

Values the API server rewrites into a canonical form are compared canonically:
resource quantities (``0.5`` CPU is stored as ``500m``), and integers written as
strings. Paths in ``IGNORED`` are not compared: the StatefulSet's volume claim
templates are immutable (a re-apply could only fail; their growth is the
volume-expansion work of the day-2 operations).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

IGNORED = (("StatefulSet", "spec.volumeClaimTemplates"),)
"""(kind, dotted path) pairs that drift detection leaves alone."""

_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def _quantity(value: str) -> Decimal | None:
    """A Kubernetes quantity's value, or None if ``value`` is not one (bounded input)."""
    if len(value) > 40:
        return None
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix) and value[: -len(suffix)]:
            number, factor = value[: -len(suffix)], Decimal(_SUFFIXES[suffix])
            break
    else:
        number, factor = value, Decimal(1)
    if "e" in number.lower():  # exponent forms are left as text (no huge numbers)
        return None
    try:
        return Decimal(number) * factor
    except InvalidOperation:
        return None


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    if isinstance(want, (str, int)) and isinstance(have, (str, int)):
        a, b = _quantity(str(want)), _quantity(str(have))
        return a is not None and a == b
    return False


def _key_of(items: list[Any]) -> str | None:
    """The field that identifies entries of a list of objects, if every entry has it."""
    if items and all(isinstance(i, dict) and "name" in i for i in items):
        return "name"
    return None


def _diff(want: Any, have: Any, path: str, ignored: set[str]) -> str | None:
    if path in ignored:
        return None
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return path or "."
        for key, value in want.items():
            found = _diff(value, have.get(key), f"{path}.{key}" if path else key, ignored)
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list):
            return path
        key = _key_of(want)
        if key is not None:
            by_key = {i.get(key): i for i in have if isinstance(i, dict)}
            for item in want:
                found = _diff(item, by_key.get(item[key]), f"{path}[{item[key]}]", ignored)
                if found:
                    return found
            return None
        if len(want) != len(have):
            return path
        for index, (a, b) in enumerate(zip(want, have, strict=True)):
            found = _diff(a, b, f"{path}[{index}]", ignored)
            if found:
                return found
        return None
    return None if _same_scalar(want, have) else path


def drift(desired: dict[str, Any], live: dict[str, Any]) -> str | None:
    """The first path the operator set whose live value differs, or None when none does.

    ``metadata`` is compared for labels and annotations only (the rest is the API
    server's); ``status`` never.
    """
    kind = str(desired.get("kind", ""))
    ignored = {path for k, path in IGNORED if k == kind}
    want = {k: v for k, v in desired.items() if k not in ("status", "metadata")}
    meta = desired.get("metadata") or {}
    want["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
    return _diff(want, live, "", ignored)
