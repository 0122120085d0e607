"""Structured logging for the node agent: one JSON object per line on stderr.

``Log("nodeagent.pod").info("started", pod="ns/name", pid=123)`` writes
``{"ts": "...", "level": "info", "logger": "nodeagent.pod", "msg": "started", "pod": ..., ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    """Formats records as JSON lines; extra fields come from ``record.fields``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "info") -> None:
    """Send the ``nodeagent`` loggers to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("nodeagent")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Log:
    """A logger that takes structured fields as keyword arguments."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, msg: str, exc: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, exc_info=exc, extra={"fields": fields})

    def debug(self, msg: str, **fields: Any) -> None:
        """Log at debug level."""
        self._log(logging.DEBUG, msg, False, fields)

    def info(self, msg: str, **fields: Any) -> None:
        """Log at info level."""
        self._log(logging.INFO, msg, False, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        """Log at warning level."""
        self._log(logging.WARNING, msg, False, fields)

    def error(self, msg: str, **fields: Any) -> None:
        """Log at error level."""
        self._log(logging.ERROR, msg, False, fields)

    def exception(self, msg: str, **fields: Any) -> None:
        """Log at error level with the current exception's traceback."""
        self._log(logging.ERROR, msg, True, fields)
