"""The layer rules of ``hack/check_layers.py`` hold, and catch deliberate violations."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "hack/check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


def test_the_operator_keeps_its_layers() -> None:
    assert _checker().check() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "cachetier" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in [p for p in (tmp_path / "cachetier").rglob("*") if p.is_dir()]:
        (d / "__init__.py").touch()
    (tmp_path / "cachetier" / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize(
    ("files", "rule"),
    [
        ({"render/x.py": "import kubernetes\n"}, "adapter-only"),
        ({"render/x.py": "import redis\n"}, "adapter-only"),
        ({"rollout/x.py": "import prometheus_client\n"}, "pure-imports-impure"),
        ({"api/x.py": "from cachetier.reconcile import tier\n"}, "pure-imports-impure"),
        ({"topology/x.py": "def f():\n    from cachetier import metrics\n"}, "pure-imports-impure"),
        ({"reconcile/x.py": "import kubernetes.client\n"}, "adapter-only"),
        ({"reconcile/x.py": "import redis\n"}, "adapter-only"),
        ({"reconcile/x.py": "import kopf\n"}, "adapter-only"),
        ({"cli.py": "import urllib3\n"}, "adapter-only"),
        ({"reconcile/x.py": "from cachetier.render._meta import spec_hash\n"}, "private-name"),
        ({"reconcile/x.py": "from cachetier.render import _helper\n"}, "private-name"),
        ({"reconcile/x.py": "def f(kube):\n    return kube._scope\n"}, "private-name"),
        ({"reconcile/x.py": "from cachetier.kube.client import Kube\n"}, "ports-only"),
        ({"reconcile/x.py": "from cachetier.redis import probe\n"}, "ports-only"),
        ({"reconcile/x.py": "from cachetier.redis.cluster import converge\n"}, "ports-only"),
        ({"reconcile/decide.py": "from cachetier import metrics\n"}, "pure-imports-impure"),
        ({"reconcile/decide.py": "from cachetier.reconcile import tier\n"}, "pure-imports-impure"),
        ({"reconcile/observed.py": "import threading\nimport requests\n"}, "pure-imports-impure"),
        (
            {"reconcile/modes/x.py": "from cachetier.reconcile.cluster import M\n"},
            "pure-imports-impure",
        ),
        ({"ports.py": "from cachetier import metrics\n"}, "pure-imports-impure"),
    ],
)
def test_a_deliberate_violation_fails(tmp_path: Path, files: dict[str, str], rule: str) -> None:
    problems = _checker().check(_tree(tmp_path, files))
    assert problems and all(f": {rule}: " in p for p in problems), problems


@pytest.mark.parametrize(
    "files",
    [
        {"kube/x.py": "import kubernetes\nimport urllib3\n"},
        {"redis/x.py": "import redis\n"},
        {"handlers/x.py": "import kopf\n"},
        {"render/x.py": "import json\nimport pydantic\nfrom cachetier.api import models\n"},
        {"render/x.py": "from cachetier.render._meta import owner_reference\n"},
        {"render/x.py": "from . import _meta\n"},
        {"reconcile/x.py": "class A:\n    def f(self):\n        return self._x\n"},
        {"reconcile/x.py": "from cachetier.ports import KubeApi\nfrom cachetier import metrics\n"},
        {"reconcile/decide.py": "from cachetier.reconcile import conditions\n"},
        {"reconcile/decide.py": "from cachetier.reconcile.modes import MODES\n"},
        {"reconcile/modes/x.py": "from cachetier.reconcile.observed import Observed\n"},
        {"reconcile/modes/x.py": "from cachetier.ports import TlsOptions\nimport pydantic\n"},
    ],
)
def test_what_the_rules_allow(tmp_path: Path, files: dict[str, str]) -> None:
    assert _checker().check(_tree(tmp_path, files)) == []


def test_no_import_cycles_in_the_operator_or_the_local_cluster() -> None:
    checker = _checker()
    assert checker.import_cycles(checker.ROOT, "cachetier") == []
    assert checker.import_cycles(checker.DEVTOOLS, "ctdev") == []


def test_an_import_cycle_is_found_even_behind_type_checking(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "agent.py": "from cachetier.pod import Worker\n",
            "pod.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .agent import Agent\n",
            "config.py": "from . import agent\n",
        },
    )
    problems = _checker().import_cycles(root, "cachetier")
    assert problems and all("import-cycle" in p for p in problems)
    assert "cachetier.agent -> cachetier.pod -> cachetier.agent" in problems[0]
