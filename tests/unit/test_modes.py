"""Modes are strategies: one profile and one strategy module per mode, one registry."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from cachetier.api.models import CacheTierSpec
from cachetier.api.modes import PROFILES, profile
from cachetier.reconcile import modes

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "cachetier"
MODE_NAMES = set(typing.get_args(CacheTierSpec.model_fields["mode"].annotation))


def test_every_mode_of_the_schema_has_a_profile_and_a_strategy() -> None:
    assert {"standalone", "replication", "cluster", "external"} == MODE_NAMES
    assert set(PROFILES) == MODE_NAMES
    assert set(modes.MODES) == MODE_NAMES


@pytest.mark.parametrize(
    ("spec", "pods"),
    [
        ({}, 1),
        ({"mode": "cluster", "cluster": {"shards": 4, "replicasPerShard": 2}}, 12),
        ({"mode": "cluster", "cluster": {"shards": 3, "replicasPerShard": 0}}, 3),
        ({"mode": "external", "external": {"urlSecretRef": {"name": "u", "key": "url"}}}, 0),
    ],
)
def test_the_pod_count_comes_from_the_profile(spec: dict[str, object], pods: int) -> None:
    model = CacheTierSpec.model_validate(spec)
    assert profile(model).pods(model) == pods


_NAMES = "|".join(sorted(MODE_NAMES))
COMPARISON = re.compile(
    rf"""mode\s*(==|!=)\s*["'](?:{_NAMES})["']|["'](?:{_NAMES})["']\s*(==|!=)\s*[\w.]*mode\b"""
    rf"""|mode\s+(not\s+)?in\s*[(\[{{]\s*["'](?:{_NAMES})"""
)


def test_no_mode_name_is_compared_outside_the_registry() -> None:
    """``spec.mode == "cluster"`` and the like live only in the mode modules.

    (``api/models.py`` holds the CEL rules: the API server's copy of the same facts.)
    """
    allowed = {
        PACKAGE / "api" / "modes.py",
        PACKAGE / "api" / "models.py",
        *(PACKAGE / "reconcile" / "modes").glob("*.py"),
    }
    found = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if COMPARISON.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    "line",
    [
        'if spec.mode == "cluster":',
        "if spec.mode != 'external' and x:",
        'if "standalone" == spec.mode:',
        'if spec.mode in ("cluster", "standalone"):',
    ],
)
def test_the_check_sees_a_comparison(line: str) -> None:
    assert COMPARISON.search(line)


def test_the_check_ignores_persistence_modes() -> None:
    assert not COMPARISON.search('if spec.redis.persistence.mode == "none":')
