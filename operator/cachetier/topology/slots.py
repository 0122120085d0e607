"""Hash-slot arithmetic: ranges of the 16384 Redis Cluster slots and fair shares.

Purely data-manipulative: no I/O, no clocks, no Redis client. Every function
works on sorted, non-overlapping, non-adjacent ranges (see `normalize`), so
that a whole cluster's slot map stays a handful of tuples rather than 16384
entries.

Invariant of `quotas`: the shares sum to `TOTAL_SLOTS` and differ by at most one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TOTAL_SLOTS = 16384
"""Number of hash slots in a Redis Cluster."""


@dataclass(frozen=True, order=True)
class SlotRange:
    """An inclusive range of hash slots, `start..end`."""

    start: int
    """First slot of the range."""
    end: int
    """Last slot of the range (inclusive)."""

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end < TOTAL_SLOTS:
            raise ValueError(f"invalid slot range {self.start}-{self.end}")

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and self.start <= slot <= self.end

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"


Ranges = tuple[SlotRange, ...]
"""Normalized ranges: sorted, non-overlapping and non-adjacent."""

ALL_SLOTS: Ranges = (SlotRange(0, TOTAL_SLOTS - 1),)
"""Every slot of the cluster."""


def normalize(ranges: Iterable[SlotRange]) -> Ranges:
    """Sort ranges and merge the ones that overlap or touch."""
    merged: list[SlotRange] = []
    for r in sorted(ranges):
        if merged and r.start <= merged[-1].end + 1:
            last = merged[-1]
            merged[-1] = SlotRange(last.start, max(last.end, r.end))
        else:
            merged.append(r)
    return tuple(merged)


def from_slots(slots: Iterable[int]) -> Ranges:
    """Build normalized ranges from individual slot numbers."""
    return normalize(SlotRange(s, s) for s in slots)


def count(ranges: Iterable[SlotRange]) -> int:
    """Number of slots covered by normalized ranges."""
    return sum(len(r) for r in ranges)


def iter_slots(ranges: Iterable[SlotRange]) -> Iterable[int]:
    """Every slot number in the ranges, in order."""
    for r in ranges:
        yield from range(r.start, r.end + 1)


def union(*parts: Iterable[SlotRange]) -> Ranges:
    """All slots that are in any of the parts."""
    return normalize(r for part in parts for r in part)


def subtract(ranges: Ranges, removed: Ranges) -> Ranges:
    """Slots of `ranges` that are not in `removed`."""
    out: list[SlotRange] = []
    for r in ranges:
        start = r.start
        for x in removed:
            if x.end < start or x.start > r.end:
                continue
            if x.start > start:
                out.append(SlotRange(start, x.start - 1))
            start = max(start, x.end + 1)
            if start > r.end:
                break
        if start <= r.end:
            out.append(SlotRange(start, r.end))
    return tuple(out)


def take_last(ranges: Ranges, n: int) -> tuple[Ranges, Ranges]:
    """Split off the `n` highest slots: returns `(taken, rest)`."""
    if n <= 0:
        return (), ranges
    taken: list[SlotRange] = []
    rest = list(ranges)
    while n > 0 and rest:
        last = rest.pop()
        if len(last) <= n:
            taken.append(last)
            n -= len(last)
        else:
            taken.append(SlotRange(last.end - n + 1, last.end))
            rest.append(SlotRange(last.start, last.end - n))
            n = 0
    return normalize(taken), tuple(rest)


def take_first(ranges: Ranges, n: int) -> tuple[Ranges, Ranges]:
    """Split off the `n` lowest slots: returns `(taken, rest)`."""
    if n <= 0:
        return (), ranges
    taken: list[SlotRange] = []
    rest = list(ranges)
    while n > 0 and rest:
        first = rest.pop(0)
        if len(first) <= n:
            taken.append(first)
            n -= len(first)
        else:
            taken.append(SlotRange(first.start, first.start + n - 1))
            rest.insert(0, SlotRange(first.start + n, first.end))
            n = 0
    return tuple(taken), tuple(rest)


def chunks(ranges: Ranges, size: int) -> list[Ranges]:
    """Cut ranges into consecutive pieces of at most `size` slots each."""
    if size <= 0:
        raise ValueError("chunk size must be positive")
    out: list[Ranges] = []
    rest = ranges
    while rest:
        piece, rest = take_first(rest, size)
        out.append(piece)
    return out


def quotas(masters: int) -> list[int]:
    """Fair shares of the 16384 slots for `masters` masters, largest first.

    The shares sum to `TOTAL_SLOTS` and differ by at most one slot.
    """
    if masters <= 0:
        raise ValueError("a cluster needs at least one master")
    base, extra = divmod(TOTAL_SLOTS, masters)
    return [base + (1 if i < extra else 0) for i in range(masters)]


def parse_slot_token(token: str) -> SlotRange:
    """Parse `"5"` or `"0-5460"` as it appears in CLUSTER NODES."""
    start, sep, end = token.partition("-")
    return SlotRange(int(start), int(end) if sep else int(start))


def format_ranges(ranges: Iterable[SlotRange]) -> str:
    """Human-readable form, e.g. `"0-5460,5462"`."""
    return ",".join(str(r) for r in ranges) or "-"
