"""The operator's log formats and the kubectl plugin's name."""

from __future__ import annotations

import json
import logging

import pytest

from cachetier import logfmt
from cachetier.cli import build_parser, program_name


def _record(msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys

            info = sys.exc_info()
    return logging.LogRecord("cachetier.x", logging.ERROR, __file__, 1, msg, (), info)


def test_json_lines_stay_valid_json_whatever_the_message() -> None:
    line = logfmt.formatter("json").format(_record('a "quoted"\nmulti-line message', exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == 'a "quoted"\nmulti-line message'
    assert entry["level"] == "ERROR" and entry["logger"] == "cachetier.x"
    assert "RuntimeError: boom" in entry["exc"]


def test_text_lines_and_a_bad_format() -> None:
    line = logfmt.formatter("text").format(_record("hello"))
    assert line.endswith("ERROR cachetier.x: hello")
    with pytest.raises(ValueError, match="json, text"):
        logfmt.formatter("yaml")


def test_the_kubectl_plugin_says_kubectl_cachetier() -> None:
    assert program_name("/usr/local/bin/kubectl-cachetier") == "kubectl cachetier"
    assert program_name("cachetier") == "cachetier"
    assert build_parser("kubectl cachetier").format_usage().startswith("usage: kubectl cachetier")
