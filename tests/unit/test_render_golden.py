"""Golden files: tests/data/render/<case>/input.yaml -> expected.yaml.

Regenerate with ``.venv/bin/python hack/regen_golden.py`` and review the diff.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_CASES = {
    "standalone-defaults",
    "standalone-rdb-custom",
    "standalone-no-persistence-noauth",
    "standalone-tls",
    "standalone-byo-password",
    "cluster-3x1",
    "external",
}


def _load_regen() -> ModuleType:
    # One implementation of "render a case", shared with the regeneration script.
    spec = importlib.util.spec_from_file_location("regen_golden", ROOT / "hack" / "regen_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regen = _load_regen()
CASES = regen.case_dirs()


def test_every_required_case_exists() -> None:
    assert {case.name for case in CASES} >= REQUIRED_CASES


@pytest.mark.parametrize("case_dir", CASES, ids=[case.name for case in CASES])
def test_golden(case_dir: Path) -> None:
    expected = case_dir / "expected.yaml"
    assert expected.exists(), f"run hack/regen_golden.py to create {expected}"
    assert regen.render_case(case_dir) == expected.read_text(), (
        f"{case_dir.name}: rendering changed; run hack/regen_golden.py and review the diff"
    )


def test_external_renders_nothing() -> None:
    text = (regen.CASES_DIR / "external" / "expected.yaml").read_text()
    assert [line for line in text.splitlines() if not line.startswith("#")] == []
