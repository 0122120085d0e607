"""Units of the CacheTier API: Redis memory amounts, Kubernetes quantities, durations.

Pure: no I/O. Each parser raises ``ValueError`` (with the offending text in the
message) on input it does not accept, so callers can turn it into a problem
that names the field. Each ``format_*`` is the inverse of its parser on the
values it produces: ``parse_x(format_x(v)) == v``.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

__all__ = [
    "format_duration",
    "format_redis_memory",
    "parse_duration",
    "parse_quantity",
    "parse_redis_memory",
    "quantity_to_bytes",
]

# redis.conf (util.c memtoull): k=1000, kb=1024, m=10^6, mb=1024^2, g=10^9,
# gb=1024^3, b or nothing = bytes; case-insensitive; integers only.
_REDIS_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
_REDIS_MEMORY = re.compile(r"([0-9]+)([a-z]*)")
# Largest first, so formatting picks the shortest exact spelling.
_REDIS_FORMAT_UNITS = (("gb", 1024**3), ("mb", 1024**2), ("kb", 1024))

# Kubernetes resource.Quantity suffixes (k8s.io/apimachinery/pkg/api/resource).
_BINARY_SI = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SI = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_QUANTITY = re.compile(
    rf"(?P<sign>[+-]?)(?P<number>{_NUMBER})"
    rf"(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?{_NUMBER}))?"
)

# Go time.ParseDuration units, in seconds.
_DURATION_UNITS: dict[str, Decimal] = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),  # Go also accepts the micro sign
    "\u03bcs": Decimal("1e-6"),  # and the Greek mu
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
# Longest unit first, so "ms" is not read as "m" followed by garbage.
_DURATION_PART = re.compile(
    rf"({_NUMBER})({'|'.join(sorted(_DURATION_UNITS, key=len, reverse=True))})"
)


def parse_redis_memory(text: str) -> int:
    """Bytes of a redis.conf memory amount: ``"2gb"`` -> 2147483648, ``"1k"`` -> 1000.

    Units as Redis reads them: b, k (1000), kb (1024), m, mb, g, gb, any case,
    integers only. ``"0"`` is valid (for maxmemory it means "no limit").
    """
    match = _REDIS_MEMORY.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _REDIS_UNITS:
        raise ValueError(f"not a Redis memory amount (e.g. 512mb, 2gb): {text!r}")
    return int(match.group(1)) * _REDIS_UNITS[match.group(2)]


def format_redis_memory(n_bytes: int) -> str:
    """The shortest exact redis.conf spelling of ``n_bytes``: 2147483648 -> ``"2gb"``."""
    if n_bytes < 0:
        raise ValueError(f"a memory amount cannot be negative: {n_bytes}")
    for suffix, factor in _REDIS_FORMAT_UNITS:
        if n_bytes and n_bytes % factor == 0:
            return f"{n_bytes // factor}{suffix}"
    return str(n_bytes)


MAX_QUANTITY_DIGITS = 30
"""Quantities of more than 31 digits are refused before anything computes with them."""


def parse_quantity(text: str | int) -> Decimal:
    """The exact value of a Kubernetes quantity: ``"1Gi"`` -> 1073741824, ``"100m"`` -> 0.1.

    Accepts the API server's grammar (sign, decimal number, then a binary-SI
    suffix Ki..Ei, a decimal-SI suffix n u m k M G T P E, or an exponent e3).
    Integers are accepted as YAML gives them (``cpu: 1``).
    """
    if isinstance(text, bool):
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    if isinstance(text, int):
        return Decimal(text)
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity (e.g. 1Gi, 500m, 2): {text!r}")
    try:
        value = Decimal(match["number"])
        if match["binary"] is not None:
            value *= _BINARY_SI[match["binary"]]
        elif match["decimal"] is not None:
            value *= _DECIMAL_SI[match["decimal"]]
        elif match["exponent"] is not None:
            value = value.scaleb(Decimal(match["exponent"]))
    except InvalidOperation as exc:  # an exponent that is not an integer, e.g. 1e1.5
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc
    # Bounded before anyone turns it into an int: 1e999999 is a short string but a
    # million-digit number (int() of it holds the GIL for a minute).
    if value and value.adjusted() > MAX_QUANTITY_DIGITS:
        raise ValueError(f"{text!r} is too large (more than 31 digits)")
    return -value if match["sign"] == "-" else value


def quantity_to_bytes(text: str | int) -> int:
    """A memory or storage quantity in whole bytes, rounded up as Kubernetes does."""
    return int(parse_quantity(text).to_integral_value(rounding=ROUND_CEILING))


def parse_duration(text: str) -> float:
    """Seconds of a Go duration: ``"1h30m"`` -> 5400.0, ``"1.5s"`` -> 1.5, ``"0"`` -> 0.0.

    The grammar of Go's ``time.ParseDuration``: a sequence of decimal numbers
    with units ns, us (µs), ms, s, m, h; an optional sign; a bare ``0``.
    """
    body = text.strip()
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"not a duration (e.g. 30s, 10m, 1h30m): {text!r}")
    total = Decimal(0)
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(f"not a duration (e.g. 30s, 10m, 1h30m): {text!r}")
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return sign * float(total)


def format_duration(seconds: int) -> str:
    """A Go duration for whole ``seconds``: 5400 -> ``"1h30m"``, 0 -> ``"0s"``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if secs or not (hours or minutes):
        parts.append(f"{secs}s")
    return "".join(parts)
