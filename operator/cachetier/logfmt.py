"""The operator's log lines: one JSON object per line (default) or plain text.

``--log-format json`` (env ``CACHETIER_LOG_FORMAT``) writes ``{"time", "level",
"logger", "msg"}`` (plus ``"exc"`` with the traceback) through ``json.dumps``, so a
message with quotes or newlines is still one valid JSON line for a log pipeline;
``text`` writes ``time level logger: message`` for a terminal.
"""

from __future__ import annotations

import json
import logging

FORMATS = ("json", "text")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    """The formatter for ``--log-format`` (``json`` or ``text``)."""
    if kind == "json":
        return JsonFormatter()
    if kind == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {kind!r}")


def configure(kind: str, verbose: bool) -> None:
    """Root logging to stderr in ``kind`` format."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
