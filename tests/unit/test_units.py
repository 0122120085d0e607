"""Redis memory units, Kubernetes quantities and durations."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachetier.api.models import DURATION_PATTERN, MEMORY_PATTERN, QUANTITY_PATTERN
from cachetier.api.units import (
    format_duration,
    format_redis_memory,
    parse_duration,
    parse_quantity,
    parse_redis_memory,
    quantity_to_bytes,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("100", 100),
        ("100b", 100),
        ("1k", 1000),
        ("1kb", 1024),
        ("1m", 1_000_000),
        ("1mb", 1024**2),
        ("1g", 1_000_000_000),
        ("2gb", 2_147_483_648),
        ("2GB", 2_147_483_648),
        ("512Mb", 512 * 1024**2),
        (" 3kb ", 3072),
    ],
)
def test_redis_memory(text: str, expected: int) -> None:
    assert parse_redis_memory(text) == expected


@pytest.mark.parametrize(
    "text", ["", "gb", "2 gigs", "2 gb", "1.5gb", "-1gb", "2tb", "2gib", "2Gi", "0x10"]
)
def test_redis_memory_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="Redis memory"):
        parse_redis_memory(text)


@given(st.integers(min_value=0, max_value=2**63))
def test_redis_memory_round_trip(n_bytes: int) -> None:
    text = format_redis_memory(n_bytes)

    assert parse_redis_memory(text) == n_bytes
    assert re.fullmatch(MEMORY_PATTERN, text), "the CRD must accept what we format"


def test_redis_memory_formats_the_largest_exact_unit() -> None:
    assert format_redis_memory(2 * 1024**3) == "2gb"
    assert format_redis_memory(1536 * 1024**2) == "1536mb"
    assert format_redis_memory(1000) == "1000"
    assert format_redis_memory(0) == "0"
    with pytest.raises(ValueError, match="negative"):
        format_redis_memory(-1)


@given(
    st.integers(min_value=0, max_value=10**12),
    st.sampled_from(["", "b", "k", "kb", "m", "mb", "g", "gb", "K", "KB", "Mb", "gB"]),
)
def test_every_string_the_crd_accepts_parses(number: int, unit: str) -> None:
    text = f"{number}{unit}"
    assert re.fullmatch(MEMORY_PATTERN, text)
    assert parse_redis_memory(text) >= number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("500M", Decimal(500_000_000)),
        ("100m", Decimal("0.1")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("1E", Decimal(10**18)),
        ("1Ei", Decimal(2**60)),
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        (".5", Decimal("0.5")),
        ("-1Gi", Decimal(-(2**30))),
        ("+1", Decimal(1)),
        ("250u", Decimal("0.00025")),
        ("3n", Decimal("3e-9")),
    ],
)
def test_quantity(text: str | int, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "Gi", "1GB", "1 Gi", "1gi", "1K", "1e1.5", "1.2.3", "abc"])
def test_quantity_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_quantity_refuses_booleans() -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(True)


def test_quantity_to_bytes_rounds_up() -> None:
    assert quantity_to_bytes("1.5Gi") == 1_610_612_736
    assert quantity_to_bytes("1500m") == 2
    assert quantity_to_bytes("3Gi") == 3 * 2**30
    assert quantity_to_bytes(7) == 7


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m"]),
)
def test_quantity_scales_by_its_suffix(number: int, suffix: str) -> None:
    factors: dict[str, Decimal] = {"": Decimal(1), "m": Decimal("0.001")}
    factors |= {p: Decimal(10) ** (3 * (i + 1)) for i, p in enumerate("kMGTPE")}
    factors |= {f"{p}i": Decimal(2) ** (10 * (i + 1)) for i, p in enumerate("KMGTPE")}
    text = f"{number}{suffix}"

    assert re.fullmatch(QUANTITY_PATTERN, text), "the CRD accepts every quantity we parse"
    assert parse_quantity(text) == number * factors[suffix]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2h45m10s", 9910.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("1m0.5s", 60.5),
        ("-1m", -60.0),
        ("+5s", 5.0),
        ("100us", 0.0001),
        ("100\u00b5s", 0.0001),
        ("7ns", 7e-9),
    ],
)
def test_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "10", "10 minutes", "1d", "h", "1h 30m", "-", "1.h.", "m5"])
def test_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_round_trip(seconds: int) -> None:
    text = format_duration(seconds)

    assert parse_duration(text) == seconds
    assert re.fullmatch(DURATION_PATTERN, text), "the CRD must accept what we format"


def test_duration_formats() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(3601) == "1h1s"
    assert format_duration(0) == "0s"
    assert format_duration(-90) == "-1m30s"
